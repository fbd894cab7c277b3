package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// history makes three commits:
//
//	first:  apps/web.yaml=v1, apps/db.yaml=d1, run.sh (executable), a-b.yaml, a/x.yaml
//	second: apps/web.yaml=v2, adds apps/cache.yaml, run.sh changed
//	third:  apps/db.yaml=d2
func history(t *testing.T) (g *gitRepo, first, second, third string) {
	g = newGitRepo(t)
	g.write("apps/web.yaml", "v1\n")
	g.write("apps/db.yaml", "d1\n")
	g.write("run.sh", "#!/bin/sh\necho 1\n")
	if err := os.Chmod(filepath.Join(g.dir, "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Names that sort differently as files and folders, to catch a tree
	// written in the wrong order.
	g.write("a-b.yaml", "x\n")
	g.write("a.yaml", "x\n")
	g.write("a/x.yaml", "x\n")
	first = g.commit("first")
	g.write("apps/web.yaml", "v2\n")
	g.write("apps/cache/cache.yaml", "c\n")
	g.write("run.sh", "#!/bin/sh\necho 2\n")
	second = g.commit("second: scale web")
	g.write("apps/db.yaml", "d2\n")
	third = g.commit("third")
	return
}

func (g *gitRepo) read(name string) string {
	g.t.Helper()
	b, err := os.ReadFile(filepath.Join(g.dir, name))
	if err != nil {
		return "<missing>"
	}
	return string(b)
}

// assertClean checks with the git CLI, not go-git, that the work tree
// and index match HEAD, and that the repository is sound.
func (g *gitRepo) assertClean() {
	g.t.Helper()
	if st := g.run("status", "--porcelain"); st != "" {
		g.t.Errorf("git status not clean:\n%s", st)
	}
	g.run("fsck", "--strict", "--no-progress")
}

var author = RevertOptions{AuthorName: "Rollback Bot", AuthorEmail: "bot@example.org"}

func TestRevertOne(t *testing.T) {
	g, first, second, third := history(t)
	opts := author
	opts.Commits = []string{second[:8]}
	head, reverted, err := Revert(context.Background(), g.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(reverted) != 1 || reverted[0].SHA != second {
		t.Fatalf("reverted = %+v", reverted)
	}
	if got := g.run("rev-parse", "HEAD"); got != head.SHA {
		t.Fatalf("HEAD = %s, Revert said %s", got, head.SHA)
	}
	if p := g.run("rev-parse", "HEAD^"); p != third {
		t.Errorf("parent = %s, want %s", p, third)
	}
	msg := g.run("log", "-1", "--format=%B")
	if !strings.HasPrefix(msg, `Revert "second: scale web"`) || !strings.Contains(msg, "This reverts commit "+second) {
		t.Errorf("message = %q", msg)
	}
	if a := g.run("log", "-1", "--format=%an <%ae>"); a != "Rollback Bot <bot@example.org>" {
		t.Errorf("author = %s", a)
	}
	if g.read("apps/web.yaml") != "v1\n" || g.read("apps/db.yaml") != "d2\n" || g.read("apps/cache/cache.yaml") != "<missing>" {
		t.Errorf("files: web=%q db=%q cache=%q", g.read("apps/web.yaml"), g.read("apps/db.yaml"), g.read("apps/cache/cache.yaml"))
	}
	if _, err := os.Stat(filepath.Join(g.dir, "apps/cache")); !os.IsNotExist(err) {
		t.Errorf("emptied folder left behind: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(g.dir, "run.sh")); err != nil || fi.Mode()&0o100 == 0 || g.read("run.sh") != "#!/bin/sh\necho 1\n" {
		t.Errorf("run.sh: %v %v %q", fi.Mode(), err, g.read("run.sh"))
	}
	g.assertClean()
	// The result is what git computes: the second commit's changes are gone.
	if d := g.run("diff", "--stat", first, "HEAD", "--", "apps/web.yaml", "apps/cache", "run.sh"); d != "" {
		t.Errorf("diff to first:\n%s", d)
	}
}

func TestRevertSeveralNewestFirst(t *testing.T) {
	g, first, second, third := history(t)
	g.write("notes.txt", "untracked, kept\n")
	opts := author
	opts.Commits = []string{second, third} // given oldest first
	head, reverted, err := Revert(context.Background(), g.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(reverted) != 2 || reverted[0].SHA != third || reverted[1].SHA != second {
		t.Fatalf("reverted = %+v, want third then second", reverted)
	}
	if subj := g.run("log", "-2", "--format=%s"); subj != "Revert \"second: scale web\"\nRevert \"third\"" {
		t.Errorf("log = %q", subj)
	}
	// Both undone: the tree is the first commit's, hash for hash.
	if g.run("rev-parse", "HEAD^{tree}") != g.run("rev-parse", first+"^{tree}") {
		t.Errorf("tree differs from first: %s", g.run("diff", "--stat", first, head.SHA))
	}
	if g.read("notes.txt") != "untracked, kept\n" {
		t.Errorf("untracked file lost")
	}
	if st := g.run("status", "--porcelain"); st != "?? notes.txt" {
		t.Errorf("status = %q", st)
	}
}

func TestRevertTo(t *testing.T) {
	g, first, second, third := history(t)
	opts := author
	opts.To = "HEAD~2"
	head, reverted, err := Revert(context.Background(), g.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if g.run("rev-parse", "HEAD^{tree}") != g.run("rev-parse", first+"^{tree}") {
		t.Errorf("tree is not HEAD~2's")
	}
	if g.run("rev-parse", "HEAD^") != third || head.SHA != g.run("rev-parse", "HEAD") {
		t.Errorf("not a new commit on top")
	}
	if len(reverted) != 2 || reverted[0].SHA != third || reverted[1].SHA != second {
		t.Errorf("reverted = %+v", reverted)
	}
	msg := g.run("log", "-1", "--format=%B")
	if !strings.HasPrefix(msg, "Roll back to "+first[:12]+" (first)") || !strings.Contains(msg, second[:12]+" second: scale web") || !strings.Contains(msg, third[:12]+" third") {
		t.Errorf("message = %q", msg)
	}
	g.assertClean()
	if g.read("apps/web.yaml") != "v1\n" || g.read("apps/db.yaml") != "d1\n" {
		t.Errorf("files not rolled back")
	}

	// Rolling back to where we are, or to something not in the history.
	opts.To = "HEAD"
	if _, _, err := Revert(context.Background(), g.dir, opts); err == nil || !strings.Contains(err.Error(), "nothing to roll back") {
		t.Errorf("to HEAD: %v", err)
	}
	opts.To = first // same tree as HEAD now
	if _, _, err := Revert(context.Background(), g.dir, opts); err == nil || !strings.Contains(err.Error(), "nothing to roll back") {
		t.Errorf("to same tree: %v", err)
	}
	g.run("checkout", "-q", "-b", "side", second)
	g.write("side.yaml", "s\n")
	side := g.commit("side")
	g.run("checkout", "-q", "main")
	opts.To = side
	if _, _, err := Revert(context.Background(), g.dir, opts); err == nil || !strings.Contains(err.Error(), "not an earlier commit") {
		t.Errorf("to another branch: %v", err)
	}
}

func TestRevertRefusals(t *testing.T) {
	ctx := context.Background()
	g, _, second, _ := history(t)
	before := g.run("rev-parse", "HEAD")
	nothingWritten := func() {
		t.Helper()
		if h := g.run("rev-parse", "HEAD"); h != before {
			t.Fatalf("HEAD moved to %s", h)
		}
	}

	// Conflict: web.yaml changed again after the commit to revert.
	g.write("apps/web.yaml", "v3\n")
	g.commit("fourth: web v3")
	before = g.run("rev-parse", "HEAD")
	objects := g.run("count-objects")
	opts := author
	opts.Commits = []string{second}
	_, _, err := Revert(ctx, g.dir, opts)
	if err == nil || !strings.Contains(err.Error(), "does not apply cleanly") || !strings.Contains(err.Error(), "apps/web.yaml") {
		t.Fatalf("conflict: %v", err)
	}
	nothingWritten()
	if o := g.run("count-objects"); o != objects {
		t.Errorf("objects written on conflict: %s -> %s", objects, o)
	}
	g.assertClean()

	// Dirty work tree: a modified tracked file, then a staged one.
	g.write("apps/db.yaml", "local edit\n")
	opts.Commits = []string{"HEAD"}
	if _, _, err := Revert(ctx, g.dir, opts); err == nil || !strings.Contains(err.Error(), `uncommitted changes ("apps/db.yaml")`) {
		t.Errorf("dirty: %v", err)
	}
	g.run("add", "apps/db.yaml")
	if _, _, err := Revert(ctx, g.dir, opts); err == nil || !strings.Contains(err.Error(), "uncommitted") {
		t.Errorf("staged: %v", err)
	}
	nothingWritten()
	g.run("reset", "-q", "--hard")

	// An untracked file in the way of a file the revert brings back.
	g.run("rm", "-q", "apps/cache/cache.yaml")
	g.commit("drop cache")
	before = g.run("rev-parse", "HEAD")
	g.write("apps/cache/cache.yaml", "untracked\n")
	opts.Commits = []string{"HEAD"}
	if _, _, err := Revert(ctx, g.dir, opts); err == nil || !strings.Contains(err.Error(), `untracked file "apps/cache/cache.yaml"`) {
		t.Errorf("untracked in the way: %v", err)
	}
	// The ref did not move (the check comes before it).
	nothingWritten()
	if err := os.Remove(filepath.Join(g.dir, "apps/cache/cache.yaml")); err != nil {
		t.Fatal(err)
	}

	// A merge commit.
	g.run("checkout", "-q", "-b", "topic")
	g.write("topic.yaml", "t\n")
	g.commit("topic")
	g.run("checkout", "-q", "main")
	g.write("main.yaml", "m\n")
	g.commit("main side")
	g.run("merge", "-q", "--no-ff", "-m", "merge topic", "topic")
	before = g.run("rev-parse", "HEAD")
	opts.Commits = []string{"HEAD"}
	if _, _, err := Revert(ctx, g.dir, opts); err == nil || !strings.Contains(err.Error(), "merge commit") {
		t.Errorf("merge: %v", err)
	}
	nothingWritten()
	// ...but --to across it works.
	opts.Commits, opts.To = nil, "HEAD~2"
	if _, _, err := Revert(ctx, g.dir, opts); err != nil {
		t.Errorf("--to across a merge: %v", err)
	}
	g.assertClean()

	// Bad arguments.
	for _, o := range []RevertOptions{{}, {To: "HEAD~1", Commits: []string{"HEAD"}}} {
		o.AuthorName, o.AuthorEmail = "a", "b"
		if _, _, err := Revert(ctx, g.dir, o); err == nil {
			t.Errorf("Revert(%+v) accepted", o)
		}
	}
	opts = author
	opts.Commits = []string{"nope"}
	if _, _, err := Revert(ctx, g.dir, opts); err == nil || !strings.Contains(err.Error(), "revision not found") {
		t.Errorf("unknown commit: %v", err)
	}
	if _, _, err := Revert(ctx, t.TempDir(), opts); err == nil || !strings.Contains(err.Error(), "not a Git repository") {
		t.Errorf("not a repo: %v", err)
	}
}

func TestRevertAuthor(t *testing.T) {
	t.Setenv("HOME", t.TempDir()) // no global Git config
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("GIT_AUTHOR_NAME", "")
	t.Setenv("GIT_AUTHOR_EMAIL", "")
	g, _, second, _ := history(t)
	opts := RevertOptions{Commits: []string{second}}
	if _, _, err := Revert(context.Background(), g.dir, opts); err == nil || !strings.Contains(err.Error(), "no author") {
		t.Fatalf("no author: %v", err)
	}
	t.Setenv("GIT_AUTHOR_NAME", "Env Name")
	t.Setenv("GIT_AUTHOR_EMAIL", "env@example.org")
	g.run("config", "user.name", "Config Name") // config wins over env, per field
	if _, _, err := Revert(context.Background(), g.dir, opts); err != nil {
		t.Fatal(err)
	}
	if a := g.run("log", "-1", "--format=%an <%ae>"); a != "Config Name <env@example.org>" {
		t.Errorf("author = %s", a)
	}
}

func TestRevertPush(t *testing.T) {
	g, _, second, _ := history(t)
	bare := filepath.Join(t.TempDir(), "origin.git")
	g.run("clone", "-q", "--bare", g.dir, bare)
	g.run("remote", "add", "origin", bare)
	g.run("fetch", "-q", "origin")
	g.run("branch", "-q", "--set-upstream-to=origin/main", "main")
	opts := author
	opts.Commits = []string{second}
	opts.Push = true
	head, _, err := Revert(context.Background(), g.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := g.run("--git-dir", bare, "rev-parse", "main"); got != head.SHA {
		t.Errorf("origin main = %s, want %s", got, head.SHA)
	}
	// A bare repository gets the commits, with no work tree to update.
	opts.Push = false
	opts.Commits = []string{"HEAD"}
	bh, _, err := Revert(context.Background(), bare, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := g.run("--git-dir", bare, "rev-parse", "main"); got != bh.SHA {
		t.Errorf("bare main = %s, want %s", got, bh.SHA)
	}
	g.run("--git-dir", bare, "fsck", "--strict", "--no-progress")
}

// rollbackFixture: first has a.yaml, m/n.yaml and z.yaml; second changes
// a.yaml and z.yaml and removes m/ (so rolling back to first rewrites
// two files and makes a folder).
func rollbackFixture(t *testing.T) (g *gitRepo, first, second string) {
	g = newGitRepo(t)
	g.write("a.yaml", "a1\n")
	g.write("m/n.yaml", "n1\n")
	g.write("z.yaml", "z1\n")
	first = g.commit("first")
	g.write("a.yaml", "a2\n")
	g.write("z.yaml", "z2\n")
	g.run("rm", "-q", "-r", "m")
	second = g.commit("second")
	return g, first, second
}

// `rollback --to` moved the branch and then failed to update the work
// tree. Now a failure part way puts everything back.
func TestRevertToAllOrNothing(t *testing.T) {
	g, first, second := rollbackFixture(t)
	var done []string
	testHookWorktree = func(op, p string) error {
		if p == "z.yaml" {
			return errors.New("disk on fire")
		}
		done = append(done, op+" "+p)
		return nil
	}
	defer func() { testHookWorktree = nil }()
	opts := author
	opts.To = first
	head, reverted, err := Revert(context.Background(), g.dir, opts)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("Revert = %v", err)
	}
	if head.SHA != "" || reverted != nil {
		t.Errorf("a failed rollback reports a head: %+v %+v", head, reverted)
	}
	if strings.Join(done, ",") != "write a.yaml,write m/n.yaml" {
		t.Fatalf("the failure did not come part way: %v", done)
	}
	if h := g.run("rev-parse", "HEAD"); h != second {
		t.Errorf("HEAD = %s, want %s", h, second)
	}
	if h := g.run("rev-parse", "refs/heads/main"); h != second {
		t.Errorf("main = %s, want %s", h, second)
	}
	if sym := g.run("symbolic-ref", "HEAD"); sym != "refs/heads/main" {
		t.Errorf("HEAD -> %s", sym)
	}
	g.assertClean() // index and files match the old HEAD
	if g.read("a.yaml") != "a2\n" || g.read("z.yaml") != "z2\n" {
		t.Errorf("files: a=%q z=%q", g.read("a.yaml"), g.read("z.yaml"))
	}
	if _, err := os.Lstat(filepath.Join(g.dir, "m")); !os.IsNotExist(err) {
		t.Errorf("folder m left behind: %v", err)
	}

	// And once the fault is gone, the same rollback goes through.
	testHookWorktree = nil
	if _, _, err := Revert(context.Background(), g.dir, opts); err != nil {
		t.Fatal(err)
	}
	g.assertClean()
	if g.read("a.yaml") != "a1\n" || g.read("m/n.yaml") != "n1\n" || g.read("z.yaml") != "z1\n" {
		t.Errorf("not rolled back")
	}
}

// What can be checked before the branch moves is checked: an ignored
// folder where a file must go, an ignored file where a folder must go, a
// symlink the rollback would write through.
func TestRevertChecksTheWorkTreeFirst(t *testing.T) {
	outside := t.TempDir()
	for name, setup := range map[string]func(g *gitRepo){
		"folder in place of a file": func(g *gitRepo) {
			g.write(".gitignore", "*.tmp\n")
			g.commit("ignore")
			g.write("z.yaml", "z2\n") // unchanged content
			if err := os.Remove(filepath.Join(g.dir, "a.yaml")); err != nil {
				t.Fatal(err)
			}
			g.run("rm", "-q", "--cached", "a.yaml")
			g.commit("drop a")
			g.write("a.yaml/x.tmp", "ignored\n")
		},
		"file in place of a folder": func(g *gitRepo) {
			g.write(".gitignore", "/m\n")
			g.commit("ignore m")
			g.write("m", "an ignored file\n")
		},
		"symlink in place of a folder": func(g *gitRepo) {
			g.write(".gitignore", "/m\n")
			g.commit("ignore m")
			if err := os.Symlink(outside, filepath.Join(g.dir, "m")); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			g, first, _ := rollbackFixture(t)
			setup(g)
			before := g.run("rev-parse", "HEAD")
			status := g.run("status", "--porcelain", "--ignored")
			opts := author
			opts.To = first
			_, _, err := Revert(context.Background(), g.dir, opts)
			if err == nil || !strings.Contains(err.Error(), "move it away first") || !strings.Contains(err.Error(), "nothing was changed") {
				t.Fatalf("Revert = %v", err)
			}
			if h := g.run("rev-parse", "HEAD"); h != before {
				t.Errorf("HEAD moved to %s", h)
			}
			if s := g.run("status", "--porcelain", "--ignored"); s != status {
				t.Errorf("status %q, was %q", s, status)
			}
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Errorf("written through the link: %v", entries)
			}
		})
	}
}
