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
