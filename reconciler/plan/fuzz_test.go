package plan

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// refString is the string form the fingerprint promises, written the
// obvious way, a byte at a time: RFC 8259's required escapes only (quote,
// backslash, control characters, with the short forms \b \f \n \r \t and
// \u00xx in lower-case hex for the rest), every other byte as it is.
func refString(s string) string {
	const hexDigits = "0123456789abcdef"
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte(hexDigits[c>>4])
				b.WriteByte(hexDigits[c&0xf])
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// FuzzCanonString: the fast string encoder writes exactly the reference
// form, for every input; and for valid UTF-8, which is all a config from
// LXD (JSON itself) can hold, any JSON decoder reads the input back.
func FuzzCanonString(f *testing.F) {
	for _, s := range []string{
		"", "plain", "a\"b", "back\\slash", "tab\tnew\nline\r", "\x00\x1f\x7f\b\f", "é ünïcode",
		strings.Repeat("x", 17) + "\"" + strings.Repeat("y", 9),
		"<b>&amp;</b>", "line\u2028para\u2029", "\xff\xfe bad \xc3", strings.Repeat("\x01", 8) + "é",
	} {
		f.Add(s)
	}
	// Each byte that must be escaped, inside the encoder's eight-byte scan.
	for _, c := range "\x00\x1f\"\\" {
		f.Add("0123456" + string(c) + "89abcdef")
	}
	f.Fuzz(func(t *testing.T, s string) {
		var e canonEncoder
		e.str(s)
		if want := refString(s); string(e.buf) != want {
			t.Fatalf("str(%q) = %s, want %s", s, e.buf, want)
		}
		if !utf8.ValidString(s) {
			return
		}
		var back string
		if err := json.Unmarshal(e.buf, &back); err != nil || back != s {
			t.Errorf("str(%q) = %s, which decodes to %q (%v)", s, e.buf, back, err)
		}
	})
}
