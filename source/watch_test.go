package source

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// startWatch runs WatchRepo until the test ends and returns its triggers.
func startWatch(t *testing.T, path string, worktree bool, debounce time.Duration) (<-chan string, context.CancelFunc, <-chan error) {
	t.Helper()
	ready := make(chan struct{})
	testHookWatching = func() { close(ready) }
	t.Cleanup(func() { testHookWatching = nil })
	triggers := make(chan string, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		done <- WatchRepo(ctx, path, worktree, debounce, func(r string) { triggers <- r })
		close(finished)
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("WatchRepo: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("WatchRepo did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(5 * time.Second):
			t.Error("WatchRepo did not return after cancel")
		}
	})
	return triggers, cancel, done
}

func waitTrigger(t *testing.T, triggers <-chan string, what string) string {
	t.Helper()
	select {
	case r := <-triggers:
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("no trigger after %s", what)
		return ""
	}
}

// drain collects the triggers that come within d.
func drain(triggers <-chan string, d time.Duration) []string {
	var got []string
	deadline := time.After(d)
	for {
		select {
		case r := <-triggers:
			got = append(got, r)
		case <-deadline:
			return got
		}
	}
}

func TestWatchRepoCommit(t *testing.T) {
	g := newGitRepo(t)
	g.write("web.yaml", "v1\n")
	g.commit("first")
	triggers, _, _ := startWatch(t, filepath.Join(g.dir), false, 50*time.Millisecond)

	start := time.Now()
	g.write("web.yaml", "v2\n")
	if got := drain(triggers, 300*time.Millisecond); len(got) != 0 {
		t.Fatalf("an uncommitted edit triggered without worktree mode: %v", got)
	}
	g.commit("second")
	r := waitTrigger(t, triggers, "a commit")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("trigger took %v", d)
	}
	if !strings.Contains(r, "main") {
		t.Errorf("reason = %q", r)
	}
	drain(triggers, 200*time.Millisecond)

	// A new branch (in a new folder under refs/heads), then a commit on it.
	g.run("checkout", "-q", "-b", "team/feature")
	waitTrigger(t, triggers, "a new branch")
	drain(triggers, 200*time.Millisecond)
	g.write("web.yaml", "v3\n")
	g.commit("third")
	if r := waitTrigger(t, triggers, "a commit on team/feature"); !strings.Contains(r, "team/feature") && !strings.Contains(r, "HEAD") {
		t.Errorf("reason = %q", r)
	}
	drain(triggers, 200*time.Millisecond)

	// gc packs refs into packed-refs.
	g.run("pack-refs", "--all")
	waitTrigger(t, triggers, "pack-refs")
}

func TestWatchRepoWorktree(t *testing.T) {
	g := newGitRepo(t)
	g.write("apps/web.yaml", "v1\n")
	g.commit("first")
	triggers, _, _ := startWatch(t, g.dir, true, 50*time.Millisecond)

	g.write("apps/web.yaml", "v2\n")
	if r := waitTrigger(t, triggers, "saving a file"); !strings.Contains(r, "web.yaml") {
		t.Errorf("reason = %q", r)
	}
	// A folder made after the start is watched too.
	if err := os.MkdirAll(filepath.Join(g.dir, "apps", "new"), 0o755); err != nil {
		t.Fatal(err)
	}
	waitTrigger(t, triggers, "a new folder")
	drain(triggers, 200*time.Millisecond)
	g.write("apps/new/db.yaml", "db\n")
	if r := waitTrigger(t, triggers, "a file in the new folder"); !strings.Contains(r, "db.yaml") {
		t.Errorf("reason = %q", r)
	}
	drain(triggers, 200*time.Millisecond)
	// Editor scratch files alone do not trigger.
	g.write("apps/.web.yaml.swp", "x")
	g.write("apps/web.yaml~", "x")
	if got := drain(triggers, 300*time.Millisecond); len(got) != 0 {
		t.Errorf("scratch files triggered: %v", got)
	}
}

func TestWatchRepoDebounce(t *testing.T) {
	g := newGitRepo(t)
	g.write("a.yaml", "0\n")
	g.commit("first")
	triggers, _, _ := startWatch(t, g.dir, true, 200*time.Millisecond)
	for i := 0; i < 20; i++ {
		g.write("a.yaml", strings.Repeat("x", i)+"\n")
		time.Sleep(5 * time.Millisecond)
	}
	got := drain(triggers, 1500*time.Millisecond)
	if len(got) < 1 || len(got) > 2 {
		t.Fatalf("a burst of 20 writes gave %d triggers: %v", len(got), got)
	}
	if !strings.Contains(got[0], "more)") {
		t.Errorf("reason = %q, want a count of coalesced events", got[0])
	}
}

func TestWatchRepoStops(t *testing.T) {
	g := newGitRepo(t)
	g.write("a.yaml", "0\n")
	g.commit("first")
	before := runtime.NumGoroutine()
	_, cancel, done := startWatch(t, g.dir, true, 0)
	g.write("a.yaml", "1\n") // a pending debounce timer must not outlive it either
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WatchRepo = %v, want nil on cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchRepo did not return")
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after WatchRepo returned, %d before", n, before)
	}
}

func TestWatchRepoErrors(t *testing.T) {
	if err := WatchRepo(context.Background(), t.TempDir(), false, 0, func(string) {}); err == nil || !strings.Contains(err.Error(), "not a Git repository") {
		t.Errorf("not a repo: %v", err)
	}
	g := newGitRepo(t)
	g.write("a.yaml", "0\n")
	g.commit("first")
	bare := filepath.Join(t.TempDir(), "b.git")
	g.run("clone", "-q", "--bare", g.dir, bare)
	if err := WatchRepo(context.Background(), bare, true, 0, func(string) {}); err == nil || !strings.Contains(err.Error(), "bare") {
		t.Errorf("worktree of a bare repo: %v", err)
	}
}

func TestWatchLinkedWorktree(t *testing.T) {
	g := newGitRepo(t)
	g.write("a.yaml", "0\n")
	g.commit("first")
	linked := filepath.Join(t.TempDir(), "linked")
	g.run("worktree", "add", "-q", "-b", "feature", linked)
	triggers, _, _ := startWatch(t, linked, false, 50*time.Millisecond)
	lg := &gitRepo{t: t, dir: linked}
	lg.write("a.yaml", "1\n")
	lg.commit("on feature")
	if r := waitTrigger(t, triggers, "a commit in a linked work tree"); !strings.Contains(r, "feature") {
		t.Errorf("reason = %q", r)
	}
}

func TestWatchBareRepoPush(t *testing.T) {
	g, bare := remotePair(t)
	triggers, _, _ := startWatch(t, bare, false, 50*time.Millisecond)
	g.write("apps/web.yaml", "pushed\n")
	g.commit("pushed")
	g.push("main")
	waitTrigger(t, triggers, "a push into the bare repository")
}

func TestWorktreeSnapshot(t *testing.T) {
	g := newGitRepo(t)
	g.write("apps/web.yaml", "v1\n")
	g.write("apps/sub/db.yml", "db\n")
	g.write("apps/notes.txt", "no\n")
	g.commit("first")
	a, err := WorktreeSnapshot(g.dir, "apps")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, a.FS); len(got) != 2 || got["web.yaml"] != "v1\n" || got["sub/db.yml"] != "db\n" {
		t.Fatalf("files = %v", got)
	}
	if !strings.HasPrefix(a.Commit.SHA, "worktree-") || len(a.Commit.SHA) != len("worktree-")+12 {
		t.Errorf("SHA = %q", a.Commit.SHA)
	}
	if a.Commit.Subject != "work tree of "+g.dir {
		t.Errorf("subject = %q", a.Commit.Subject)
	}
	g.write("apps/web.yaml", "v2\n") // uncommitted
	b, _ := WorktreeSnapshot(g.dir, "/apps/")
	if b.Commit.SHA == a.Commit.SHA || readAll(t, b.FS)["web.yaml"] != "v2\n" {
		t.Errorf("edit not seen: %s", b.Commit.SHA)
	}
	g.write("apps/notes.txt", "not a spec\n")
	g.write("apps/web.yaml", "v1\n")
	if c, _ := WorktreeSnapshot(g.dir, "apps"); c.Commit.SHA != a.Commit.SHA {
		t.Errorf("same YAML, different revision: %s vs %s", c.Commit.SHA, a.Commit.SHA)
	}
	if _, err := WorktreeSnapshot(g.dir, "missing"); err == nil {
		t.Error("missing folder accepted")
	}
}

// A file name with a newline or ESC is quoted in the trigger reason,
// which is logged: it cannot forge a log line.
func TestWatchReasonQuotesNames(t *testing.T) {
	g := newGitRepo(t)
	g.write("apps/web.yaml", "v1\n")
	g.commit("first")
	triggers, _, _ := startWatch(t, g.dir, true, 50*time.Millisecond)
	g.write("apps/evil\n\x1b[2Kname.yaml", "x\n")
	r := waitTrigger(t, triggers, "saving a file")
	if strings.ContainsAny(r, "\n\x1b") || !strings.Contains(r, `evil\n\x1b[2Kname.yaml`) {
		t.Errorf("reason = %q", r)
	}
}
