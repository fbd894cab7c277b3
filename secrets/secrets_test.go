package secrets

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"filippo.io/age"
	"gopkg.in/yaml.v3"
)

// keyFile writes a fresh age identity (post-quantum when pq) to a file in
// dir and returns the file and its recipient.
func keyFile(t *testing.T, dir string, pq bool) (path, recipient string) {
	t.Helper()
	var line string
	if pq {
		id, err := age.GenerateHybridIdentity()
		if err != nil {
			t.Fatal(err)
		}
		line, recipient = id.String(), id.Recipient().String()
	} else {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		line, recipient = id.String(), id.Recipient().String()
	}
	f, err := os.CreateTemp(dir, "key-*.txt")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "# created: test\n# public key: %s\n%s\n", recipient, line)
	f.Close()
	return f.Name(), recipient
}

func loadKeys(t *testing.T, paths ...string) *Keys {
	t.Helper()
	k, err := LoadKeys(paths...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const knownSecret = "s3cr3t-Pa55w0rd-xyzzy"

var plainDocs = map[string]string{
	"web.enc.yaml": "# the database\ndb:\n    user: app\n    password: " + knownSecret + "\n    port: 5432\n    tls: true\nlist:\n    - a\n    - b\nempty: \"\"\nnothing: null\nplain_unencrypted: visible\n",
	"web.enc.json": `{"db": {"user": "app", "password": "` + knownSecret + `", "port": 5432, "ratio": 1.5, "tls": true}, "list": ["a", "b"], "nothing": null}`,
	"web.enc.env":  "# comment\nDB_USER=app\nDB_PASSWORD=" + knownSecret + "\nMULTI=one\\ntwo\n",
	"web.bin":      "line one\n" + knownSecret + "\n\x00\x01binary",
}

var lookups = map[string]map[string]string{
	"web.enc.yaml": {"db.password": knownSecret, "db.port": "5432", "db.tls": "true", "list.1": "b", "plain_unencrypted": "visible", "db": "password: " + knownSecret},
	"web.enc.json": {"db.password": knownSecret, "db.port": "5432", "db.ratio": "1.5", "list.0": "a"},
	"web.enc.env":  {"DB_PASSWORD": knownSecret, "MULTI": "one\ntwo"},
	"web.bin":      {"data": knownSecret},
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	k1, r1 := keyFile(t, dir, false)
	k2, r2 := keyFile(t, dir, true)
	for name, plain := range plainDocs {
		for _, recips := range [][]string{{r1}, {r1, r2}, {r2}} {
			t.Run(fmt.Sprintf("%s/%d", name, len(recips)), func(t *testing.T) {
				enc, err := Encrypt(name, []byte(plain), recips)
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Contains(enc, []byte(knownSecret)) {
					t.Fatalf("encrypted file holds the plaintext:\n%s", enc)
				}
				md, err := Inspect(name, enc)
				if err != nil {
					t.Fatal(err)
				}
				if md.Format != FormatOf(name) || strings.Join(md.Recipients, ",") != strings.Join(recips, ",") {
					t.Errorf("Inspect = %+v", md)
				}
				for _, kf := range []string{k1, k2} {
					key := loadKeys(t, kf)
					if !contains(recips, key.Recipients()[0]) {
						continue
					}
					doc, err := Open(name, enc, key)
					if err != nil {
						t.Fatal(err)
					}
					for p, want := range lookups[name] {
						if !md.HasKey(p) && FormatOf(name) != FormatBinary {
							t.Errorf("HasKey(%q) = false; keys %v", p, md.Keys)
						}
						v, err := doc.Lookup(p)
						if err != nil {
							t.Fatal(err)
						}
						if !strings.Contains(string(v.Reveal()), want) {
							t.Errorf("Lookup(%q) = %q, want %q", p, v.Reveal(), want)
						}
					}
					if w := doc.Whole().Reveal(); !bytes.Contains(w, []byte(knownSecret)) || bytes.Contains(w, []byte("sops")) {
						t.Errorf("Whole() =\n%s", w)
					}
				}
			})
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func TestWholeIsTheDocument(t *testing.T) {
	dir := t.TempDir()
	kf, r := keyFile(t, dir, false)
	for name, plain := range plainDocs {
		enc, err := Encrypt(name, []byte(plain), []string{r})
		if err != nil {
			t.Fatal(err)
		}
		doc, err := Open(name, enc, loadKeys(t, kf))
		if err != nil {
			t.Fatal(err)
		}
		got := string(doc.Whole().Reveal())
		switch FormatOf(name) {
		case FormatBinary, FormatDotenv, FormatYAML:
			if got != plain {
				t.Errorf("%s: Whole() =\n%q\nwant\n%q", name, got, plain)
			}
		case FormatJSON:
			var a, b any
			if json.Unmarshal([]byte(got), &a) != nil || json.Unmarshal([]byte(plain), &b) != nil || fmt.Sprint(a) != fmt.Sprint(b) {
				t.Errorf("%s: Whole() =\n%s", name, got)
			}
		}
	}
}

// TestSealKeepsUnchangedCiphertext: sealed again under the same data key,
// a file changes only in its metadata, so rotation diffs stay readable.
func TestSealKeepsUnchangedCiphertext(t *testing.T) {
	dir := t.TempDir()
	kf, r := keyFile(t, dir, false)
	_, r2 := keyFile(t, dir, false)
	name := "web.enc.yaml"
	enc, _ := Encrypt(name, []byte(plainDocs[name]), []string{r})
	doc, err := Open(name, enc, loadKeys(t, kf))
	if err != nil {
		t.Fatal(err)
	}
	again, err := doc.Seal([]string{r, r2}, false)
	if err != nil {
		t.Fatal(err)
	}
	before, after := strings.Split(string(enc), "sops:")[0], strings.Split(string(again), "sops:")[0]
	if before != after {
		t.Errorf("values changed:\n%s\n---\n%s", before, after)
	}
	fresh, err := doc.Seal([]string{r2}, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(name, fresh, loadKeys(t, kf)); !errors.Is(err, ErrNoKey) {
		t.Errorf("a removed key still opens a fresh-key file: %v", err)
	}
}

// canonicalYAML renders a YAML (or JSON) document the same way whatever
// its layout.
func canonicalYAML(b []byte) string {
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		return "invalid: " + err.Error()
	}
	out, _ := yaml.Marshal(v)
	return string(out)
}
