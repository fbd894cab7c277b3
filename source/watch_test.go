package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-gitops/berth/clock"
)

// watchRun is WatchRepoWith running on a fake clock until the test ends.
// Its debounce fires only when the test advances the clock, and the test
// knows when the watcher has handled every event so far (settle), so no
// step waits on real time.
type watchRun struct {
	t        *testing.T
	clk      *clock.Fake
	debounce time.Duration
	refs     string // refs/heads, where settle makes its marker folders
	triggers chan string
	handled  chan handledEvent
	done     chan error
	cancel   context.CancelFunc
	markers  int
}

type handledEvent struct{ name, reason string }

// patience bounds each wait for the kernel's events and the watcher's
// goroutine: only a broken watcher ever reaches it.
const patience = 10 * time.Second

// startWatch runs WatchRepoWith on path with opts (Clock and the test
// seams are set here) until the test ends.
func startWatch(t *testing.T, path string, opts WatchOptions) *watchRun {
	t.Helper()
	loc, err := findGitDir(path)
	if err != nil {
		t.Fatal(err)
	}
	w := &watchRun{
		t: t, clk: clock.NewFake(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)), debounce: opts.Debounce,
		refs:     filepath.Join(loc.commonDir, "refs", "heads"),
		triggers: make(chan string, 100), handled: make(chan handledEvent, 10000), done: make(chan error, 1),
	}
	if w.debounce <= 0 {
		w.debounce = DefaultDebounce
	}
	ready := make(chan struct{})
	opts.Clock = w.clk
	opts.watching = func() { close(ready) }
	opts.handled = func(name, reason string) { w.handled <- handledEvent{name, reason} }
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() { w.done <- WatchRepoWith(ctx, path, opts, func(r string) { w.triggers <- r }) }()
	select {
	case <-ready:
	case err := <-w.done:
		t.Fatalf("WatchRepoWith: %v", err)
	case <-time.After(patience):
		t.Fatal("WatchRepoWith did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(patience):
			t.Error("WatchRepoWith did not return after cancel")
		}
	})
	return w
}

// settle returns once the watcher has handled every event made so far,
// with the reasons it noted. It makes a folder under refs/heads, which is
// one event, queued by the kernel after all earlier ones, and waits for
// it. The marker's own event is part of the burst, noted last.
func (w *watchRun) settle() []string {
	w.t.Helper()
	w.markers++
	marker := filepath.Join(w.refs, fmt.Sprintf("zz-marker-%d", w.markers))
	if err := os.Mkdir(marker, 0o755); err != nil {
		w.t.Fatal(err)
	}
	var reasons []string
	for {
		select {
		case h := <-w.handled:
			if h.name == marker {
				return reasons
			}
			if h.reason != "" {
				reasons = append(reasons, h.reason)
			}
		case err := <-w.done:
			w.t.Fatalf("WatchRepoWith returned %v", err)
		case <-time.After(patience):
			w.t.Fatal("the watcher did not see its marker folder")
		}
	}
}

// next returns the one trigger that what caused: it waits until the
// watcher has handled every event, then lets the debounce time pass.
func (w *watchRun) next(what string) string {
	w.t.Helper()
	if len(w.settle()) == 0 {
		w.t.Fatalf("no trigger after %s", what)
	}
	return w.fire()
}

// quiet checks that what caused no trigger.
func (w *watchRun) quiet(what string) {
	w.t.Helper()
	if got := w.settle(); len(got) != 0 {
		w.t.Errorf("%s triggered: %q", what, got)
	}
	w.fire() // the marker's
}

// fire advances the clock by the debounce time and returns the trigger
// that brings; there must be exactly one.
func (w *watchRun) fire() string {
	w.t.Helper()
	w.clk.Advance(w.debounce)
	var r string
	select {
	case r = <-w.triggers:
	case <-time.After(patience):
		w.t.Fatal("no trigger once the debounce time passed")
	}
	if n := w.clk.Waiters(); n != 0 {
		w.t.Errorf("%d timers still armed after the trigger", n)
	}
	return r
}

func TestWatchRepoCommit(t *testing.T) {
	g := newGitRepo(t)
	g.write("web.yaml", "v1\n")
	g.commit("first")
	w := startWatch(t, g.dir, WatchOptions{Debounce: 50 * time.Millisecond})

	g.write("web.yaml", "v2\n")
	w.quiet("an uncommitted edit without worktree mode")
	g.commit("second")
	if r := w.next("a commit"); !strings.Contains(r, "main") {
		t.Errorf("reason = %q", r)
	}

	// A new branch (in a new folder under refs/heads), then a commit on it.
	g.run("checkout", "-q", "-b", "team/feature")
	if r := w.next("a new branch"); !strings.Contains(r, "team") && !strings.Contains(r, "HEAD") {
		t.Errorf("reason = %q", r)
	}
	g.write("web.yaml", "v3\n")
	g.commit("third")
	if r := w.next("a commit on team/feature"); !strings.Contains(r, "team/feature") {
		t.Errorf("reason = %q", r)
	}

	// gc packs refs into packed-refs.
	g.run("pack-refs", "--all")
	w.next("pack-refs")
}

func TestWatchRepoWorktree(t *testing.T) {
	g := newGitRepo(t)
	g.write("apps/web.yaml", "v1\n")
	g.commit("first")
	w := startWatch(t, g.dir, WatchOptions{Worktree: true, Debounce: 50 * time.Millisecond})

	g.write("apps/web.yaml", "v2\n")
	if r := w.next("saving a file"); !strings.Contains(r, "web.yaml") {
		t.Errorf("reason = %q", r)
	}
	// A folder made after the start is watched too: once the watcher has
	// handled its creation (next), a file in it is seen.
	if err := os.MkdirAll(filepath.Join(g.dir, "apps", "new"), 0o755); err != nil {
		t.Fatal(err)
	}
	w.next("a new folder")
	g.write("apps/new/db.yaml", "db\n")
	if r := w.next("a file in the new folder"); !strings.Contains(r, "db.yaml") {
		t.Errorf("reason = %q", r)
	}
	// Editor scratch files alone do not trigger.
	g.write("apps/.web.yaml.swp", "x")
	g.write("apps/web.yaml~", "x")
	w.quiet("scratch files")
}

// A burst of writes is one trigger, and its reason counts the rest.
func TestWatchRepoDebounce(t *testing.T) {
	g := newGitRepo(t)
	g.write("a.yaml", "0\n")
	g.commit("first")
	w := startWatch(t, g.dir, WatchOptions{Worktree: true, Debounce: 200 * time.Millisecond})
	for i := 0; i < 20; i++ {
		g.write("a.yaml", strings.Repeat("x", i)+"\n")
	}
	if r := w.next("a burst of 20 writes"); !strings.Contains(r, `a.yaml" changed`) || !strings.Contains(r, "more)") {
		t.Errorf("reason = %q, want a.yaml and a count of coalesced events", r)
	}
}

// The debounce fires after a quiet time, or 5 quiet times after the first
// change of a steady stream.
func TestDebouncer(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	d := &debouncer{clk: clk, quiet: 100 * time.Millisecond}
	defer d.stop()
	fired := func() (string, bool) {
		select {
		case <-d.C():
			return d.fired(), true
		default:
			return "", false
		}
	}
	if _, ok := fired(); ok || d.C() != nil {
		t.Fatal("fired before any change")
	}
	d.note("a")
	clk.Advance(99 * time.Millisecond)
	if _, ok := fired(); ok {
		t.Fatal("fired before the quiet time")
	}
	d.note("b") // restarts the quiet time
	clk.Advance(99 * time.Millisecond)
	if _, ok := fired(); ok {
		t.Fatal("fired although a change came within the quiet time")
	}
	clk.Advance(time.Millisecond)
	if r, ok := fired(); !ok || r != "a (+1 more)" {
		t.Fatalf("after a quiet time: %q %v", r, ok)
	}

	// A change every 50ms never leaves 100ms of quiet: the cap fires it
	// 500ms after the first.
	start := clk.Now()
	var r string
	for r == "" {
		d.note(fmt.Sprintf("c%d", clk.Since(start)/time.Millisecond))
		clk.Advance(50 * time.Millisecond)
		r, _ = fired()
	}
	if took := clk.Since(start); took != 500*time.Millisecond || r != "c0 (+9 more)" {
		t.Errorf("steady stream: %q after %s, want c0 (+9 more) after 500ms", r, took)
	}
	// And the next change starts a burst of its own.
	d.note("d")
	clk.Advance(100 * time.Millisecond)
	if r, ok := fired(); !ok || r != "d" {
		t.Errorf("next burst: %q %v", r, ok)
	}
}

func TestWatchRepoStops(t *testing.T) {
	g := newGitRepo(t)
	g.write("a.yaml", "0\n")
	g.commit("first")
	before := runtime.NumGoroutine()
	w := startWatch(t, g.dir, WatchOptions{Worktree: true})
	g.write("a.yaml", "1\n")
	w.settle()
	if n := w.clk.Waiters(); n != 1 {
		t.Fatalf("%d timers armed, want the debounce's", n)
	}
	w.cancel()
	select {
	case err := <-w.done:
		if err != nil {
			t.Fatalf("WatchRepoWith = %v, want nil on cancel", err)
		}
		w.done <- err // for the cleanup
	case <-time.After(patience):
		t.Fatal("WatchRepoWith did not return")
	}
	if n := w.clk.Waiters(); n != 0 {
		t.Errorf("the pending debounce timer outlived WatchRepoWith")
	}
	// The watcher's own goroutine has ended (fsnotify's Close waits for
	// it); the one that ran WatchRepoWith may still be on its way out.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after WatchRepoWith returned, %d before", n, before)
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
		t.Errorf("worktree of a bare repository: %v", err)
	}
}

// A folder that cannot be watched is an error at the start; once the
// watch runs it goes to OnError and the watch goes on, or, without
// OnError, it ends the watch, so that the caller falls back to polling.
func TestWatchRepoUnwatchableFolder(t *testing.T) {
	errBoom := errors.New("no space left on device")
	refuse := func(dir string) error {
		if filepath.Base(dir) == "unwatchable" {
			return errBoom
		}
		return nil
	}
	g := newGitRepo(t)
	g.write("apps/web.yaml", "v1\n")
	g.commit("first")
	unwatchable := filepath.Join(g.dir, "apps", "unwatchable")

	// At the start: WatchRepoWith fails, naming the folder. The walk went
	// on below it, so that is the only error.
	if err := os.MkdirAll(filepath.Join(unwatchable, "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := WatchRepoWith(context.Background(), g.dir, WatchOptions{Worktree: true, refuse: refuse}, func(string) {})
	if !errors.Is(err, errBoom) || err.Error() != "watch "+unwatchable+": "+errBoom.Error() {
		t.Fatalf("at the start: err = %v", err)
	}
	if err := os.RemoveAll(unwatchable); err != nil {
		t.Fatal(err)
	}

	for _, withOnError := range []bool{true, false} {
		t.Run(fmt.Sprintf("OnError=%v", withOnError), func(t *testing.T) {
			var mu sync.Mutex
			var reported []error
			opts := WatchOptions{Worktree: true, Debounce: 50 * time.Millisecond, refuse: refuse}
			if withOnError {
				opts.OnError = func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }
			}
			w := startWatch(t, g.dir, opts)
			defer os.RemoveAll(unwatchable)
			if err := os.Mkdir(unwatchable, 0o755); err != nil {
				t.Fatal(err)
			}
			if !withOnError {
				select {
				case err := <-w.done:
					if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), unwatchable) {
						t.Errorf("err = %v, want the folder that could not be watched", err)
					}
					w.done <- err // for the cleanup
				case <-time.After(patience):
					t.Fatal("WatchRepoWith went on without OnError")
				}
				return
			}
			// The folder's creation still triggers a run, and the watch
			// goes on.
			if r := w.next("an unwatchable folder"); !strings.Contains(r, "unwatchable") {
				t.Errorf("reason = %q", r)
			}
			mu.Lock()
			if len(reported) != 1 || !errors.Is(reported[0], errBoom) || !strings.Contains(reported[0].Error(), unwatchable) {
				t.Errorf("OnError got %v", reported)
			}
			mu.Unlock()
			g.write("apps/web.yaml", "v2\n")
			if r := w.next("saving a file"); !strings.Contains(r, "web.yaml") {
				t.Errorf("after the error: reason = %q", r)
			}
		})
	}
}

func TestWatchLinkedWorktree(t *testing.T) {
	g := newGitRepo(t)
	g.write("a.yaml", "0\n")
	g.commit("first")
	linked := filepath.Join(t.TempDir(), "linked")
	g.run("worktree", "add", "-q", "-b", "feature", linked)
	w := startWatch(t, linked, WatchOptions{Debounce: 50 * time.Millisecond})
	lg := &gitRepo{t: t, dir: linked}
	lg.write("a.yaml", "1\n")
	lg.commit("on feature")
	if r := w.next("a commit in a linked work tree"); !strings.Contains(r, "feature") {
		t.Errorf("reason = %q", r)
	}
}

func TestWatchBareRepoPush(t *testing.T) {
	g, bare := remotePair(t)
	w := startWatch(t, bare, WatchOptions{Debounce: 50 * time.Millisecond})
	g.write("apps/web.yaml", "pushed\n")
	g.commit("pushed")
	g.push("main")
	w.next("a push into the bare repository")
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
	w := startWatch(t, g.dir, WatchOptions{Worktree: true, Debounce: 50 * time.Millisecond})
	g.write("apps/evil\n\x1b[2Kname.yaml", "x\n")
	r := w.next("saving a file")
	if strings.ContainsAny(r, "\n\x1b") || !strings.Contains(r, `evil\n\x1b[2Kname.yaml`) {
		t.Errorf("reason = %q", r)
	}
}
