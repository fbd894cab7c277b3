package source

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

const secret = "TOP-SECRET-CONTENT"

// linkTree makes a repository whose spec folder apps holds a regular
// file, an executable one, a file over the size limit, a link to a file
// outside the repository (whose content is a secret), a link inside the
// folder, a dangling link and a link to a folder.
func linkTree(t *testing.T) (*gitRepo, string) {
	t.Helper()
	outside := filepath.Join(t.TempDir(), "secret.yaml")
	if err := os.WriteFile(outside, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := newGitRepo(t)
	g.write("apps/web.yaml", "web\n")
	g.write("apps/run.yaml", "run\n")
	if err := os.Chmod(filepath.Join(g.dir, "apps/run.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	g.write("apps/big.yaml", strings.Repeat("x", MaxSpecFileSize+1))
	g.write("apps/notes.txt", "not a spec\n")
	g.write("apps/sub/db.yml", "db\n")
	for name, target := range map[string]string{
		"apps/outside.yaml":  outside,
		"apps/inside.yaml":   "web.yaml",
		"apps/dangling.yaml": "nowhere.yaml",
		"apps/dir.yaml":      "sub",
	} {
		if err := os.Symlink(target, filepath.Join(g.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return g, g.commit("links")
}

// checkSpecTree checks the spec FS of linkTree, from Git or from disk:
// symlinks are symlinks (never followed, never read), sizes are known
// without reading, and a too large file cannot be opened.
func checkSpecTree(t *testing.T, fsys fs.FS) {
	t.Helper()
	links := []string{"outside.yaml", "inside.yaml", "dangling.yaml", "dir.yaml"}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]fs.FileMode{}
	for _, e := range entries {
		types[e.Name()] = e.Type()
	}
	for _, l := range links {
		if types[l] != fs.ModeSymlink {
			t.Errorf("ReadDir: %s has type %v, want a symlink", l, types[l])
		}
		fi, err := fs.Stat(fsys, l)
		if err != nil {
			t.Errorf("Stat(%s): %v", l, err)
			continue
		}
		if fi.Mode()&fs.ModeSymlink == 0 || fi.Mode().IsRegular() || fi.IsDir() {
			t.Errorf("Stat(%s).Mode() = %v, want a symlink", l, fi.Mode())
		}
		for _, read := range []func() ([]byte, error){
			func() ([]byte, error) { return fs.ReadFile(fsys, l) },
			func() ([]byte, error) {
				f, err := fsys.Open(l)
				if err != nil {
					return nil, err
				}
				defer f.Close()
				return nil, errors.New("opened")
			},
		} {
			data, err := read()
			if !errors.Is(err, ErrSymlink) {
				t.Errorf("read %s = %q, %v; want ErrSymlink", l, data, err)
			}
			if err != nil && (strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "nowhere") || strings.Contains(err.Error(), string(filepath.Separator)+"secret")) {
				t.Errorf("read %s: the error shows the link's target: %v", l, err)
			}
		}
	}
	if types["web.yaml"] != 0 || types["run.yaml"] != 0 || types["big.yaml"] != 0 || types["sub"] != fs.ModeDir {
		t.Errorf("types = %v", types)
	}
	if _, ok := types["notes.txt"]; ok {
		t.Errorf("a non-YAML file is listed")
	}
	big, err := fs.Stat(fsys, "big.yaml")
	if err != nil || big.Size() != MaxSpecFileSize+1 || !big.Mode().IsRegular() {
		t.Errorf("Stat(big.yaml) = %v, %v", big, err)
	}
	if _, err := fs.ReadFile(fsys, "big.yaml"); !errors.Is(err, ErrFileTooLarge) {
		t.Errorf("ReadFile(big.yaml) = %v, want ErrFileTooLarge", err)
	}
	if fi, err := fs.Stat(fsys, "web.yaml"); err != nil || fi.Size() != 4 {
		t.Errorf("Stat(web.yaml) = %v, %v", fi, err)
	}
	// Walking visits every entry and never enters a link to a folder.
	var walked []string
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		walked = append(walked, p)
		return nil
	})
	if err != nil {
		t.Fatalf("WalkDir: %v", err)
	}
	want := ". big.yaml dangling.yaml dir.yaml inside.yaml outside.yaml run.yaml sub sub/db.yml web.yaml"
	if got := strings.Join(walked, " "); got != want {
		t.Errorf("walked %s\nwant   %s", got, want)
	}
	for name, content := range map[string]string{"web.yaml": "web\n", "run.yaml": "run\n", "sub/db.yml": "db\n"} {
		if b, err := fs.ReadFile(fsys, name); err != nil || string(b) != content {
			t.Errorf("ReadFile(%s) = %q, %v", name, b, err)
		}
	}
	// Everything but the links and the big file passes the standard checks.
	if err := fstest.TestFS(fsys, "web.yaml", "run.yaml", "sub/db.yml"); err != nil {
		for _, line := range strings.Split(err.Error(), "\n")[1:] {
			if !strings.Contains(line, "big.yaml: Open: open big.yaml: is larger") && !strings.Contains(line, ".yaml: is a symbolic link") {
				t.Errorf("TestFS: %s", line)
			}
		}
	}
}

// fs.Sub of a spec FS keeps the same answers.
func TestSpecFSSub(t *testing.T) {
	g, _ := linkTree(t)
	g.run("mv", "apps", "top")
	g.run("commit", "-q", "-m", "nest")
	sha := g.run("rev-parse", "HEAD")
	r, err := Open(context.Background(), g.dir)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := r.SpecFS(sha, "")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := fs.Sub(fsys, "top")
	if err != nil {
		t.Fatal(err)
	}
	checkSpecTree(t, sub)
	if _, err := fs.Sub(fsys, "nope"); err == nil {
		t.Error("Sub(nope) succeeded")
	}
}

// A committed symlink used to be read as a file holding its target path.
func TestSpecFSSymlinksAndSizes(t *testing.T) {
	g, sha := linkTree(t)
	r, err := Open(context.Background(), g.dir)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := r.SpecFS(sha, "apps")
	if err != nil {
		t.Fatal(err)
	}
	checkSpecTree(t, fsys)

	s, err := NewGitSource(GitOptions{URL: g.dir, Dir: "apps"})
	if err != nil {
		t.Fatal(err)
	}
	snap, _, err := s.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkSpecTree(t, snap.FS)

	// A spec folder that is itself a link is not a folder in Git either.
	if err := os.Symlink("apps", filepath.Join(g.dir, "linked")); err != nil {
		t.Fatal(err)
	}
	sha = g.commit("link to the folder")
	if _, err := r.SpecFS(sha, "linked"); !errors.Is(err, ErrSymlink) {
		t.Errorf("SpecFS through a symlinked folder: %v", err)
	}
	if _, err := r.SpecFS(sha, "linked/sub"); err == nil {
		t.Error("SpecFS through a symlinked folder succeeded")
	}
}

func TestWorktreeSnapshotSymlinksAndSizes(t *testing.T) {
	g, _ := linkTree(t)
	snap, err := WorktreeSnapshot(g.dir, "apps")
	if err != nil {
		t.Fatal(err)
	}
	checkSpecTree(t, snap.FS)
}

// Reads happen when a file is opened; a git gc in between (which
// replaces the pack files the repository had loaded) must not break a
// snapshot.
func TestSpecFSSurvivesGC(t *testing.T) {
	g := newGitRepo(t)
	g.write("apps/a.yaml", "a\n")
	g.write("apps/b.yaml", "b\n")
	sha := g.commit("two")
	g.run("gc", "-q", "--prune=now")
	r, err := Open(context.Background(), g.dir)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := r.SpecFS(sha, "apps")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := fs.ReadFile(fsys, "a.yaml"); err != nil || string(b) != "a\n" {
		t.Fatalf("a.yaml = %q, %v", b, err)
	}
	g.write("apps/c.yaml", "c\n")
	g.commit("three")
	g.run("gc", "-q", "--prune=now") // a new pack replaces the one read
	if b, err := fs.ReadFile(fsys, "b.yaml"); err != nil || string(b) != "b\n" {
		t.Fatalf("after gc: b.yaml = %q, %v", b, err)
	}
}

// A committed file name with a control character is read like any other
// (as on disk) instead of failing the whole revision.
func TestSpecFSControlCharacterName(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=a", "GIT_AUTHOR_EMAIL=a@b", "GIT_COMMITTER_NAME=a", "GIT_COMMITTER_EMAIL=a@b", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	run("init", "-q", "-b", "main")
	if err := os.MkdirAll(filepath.Join(dir, "apps"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"ok.yaml", "ev\x1b[31mil.yaml"} {
		if err := os.WriteFile(filepath.Join(dir, "apps", n), []byte("x: 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run("add", "-A")
	run("commit", "-qm", "names")
	r, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.Resolve("HEAD")
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := r.SpecFS(c.SHA, "apps")
	if err != nil {
		t.Fatalf("SpecFS: %v", err)
	}
	if b, err := fs.ReadFile(fsys, "ev\x1b[31mil.yaml"); err != nil || string(b) != "x: 1\n" {
		t.Errorf("read: %q, %v", b, err)
	}
}

// A committed spec file whose name is not UTF-8 cannot be in an fs.FS: the
// revision is refused with the name escaped and the reason, not a bare
// "invalid path".
func TestSpecFSNonUTF8Name(t *testing.T) {
	g := newGitRepo(t)
	g.write("apps/ok.yaml", "x: 1\n")
	g.write("apps/caf\xe9.yaml", "x: 1\n")
	sha := g.commit("names")
	r, err := Open(context.Background(), g.dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.SpecFS(sha, "apps")
	want := `the tree holds a spec file whose path "caf\xe9.yaml" is not valid UTF-8 (or has an empty, "." or ".." part), and berth reads files by UTF-8 names only; rename it`
	if err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("SpecFS: %v\nwant it to end with %s", err, want)
	}
}
