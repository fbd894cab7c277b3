package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The spec folder itself follows the spec tree's symlink policy on disk, as
// in Git: a --dir that is (or passes through) a symlink, or leaves the
// repository, is refused, and nothing from its target is read or echoed.
func TestValidateRefusesASymlinkedOrEscapingDir(t *testing.T) {
	base := t.TempDir()
	repo, outside := filepath.Join(base, "repo"), filepath.Join(base, "outside")
	for _, d := range []string{repo, outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := "apiVersion: berth/v1\nkind: App\nmetadata:\n  name: SECRET-CONTENT\n"
	if err := os.WriteFile(filepath.Join(outside, "x.yaml"), []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(repo, "lnk")); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]string{
		"lnk":        "is a symlink",
		"lnk/sub":    "is a symlink",
		"../outside": "must be a folder inside the repository",
		outside:      "must be a folder inside the repository",
	} {
		code, out, errOut := berth(t, "validate", "--dir", dir, repo)
		if code != exitError || !strings.Contains(errOut, want) || strings.Contains(out+errOut, "SECRET") {
			t.Errorf("--dir %s: exit %d\n%s%s", dir, code, out, errOut)
		}
	}
}

// Provision files are read from the repository root wherever the specs
// are: on disk (from the spec folder or the work tree, uncommitted edits
// included) and from a Git revision; a symlinked one is refused either way.
func TestValidateReadsProvisionFilesFromTheRepository(t *testing.T) {
	r := newRepo(t)
	r.write("specs/sys.yaml", `apiVersion: berth/v1
kind: App
metadata: {name: sys}
spec:
  system:
    image: berth/busybox
    provision:
      files: [{source: files/motd, path: /etc/motd}]
      run: [/bin/sh, -c, "cat /etc/motd"]
`)
	r.write("files/motd", "hello\n")
	r.commit("provision")
	for _, args := range [][]string{
		{"validate", filepath.Join(r.dir, "specs")},
		{"validate", "--dir", "specs", r.dir},
		{"validate", "--dir", "specs", "--rev", "HEAD", r.dir},
	} {
		if code, out, errOut := berth(t, args...); code != 0 {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	if err := os.Remove(filepath.Join(r.dir, "files/motd")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(r.dir, "files/motd")); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := berth(t, "validate", "--dir", "specs", r.dir)
	if code != exitError || !strings.Contains(out+errOut, `"files/motd" is a symbolic link`) || strings.Contains(out+errOut, "root:") {
		t.Errorf("a symlinked provision file on disk: exit %d\n%s%s", code, out, errOut)
	}
	r.commit("link")
	code, out, errOut = berth(t, "validate", "--dir", "specs", "--rev", "HEAD", r.dir)
	if code != exitError || !strings.Contains(out+errOut, `"files/motd" is a symbolic link`) {
		t.Errorf("a symlinked provision file in Git: exit %d\n%s%s", code, out, errOut)
	}
}
