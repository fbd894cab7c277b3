package plan

import (
	"encoding/json"
	"strings"
	"testing"
)

// The hand-written string encoder must agree with encoding/json (without
// its HTML escaping and its handling of invalid UTF-8, which configs from
// LXD, being JSON themselves, cannot hold).
func FuzzCanonString(f *testing.F) {
	for _, s := range []string{"", "plain", "a\"b", "back\\slash", "tab\tnew\nline\r", "\x00\x1f\x7f\b\f", "é ünïcode", strings.Repeat("x", 17) + "\"" + strings.Repeat("y", 9)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.ContainsAny(s, "<>&\u2028\u2029") || !isValidUTF8(s) {
			t.Skip()
		}
		var e canonEncoder
		e.str(s)
		want, _ := json.Marshal(s)
		if string(e.buf) != string(want) {
			t.Errorf("str(%q) = %s, want %s", s, e.buf, want)
		}
	})
}

func isValidUTF8(s string) bool { return strings.ToValidUTF8(s, "") == s }
