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
	"time"
)

// gitRepo makes a real repository with the git CLI, the way users make them.
type gitRepo struct {
	t   *testing.T
	dir string
}

func newGitRepo(t *testing.T) *gitRepo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("git is needed for source tests: %v", err)
	}
	g := &gitRepo{t: t, dir: t.TempDir()}
	g.run("init", "-q", "-b", "main")
	return g
}

func (g *gitRepo) run(args ...string) string {
	g.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = g.dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.org",
		"GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.org",
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		g.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (g *gitRepo) write(name, content string) {
	g.t.Helper()
	p := filepath.Join(g.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		g.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		g.t.Fatal(err)
	}
}

func (g *gitRepo) commit(msg string) string {
	g.run("add", "-A")
	g.run("commit", "-q", "-m", msg)
	return g.run("rev-parse", "HEAD")
}

func TestResolveAndReadTree(t *testing.T) {
	g := newGitRepo(t)
	g.write("apps/web.yaml", "one\n")
	g.write("apps/notes.txt", "not a spec\n")
	g.write("README.md", "hi\n")
	first := g.commit("first")
	g.run("tag", "v1")
	g.write("apps/web.yaml", "two\n")
	g.write("apps/nested/worker.yml", "worker\n")
	second := g.commit("second: scale web")
	g.run("checkout", "-q", "-b", "feature")
	g.write("apps/web.yaml", "three\n")
	third := g.commit("third")
	g.run("checkout", "-q", "main")

	r, err := Open(context.Background(), filepath.Join(g.dir, "apps")) // any folder inside works
	if err != nil {
		t.Fatal(err)
	}
	for rev, want := range map[string]string{
		"":             second,
		"HEAD":         second,
		"main":         second,
		"HEAD~1":       first,
		"v1":           first,
		"feature":      third,
		second:         second,
		second[:10]:    second,
		"feature~1":    second,
		"main^":        first,
		"refs/tags/v1": first,
	} {
		c, err := r.Resolve(rev)
		if err != nil {
			t.Errorf("Resolve(%q): %v", rev, err)
			continue
		}
		if c.SHA != want {
			t.Errorf("Resolve(%q) = %s, want %s", rev, c.SHA, want)
		}
	}
	c, _ := r.Resolve("main")
	if c.Subject != "second: scale web" || c.Author != "Ada" || c.Short() != second[:12] {
		t.Errorf("commit = %+v", c)
	}
	if _, err := r.Resolve("nope"); !errors.Is(err, ErrRevisionNotFound) {
		t.Errorf("Resolve(nope) = %v, want ErrRevisionNotFound", err)
	}

	fsys, err := r.SpecFS(second, "apps")
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, fsys)
	want := map[string]string{"web.yaml": "two\n", "nested/worker.yml": "worker\n"}
	if len(got) != len(want) {
		t.Fatalf("files = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	// The work tree is not involved: an uncommitted edit is not seen.
	g.write("apps/web.yaml", "dirty\n")
	fsys, _ = r.SpecFS(first, "/apps/")
	if got := readAll(t, fsys); got["web.yaml"] != "one\n" || len(got) != 1 {
		t.Errorf("first revision files = %v", got)
	}
	if _, err := r.SpecFS(first, "missing"); err == nil || !strings.Contains(err.Error(), `no folder "missing"`) {
		t.Errorf("missing dir error = %v", err)
	}
}

func TestOpenURLClonesIntoMemory(t *testing.T) {
	g := newGitRepo(t)
	g.write("web.yaml", "x\n")
	sha := g.commit("only")
	r, err := Open(context.Background(), "file://"+g.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, rev := range []string{"main", "HEAD", sha} {
		c, err := r.Resolve(rev)
		if err != nil || c.SHA != sha {
			t.Errorf("Resolve(%q) = %v, %v", rev, c.SHA, err)
		}
	}
	fsys, err := r.SpecFS(sha, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, fsys); got["web.yaml"] != "x\n" {
		t.Errorf("files = %v", got)
	}
}

func TestOpenNotARepo(t *testing.T) {
	_, err := Open(context.Background(), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "is not a Git repository") {
		t.Fatalf("err = %v", err)
	}
}

// A path that does not exist inside a repository is an error naming it,
// not the enclosing repository (issue 18).
func TestOpenMissingPathInsideARepo(t *testing.T) {
	g := newGitRepo(t)
	g.write("apps/web.yaml", "x\n")
	g.commit("web")
	dir := g.dir
	missing := filepath.Join(dir, "typo", "deeper")
	_, err := Open(context.Background(), missing)
	if err == nil || err.Error() != missing+" is not a Git repository: the path does not exist" {
		t.Fatalf("err = %v", err)
	}
	for _, ok := range []string{dir, filepath.Join(dir, "apps")} {
		if _, err := Open(context.Background(), ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

func TestIsRemote(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, d := range []string{"apps:v2", "exists:x/sub"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		in   string
		want bool
	}{
		{"https://example.org/x.git", true},
		{"file:///srv/x", true},
		{"ssh://git@example.org:22/x.git", true},
		{"git+ssh://example.org/x", true},
		{"git@example.org:x.git", true},
		{"example.org:ops/apps.git", true},
		{"gh:ops/apps", true}, // an ~/.ssh/config host alias
		{"git@[::1]:x.git", true},
		{"[::1]:x.git", true},
		{"nope:v2", true}, // does not exist: an SSH address, as for git
		{"/srv/x", false},
		{"./x", false},
		{"x", false},
		// A slash before the first colon: always a local path.
		{"./apps:v2", false},
		{"./nope:v2", false},
		{"/tmp/apps:v2", false},
		{"apps/x:y", false},
		{`apps\x:y`, false},
		{"./a://b", false}, // not a URL: the scheme would hold a slash
		// No slash before the colon, but the path exists: local (git clone).
		{"apps:v2", false},
		{"exists:x/sub", false},
		// Cannot be a host: local.
		{":v2", false},
		{"@host:x", false},
		{"my apps:v2", false},
		{"a*b:c", false},
		// Windows drive paths.
		{`C:\x`, false},
		{"C:/x", false},
	} {
		if got := IsRemote(c.in); got != c.want {
			t.Errorf("IsRemote(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

// A location read as an SSH address says so, and how to name a local path.
func TestOpenSCPLikeSaysHowItWasRead(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("SSH_AUTH_SOCK", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Open(ctx, "apps:v2")
	if err == nil || !strings.Contains(err.Error(), `SSH address host "apps", path "v2"`) || !strings.Contains(err.Error(), "./apps:v2") {
		t.Errorf("Open(apps:v2) = %v", err)
	}
	if _, err := Open(ctx, "./apps:v2"); err == nil || !strings.Contains(err.Error(), "not a Git repository") {
		t.Errorf("Open(./apps:v2) = %v", err)
	}
	g := newGitRepo(t)
	g.write("web.yaml", "x\n")
	sha := g.commit("one")
	local := filepath.Join(filepath.Dir(g.dir), "apps:v2")
	if err := os.Rename(g.dir, local); err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Dir(local))
	for _, loc := range []string{"apps:v2", "./apps:v2", local} {
		r, err := Open(ctx, loc)
		if err != nil {
			t.Errorf("Open(%q): %v", loc, err)
			continue
		}
		if c, err := r.Resolve("HEAD"); err != nil || c.SHA != sha {
			t.Errorf("Open(%q): HEAD = %v, %v", loc, c.SHA, err)
		}
	}
}

func readAll(t *testing.T, fsys fs.FS) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
