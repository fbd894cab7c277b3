package source

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Tracked answers as Git would: a file in the index is in the next
// commit, ignored or not; any other is either ignored (by the last rule
// that matches, a folder rule covering what is under it) or untracked.
func TestTrackedMatchesGit(t *testing.T) {
	g := newGitRepo(t)
	g.write(".gitignore", "# local files\n*.conf\n!keep.conf\nsecret/\n")
	g.write("etc/.gitignore", "local-*\n")
	g.write("etc/motd", "hi\n")
	g.write("etc/app.conf", "x\n")
	g.write("etc/keep.conf", "x\n")
	g.write("etc/forced.conf", "x\n")
	g.write("etc/local-db", "x\n")
	g.write("secret/key", "x\n")
	g.write("secret/keep.conf", "x\n")
	g.write("new", "x\n")
	g.write("excluded", "x\n")
	g.write(".git/info/exclude", "excluded\n")
	g.run("add", ".gitignore", "etc/.gitignore", "etc/motd")
	g.run("add", "-f", "etc/forced.conf")
	g.run("commit", "-q", "-m", "some")
	tr, err := ReadTracked(g.dir)
	if err != nil || tr == nil {
		t.Fatalf("ReadTracked: %v, %v", tr, err)
	}
	const notTracked = "is not tracked by Git, so no commit holds it yet: plan, apply, the daemon and validate --rev will not find it; git add and commit it"
	ignored := func(rule string) string {
		return "is ignored by Git (" + rule + "), so no commit holds it: plan, apply, the daemon and validate --rev will not find it; commit it with git add -f, or stop ignoring it"
	}
	for name, want := range map[string]string{
		"etc/motd":         "",
		"etc/forced.conf":  "", // added with -f: tracked wins
		"etc/app.conf":     ignored(`.gitignore:2: "*.conf"`),
		"etc/keep.conf":    notTracked, // re-included by !keep.conf
		"etc/local-db":     ignored(`etc/.gitignore:1: "local-*"`),
		"secret/key":       ignored(`.gitignore:4: "secret/"`),
		"secret/keep.conf": ignored(`.gitignore:4: "secret/"`), // its folder is ignored: no re-including
		"new":              notTracked,
		"excluded":         ignored(`.git/info/exclude:1: "excluded"`),
	} {
		if got := tr.NotInGit(name); got != want {
			t.Errorf("%s: %q\nwant %q", name, got, want)
		}
		// Git agrees on what is ignored.
		if gitIgnored := gitCheckIgnore(g, name); gitIgnored != strings.HasPrefix(want, "is ignored") {
			t.Errorf("%s: git check-ignore says ignored %v", name, gitIgnored)
		}
	}

	// A linked work tree reads its own index and the repository's excludes.
	linked := filepath.Join(t.TempDir(), "linked")
	g.run("worktree", "add", "-q", linked)
	if err := os.WriteFile(filepath.Join(linked, "excluded"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lt, err := ReadTracked(linked)
	if err != nil || lt == nil {
		t.Fatalf("ReadTracked of a linked work tree: %v, %v", lt, err)
	}
	if got := lt.NotInGit("etc/motd"); got != "" {
		t.Errorf("linked etc/motd: %q", got)
	}
	if got := lt.NotInGit("excluded"); got != ignored(`.git/info/exclude:1: "excluded"`) {
		t.Errorf("linked excluded: %q", got)
	}

	// Outside any repository there is no commit to miss a file.
	if tr, err := ReadTracked(t.TempDir()); tr != nil || err != nil {
		t.Errorf("ReadTracked outside a repository: %v, %v", tr, err)
	}
}

// gitCheckIgnore reports whether git check-ignore says name is ignored.
func gitCheckIgnore(g *gitRepo, name string) bool {
	cmd := exec.Command("git", "check-ignore", "-q", name)
	cmd.Dir = g.dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		g.t.Fatalf("git check-ignore: %v", err)
	}
	return err == nil
}
