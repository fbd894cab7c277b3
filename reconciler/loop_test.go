package reconciler

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Base: time.Second, Max: 10 * time.Second}
	for n, want := range map[int]time.Duration{0: 0, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 50: 10 * time.Second} {
		if got := b.Delay(n); got != want {
			t.Errorf("Delay(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestFailureMemory(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := failureMemory{backoff: Backoff{Base: time.Minute, Max: 10 * time.Minute}, apps: map[string]AppFailure{}}
	if _, held := m.held("web", "r1", t0); held {
		t.Fatal("held before any failure")
	}
	m.failed("web", "r1", "unhealthy", t0)
	if _, held := m.held("web", "r1", t0.Add(59*time.Second)); !held {
		t.Error("not held within the first backoff")
	}
	if _, held := m.held("web", "r1", t0.Add(time.Minute)); held {
		t.Error("still held after the backoff")
	}
	// Failing again doubles the wait.
	f := m.failed("web", "r1", "unhealthy", t0.Add(time.Minute))
	if f.Count != 2 || !f.RetryAfter.Equal(t0.Add(3*time.Minute)) {
		t.Errorf("second failure = %+v", f)
	}
	// A newer revision is not held, and failing it starts over.
	if _, held := m.held("web", "r2", t0.Add(2*time.Minute)); held {
		t.Error("a newer revision is held")
	}
	if f := m.failed("web", "r2", "x", t0); f.Count != 1 {
		t.Errorf("new revision count = %d", f.Count)
	}
	m.succeeded("web")
	if _, held := m.held("web", "r2", t0); held {
		t.Error("held after success")
	}
}

// fakeClock fires timers only when the test advances it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}
func (c *fakeClock) After(time.Duration) <-chan time.Time { return make(chan time.Time) }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type fakeSource struct {
	mu    sync.Mutex
	rev   Revision
	err   error
	calls int
}

func (s *fakeSource) Fetch(context.Context) (Revision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	return s.rev, s.err
}

func (s *fakeSource) set(sha, yaml string) {
	s.mu.Lock()
	s.rev = Revision{SHA: sha, FS: fstest.MapFS{"web.yaml": {Data: []byte(yaml)}}}
	s.mu.Unlock()
}

// fakeSystem is a fakeDriver whose observed state follows its writes.
type fakeSystem struct {
	*fakeDriver
	obs Observed
}

func (f *fakeSystem) Observe(context.Context) (Observed, error) { return f.obs, nil }

type fakeLease struct {
	held     bool
	released bool
}

func (l *fakeLease) Acquire(context.Context) (bool, string, error) { return l.held, "other-host", nil }
func (l *fakeLease) Release(context.Context) error                 { l.released = true; return nil }

const loopSpec = `apiVersion: berth/v1
kind: App
metadata: {name: web}
spec:
  replicas: 1
  system: {image: berth/debian-docker}
  container: {image: reg/web:IMAGE}
`

func TestLoopHoldsFailedRevisionUntilBackoffOrNewCommit(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	sys := &fakeSystem{fakeDriver: newFakeDriver()}
	sys.fail["ready web-0"] = errors.New("unhealthy")
	l := &Loop{Source: src, System: sys, Clock: clock, RolloutBackoff: Backoff{Base: time.Minute, Max: time.Hour}}
	l.init()
	ctx := context.Background()

	l.runOnce(ctx, "start")
	if n := countCalls(sys.fakeDriver, "create web-0"); n != 1 {
		t.Fatalf("first run: %d creates", n)
	}
	st := l.Status().(LoopStatus)
	if st.LastResult != "error" || st.Failures["web"].Count != 1 {
		t.Errorf("status after a failed rollout = %+v", st)
	}
	// Same revision within the backoff: held, nothing is tried.
	l.runOnce(ctx, "poll")
	if n := countCalls(sys.fakeDriver, "create web-0"); n != 1 {
		t.Errorf("retried within the backoff: %d creates", n)
	}
	// After the backoff it is tried again.
	clock.advance(61 * time.Second)
	l.runOnce(ctx, "poll")
	if n := countCalls(sys.fakeDriver, "create web-0"); n != 2 {
		t.Errorf("not retried after the backoff: %d creates", n)
	}
	// A newer commit resets the memory at once.
	src.set("r2", strings.Replace(loopSpec, "IMAGE", "2", 1))
	delete(sys.fail, "ready web-0")
	l.runOnce(ctx, "webhook")
	if n := countCalls(sys.fakeDriver, "create web-0"); n != 3 {
		t.Errorf("new revision not tried: %d creates", n)
	}
	st = l.Status().(LoopStatus)
	if len(st.Failures) != 0 || st.LastResult != "ok" || l.Ready() != nil {
		t.Errorf("status after success = %+v, ready %v", st, l.Ready())
	}
}

func TestLoopWaitsForLeaseAndBacksOffOnErrors(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	src := &fakeSource{err: errors.New("remote hung up")}
	sys := &fakeSystem{fakeDriver: newFakeDriver()}
	lease := &fakeLease{held: false}
	l := &Loop{Source: src, System: sys, Clock: clock, Lease: lease, Interval: time.Minute,
		ErrorBackoff: Backoff{Base: time.Second, Max: 8 * time.Second}}
	l.init()
	l.runOnce(context.Background(), "start")
	if src.calls != 0 || l.Status().(LoopStatus).Phase != "WaitingForLease" {
		t.Fatalf("acted without the lease: %d fetches, %+v", src.calls, l.Status())
	}
	lease.held = true
	var waits []time.Duration
	for range 5 {
		waits = append(waits, l.runOnce(context.Background(), "poll"))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	for i := range want {
		if waits[i] != want[i] {
			t.Errorf("backoff %v, want %v", waits, want)
			break
		}
	}
	if err := l.Ready(); err == nil || !strings.Contains(err.Error(), "remote hung up") {
		t.Errorf("Ready = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Run(ctx); err != nil || !lease.released {
		t.Errorf("Run after cancel = %v, released %v", err, lease.released)
	}
}

func TestLoopTriggerCoalesces(t *testing.T) {
	l := &Loop{}
	l.init()
	for range 10 {
		l.Trigger("webhook") // never blocks
	}
	if len(l.trigger) != 1 {
		t.Errorf("pending triggers = %d, want 1", len(l.trigger))
	}
}

func countCalls(f *fakeDriver, call string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == call {
			n++
		}
	}
	return n
}

// failingObserver fails every Observe, as an unreachable LXD does.
type failingObserver struct{ *fakeSystem }

func (failingObserver) Observe(context.Context) (Observed, error) {
	return Observed{}, errors.New("connection refused")
}

func TestLoopReadyFollowsLXD(t *testing.T) {
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	sys := &fakeSystem{fakeDriver: newFakeDriver()}
	sys.obs = convergedObs(execApp("web", 1, 1, "reg/web:1"))
	l := &Loop{Source: src, System: sys, Clock: &fakeClock{now: time.Now()}}
	l.init()
	l.runOnce(context.Background(), "start")
	if err := l.Ready(); err != nil {
		t.Fatalf("not ready after a good run: %v", err)
	}
	l.System = failingObserver{sys}
	l.runOnce(context.Background(), "poll")
	if err := l.Ready(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("ready while LXD is unreachable: %v", err)
	}
}
