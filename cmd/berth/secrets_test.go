package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/berth-gitops/berth/internal/testlxd"
	"github.com/berth-gitops/berth/secrets"
)

const secretPlain = "db:\n    password: hunter2-zz9\n    user: app\n"

// ageKeyFile writes a new age identity to dir/name and returns the path
// and the recipient.
func ageKeyFile(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, id.Recipient().String()
}

func writeEncrypted(t *testing.T, path, plain string, recipients ...string) {
	t.Helper()
	enc, err := secrets.Encrypt(path, []byte(plain), recipients)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, enc, 0o644); err != nil {
		t.Fatal(err)
	}
}

func runBerth(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestSecretsCheck(t *testing.T) {
	dir := t.TempDir()
	k1, r1 := ageKeyFile(t, dir, "k1.txt")
	_, r2 := ageKeyFile(t, dir, "k2.txt")
	apps := filepath.Join(dir, "apps")
	writeEncrypted(t, filepath.Join(apps, "secrets", "web.enc.yaml"), secretPlain, r1)
	writeEncrypted(t, filepath.Join(apps, "secrets", "db.env"), "PASSWORD=x\n", r1, r2)
	os.WriteFile(filepath.Join(apps, "web.yaml"), []byte("apiVersion: berth/v1\n"), 0o644)

	// Listing only: every encrypted file with its recipients; specs skipped.
	code, out, errOut := runBerth("secrets", "check", apps)
	if code != 0 || !strings.Contains(out, "web.enc.yaml\tyaml\t"+r1+"\tok") || !strings.Contains(out, "db.env\tdotenv\t"+r1+", "+r2) || strings.Contains(out, "web.yaml") {
		t.Errorf("list: code %d\n%s%s", code, out, errOut)
	}
	// Expected set {r1}: db.env has an extra recipient.
	code, out, errOut = runBerth("secrets", "check", "--age-recipient", r1, apps)
	if code != exitError || !strings.Contains(out, "db.env\tdotenv\t"+r1+", "+r2+"\tNOT the expected recipients: extra "+r2) ||
		!strings.Contains(errOut, "1 file(s) fail the check: "+filepath.Join(apps, "secrets", "db.env")) {
		t.Errorf("extra: code %d\n%s%s", code, out, errOut)
	}
	// The same set from a key file, by $BERTH_AGE_KEY_FILE.
	t.Setenv("BERTH_AGE_KEY_FILE", k1)
	if code, out, _ := runBerth("secrets", "check", apps); code != exitError || !strings.Contains(out, "extra "+r2) {
		t.Errorf("key file: code %d\n%s", code, out)
	}
	t.Setenv("BERTH_AGE_KEY_FILE", "")
	// Expected {r1, r2}: web.enc.yaml misses r2.
	if code, out, _ := runBerth("secrets", "check", "--age-recipient", r1, "--age-recipient", r2, apps); code != exitError || !strings.Contains(out, "web.enc.yaml\tyaml\t"+r1+"\tNOT the expected recipients: missing "+r2) {
		t.Errorf("missing: code %d\n%s", code, out)
	}
	// A plaintext *.enc.* file is a secret about to leak.
	os.WriteFile(filepath.Join(apps, "secrets", "new.enc.yaml"), []byte("password: plain-zz9\n"), 0o644)
	code, out, errOut = runBerth("secrets", "check", apps)
	if code != exitError || !strings.Contains(out, "new.enc.yaml: not encrypted with SOPS") || strings.Contains(out+errOut, "plain-zz9") {
		t.Errorf("plaintext: code %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := runBerth("secrets", "check", "--age-recipient", "age1bogus", apps); code != exitError || !strings.Contains(errOut, "--age-recipient") {
		t.Errorf("bad recipient: code %d %s", code, errOut)
	}
}

// sopsBin is the test environment's sops CLI (see testlxd.SOPS).
func sopsBin(t *testing.T) string { return testlxd.SOPS(t) }

func sopsRun(t *testing.T, bin string, keyFile string, args ...string) (string, error) {
	t.Helper()
	c := exec.Command(bin, args...)
	c.Env = append(os.Environ(), "SOPS_AGE_KEY_FILE="+keyFile, "SOPS_DISABLE_VERSION_CHECK=1")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return string(out), fmt.Errorf("%v: %s", err, stderr.String())
	}
	return string(out), nil
}

// TestSecretsRotateWithSOPS: a file the sops CLI wrote is rotated by berth
// (add a key, then remove the old one); sops decrypts the result to the
// same values with the new key only.
func TestSecretsRotateWithSOPS(t *testing.T) {
	testlxd.Short(t)
	bin := sopsBin(t)
	dir := t.TempDir()
	k1, r1 := ageKeyFile(t, dir, "old.txt")
	k2, r2 := ageKeyFile(t, dir, "new.txt")
	f := filepath.Join(dir, "web.enc.yaml")
	os.WriteFile(f, []byte(secretPlain), 0o640)
	if _, err := sopsRun(t, bin, k1, "encrypt", "--in-place", "--age", r1, f); err != nil {
		t.Fatal(err)
	}
	before, err := sopsRun(t, bin, k1, "decrypt", f)
	if err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runBerth("secrets", "rotate", "--age-key-file", k1, "--add", r2, f); code != 0 || !strings.Contains(out, "re-encrypted") {
		t.Fatalf("add: code %d\n%s%s", code, out, errOut)
	}
	if got, err := sopsRun(t, bin, k2, "decrypt", f); err != nil || got != before {
		t.Fatalf("sops decrypt with the added key: %v\n%s", err, got)
	}
	if code, out, errOut := runBerth("secrets", "rotate", "--age-key-file", k2, "--remove", r1, f); code != 0 {
		t.Fatalf("remove: code %d\n%s%s", code, out, errOut)
	}
	if got, err := sopsRun(t, bin, k2, "decrypt", f); err != nil || got != before {
		t.Fatalf("sops decrypt after removing the old key: %v\n%s", err, got)
	}
	if _, err := sopsRun(t, bin, k1, "decrypt", f); err == nil {
		t.Error("the removed key still decrypts the file")
	}
	if st, _ := os.Stat(f); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want the file's 0640 kept", st.Mode().Perm())
	}
	// The gate agrees: encrypted to exactly {r2}.
	if code, out, _ := runBerth("secrets", "check", "--age-recipient", r2, f); code != 0 {
		t.Errorf("check after rotation: code %d\n%s", code, out)
	}
}

// TestSecretsRotateAllOrNothing: a file no key opens stops the rotation
// before any file is written, naming the file and its recipients.
func TestSecretsRotateAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	k1, r1 := ageKeyFile(t, dir, "k1.txt")
	_, r2 := ageKeyFile(t, dir, "k2.txt")
	_, r3 := ageKeyFile(t, dir, "k3.txt")
	a, b := filepath.Join(dir, "a.enc.yaml"), filepath.Join(dir, "b.enc.yaml")
	writeEncrypted(t, a, secretPlain, r1)
	writeEncrypted(t, b, secretPlain, r2)
	origA, _ := os.ReadFile(a)
	code, out, errOut := runBerth("secrets", "rotate", "--age-key-file", k1, "--add", r3, a, b)
	if code != exitError || !strings.Contains(errOut, b+": no age key opens it: it is encrypted to "+r2) || strings.Contains(out+errOut, "hunter2") {
		t.Errorf("code %d\n%s%s", code, out, errOut)
	}
	if now, _ := os.ReadFile(a); !bytes.Equal(now, origA) {
		t.Error("a.enc.yaml was rewritten though the rotation failed")
	}
}

// TestSecretsEditWithSOPS: edit runs $EDITOR on a private 0600 file in a
// 0700 folder, encrypts the change so that sops reads it, and leaves no
// temporary file behind.
func TestSecretsEditWithSOPS(t *testing.T) {
	testlxd.Short(t)
	bin := sopsBin(t)
	dir := t.TempDir()
	k1, r1 := ageKeyFile(t, dir, "k.txt")
	f := filepath.Join(dir, "web.enc.yaml")
	os.WriteFile(f, []byte(secretPlain), 0o600)
	if _, err := sopsRun(t, bin, k1, "encrypt", "--in-place", "--age", r1, f); err != nil {
		t.Fatal(err)
	}
	seen := filepath.Join(dir, "seen")
	editor := filepath.Join(dir, "editor.sh")
	os.WriteFile(editor, []byte(`#!/bin/sh
echo "$1 $(stat -c %a "$1") $(stat -c %a "$(dirname "$1")")" >`+seen+`
sed -i 's/hunter2-zz9/changed-pw/' "$1"
`), 0o755)
	t.Setenv("EDITOR", editor)
	code, out, errOut := runBerth("secrets", "edit", "--age-key-file", k1, f)
	if code != 0 || strings.Contains(out+errOut, "hunter2") {
		t.Fatalf("code %d\n%s%s", code, out, errOut)
	}
	got, err := sopsRun(t, bin, k1, "decrypt", f)
	if err != nil || !strings.Contains(got, "password: changed-pw") || !strings.Contains(got, "user: app") {
		t.Fatalf("sops decrypt after edit: %v\n%s", err, got)
	}
	s, _ := os.ReadFile(seen)
	parts := strings.Fields(string(s))
	if len(parts) != 3 || parts[1] != "600" || parts[2] != "700" {
		t.Fatalf("editor saw %q, want a 0600 file in a 0700 folder", s)
	}
	if _, err := os.Stat(filepath.Dir(parts[0])); !os.IsNotExist(err) {
		t.Errorf("temporary folder %s left behind (%v)", filepath.Dir(parts[0]), err)
	}
	// An editor that fails leaves the file as it was, and no temp file.
	before, _ := os.ReadFile(f)
	t.Setenv("EDITOR", "false")
	if code, _, errOut := runBerth("secrets", "edit", "--age-key-file", k1, f); code != exitError || !strings.Contains(errOut, "$EDITOR (false) failed") {
		t.Errorf("failing editor: code %d %s", code, errOut)
	}
	if after, _ := os.ReadFile(f); !bytes.Equal(before, after) {
		t.Error("a failed edit changed the file")
	}
}
