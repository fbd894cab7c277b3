package source

import (
	"context"
	"errors"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-git/go-git/v5"
)

// remotePair is a work repository with a bare "server" repository as its
// origin, both made with the git CLI.
func remotePair(t *testing.T) (*gitRepo, string) {
	t.Helper()
	g := newGitRepo(t)
	g.write("apps/web.yaml", "v1\n")
	g.write("README.md", "hi\n")
	g.commit("first")
	bare := filepath.Join(t.TempDir(), "config.git")
	g.run("clone", "-q", "--bare", g.dir, bare)
	g.run("remote", "add", "origin", bare)
	return g, bare
}

func (g *gitRepo) push(args ...string) {
	g.t.Helper()
	g.run(append([]string{"push", "-q", "origin"}, args...)...)
}

func wantStats(t *testing.T, s *GitSource, polls, fetches int64) {
	t.Helper()
	if p, f := s.Stats(); p != polls || f != fetches {
		t.Fatalf("Stats() = %d polls, %d fetches; want %d, %d", p, f, polls, fetches)
	}
}

func mustSync(t *testing.T, s *GitSource, wantFetched bool) Snapshot {
	t.Helper()
	snap, fetched, err := s.Sync(context.Background())
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if fetched != wantFetched {
		t.Fatalf("Sync fetched = %v, want %v", fetched, wantFetched)
	}
	return snap
}

func TestGitSourceFileURL(t *testing.T) {
	g, bare := remotePair(t)
	first := g.run("rev-parse", "HEAD")
	cache := t.TempDir()
	opts := GitOptions{URL: "file://" + bare, Dir: "apps", CacheDir: cache}
	s, err := NewGitSource(opts)
	if err != nil {
		t.Fatal(err)
	}

	snap := mustSync(t, s, true) // clones
	if snap.Commit.SHA != first || snap.Commit.Subject != "first" {
		t.Fatalf("commit = %+v, want %s", snap.Commit, first)
	}
	if got := readAll(t, snap.FS); len(got) != 1 || got["web.yaml"] != "v1\n" {
		t.Fatalf("files = %v", got)
	}
	wantStats(t, s, 1, 1)
	if shallow, _ := gitOpen(t, s.CloneDir()).Storer.Shallow(); len(shallow) == 0 {
		t.Errorf("clone is not shallow")
	}

	// Nothing new: one head check, no fetch.
	if snap2 := mustSync(t, s, false); snap2.Commit.SHA != first {
		t.Fatalf("idle sync = %s", snap2.Commit.SHA)
	}
	wantStats(t, s, 2, 1)

	// A new commit is fetched.
	g.write("apps/web.yaml", "v2\n")
	g.write("apps/db.yml", "db\n")
	second := g.commit("second")
	g.push("main")
	if h, err := s.Head(context.Background()); err != nil || h != second {
		t.Fatalf("Head = %s, %v; want %s", h, err, second)
	}
	snap = mustSync(t, s, true)
	if snap.Commit.SHA != second {
		t.Fatalf("after push: %s, want %s", snap.Commit.SHA, second)
	}
	if got := readAll(t, snap.FS); got["web.yaml"] != "v2\n" || got["db.yml"] != "db\n" {
		t.Fatalf("files = %v", got)
	}
	wantStats(t, s, 4, 2)

	// Several commits at once, then a force-push back to the first
	// commit (one the shallow clone never had the objects of).
	for _, v := range []string{"v3\n", "v4\n"} {
		g.write("apps/web.yaml", v)
		g.commit("bump " + v)
	}
	g.push("main")
	if snap = mustSync(t, s, true); readAll(t, snap.FS)["web.yaml"] != "v4\n" {
		t.Fatalf("files = %v", readAll(t, snap.FS))
	}
	g.run("reset", "-q", "--hard", first)
	g.push("-f", "main")
	snap = mustSync(t, s, true)
	if snap.Commit.SHA != first || readAll(t, snap.FS)["web.yaml"] != "v1\n" {
		t.Fatalf("after force-push: %s %v", snap.Commit.SHA, readAll(t, snap.FS))
	}

	// A restarted daemon reuses the clone on disk.
	s2, err := NewGitSource(opts)
	if err != nil {
		t.Fatal(err)
	}
	if snap = mustSync(t, s2, false); snap.Commit.SHA != first {
		t.Fatalf("restart: %s", snap.Commit.SHA)
	}
	wantStats(t, s2, 1, 0)

	// A clone cut short (no ref) is replaced.
	if err := os.RemoveAll(filepath.Join(s2.CloneDir(), "refs", "remotes")); err != nil {
		t.Fatal(err)
	}
	s3, _ := NewGitSource(opts)
	if snap = mustSync(t, s3, true); snap.Commit.SHA != first {
		t.Fatalf("re-clone: %s", snap.Commit.SHA)
	}
}

func TestGitSourceErrors(t *testing.T) {
	g, bare := remotePair(t)
	ctx := context.Background()
	s, _ := NewGitSource(GitOptions{URL: "file://" + bare, Branch: "nope", CacheDir: t.TempDir()})
	if _, _, err := s.Sync(ctx); err == nil || !strings.Contains(err.Error(), `no branch "nope"`) {
		t.Errorf("missing branch: %v", err)
	}
	s, _ = NewGitSource(GitOptions{URL: "file://" + bare, Dir: "missing", CacheDir: t.TempDir()})
	if _, _, err := s.Sync(ctx); err == nil || !strings.Contains(err.Error(), `no folder "missing"`) {
		t.Errorf("missing dir: %v", err)
	}
	if _, err := NewGitSource(GitOptions{URL: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "not a Git repository") {
		t.Errorf("not a repo: %v", err)
	}
	if _, err := NewGitSource(GitOptions{URL: "ssh://git@example.org/x.git"}); !errors.Is(err, ErrNoKnownHosts) {
		t.Errorf("ssh without known_hosts: %v", err)
	}
	// The unsigned head is refused when signatures are required.
	v := testVerifier(t, newTestKey(t))
	s, _ = NewGitSource(GitOptions{URL: "file://" + bare, CacheDir: t.TempDir(), Verify: v})
	snap, _, err := s.Sync(ctx)
	var ue *UnverifiedError
	if !errors.As(err, &ue) || ue.SHA != g.run("rev-parse", "HEAD") || !strings.Contains(ue.Reason, "not signed") {
		t.Errorf("unsigned head: %v", err)
	}
	if snap.FS != nil {
		t.Errorf("a snapshot came with an unverified head")
	}
}

func TestGitSourceLocalPath(t *testing.T) {
	g := newGitRepo(t)
	g.write("specs/a.yaml", "a1\n")
	first := g.commit("first")
	g.run("checkout", "-q", "-b", "other") // the branch followed need not be checked out
	s, err := NewGitSource(GitOptions{URL: g.dir, Branch: "main", Dir: "specs"})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := s.Head(context.Background()); err != nil || h != first {
		t.Fatalf("Head = %s, %v", h, err)
	}
	snap := mustSync(t, s, false)
	if snap.Commit.SHA != first || readAll(t, snap.FS)["a.yaml"] != "a1\n" {
		t.Fatalf("snap = %+v", snap.Commit)
	}
	g.run("checkout", "-q", "main")
	g.write("specs/a.yaml", "a2\n")
	second := g.commit("second")
	g.run("gc", "-q") // packs behind go-git's back
	snap = mustSync(t, s, false)
	if snap.Commit.SHA != second || readAll(t, snap.FS)["a.yaml"] != "a2\n" {
		t.Fatalf("after commit: %s %v", snap.Commit.SHA, readAll(t, snap.FS))
	}
	wantStats(t, s, 3, 0)
	if s.CloneDir() != "" {
		t.Errorf("local source has a clone dir")
	}
}

// gitHTTPServer serves the repositories under root with git's own
// http-backend (smart HTTP) on loopback, behind basic auth when user is set.
func gitHTTPServer(t *testing.T, root, user, password string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatal(err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Skipf("no git-http-backend: %v", err)
	}
	h := &cgi.Handler{
		Path: backend,
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if u, p, ok := r.BasicAuth(); user != "" && (!ok || u != user || p != password) {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &requests
}

func TestGitSourceHTTP(t *testing.T) {
	g, bare := remotePair(t)
	srv, requests := gitHTTPServer(t, filepath.Dir(bare), "berth", "s3cret")
	url := srv.URL + "/" + filepath.Base(bare)
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := NewGitSource(GitOptions{URL: url, CacheDir: t.TempDir(),
		Auth: Auth{Username: "berth", PasswordFile: pwFile}})
	if err != nil {
		t.Fatal(err)
	}
	snap := mustSync(t, s, true)
	if snap.Commit.SHA != g.run("rev-parse", "HEAD") {
		t.Fatalf("commit %s", snap.Commit.SHA)
	}
	if shallow, _ := gitOpen(t, s.CloneDir()).Storer.Shallow(); len(shallow) == 0 {
		t.Errorf("HTTP clone is not shallow")
	}
	// An idle poll is one HTTP request: the ref advertisement.
	before := requests.Load()
	mustSync(t, s, false)
	if n := requests.Load() - before; n != 1 {
		t.Errorf("idle poll made %d requests, want 1", n)
	}
	g.write("apps/web.yaml", "over http\n")
	second := g.commit("second")
	g.push("main")
	if snap = mustSync(t, s, true); snap.Commit.SHA != second || readAll(t, snap.FS)["apps/web.yaml"] != "over http\n" {
		t.Fatalf("after push: %s", snap.Commit.SHA)
	}
	wantStats(t, s, 3, 2)

	// A wrong password is a clear error, and no fetch is tried.
	bad, _ := NewGitSource(GitOptions{URL: url, CacheDir: t.TempDir(),
		Auth: Auth{Username: "berth", Password: "wrong"}})
	_, _, err = bad.Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), "authentication") {
		t.Fatalf("wrong password: %v", err)
	}
	wantStats(t, bad, 1, 0)
}

// Sync, Head and Stats may be called from several goroutines (a webhook
// and the poll timer at once); -race checks this.
func TestGitSourceConcurrent(t *testing.T) {
	g, bare := remotePair(t)
	want := g.run("rev-parse", "HEAD")
	s, err := NewGitSource(GitOptions{URL: "file://" + bare, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 4; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			snap, _, err := s.Sync(context.Background())
			if err == nil && snap.Commit.SHA != want {
				err = errors.New("wrong commit " + snap.Commit.SHA)
			}
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, err := s.Head(context.Background())
			s.Stats()
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if _, fetches := s.Stats(); fetches != 1 {
		t.Errorf("%d fetches for 4 concurrent syncs of one revision, want 1 clone", fetches)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://ci:t0ken@git.example.org/c.git": "https://ci:xxxxx@git.example.org/c.git",
		"https://git.example.org/c.git":          "https://git.example.org/c.git",
		"git@git.example.org:c.git":              "git@git.example.org:c.git",
		"/srv/c":                                 "/srv/c",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q", in, got)
		}
	}
}

func gitOpen(t *testing.T, dir string) *git.Repository {
	t.Helper()
	r, err := git.PlainOpen(dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
