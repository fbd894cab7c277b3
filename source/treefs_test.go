package source

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/berth-gitops/berth/spec"
)

// provisionRepo makes a repository holding specs and the files they
// provision, with links to a file outside it, to a file and to a folder
// inside it, and a file over MaxTreeFileSize.
func provisionRepo(t *testing.T) (*gitRepo, string) {
	t.Helper()
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := newGitRepo(t)
	g.write("specs/web.yaml", `apiVersion: berth/v1
kind: App
metadata: {name: web}
spec:
  system:
    image: debian
    provision:
      files:
        - {source: etc/motd, path: /etc/motd}
        - {source: scripts/setup.sh, path: /usr/local/bin/setup, mode: "0755"}
      run: [/usr/local/bin/setup]
`)
	g.write("specs/bad.yaml", `apiVersion: berth/v1
kind: App
metadata: {name: bad}
spec:
  system:
    image: debian
    provision:
      files:
        - {source: etc/secret, path: /a}
        - {source: linked/motd, path: /b}
        - {source: big, path: /c}
`)
	g.write("etc/motd", "hello\n")
	g.write("scripts/setup.sh", "#!/bin/sh\necho set up\n")
	if err := os.Chmod(filepath.Join(g.dir, "scripts/setup.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	g.write("big", strings.Repeat("x", MaxTreeFileSize+1))
	for name, target := range map[string]string{
		"etc/secret":    outside,
		"etc/motd-link": "motd",
		"linked":        "etc",
	} {
		if err := os.Symlink(target, filepath.Join(g.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return g, g.commit("provision")
}

func TestTreeFS(t *testing.T) {
	g, sha := provisionRepo(t)
	r, err := Open(context.Background(), g.dir)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := r.TreeFS(sha)
	if err != nil {
		t.Fatal(err)
	}
	// The whole tree is there, from the root, not only YAML files.
	if b, err := fs.ReadFile(fsys, "etc/motd"); err != nil || string(b) != "hello\n" {
		t.Errorf("etc/motd = %q, %v", b, err)
	}
	fi, err := fs.Stat(fsys, "scripts/setup.sh")
	if err != nil || fi.Size() != int64(len("#!/bin/sh\necho set up\n")) || fi.Mode() != 0o555 || fi.Name() != "setup.sh" {
		t.Errorf("Stat(scripts/setup.sh) = %v, %v", fi, err)
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "big etc linked scripts specs" {
		t.Errorf("ReadDir(.) = %s", got)
	}
	// Links are links: listed, never opened, never followed.
	for _, l := range []string{"etc/secret", "etc/motd-link", "linked"} {
		fi, err := fs.Stat(fsys, l)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Errorf("Stat(%s) = %v, %v; want a symlink", l, fi, err)
		}
		if b, err := fs.ReadFile(fsys, l); !errors.Is(err, ErrSymlink) || strings.Contains(string(b), secret) {
			t.Errorf("ReadFile(%s) = %q, %v; want ErrSymlink", l, b, err)
		}
		if _, err := fsys.Open(l); !errors.Is(err, ErrSymlink) {
			t.Errorf("Open(%s): %v, want ErrSymlink", l, err)
		}
	}
	if _, err := fs.ReadFile(fsys, "linked/motd"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFile through a linked folder: %v, want fs.ErrNotExist", err)
	}
	if _, err := fs.ReadDir(fsys, "linked"); err == nil {
		t.Error("ReadDir of a linked folder succeeded")
	}
	// A large file has its size, and cannot be opened.
	if fi, err := fs.Stat(fsys, "big"); err != nil || fi.Size() != MaxTreeFileSize+1 {
		t.Errorf("Stat(big) = %v, %v", fi, err)
	}
	if _, err := fs.ReadFile(fsys, "big"); !errors.Is(err, ErrTreeFileTooLarge) {
		t.Errorf("ReadFile(big): %v, want ErrTreeFileTooLarge", err)
	}
	if _, err := fs.Stat(fsys, "../etc/motd"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Stat(../etc/motd): %v, want fs.ErrInvalid", err)
	}
	if _, err := r.TreeFS(strings.Repeat("0", 40)); !errors.Is(err, ErrRevisionNotFound) {
		t.Errorf("TreeFS of no commit: %v", err)
	}
}

// Without links and large files, the tree is a well-behaved fs.FS.
func TestTreeFSConforms(t *testing.T) {
	g := newGitRepo(t)
	g.write("a.txt", "a\n")
	g.write("d/b.yaml", "b\n")
	g.write("d/e/c", "c\n")
	g.write("d-x", "dash\n") // sorts between d and d/ in Git's order
	sha := g.commit("files")
	r, err := Open(context.Background(), g.dir)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := r.TreeFS(sha)
	if err != nil {
		t.Fatal(err)
	}
	if err := fstest.TestFS(fsys, "a.txt", "d/b.yaml", "d/e/c", "d-x"); err != nil {
		t.Error(err)
	}
}

// Specs loaded from a commit read their provision files from the same
// commit's tree, with the symlink policy and the size limit.
func TestProvisionFromGit(t *testing.T) {
	if MaxTreeFileSize != spec.MaxProvisionFileSize {
		t.Errorf("MaxTreeFileSize = %d, spec.MaxProvisionFileSize = %d: they must agree", MaxTreeFileSize, spec.MaxProvisionFileSize)
	}
	g, sha := provisionRepo(t)
	// The work tree moves on; the commit is what is read.
	g.write("etc/motd", "changed, not committed\n")
	r, err := Open(context.Background(), g.dir)
	if err != nil {
		t.Fatal(err)
	}
	specs, err := r.SpecFS(sha, "specs")
	if err != nil {
		t.Fatal(err)
	}
	files, err := r.TreeFS(sha)
	if err != nil {
		t.Fatal(err)
	}
	res, err := spec.Load(t.Context(), specs, spec.Options{Files: files})
	if err != nil {
		t.Fatal(err)
	}
	checkProvisionLoad(t, res, "hello\n")

	// The daemon's snapshot carries the same tree.
	s, err := NewGitSource(GitOptions{URL: g.dir, Dir: "specs"})
	if err != nil {
		t.Fatal(err)
	}
	snap, _, err := s.Sync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	res, err = spec.Load(t.Context(), snap.FS, spec.Options{Files: snap.Files})
	if err != nil {
		t.Fatal(err)
	}
	checkProvisionLoad(t, res, "hello\n")

	// And the work tree reads the files as saved, links refused all the same.
	wt, err := WorktreeSnapshot(g.dir, "specs")
	if err != nil {
		t.Fatal(err)
	}
	res, err = spec.Load(t.Context(), wt.FS, spec.Options{Files: wt.Files})
	if err != nil {
		t.Fatal(err)
	}
	checkProvisionLoad(t, res, "changed, not committed\n")
}

func checkProvisionLoad(t *testing.T, res *spec.Result, motd string) {
	t.Helper()
	if len(res.Apps) != 1 || res.Apps[0].Metadata.Name != "web" {
		t.Fatalf("apps %v, diagnostics:\n%v", res.Apps, res.Diagnostics)
	}
	p := res.Apps[0].Spec.System.Provision
	if string(p.Files[0].Content) != motd || string(p.Files[1].Content) != "#!/bin/sh\necho set up\n" || p.Files[1].Mode != "0755" {
		t.Errorf("provision files: %q %q", p.Files[0].Content, p.Files[1].Content)
	}
	var got []string
	for _, d := range res.Diagnostics {
		got = append(got, d.String())
	}
	want := []string{
		`bad.yaml:9:20: spec.system.provision.files[0].source: "etc/secret" is a symbolic link; berth never follows symlinks in provision files: put the file or folder itself there`,
		`bad.yaml:10:20: spec.system.provision.files[1].source: "linked" is a symbolic link; berth never follows symlinks in provision files: put the file or folder itself there`,
		`bad.yaml:11:20: spec.system.provision.files[2].source: "big" is too large: 4194305 bytes, a provision file may have at most 4 MiB`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("diagnostics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(res.Diagnostics.Error(), secret) {
		t.Error("a link's target reached the diagnostics")
	}
}

// DirFS never follows a link, unlike os.DirFS.
func TestDirFS(t *testing.T) {
	g, _ := provisionRepo(t)
	fsys := DirFS(g.dir)
	if b, err := fs.ReadFile(fsys, "etc/motd"); err != nil || string(b) != "hello\n" {
		t.Errorf("etc/motd = %q, %v", b, err)
	}
	for _, l := range []string{"etc/secret", "etc/motd-link", "linked"} {
		fi, err := fs.Stat(fsys, l)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Errorf("Stat(%s) = %v, %v; want a symlink", l, fi, err)
		}
		if b, err := fs.ReadFile(fsys, l); !errors.Is(err, ErrSymlink) || strings.Contains(string(b), secret) {
			t.Errorf("ReadFile(%s) = %q, %v; want ErrSymlink", l, b, err)
		}
	}
	entries, err := fs.ReadDir(fsys, "etc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if (e.Name() == "secret" || e.Name() == "motd-link") != (e.Type()&fs.ModeSymlink != 0) {
			t.Errorf("ReadDir: %s has type %v", e.Name(), e.Type())
		}
	}
	if _, err := fsys.Open("../x"); !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("Open(../x): %v, want fs.ErrInvalid", err)
	}
}

// Folders and files are read when asked for: a git gc in between (which
// replaces the pack files the repository had loaded) must not break it.
func TestTreeFSSurvivesGC(t *testing.T) {
	g := newGitRepo(t)
	g.write("etc/a", "a\n")
	g.write("etc/sub/b", "b\n")
	sha := g.commit("two")
	g.run("gc", "-q", "--prune=now")
	r, err := Open(context.Background(), g.dir)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := r.TreeFS(sha)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := fs.ReadFile(fsys, "etc/a"); err != nil || string(b) != "a\n" {
		t.Fatalf("etc/a = %q, %v", b, err)
	}
	g.write("etc/c", "c\n")
	g.commit("three")
	g.run("gc", "-q", "--prune=now") // a new pack replaces the one read
	if b, err := fs.ReadFile(fsys, "etc/sub/b"); err != nil || string(b) != "b\n" {
		t.Fatalf("after gc: etc/sub/b = %q, %v", b, err)
	}
}
