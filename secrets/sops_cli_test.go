package secrets

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/internal/testlxd"
)

// sopsCLI is the test environment's sops CLI (see testlxd.SOPS).
func sopsCLI(t *testing.T) string { return testlxd.SOPS(t) }

// sops runs the CLI with the age key files in keys; stdin is in.
func sops(t *testing.T, bin string, keys []string, in []byte, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "SOPS_AGE_KEY_FILE="+strings.Join(keys, string(os.PathListSeparator)), "SOPS_DISABLE_VERSION_CHECK=1")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, errors.New(err.Error() + ": " + stderr.String())
	}
	return out, nil
}

// sopsEncrypt encrypts plain as file name (the extension picks the
// format) with the CLI.
func sopsEncrypt(t *testing.T, bin, name string, plain []byte, recipients []string) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := sops(t, bin, nil, nil, "encrypt", "--age", strings.Join(recipients, ","), p)
	if err != nil {
		t.Fatalf("sops encrypt %s: %v", name, err)
	}
	return out
}

// sopsDecrypt decrypts data (as file name) with the CLI.
func sopsDecrypt(t *testing.T, bin, name string, data []byte, keys ...string) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := sops(t, bin, keys, nil, "decrypt", p)
	if err != nil {
		t.Fatalf("sops decrypt %s: %v\n%s", name, err, data)
	}
	return out
}

// TestSOPSFilesOpen: files the real sops CLI encrypted (each format; one
// recipient, two, a post-quantum one) open with berth, every key in its
// Lookup and Inspect, and Whole equals what sops decrypts them to.
func TestSOPSFilesOpen(t *testing.T) {
	testlxd.Short(t)
	bin := sopsCLI(t)
	dir := t.TempDir()
	k1, r1 := keyFile(t, dir, false)
	k2, r2 := keyFile(t, dir, false)
	kpq, rpq := keyFile(t, dir, true)
	sets := map[string][]string{"one": {r1}, "two": {r1, r2}, "pq": {rpq}, "mixed": {r2, rpq}}
	keyOf := map[string]string{r1: k1, r2: k2, rpq: kpq}
	for name, plain := range plainDocs {
		for set, recips := range sets {
			t.Run(name+"/"+set, func(t *testing.T) {
				enc := sopsEncrypt(t, bin, name, []byte(plain), recips)
				md, err := Inspect(name, enc)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Join(md.Recipients, ",") != strings.Join(recips, ",") {
					t.Errorf("Inspect recipients = %v, want %v", md.Recipients, recips)
				}
				want := sopsDecrypt(t, bin, name, enc, keyOf[recips[0]])
				for _, r := range recips {
					doc, err := Open(name, enc, loadKeys(t, keyOf[r]))
					if err != nil {
						t.Fatalf("Open with the key of %s: %v", r, err)
					}
					checkLookups(t, name, md, doc)
					if got := doc.Whole().Reveal(); !sameDoc(name, got, want) {
						t.Errorf("Whole() =\n%s\nsops decrypt =\n%s", got, want)
					}
				}
			})
		}
	}
}

func checkLookups(t *testing.T, name string, md *Metadata, doc *Document) {
	t.Helper()
	for p, want := range lookups[name] {
		if FormatOf(name) != FormatBinary && !md.HasKey(p) {
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
	if _, err := doc.Lookup("no.such.key"); !errors.Is(err, ErrNoPath) {
		t.Errorf("Lookup of a missing path: %v", err)
	}
}

// sameDoc compares decrypted documents: byte for byte but for YAML and
// JSON, whose layout may differ (indentation, quoting).
func sameDoc(name string, a, b []byte) bool {
	switch FormatOf(name) {
	case FormatYAML, FormatJSON:
		return canonicalYAML(a) == canonicalYAML(b)
	}
	return bytes.Equal(a, b)
}

// TestSOPSReadsBerthFiles: what berth writes (Encrypt, and Seal for a
// rotation and an edit) the real sops CLI decrypts, MAC checked, to the
// same document.
func TestSOPSReadsBerthFiles(t *testing.T) {
	testlxd.Short(t)
	bin := sopsCLI(t)
	dir := t.TempDir()
	k1, r1 := keyFile(t, dir, false)
	k2, r2 := keyFile(t, dir, true)
	for name, plain := range plainDocs {
		t.Run(name, func(t *testing.T) {
			enc, err := Encrypt(name, []byte(plain), []string{r1})
			if err != nil {
				t.Fatal(err)
			}
			got := sopsDecrypt(t, bin, name, enc, k1)
			if !sameDoc(name, got, []byte(plain)) {
				t.Errorf("sops decrypt of berth's file =\n%s\nwant\n%s", got, plain)
			}
			// Comments are encrypted too, with the path sops gives them.
			for _, c := range []string{"# the database", "# comment"} {
				if strings.Contains(plain, c) && (!bytes.Contains(got, []byte(c)) || bytes.Contains(enc, []byte(c))) {
					t.Errorf("comment %q: sops decrypt =\n%s\nberth's file =\n%s", c, got, enc)
				}
			}
			// The sops CLI's own file, rotated by berth to a new key.
			enc = sopsEncrypt(t, bin, name, []byte(plain), []string{r1})
			doc, err := Open(name, enc, loadKeys(t, k1))
			if err != nil {
				t.Fatal(err)
			}
			rotated, err := doc.Seal([]string{r2}, true)
			if err != nil {
				t.Fatal(err)
			}
			if got := sopsDecrypt(t, bin, name, rotated, k2); !sameDoc(name, got, []byte(plain)) {
				t.Errorf("sops decrypt of the rotated file =\n%s\nwant\n%s", got, plain)
			}
			edited, err := doc.Replace(bytes.Replace(doc.Whole().Reveal(), []byte(knownSecret), []byte("changed"), 1))
			if err != nil {
				t.Fatal(err)
			}
			out, err := edited.Seal(doc.Recipients(), false)
			if err != nil {
				t.Fatal(err)
			}
			if got := sopsDecrypt(t, bin, name, out, k1); !bytes.Contains(got, []byte("changed")) || bytes.Contains(got, []byte(knownSecret)) {
				t.Errorf("sops decrypt of the edited file =\n%s", got)
			}
		})
	}
}
