package reconciler

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
)

// fakeWatcher delivers the changes a test sends, and breaks on demand.
type fakeWatcher struct {
	changes    chan Change
	breaks     chan error
	subscribed chan struct{}
	mu         sync.Mutex
	dials      int
}

func newFakeWatcher() *fakeWatcher {
	return &fakeWatcher{changes: make(chan Change), breaks: make(chan error), subscribed: make(chan struct{}, 10)}
}

func (w *fakeWatcher) Watch(ctx context.Context, ready func(), handle func(Change)) error {
	w.mu.Lock()
	w.dials++
	w.mu.Unlock()
	ready()
	w.subscribed <- struct{}{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.breaks:
			return err
		case c := <-w.changes:
			handle(c)
		}
	}
}

// countingSystem counts observes.
type countingSystem struct {
	*fakeSystem
	mu       sync.Mutex
	observes int
}

func (c *countingSystem) Observe(ctx context.Context) (plan.Observed, error) {
	c.tick()
	return c.fakeSystem.Observe(ctx)
}

func (c *countingSystem) tick() {
	c.mu.Lock()
	c.observes++
	c.mu.Unlock()
}

func (c *countingSystem) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.observes
}

// With the event stream up, an idle poll checks Git and observes nothing;
// an event makes the next run observe, and so does a resync period, and a
// reconnect after the stream broke. A stop tells OnChange at once.
func TestLoopEventsDriveObserving(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	sys := &countingSystem{fakeSystem: &fakeSystem{fakeDriver: newFakeDriver(), obs: plantest.Converged(plantest.App("web", 1, 1, "reg/web:1"))}}
	w := newFakeWatcher()
	idle := make(chan struct{}, 100)
	var downs []string
	var mu sync.Mutex
	l := &Loop{Source: src, System: sys, Clock: clk, Interval: time.Minute, Resync: 5 * time.Minute, Watcher: w,
		ErrorBackoff: Backoff{Base: time.Second, Max: time.Second},
		OnChange:     func(c Change) { mu.Lock(); downs = append(downs, c.Instance); mu.Unlock() },
		onIdle:       func() { idle <- struct{}{} }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	<-idle
	first := sys.count() // the first run observes
	if first == 0 {
		t.Fatal("the first run did not observe")
	}
	<-w.subscribed

	clk.Advance(70 * time.Second) // a poll
	<-idle
	if n := sys.count(); n != first {
		t.Errorf("an idle poll observed (%d observes, want %d)", n, first)
	}
	if n := src.fetches(); n != 2 {
		t.Errorf("the idle poll did not check Git: %d fetches", n)
	}

	w.changes <- Change{Instance: "web-0", Action: "instance-stopped", Requestor: "root via unix"}
	<-idle
	if n := sys.count(); n != first+1 {
		t.Errorf("an event did not make a run observe: %d observes", n)
	}
	mu.Lock()
	if len(downs) != 1 || downs[0] != "web-0" {
		t.Errorf("OnChange got %v", downs)
	}
	mu.Unlock()
	// Exec and file operations are not changes: they would loop.
	w.changes <- Change{Instance: "web-0", Action: "instance-exec"}

	clk.Advance(6 * time.Minute) // past Resync: the poll observes in full
	<-idle
	if n := sys.count(); n != first+2 {
		t.Errorf("no full observe after Resync: %d observes", n)
	}

	w.breaks <- errors.New("websocket: close 1006")
	clk.BlockUntil(2) // the poll timer and the reconnect backoff
	clk.Advance(time.Second)
	<-idle // the reconnect asked for a resync
	if n := sys.count(); n != first+3 {
		t.Errorf("no full observe after a reconnect: %d observes", n)
	}
	cancel()
	<-done
}

// With self-heal off, drift is reported and not written — what the daemon
// finds at start included — and only a revision that arrives while it runs
// is applied.
func TestLoopReportOnly(t *testing.T) {
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	w := newWorld()
	l := &Loop{Source: src, System: w, Clock: clock.NewFake(time.Now()), ReportOnly: true}
	l.init()
	l.runOnce(context.Background(), "start")
	if len(w.calls) != 0 {
		t.Fatalf("self-heal off wrote what it found at start: %v", w.calls)
	}
	if st := l.Status().(LoopStatus); st.Apps[0].Sync != plan.SyncOutOfSync {
		t.Errorf("drift at start not reported: %+v", st.Apps[0])
	}
	src.set("r2", strings.Replace(loopSpec, "IMAGE", "2", 1))
	l.runOnce(context.Background(), "webhook")
	if len(w.calls) == 0 {
		t.Fatal("a new revision was not applied with self-heal off")
	}
	w.mu.Lock()
	inst := w.insts["web-0"]
	inst.Status = "Stopped" // by hand
	w.insts["web-0"] = inst
	w.mu.Unlock()
	writes := len(w.calls)
	l.runOnce(context.Background(), "event")
	if len(w.calls) != writes {
		t.Errorf("self-heal off, yet drift was written: %v", w.calls[writes:])
	}
	if st := l.Status().(LoopStatus); st.Apps[0].Sync != plan.SyncOutOfSync || len(st.Apps[0].Drift) == 0 {
		t.Errorf("drift not reported: %+v", st.Apps[0])
	}
}

// Only a converged fleet with nothing held may skip observing on a poll.
func TestCheapPollNeedsAConvergedFleet(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := &Loop{Watcher: newFakeWatcher(), Clock: clock.NewFake(now)}
	l.init()
	l.eventsUp.Store(true)
	l.lastObservedRev, l.lastFullObserve, l.lastConverged = "r1", now, true
	if !l.cheapPoll("poll", "r1", now.Add(time.Minute)) {
		t.Fatal("a converged, quiet fleet is not cheap")
	}
	for name, change := range map[string]func(){
		"not converged":       func() { l.lastConverged = false },
		"a rollout held":      func() { l.fails.apps["web"] = AppFailure{Revision: "r1", Retry: Retrying} },
		"an event":            func() { l.needFull.Store(true) },
		"a new revision":      func() {},
		"past resync":         func() {},
		"a trigger, not poll": func() {},
	} {
		l.lastConverged, l.fails.apps = true, map[string]AppFailure{}
		l.needFull.Store(false)
		change()
		rev, at, reason := "r1", now.Add(time.Minute), "poll"
		switch name {
		case "a new revision":
			rev = "r2"
		case "past resync":
			at = now.Add(6 * time.Minute)
		case "a trigger, not poll":
			reason = "webhook"
		}
		if l.cheapPoll(reason, rev, at) {
			t.Errorf("%s: the poll skipped observing", name)
		}
	}
}

// TestEventLiftsAHeldRollout: a rollout held for its backoff after a step
// failed on web-0 is planned again as soon as web-0 changes run state
// (the failure may have been Docker refusing while the instance shut
// down); an event for another replica, or one that does not change the
// run state, lifts nothing, and a Stalled failure stays held.
func TestEventLiftsAHeldRollout(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	sys := &fakeSystem{fakeDriver: newFakeDriver()}
	sys.fail["ready web-0"] = errors.New("docker in web-0: start container web: Error response from daemon")
	l := &Loop{Source: src, System: sys, Clock: clk, RolloutBackoff: Backoff{Base: time.Minute, Max: time.Hour}}
	l.init()
	ctx := context.Background()
	l.runOnce(ctx, "start")
	if f := l.Status().(LoopStatus).Failures["web"]; f.Retry != Retrying || len(f.Instances) != 1 || f.Instances[0] != "web-0" {
		t.Fatalf("failure = %+v", f)
	}
	delete(sys.fail, "ready web-0")
	clk.Advance(time.Second)
	for _, c := range []Change{
		{Instance: "web-1", Action: "instance-stopped"},
		{Instance: "web-0", Action: "instance-updated"},
		{Instance: "web-0", Action: "container-die"},
	} {
		l.change(c)
		l.runOnce(ctx, "event")
		if n := countCalls(sys.fakeDriver, "create web-0"); n != 1 {
			t.Fatalf("after %s of %s: %d creates; the hold was lifted", c.Action, c.Instance, n)
		}
	}
	l.change(Change{Instance: "web-0", Action: "instance-shutdown"})
	if f := l.Status().(LoopStatus).Failures["web"]; f.Count != 1 || f.RetryAfter.After(clk.Now()) {
		t.Errorf("after web-0 shut down: failure = %+v, want its backoff ended", f)
	}
	l.runOnce(ctx, "event")
	if n := countCalls(sys.fakeDriver, "create web-0"); n != 2 {
		t.Errorf("%d creates; not planned again after web-0 changed state", n)
	}

	// A stalled revision waits for a commit, events or not.
	m := failureMemory{backoff: l.RolloutBackoff, apps: map[string]AppFailure{}}
	f := m.failed("api", "r1", "manifest unknown", Stalled, clk.Now())
	f.Instances = []string{"api-0"}
	m.apps["api"] = f
	if _, lifted := m.lift("api-0", clk.Now()); lifted {
		t.Error("an event lifted a Stalled failure")
	}
}

// eventAfterObserve is a fakeSystem whose first observe is followed by an
// event (delivered before the plan runs), as when Docker's die events
// come before LXD's shutdown of the same instance.
type eventAfterObserve struct {
	*fakeSystem
	after func()
}

func (e *eventAfterObserve) Observe(ctx context.Context) (plan.Observed, error) {
	obs, err := e.fakeSystem.Observe(ctx)
	if f := e.after; f != nil {
		e.after = nil
		f()
	}
	return obs, err
}

// TestLoopReplansWhenAnEventContradictsThePlan: a replica whose container
// died is planned a start-container; LXD then reports the instance shut
// down before the step runs. The step is not run, nothing is held, and the
// run asks for the next one soon; that one plans from what is there now.
func TestLoopReplansWhenAnEventContradictsThePlan(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	src := &fakeSource{}
	src.set("r1", strings.Replace(loopSpec, "IMAGE", "1", 1))
	app := plantest.App("web", 1, 1, "reg/web:1")
	sys := &eventAfterObserve{fakeSystem: &fakeSystem{fakeDriver: newFakeDriver(), obs: plantest.Converged(app)}}
	sys.obs.Instances[0].Container.State = "exited"
	l := &Loop{Source: src, System: sys, Clock: clk, RolloutBackoff: Backoff{Base: time.Minute, Max: time.Hour}}
	l.init()
	sys.after = func() {
		clk.Advance(time.Second)
		l.change(Change{Instance: "web-0", Action: "instance-shutdown"})
	}
	wait := l.runOnce(context.Background(), "event")
	if n := len(sys.calls); n != 0 {
		t.Errorf("acted on a plan an event contradicted: %v", sys.calls)
	}
	if st := l.Status().(LoopStatus); len(st.Failures) != 0 {
		t.Errorf("failures = %+v; nothing failed", st.Failures)
	}
	if wait != l.TransitionRetry {
		t.Errorf("next run in %s, want TransitionRetry", wait)
	}
	// The next run sees the instance stopped and starts it.
	sys.obs.Instances[0].Status, sys.obs.Instances[0].Container = "Stopped", nil
	l.runOnce(context.Background(), "event")
	if n := countCalls(sys.fakeDriver, "start web-0"); n != 1 {
		t.Errorf("calls = %v, want web-0 started", sys.calls)
	}
}
