package reconciler

import (
	"context"
	"errors"
	"fmt"
	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
	"github.com/berth-gitops/berth/spec"
	"log/slog"
	"maps"
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
	m.failed("web", "r1", "unhealthy", Retrying, t0)
	if _, held := m.held("web", "r1", t0.Add(59*time.Second)); !held {
		t.Error("not held within the first backoff")
	}
	if _, held := m.held("web", "r1", t0.Add(time.Minute)); held {
		t.Error("still held after the backoff")
	}
	// Failing again doubles the wait.
	f := m.failed("web", "r1", "unhealthy", Retrying, t0.Add(time.Minute))
	if f.Count != 2 || !f.RetryAfter.Equal(t0.Add(3*time.Minute)) {
		t.Errorf("second failure = %+v", f)
	}
	// A newer revision is not held, and failing it starts over.
	if _, held := m.held("web", "r2", t0.Add(2*time.Minute)); held {
		t.Error("a newer revision is held")
	}
	if f := m.failed("web", "r2", "x", Retrying, t0); f.Count != 1 {
		t.Errorf("new revision count = %d", f.Count)
	}
	// A stalled failure is held until a newer revision, whatever the time.
	m.failed("api", "r1", "digest mismatch", Stalled, t0)
	if f, held := m.held("api", "r1", t0.Add(1000*time.Hour)); !held || f.Retry != Stalled {
		t.Errorf("a stalled revision was let go: %+v", f)
	}
	if _, held := m.held("api", "r2", t0); held {
		t.Error("a newer revision of a stalled app is held")
	}
	m.succeeded("web")
	if _, held := m.held("web", "r2", t0); held {
		t.Error("held after success")
	}
}

// nextTimer is how far away the fake clock's earliest armed timer is (-1:
// none).
func nextTimer(c *clock.Fake) time.Duration {
	d, ok := c.Next()
	if !ok {
		return -1
	}
	return d
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

func (s *fakeSource) fetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *fakeSource) set(sha, yaml string) {
	s.mu.Lock()
	s.rev = Revision{SHA: sha, FS: fstest.MapFS{"web.yaml": {Data: []byte(yaml)}}}
	s.mu.Unlock()
}

// fakeSystem observes the fixed state a test sets; its writes are only
// recorded (worldSystem follows its writes).
type fakeSystem struct {
	*fakeDriver
	obs plan.Observed
}

func (f *fakeSystem) Observe(context.Context) (plan.Observed, error) { return f.obs, nil }

// fakeLease answers what the test sets. Renew answers as Acquire does,
// unless renewed is set: then with that (a lease lost while Acquire would
// take it, as when its key was deleted).
type fakeLease struct {
	mu       sync.Mutex
	state    LeaseState
	err      error
	renewed  *LeaseState
	acquires int
	renews   int
	released bool
}

func (l *fakeLease) Renew(ctx context.Context) (LeaseState, error) {
	l.mu.Lock()
	l.renews++
	if r := l.renewed; r != nil {
		defer l.mu.Unlock()
		return *r, nil
	}
	l.mu.Unlock()
	return l.Acquire(ctx)
}

func (l *fakeLease) Acquire(context.Context) (LeaseState, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acquires++
	return l.state, l.err
}

func (l *fakeLease) Release(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.released = true
	return nil
}

func (l *fakeLease) set(st LeaseState, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state, l.err = st, err
}

const loopSpec = `apiVersion: berth/v1
kind: App
metadata: {name: web}
spec:
  replicas: 1
  system: {image: berth/debian-docker}
  container: {image: reg/web:IMAGE}
`

func TestLoopHoldsFailedRevisionUntilBackoffOrNewCommit(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	sys := &fakeSystem{fakeDriver: newFakeDriver()}
	sys.fail["ready web-0"] = errors.New("unhealthy")
	l := &Loop{Source: src, System: sys, Clock: clk, RolloutBackoff: Backoff{Base: time.Minute, Max: time.Hour}}
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
	clk.Advance(61 * time.Second)
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
	clk := clock.NewFake(time.Now())
	src := &fakeSource{err: errors.New("remote hung up")}
	sys := &fakeSystem{fakeDriver: newFakeDriver()}
	lease := &fakeLease{state: LeaseState{Holder: "other-host"}}
	l := &Loop{Source: src, System: sys, Clock: clk, Lease: lease, Interval: time.Minute,
		ErrorBackoff: Backoff{Base: time.Second, Max: 8 * time.Second}}
	l.init()
	l.runOnce(context.Background(), "start")
	if src.calls != 0 || l.Status().(LoopStatus).Phase != "WaitingForLease" {
		t.Fatalf("acted without the lease: %d fetches, %+v", src.calls, l.Status())
	}
	lease.set(LeaseState{Held: true, Expiry: clk.Now().Add(time.Minute)}, nil)
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

// TestLoopTriggerCoalesces: triggers that arrive while a run is busy
// coalesce into one more run, since a run observes everything anyway.
func TestLoopTriggerCoalesces(t *testing.T) {
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	sys := newBlockingSystem(plantest.Converged(plantest.App("web", 1, 1, "reg/web:1")))
	idle := make(chan struct{}, 10)
	l := &Loop{Source: src, System: sys, Clock: clock.NewFake(time.Now()), Interval: time.Hour,
		onIdle: func() { idle <- struct{}{} }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	<-sys.entered // the first run is observing
	for range 10 {
		l.Trigger("webhook") // never blocks
	}
	close(sys.release)
	<-idle // the first run ended
	<-idle // the one coalesced run ended
	select {
	case <-idle:
		t.Fatal("more than one run followed ten triggers")
	default:
	}
	if n := src.fetches(); n != 2 {
		t.Errorf("runs = %d, want 2 (the first, and one for all ten triggers)", n)
	}
	cancel()
	<-done
}

// worldSystem is a fake LXD+Docker whose observed state follows its
// writes: the loop's re-observe after applying sees what it did.
type worldSystem struct {
	*fakeDriver
	mu    sync.Mutex
	insts map[string]plan.Instance
}

func newWorld() *worldSystem {
	return &worldSystem{fakeDriver: newFakeDriver(), insts: map[string]plan.Instance{}}
}

func (w *worldSystem) Observe(context.Context) (plan.Observed, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var obs plan.Observed
	for _, i := range w.insts {
		obs.Instances = append(obs.Instances, i)
	}
	return obs, nil
}

func (w *worldSystem) CreateInstance(ctx context.Context, name string, app spec.App, cfg map[string]string, target string) error {
	if err := w.fakeDriver.CreateInstance(ctx, name, app, cfg, target); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.insts[name] = plan.Instance{Name: name, Status: plan.StatusRunning, Config: maps.Clone(cfg), Profiles: app.Spec.System.Profiles}
	return nil
}

func (w *worldSystem) EnsureContainer(ctx context.Context, name string, app spec.App, slot int, rev string) error {
	if err := w.fakeDriver.EnsureContainer(ctx, name, app, slot, rev); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	i := w.insts[name]
	i.Container = &plan.Container{Name: app.Metadata.Name, State: "running", Health: "healthy", Image: app.Spec.Container.Image,
		Labels: ownership.Container{App: app.Metadata.Name, Slot: slot, Hash: app.Spec.Container.Hash(), Revision: rev}.Labels()}
	w.insts[name] = i
	return nil
}

func (w *worldSystem) DeleteInstance(ctx context.Context, name string, backup bool) error {
	if err := w.fakeDriver.DeleteInstance(ctx, name, backup); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.insts, name)
	return nil
}

// TestLoopConvergesAfterReobserving: from nothing, one run creates the
// replicas, its re-observe sees them, and the status says Synced and
// Healthy; the next run writes nothing.
func TestLoopConvergesAfterReobserving(t *testing.T) {
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	w := newWorld()
	l := &Loop{Source: src, System: w, Clock: clock.NewFake(time.Now())}
	l.init()
	l.runOnce(context.Background(), "start")
	st := l.Status().(LoopStatus)
	if len(st.Apps) != 1 || st.Apps[0].Sync != plan.SyncSynced || st.Apps[0].Health != plan.HealthHealthy || st.Apps[0].Ready != st.Apps[0].Desired {
		t.Fatalf("after the first run: %+v", st.Apps)
	}
	writes := len(w.calls)
	l.runOnce(context.Background(), "poll")
	if len(w.calls) != writes {
		t.Errorf("a converged fleet got writes: %v", w.calls[writes:])
	}
	// Scaling to zero deletes, and the status follows. It deletes the
	// whole fleet: past the mass-prune guard only when allowed.
	l.Policy.AllowMassPrune = true
	src.set("r2", strings.Replace(strings.Replace(loopSpec, "IMAGE", "1", 1), "replicas: 1", "replicas: 0", 1))
	l.runOnce(context.Background(), "poll")
	if got, _ := w.Observe(context.Background()); len(got.Instances) != 0 {
		t.Errorf("after scaling to zero: %+v", got.Instances)
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

func (failingObserver) Observe(context.Context) (plan.Observed, error) {
	return plan.Observed{}, errors.New("connection refused")
}

func TestLoopReadyFollowsLXD(t *testing.T) {
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	sys := &fakeSystem{fakeDriver: newFakeDriver()}
	sys.obs = plantest.Converged(plantest.App("web", 1, 1, "reg/web:1"))
	l := &Loop{Source: src, System: sys, Clock: clock.NewFake(time.Now())}
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

// logBuffer collects a loop's log lines; goroutines write to it.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fakeMetrics records what the loop reports.
type fakeMetrics struct {
	mu         sync.Mutex
	results    []string
	errors     []string
	revision   string
	apps       map[string]string
	appRevs    map[string]string
	specErrors int
	succeeded  int
}

func (m *fakeMetrics) RunFinished(result string, _ time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.results = append(m.results, result)
}

func (m *fakeMetrics) RunError(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.errors = append(m.errors, reason)
}

func (m *fakeMetrics) SetRevision(sha string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revision = sha
}

func (m *fakeMetrics) SetOutdatedBaseImages(map[string]int)                 {}
func (m *fakeMetrics) SetUnobservedReplicas(map[string]int)                 {}
func (m *fakeMetrics) SetRetainedVolumes(map[string]int, map[string]uint64) {}

func (m *fakeMetrics) SetApps(s map[string]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.apps = s
}

func (m *fakeMetrics) SetAppRevisions(r map[string]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.appRevs = r
}

func (m *fakeMetrics) SetSpecErrors(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.specErrors = n
}

func (m *fakeMetrics) Triggered(string) {}

func (m *fakeMetrics) Succeeded(time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.succeeded++
}

func (m *fakeMetrics) errorsSeen() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.errors...)
}

// eventually polls cond for a few seconds of real time: the loop's
// goroutines run on their own.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// panickingSystem panics in Observe, as a bug hit by one bad revision
// would.
type panickingSystem struct{ *countingSystem }

func (p *panickingSystem) Observe(context.Context) (plan.Observed, error) {
	p.tick()
	var s []int
	_ = s[len(s)+3] // index out of range, a runtime panic
	return plan.Observed{}, nil
}

// TestLoopRecoversFromPanic: a run that panics is logged with its stack and
// recorded as failed; the daemon goes on; the revision is held (not retried
// on every poll) until a newer commit comes.
func TestLoopRecoversFromPanic(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	sys := &panickingSystem{&countingSystem{fakeSystem: &fakeSystem{fakeDriver: newFakeDriver()}}}
	var logs logBuffer
	m := &fakeMetrics{}
	idle := make(chan struct{}, 100)
	l := &Loop{Source: src, System: sys, Clock: clk, Logger: logs.logger(), Metrics: m, Interval: time.Minute,
		RolloutBackoff: Backoff{Base: time.Hour, Max: time.Hour}, onIdle: func() { idle <- struct{}{} }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()

	<-idle
	if sys.count() != 1 || l.Status().(LoopStatus).LastResult != RunError {
		t.Fatalf("the first run did not panic: %d observes, %+v", sys.count(), l.Status())
	}
	st := l.Status().(LoopStatus)
	if !strings.Contains(st.LastError, "panic") || !strings.Contains(st.LastError, "index out of range") {
		t.Errorf("LastError = %q", st.LastError)
	}
	if st.HeldRevision == nil || st.HeldRevision.Revision != "r1" {
		t.Errorf("the revision is not held: %+v", st.HeldRevision)
	}
	if out := logs.String(); !strings.Contains(out, "reconcile failed") || !strings.Contains(out, "goroutine") || !strings.Contains(out, "loop_test.go") {
		t.Errorf("the panic is not logged with its stack:\n%s", out)
	}
	if e := m.errorsSeen(); len(e) != 1 || e[0] != "panic" {
		t.Errorf("errors counted = %v", e)
	}
	// Polls and triggers go on, but the held revision is not tried again.
	for range 3 {
		clk.Advance(2 * time.Minute) // a poll
		<-idle
		l.Trigger("api")
		<-idle
	}
	if n := src.fetches(); n != 7 {
		t.Errorf("fetches = %d, want 7 (the first run, three polls, three triggers)", n)
	}
	if n := sys.count(); n != 1 {
		t.Errorf("the held revision was tried %d times", n)
	}
	if st := l.Status().(LoopStatus); st.Phase != "Held" {
		t.Errorf("phase = %s, want Held", st.Phase)
	}
	// A newer commit is tried at once.
	src.set("r2", strings.Replace(loopSpec, "IMAGE", "2", 1))
	l.Trigger("webhook")
	eventually(t, "the new commit to be tried", func() bool { return sys.count() == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

// TestLoopPanicBeforeRevisionIsKnown: a Source that panics is a failed run
// with a backoff; nothing is held.
func TestLoopPanicBeforeRevisionIsKnown(t *testing.T) {
	l := &Loop{Source: panickingSource{}, System: &fakeSystem{fakeDriver: newFakeDriver()}, Clock: clock.NewFake(time.Now()),
		ErrorBackoff: Backoff{Base: time.Second, Max: time.Minute}}
	l.init()
	if wait := l.runOnce(context.Background(), "start"); wait != time.Second {
		t.Errorf("wait after a panic = %v, want the error backoff", wait)
	}
	st := l.Status().(LoopStatus)
	if st.LastResult != RunError || !strings.Contains(st.LastError, "panic: fetch blew up") || st.HeldRevision != nil {
		t.Errorf("status = %+v", st)
	}
}

type panickingSource struct{}

func (panickingSource) Fetch(context.Context) (Revision, error) { panic("fetch blew up") }

// TestLoopWakesWhenLeaseExpires: a daemon waiting for a dead holder's lease
// tries again right after it expires, not at the next poll.
func TestLoopWakesWhenLeaseExpires(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	sys := &fakeSystem{fakeDriver: newFakeDriver()}
	lease := &fakeLease{state: LeaseState{Holder: "dead-host:1:abc", Expiry: t0.Add(83 * time.Second)}}
	var logs logBuffer
	l := &Loop{Source: src, System: sys, Clock: clk, Lease: lease, Logger: logs.logger(),
		Interval: 300 * time.Second, LeaseRenew: 30 * time.Second}
	l.init()

	wait := l.runOnce(context.Background(), "start")
	if wait < 83*time.Second || wait > 85*time.Second {
		t.Errorf("waits %v for a lease that expires in 83s (poll interval 300s)", wait)
	}
	st := l.Status().(LoopStatus)
	if st.Phase != "WaitingForLease" || !strings.HasPrefix(st.LeaseHolder, "dead-host:1:abc (until ") || !st.LeaseExpiry.Equal(t0.Add(83*time.Second)) {
		t.Errorf("status while waiting = %+v", st)
	}
	// Item 15: the wait is logged at info with the holder and its expiry.
	out := logs.String()
	if !strings.Contains(out, "level=INFO") || !strings.Contains(out, `holder=dead-host:1:abc`) || !strings.Contains(out, "expires=2026-01-01T00:01:23") {
		t.Errorf("the lease wait is not logged with holder and expiry:\n%s", out)
	}

	// The same through Run: nothing before the expiry, a run right after.
	// The loop is idle once its wake-up is armed; until then the soonest
	// timer may be the lease renewal's (30s), and advancing past that
	// races the loop arming its own.
	idle := make(chan struct{}, 1)
	l.onIdle = func() {
		select {
		case idle <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = l.Run(ctx) }()
	<-idle
	if d := nextTimer(clk); d <= 0 || d > 84*time.Second || lease.acquiresSeen() < 2 {
		t.Fatalf("the loop waits %s after %d acquires", d, lease.acquiresSeen())
	}
	clk.Advance(80 * time.Second)
	// The renewal fired and re-arms on its own goroutine; the loop's
	// wake-up stays the soonest timer.
	eventually(t, "the renewal to re-arm", func() bool { d := nextTimer(clk); return d > 0 && d <= 4*time.Second })
	// Advance fires due timers synchronously: the loop's wake-up is still
	// armed, 4s away, so nothing ran.
	if d := nextTimer(clk); d <= 0 || d > 4*time.Second || src.fetches() != 0 {
		t.Fatalf("acted before the lease expired (next timer %s, fetches %d)", d, src.fetches())
	}
	lease.set(LeaseState{Held: true, Expiry: clk.Now().Add(90 * time.Second)}, nil) // the dead holder's lease ran out
	clk.Advance(4 * time.Second)
	eventually(t, "a run right after the expiry", func() bool { return src.fetches() == 1 })
	if !strings.Contains(logs.String(), "took the lease") {
		t.Errorf("taking the lease is not logged:\n%s", logs.String())
	}
}

func (l *fakeLease) acquiresSeen() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acquires
}

// blockingSystem's Observe waits until the test releases it or the run is
// cancelled, then fails as the LXD client does.
type blockingSystem struct {
	*fakeSystem
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	cause   error
}

func newBlockingSystem(obs plan.Observed) *blockingSystem {
	return &blockingSystem{fakeSystem: &fakeSystem{fakeDriver: newFakeDriver(), obs: obs},
		entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (b *blockingSystem) Observe(ctx context.Context) (plan.Observed, error) {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	select {
	case <-ctx.Done():
		b.mu.Lock()
		b.cause = context.Cause(ctx)
		b.mu.Unlock()
		return plan.Observed{}, fmt.Errorf("lxd: %w", ctx.Err())
	case <-b.release:
		return b.fakeSystem.Observe(ctx)
	}
}

func (b *blockingSystem) cancelCause() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cause
}

// TestLoopCancelledRunIsNotAFailure: a shutdown or a lost lease that
// cancels an observe or a fetch ends the run quietly: no error status, no
// backoff, no error metric, and /readyz stays ready.
func TestLoopCancelledRunIsNotAFailure(t *testing.T) {
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	sys := newBlockingSystem(plantest.Converged(plantest.App("web", 1, 1, "reg/web:1")))
	m := &fakeMetrics{}
	l := &Loop{Source: src, System: sys, Clock: clock.NewFake(time.Now()), Metrics: m}
	l.init()
	close(sys.release)
	l.runOnce(context.Background(), "start")
	if err := l.Ready(); err != nil {
		t.Fatalf("not ready after a good run: %v", err)
	}
	before := l.Status().(LoopStatus)

	sys.release = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-sys.entered; cancel() }()
	if wait := l.runOnce(ctx, "poll"); wait != 0 {
		t.Errorf("a cancelled run waits %v (a backoff)", wait)
	}
	st := l.Status().(LoopStatus)
	if st.LastError != "" || st.LastResult != before.LastResult || st.Phase == "Backoff" || l.errs != 0 {
		t.Errorf("a cancelled observe counts as a failure: %+v (errs %d)", st, l.errs)
	}
	if err := l.Ready(); err != nil {
		t.Errorf("unready after a cancelled run: %v", err)
	}
	// The fetch too.
	ctx, cancel = context.WithCancel(context.Background())
	l.Source = cancellingSource{cancel: cancel}
	if wait := l.runOnce(ctx, "poll"); wait != 0 || l.Status().(LoopStatus).LastError != "" {
		t.Errorf("a cancelled fetch counts as a failure: wait %v, %+v", wait, l.Status())
	}
	if e := m.errorsSeen(); len(e) != 0 {
		t.Errorf("errors counted for cancelled runs: %v", e)
	}
}

// cancellingSource cancels its run, as a shutdown during a fetch does.
type cancellingSource struct{ cancel context.CancelFunc }

func (s cancellingSource) Fetch(ctx context.Context) (Revision, error) {
	s.cancel()
	<-ctx.Done()
	return Revision{}, fmt.Errorf("git: fetch: %w", ctx.Err())
}

// TestLoopLeaseContention: an Acquire that gives up after repeated 412s is
// "try again soon": no failure, no wait for a holder, no error metric.
func TestLoopLeaseContention(t *testing.T) {
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	lease := &fakeLease{err: fmt.Errorf("take lease: %w", ErrLeaseContended)}
	m := &fakeMetrics{}
	l := &Loop{Source: src, System: &fakeSystem{fakeDriver: newFakeDriver()}, Clock: clock.NewFake(time.Now()),
		Lease: lease, Metrics: m, Interval: 5 * time.Minute}
	l.init()
	wait := l.runOnce(context.Background(), "start")
	if wait <= 0 || wait > 5*time.Second {
		t.Errorf("after contention waits %v, want a few seconds", wait)
	}
	st := l.Status().(LoopStatus)
	if st.LastError != "" || st.Phase == "Backoff" || st.Phase == "WaitingForLease" || src.fetches() != 0 || len(m.errorsSeen()) != 0 {
		t.Errorf("contention handled as a failure or a lost lease: %+v, %d fetches, errors %v", st, src.fetches(), m.errorsSeen())
	}
}

// TestLoopRenewal: while a run is in progress, contention and short errors
// on renewal leave it alone; another holder, or errors until the lease
// nears its expiry, cancel it with ErrLeaseLost, without an error status.
func TestLoopRenewal(t *testing.T) {
	// The lease expires 60s after the start and is renewed every 20s.
	for _, tc := range []struct {
		name      string
		fault     func(*fakeLease, time.Time)
		steps     int    // 2s steps of the clock
		cancelled bool   // the run must be cancelled (else: must not be)
		phase     string // the phase once the run was cancelled
	}{
		{"contended once", func(l *fakeLease, _ time.Time) { l.set(LeaseState{}, fmt.Errorf("x: %w", ErrLeaseContended)) }, 15, false, ""},
		{"an error once", func(l *fakeLease, _ time.Time) { l.set(LeaseState{}, errors.New("connection refused")) }, 15, false, ""},
		{"taken by another", func(l *fakeLease, now time.Time) {
			l.set(LeaseState{Holder: "thief", Expiry: now.Add(time.Minute)}, nil)
		}, 20, true, "WaitingForLease"},
		// Not renewed by 40s (LeaseRenew before the expiry): lost; the next
		// run's Acquire fails as LXD does not answer: a lease error.
		{"errors until near the expiry", func(l *fakeLease, _ time.Time) { l.set(LeaseState{}, errors.New("connection refused")) }, 20, true, "Backoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			clk := clock.NewFake(t0)
			src := &fakeSource{}
			src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
			sys := newBlockingSystem(plantest.Converged(plantest.App("web", 1, 1, "reg/web:1")))
			lease := &fakeLease{state: LeaseState{Held: true, Expiry: t0.Add(60 * time.Second)}}
			m := &fakeMetrics{}
			l := &Loop{Source: src, System: sys, Clock: clk, Lease: lease, Metrics: m, LeaseRenew: 20 * time.Second, Interval: time.Hour}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- l.Run(ctx) }()
			<-sys.entered // the run is observing
			tc.fault(lease, clk.Now())
			for range tc.steps {
				clk.Advance(2 * time.Second)
				time.Sleep(2 * time.Millisecond)
				if sys.cancelCause() != nil {
					break
				}
			}
			if !tc.cancelled {
				time.Sleep(10 * time.Millisecond)
				if c := sys.cancelCause(); c != nil {
					t.Fatalf("the run was cancelled: %v", c)
				}
				close(sys.release)
				eventually(t, "the run to end", func() bool { return l.Status().(LoopStatus).LastResult != "" })
				if st := l.Status().(LoopStatus); st.LastError != "" || len(m.errorsSeen()) != 0 {
					t.Errorf("status %+v, errors %v", st, m.errorsSeen())
				}
			} else {
				eventually(t, "the run to be cancelled", func() bool { return sys.cancelCause() != nil })
				if c := sys.cancelCause(); !errors.Is(c, ErrLeaseLost) {
					t.Errorf("cancel cause = %v, want ErrLeaseLost", c)
				}
				if elapsed := clk.Now().Sub(t0); elapsed < 20*time.Second || elapsed > 42*time.Second {
					t.Errorf("cancelled %v after the start", elapsed)
				}
				eventually(t, "phase "+tc.phase, func() bool { return l.Status().(LoopStatus).Phase == tc.phase })
				// The cancelled observe itself is no failure; only the
				// next run's lease error may be.
				for _, e := range m.errorsSeen() {
					if e != "lease" {
						t.Errorf("error counted: %s", e)
					}
				}
				if strings.Contains(l.Status().(LoopStatus).LastError, "canceled") {
					t.Errorf("status shows the cancellation as an error: %+v", l.Status())
				}
			}
			cancel()
			<-done
		})
	}
}

// TestLoopReadyUsesErrorKind: readiness follows the kind of the last
// error, not its text: a Git error whose message starts with "lxd:" keeps
// the daemon ready; a lease error (LXD did not answer) does not.
func TestLoopReadyUsesErrorKind(t *testing.T) {
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	sys := &fakeSystem{fakeDriver: newFakeDriver(), obs: plantest.Converged(plantest.App("web", 1, 1, "reg/web:1"))}
	lease := &fakeLease{state: LeaseState{Held: true}}
	l := &Loop{Source: src, System: sys, Lease: lease, Clock: clock.NewFake(time.Now())}
	l.init()
	l.runOnce(context.Background(), "start")
	src.err = errors.New("lxd: a repository named like this")
	l.runOnce(context.Background(), "poll")
	if err := l.Ready(); err != nil {
		t.Errorf("a Git error made the daemon unready: %v", err)
	}
	lease.set(LeaseState{}, errors.New("read lease: connection refused"))
	l.runOnce(context.Background(), "poll")
	if err := l.Ready(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("ready while LXD does not answer the lease: %v", err)
	}
}

// TestLoopMetricsShowHeldApps: with one app held for an invalid spec, the
// run is "held", not "ok"; the app's status is Invalid; the applied
// revision does not move; the spec errors are counted. A failed rollout
// shows as Held.
func TestLoopMetricsShowHeldApps(t *testing.T) {
	web := strings.Replace(loopSpec, "IMAGE", "1", 1)
	api := strings.NewReplacer("name: web", "name: api", "replicas: 1", "replicas: three").Replace(web)
	src := &fakeSource{rev: Revision{SHA: "r1", FS: fstest.MapFS{"web.yaml": {Data: []byte(web)}, "api.yaml": {Data: []byte(api)}}}}
	sys := &fakeSystem{fakeDriver: newFakeDriver()}
	m := &fakeMetrics{}
	l := &Loop{Source: src, System: sys, Clock: clock.NewFake(time.Now()), Metrics: m}
	l.init()
	l.runOnce(context.Background(), "start")
	if len(m.results) != 1 || m.results[0] != RunHeld {
		t.Errorf("run results = %v, want [held]", m.results)
	}
	if m.apps["api"] != AppStatusInvalid {
		t.Errorf("app statuses = %v, want api Invalid", m.apps)
	}
	if m.revision != "" || m.succeeded != 0 {
		t.Errorf("applied revision moved to %q (succeeded %d) while api is held", m.revision, m.succeeded)
	}
	if m.specErrors < 1 {
		t.Errorf("spec errors = %d", m.specErrors)
	}
	if st := l.Status().(LoopStatus); st.LastResult != RunHeld {
		t.Errorf("LastResult = %q", st.LastResult)
	}

	// api fixed, web's rollout fails: error, then held on the next run.
	src.set("r2", strings.Replace(loopSpec, "IMAGE", "2", 1))
	sys.fail["ready web-0"] = errors.New("unhealthy")
	l.runOnce(context.Background(), "poll")
	l.runOnce(context.Background(), "poll")
	if got := m.results[1:]; len(got) != 2 || got[0] != RunError || got[1] != RunHeld {
		t.Errorf("run results = %v, want error then held", got)
	}
	if m.apps["web"] != AppStatusHeld || m.revision != "" {
		t.Errorf("after a failed rollout: statuses %v, revision %q", m.apps, m.revision)
	}

	// Everything converges: ok, the revision moves, per-app revisions too.
	src.set("r3", strings.Replace(loopSpec, "IMAGE", "3", 1))
	delete(sys.fail, "ready web-0")
	sys.obs = plantest.Converged(plantest.App("web", 1, 1, "reg/web:3"))
	l.runOnce(context.Background(), "poll")
	if last := m.results[len(m.results)-1]; last != RunOK && last != RunNoop {
		t.Errorf("last result = %s", last)
	}
	if m.revision != "r3" || m.apps["web"] != plan.HealthHealthy || m.specErrors != 0 {
		t.Errorf("after convergence: revision %q, statuses %v, spec errors %d", m.revision, m.apps, m.specErrors)
	}
}

// TestObservedViewHidesOtherOwners: the view `berth plan --server` reads
// keeps this owner's instances whole and reduces the others' to what a
// plan needs of them (their name clashes), without their config.
func TestObservedViewHidesOtherOwners(t *testing.T) {
	l := &Loop{Policy: plan.Policy{Owner: "team-a"}}
	if _, _, _, ok := l.ObservedView(); ok {
		t.Fatal("a view before the first observe")
	}
	ours := plan.Instance{Name: "web-0", Status: "Running", Config: map[string]string{ownership.KeyOwner: "team-a", "cloud-init.user-data": "ours"}}
	theirs := plan.Instance{Name: "db-0", Status: "Running", Location: "m2", Config: map[string]string{
		ownership.KeyOwner: "team-b", ownership.KeyApp: "db", ownership.KeySlot: "0", "cloud-init.user-data": "password=hunter2", "environment.TOKEN": "x"}}
	l.lastView = &View{Observed: plan.Observed{Instances: []plan.Instance{ours, theirs}}}
	got, _, _, ok := l.ObservedView()
	obs := got.(plan.Observed)
	if !ok || len(obs.Instances) != 2 || obs.Instances[0].Config["cloud-init.user-data"] != "ours" {
		t.Fatalf("view %+v", obs)
	}
	if c := obs.Instances[1].Config; len(c) != 3 || c[ownership.KeyOwner] != "team-b" || obs.Instances[1].Location != "m2" {
		t.Errorf("another owner's instance: %+v", obs.Instances[1])
	}
	if l.lastView.Observed.Instances[1].Config["environment.TOKEN"] != "x" {
		t.Error("the daemon's own view was changed")
	}
}

// stepBlockingSystem's EnsureContainer waits until the test releases it
// (or the step's context ends), after announcing it started, with how
// many times the lease had been acquired by then.
type stepBlockingSystem struct {
	*fakeSystem
	lease   *fakeLease
	started chan stepStart
	release chan struct{}
}

type stepStart struct {
	instance string
	acquires int
}

func (b *stepBlockingSystem) EnsureContainer(ctx context.Context, name string, app spec.App, slot int, rev string) error {
	b.started <- stepStart{name, b.lease.acquiresSeen()}
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.fakeSystem.EnsureContainer(ctx, name, app, slot, rev)
}

// TestLoopLeaseKeyDeletedStopsSteps: a renewal that finds the lease key
// gone (deleted by hand, so that another writer could take the free
// lease) is a lost lease, not a free one to take back silently: the run
// stops starting steps, it is logged at warn, and the next run takes the
// lease again through Acquire before doing anything.
func TestLoopLeaseKeyDeletedStopsSteps(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	src := &fakeSource{}
	src.set("r1", strings.Replace(strings.Replace(loopSpec, "IMAGE", "2", 1), "replicas: 1", "replicas: 2", 1))
	lease := &fakeLease{state: LeaseState{Held: true, Expiry: t0.Add(60 * time.Second)}}
	// Two replicas at image 1, one at a time: two batches of one step.
	sys := &stepBlockingSystem{fakeSystem: &fakeSystem{fakeDriver: newFakeDriver(), obs: plantest.Converged(plantest.App("web", 2, 1, "reg/web:1"))},
		lease: lease, started: make(chan stepStart, 8), release: make(chan struct{})}
	logs := &logBuffer{}
	l := &Loop{Source: src, System: sys, Clock: clk, Lease: lease, Logger: logs.logger(), LeaseRenew: 20 * time.Second, Interval: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()

	first := <-sys.started // batch 1 of the first run
	lease.mu.Lock()
	lease.renewed = &LeaseState{} // the key was deleted: nobody holds it
	lease.mu.Unlock()
	eventually(t, "the lost lease logged", func() bool {
		clk.Advance(time.Second) // to the renewal
		return strings.Contains(logs.String(), "lost the lease")
	})
	lease.mu.Lock()
	lease.renewed = nil // the next run finds the lease free and takes it
	lease.mu.Unlock()
	close(sys.release)
	// The first run started no more steps: the next step is the new run's
	// first, after it took the lease again.
	next := within(t, sys.started, "the next run's first step")
	if first.instance != "web-0" || next.instance != "web-0" || next.acquires <= first.acquires {
		t.Errorf("steps started: %+v, then %+v; want web-0, then web-0 again by a run that took the lease again", first, next)
	}
	log := logs.String()
	if !strings.Contains(log, "level=WARN") || !strings.Contains(log, "it was removed (its key deleted or garbled) while held") {
		t.Errorf("the loss is not logged at warn with its reason:\n%s", log)
	}
	if strings.Contains(log, "level=ERROR") {
		t.Errorf("a lost lease logged as an error:\n%s", log)
	}
}

// within receives from c, failing after 10s of real time (a hang).
func within[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: none came", what)
		panic("unreachable")
	}
}

// TestLoopReplansSoonAfterAStateInTransition: a rollout that failed only
// because its instance stopped under the step (someone ran `lxc stop`) is
// not held for the rollout backoff: the app shows no failure and no Held,
// and the next run comes after TransitionRetry. An instance that keeps
// doing it is held like any failure after maxTransitions runs in a row.
func TestLoopReplansSoonAfterAStateInTransition(t *testing.T) {
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	sys := &fakeSystem{fakeDriver: newFakeDriver()}
	sys.fail["ready web-0"] = &TransitionError{Err: errors.New("web-0: instance is not running")}
	m := &fakeMetrics{}
	l := &Loop{Source: src, System: sys, Clock: clock.NewFake(time.Now()), Metrics: m,
		RolloutBackoff: Backoff{Base: time.Minute, Max: time.Hour}, TransitionRetry: 3 * time.Second}
	l.init()
	ctx := context.Background()
	for run := 1; run <= maxTransitions; run++ {
		if wait := l.runOnce(ctx, "event"); wait != 3*time.Second {
			t.Errorf("run %d: next run in %s, want TransitionRetry (3s)", run, wait)
		}
		if n := countCalls(sys.fakeDriver, "create web-0"); n != run {
			t.Fatalf("run %d: %d creates; the step was not planned again", run, n)
		}
		if st := l.Status().(LoopStatus); len(st.Failures) != 0 {
			t.Errorf("run %d: failures %+v; a state in transition holds nothing", run, st.Failures)
		}
		if m.apps["web"] == AppStatusHeld {
			t.Errorf("run %d: web shows as Held", run)
		}
	}
	// Once more: no longer "in transition" but a failing rollout, held.
	if wait := l.runOnce(ctx, "event"); wait == 3*time.Second {
		t.Error("still planned again soon after maxTransitions runs")
	}
	if f := l.Status().(LoopStatus).Failures["web"]; f.Retry != Retrying || f.Count != 1 {
		t.Errorf("failure after maxTransitions = %+v, want held Retrying", f)
	}
	l.runOnce(ctx, "poll")
	if n := countCalls(sys.fakeDriver, "create web-0"); n != maxTransitions+1 {
		t.Errorf("%d creates; held within the backoff, want %d", n, maxTransitions+1)
	}
}

// A run whose plan waits on replicas whose Docker LXD did not reach is
// followed after UnobservedRetry, not the poll interval, and changes
// nothing on them; once they are observed the poll interval is back.
func TestLoopLooksAgainSoonAtUnobservedReplicas(t *testing.T) {
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	sys := &fakeSystem{fakeDriver: newFakeDriver()}
	sys.obs = plantest.Converged(plantest.App("web", 1, 1, "reg/web:1"))
	sys.obs.Instances[0].Container = nil
	sys.obs.Instances[0].DockerUnknown = "LXD did not run the tunnel: connecting websockets: i/o timeout"
	l := &Loop{Source: src, System: sys, Clock: clock.NewFake(time.Now()), Interval: time.Hour, UnobservedRetry: 7 * time.Second}
	l.init()
	ctx := context.Background()
	if wait := l.runOnce(ctx, "poll"); wait != 7*time.Second {
		t.Errorf("next run in %s, want UnobservedRetry (7s)", wait)
	}
	if len(sys.fakeDriver.calls) != 0 {
		t.Errorf("calls %q on an unobserved replica", sys.fakeDriver.calls)
	}
	sys.obs = plantest.Converged(plantest.App("web", 1, 1, "reg/web:1"))
	if wait := l.runOnce(ctx, "poll"); wait < 7*time.Second*2 {
		t.Errorf("next run in %s once observed, want the poll interval", wait)
	}
}
