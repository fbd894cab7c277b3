package secrets

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestBadInput: each bad file gets a clear error naming the file, and no
// error carries the plaintext.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	kf, r := keyFile(t, dir, false)
	other, rOther := keyFile(t, dir, false)
	name := "web.enc.yaml"
	enc, err := Encrypt(name, []byte(plainDocs[name]), []string{r})
	if err != nil {
		t.Fatal(err)
	}
	keys, wrong := loadKeys(t, kf), loadKeys(t, other)
	encs := regexp.MustCompile(`ENC\[AES256_GCM,data:([^,]*),`).FindAllSubmatchIndex(enc, -1)
	userEnc := regexp.MustCompile(`user: (ENC\[[^\]]*\])`).FindSubmatch(enc)[1]
	passEnc := regexp.MustCompile(`password: (ENC\[[^\]]*\])`).FindSubmatch(enc)[1]
	// flip changes the first base64 character of a value's data to
	// another valid one: flipping a bit could make it '.' or '*', which
	// is a malformed value, not a tampered one (1 run in 16 or so).
	flip := func(at int) []byte {
		b := bytes.Clone(enc)
		if b[at] == 'A' {
			b[at] = 'B'
		} else {
			b[at] = 'A'
		}
		return b
	}
	lastENC := encs[len(encs)-1] // the MAC comes last
	cases := []struct {
		name, file string
		data       []byte
		keys       *Keys
		is         error
		want       []string
	}{
		{"wrong key", name, enc, wrong, ErrNoKey, []string{name, r, rOther, other}},
		{"no key", name, enc, nil, ErrNoKey, []string{name, r}},
		{"tampered MAC", name, flip(lastENC[2]), keys, ErrMAC, []string{name}},
		{"tampered value", name, flip(encs[1][2]), keys, nil, []string{name, "does not decrypt"}},
		{"value moved to another key", name, bytes.Replace(enc, userEnc, passEnc, 1), keys, nil, []string{name, "db.user", "does not decrypt"}},
		{"value replaced by plaintext", name, bytes.Replace(enc, passEnc, []byte(knownSecret), 1), keys, nil, []string{name, "db.password", "not encrypted"}},
		{"malformed ENC", name, bytes.Replace(enc, passEnc, []byte("ENC[AES256_GCM,data:!!!,iv:x,tag:y,type:str]"), 1), keys, nil, []string{name, "db.password", "malformed ENC"}},
		{"plaintext yaml", name, []byte(plainDocs[name]), keys, ErrNotEncrypted, []string{name}},
		{"plaintext json", "web.enc.json", []byte(plainDocs["web.enc.json"]), keys, ErrNotEncrypted, []string{"web.enc.json"}},
		{"plaintext env", "web.enc.env", []byte(plainDocs["web.enc.env"]), keys, ErrNotEncrypted, []string{"web.enc.env"}},
		{"plaintext binary", "web.bin", []byte(plainDocs["web.bin"]), keys, ErrNotEncrypted, []string{"web.bin"}},
		{"10 MB", name, bytes.Repeat([]byte("k: "+knownSecret+"\n"), 10<<20/len(knownSecret)), keys, ErrTooLarge, []string{name, "1 MiB"}},
		{"invalid yaml", name, []byte("a: [" + knownSecret), keys, nil, []string{name, "not valid YAML"}},
		{"invalid json", "web.enc.json", []byte(`{"a": "` + knownSecret), keys, nil, []string{"web.enc.json", "not valid JSON"}},
		{"bad dotenv", "web.enc.env", []byte(knownSecret + "\n"), keys, nil, []string{"web.enc.env", "line 1"}},
	}
	var all []string
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(c.file, c.data, c.keys)
			if err == nil {
				t.Fatal("no error")
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %q is not %v", err, c.is)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			all = append(all, err.Error(), fmt.Sprintf("%+v", err))
			if _, err := Inspect(c.file, c.data); err != nil {
				all = append(all, err.Error())
			}
		})
	}
	doc, err := Open(name, enc, keys)
	if err != nil {
		t.Fatal(err)
	}
	_, err = doc.Lookup("db.nope")
	if !errors.Is(err, ErrNoPath) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "db.nope") {
		t.Errorf("missing path: %v", err)
	}
	if md, _ := Inspect(name, enc); md.HasKey("db.nope") || !md.HasKey("db.password") {
		t.Errorf("HasKey: keys %v", md.Keys)
	}
	all = append(all, err.Error())
	assertNoLeak(t, strings.Join(all, "\n"))
}

func TestKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.txt")
	os.WriteFile(bad, []byte("# comment\nAGE-SECRET-KEY-1NOTAKEY"+knownSecret+"\n"), 0o600)
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, []byte("# nothing\n"), 0o600)
	for _, c := range []struct{ path, want string }{
		{bad, bad + ", line 2: malformed age identity"},
		{empty, empty + ": no age identity"},
		{filepath.Join(dir, "missing"), "missing: no such file"},
	} {
		_, err := LoadKeys(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("LoadKeys(%s) = %v, want %q", c.path, err, c.want)
		}
		if err != nil {
			assertNoLeak(t, err.Error())
		}
	}
	if _, err := LoadKeys(); err == nil || !strings.Contains(err.Error(), "--age-key-file") {
		t.Errorf("LoadKeys() = %v", err)
	}
}

// holder has a Value in an exported and an unexported field: fmt cannot
// call methods on the unexported one and prints it by reflection.
type holder struct {
	V      Value
	hidden Value
}

// TestValueNeverFormats feeds a known plaintext through every way a Value
// can be printed or serialised, and greps for it.
func TestValueNeverFormats(t *testing.T) {
	v := newValue([]byte(knownSecret))
	h := holder{V: v, hidden: v}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T", "%10.3s", "%p"} {
		out = append(out, fmt.Sprintf(verb, v), fmt.Sprintf(verb, h), fmt.Sprintf(verb, &h), fmt.Sprintf(verb, []Value{v}))
	}
	out = append(out, fmt.Sprint(v, h), fmt.Sprintln(v, &h), v.String(), v.GoString())
	for _, x := range []any{v, h, &h, map[string]Value{"k": v}} {
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	var logs bytes.Buffer
	for _, l := range []*slog.Logger{slog.New(slog.NewTextHandler(&logs, nil)), slog.New(slog.NewJSONHandler(&logs, nil))} {
		l.Info("secret", "v", v, "h", h, "p", &h)
		l.Info("secret", slog.Any("v", v), slog.Group("g", "v", v))
	}
	out = append(out, logs.String())
	b, _ := v.MarshalText()
	y, _ := yaml.Marshal(h)
	out = append(out, string(b), string(y))
	assertNoLeak(t, strings.Join(out, "\n"))
	if !strings.Contains(strings.Join(out, "\n"), redacted) {
		t.Error("no [redacted] anywhere")
	}
	if string(v.Reveal()) != knownSecret || v.Len() != len(knownSecret) {
		t.Error("Reveal/Len")
	}
	doc := &Document{&docState{name: "x.yaml", ivs: map[string][]byte{"k": []byte(knownSecret)}}}
	type docHolder struct{ d *Document }
	for _, verb := range []string{"%s", "%d", "%x", "%v", "%+v", "%#v"} {
		out = append(out, fmt.Sprintf(verb, docHolder{doc}))
	}
	assertNoLeak(t, strings.Join(out, "\n"))
	if s := fmt.Sprintf("%v %+v %#v %s", doc, doc, doc, doc); strings.Contains(s, "ENC") || !strings.Contains(s, "x.yaml") {
		t.Errorf("Document formats as %q", s)
	}
}

// assertNoLeak fails when text holds the known plaintext, in clear or in
// the encodings a printer might pick (hex, base64, Go byte lists).
func assertNoLeak(t *testing.T, text string) {
	t.Helper()
	forms := []string{knownSecret, fmt.Sprintf("%x", knownSecret), fmt.Sprintf("%v", []byte(knownSecret)), fmt.Sprintf("%#v", []byte(knownSecret)[:4])}
	for _, f := range forms {
		if strings.Contains(text, f) {
			t.Fatalf("the plaintext (as %q) leaked into:\n%s", f, text)
		}
	}
}
