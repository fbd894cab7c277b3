package notify

import (
	"context"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// world is a System whose instances are what its writes made them: a
// create makes a running instance, a container step a healthy container.
type world struct {
	mu    sync.Mutex
	insts map[string]plan.Instance
}

func (w *world) Observe(context.Context) (plan.Observed, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var obs plan.Observed
	for _, i := range w.insts {
		obs.Instances = append(obs.Instances, i)
	}
	return obs, nil
}

func (w *world) images() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]string{}
	for n, i := range w.insts {
		if i.Container != nil {
			out[n] = i.Container.Image
		}
	}
	return out
}

func (w *world) CreateInstance(_ context.Context, name string, app spec.App, cfg map[string]string, _ string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.insts[name] = plan.Instance{Name: name, Status: plan.StatusRunning, Config: maps.Clone(cfg), Profiles: app.Spec.System.Profiles}
	return nil
}

func (w *world) EnsureContainer(_ context.Context, name string, app spec.App, slot int, rev string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := w.insts[name]
	i.Container = &plan.Container{Name: app.Metadata.Name, State: "running", Health: "healthy", Image: app.Spec.Container.Image,
		Labels: ownership.Container{App: app.Metadata.Name, Slot: slot, Hash: app.Spec.Container.Hash(), Revision: rev}.Labels()}
	w.insts[name] = i
	return nil
}

func (w *world) DeleteInstance(_ context.Context, name string, _ bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.insts, name)
	return nil
}

func (w *world) UpdateInstance(_ context.Context, name string, set map[string]string, remove []string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := w.insts[name]
	i.Config = maps.Clone(i.Config)
	maps.Copy(i.Config, set)
	for _, k := range remove {
		delete(i.Config, k)
	}
	w.insts[name] = i
	return nil
}

func (*world) StartInstance(context.Context, string) error              { return nil }
func (*world) StopInstance(context.Context, string) error               { return nil }
func (*world) WaitReady(context.Context, string, spec.App) error        { return nil }
func (*world) Provision(context.Context, string, *spec.Provision) error { return nil }
func (*world) RestartContainer(context.Context, string) error           { return nil }
func (*world) WaitDocker(context.Context, string, time.Duration) error  { return nil }
func (*world) Preflight(context.Context, spec.App) error                { return nil }
func (*world) EnsureVolumes(_ context.Context, _ string, _ spec.App, _ int, v []plan.StepVolume) ([]plan.StepVolume, error) {
	return v, nil
}
func (*world) SnapshotVolumes(context.Context, []plan.StepVolume, string) error { return nil }
func (*world) DeleteVolumes(context.Context, []plan.StepVolume) error           { return nil }

// source serves the revision the test last set.
type source struct {
	rev atomic.Pointer[reconciler.Revision]
}

func (s *source) Fetch(context.Context) (reconciler.Revision, error) { return *s.rev.Load(), nil }

func (s *source) set(sha, image string) {
	s.rev.Store(&reconciler.Revision{SHA: sha, FS: fstest.MapFS{"web.yaml": {Data: []byte(strings.Replace(loopApp, "IMAGE", image, 1))}}})
}

// hanging accepts every request and never answers it: the client gives
// up (its timeout) or the test ends.
type hanging struct {
	got, inFlight atomic.Int64
	seen          chan struct{}
}

func newHanging() *hanging { return &hanging{seen: make(chan struct{}, 100)} }

func (h *hanging) ServeHTTP(_ http.ResponseWriter, r *http.Request) {
	// The server notices that the client went away only once the body is
	// read.
	_, _ = io.Copy(io.Discard, r.Body)
	h.got.Add(1)
	h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	h.seen <- struct{}{}
	<-r.Context().Done()
}

func (h *hanging) counts() (got, inFlight int64) { return h.got.Load(), h.inFlight.Load() }

const loopApp = `apiVersion: berth/v1
kind: App
metadata: {name: web}
spec:
  replicas: 2
  system: {image: berth/debian-docker}
  container: {image: reg/web:IMAGE}
`

func within[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("no %s", what)
		var zero T
		return zero
	}
}

// TestHangingAndFailingTargetsDoNotDelayTheLoop: a webhook receiver that
// never answers and a forge that answers 500 are the daemon's notifier's
// targets, on a clock that does not move, so neither request times out
// nor is retried: delivery is as stuck as it can be. The reconcile loop
// (its OnRun is the notifier's Notify, as in `berth run`) still converges
// two revisions and does a no-op run, each run finishing while the
// webhook's first request is still unanswered; nothing was delivered,
// nothing was dropped, and the later outcomes wait in the queues.
func TestHangingAndFailingTargetsDoNotDelayTheLoop(t *testing.T) {
	hang := newHanging()
	hangSrv := httptest.NewServer(hang)
	t.Cleanup(hangSrv.Close)
	forge := newFakeForge(t, 500)
	h := newHarness(t,
		&Webhook{URL: hangSrv.URL, Secret: func() ([]byte, error) { return []byte("k"), nil }},
		&CommitStatus{Forge: GitHub, API: forge.srv.URL, Repo: "a/b", Token: token("t"), Context: "berth"})
	h.start(t)

	src := &source{}
	src.set("1111111111111111111111111111111111111111", "1")
	w := &world{insts: map[string]plan.Instance{}}
	runs := make(chan reconciler.RunReport, 10)
	l := &reconciler.Loop{Source: src, System: w, Interval: time.Hour, Policy: plan.Policy{Owner: "berth"},
		OnRun: func(r reconciler.RunReport) {
			h.n.Notify(r)
			runs <- r
		}}
	ctx, cancel := context.WithCancel(context.Background())
	loopDone := make(chan error, 1)
	go func() { loopDone <- l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-loopDone })

	first := within(t, runs, "run")
	if first.Result != reconciler.RunOK || first.Apps["web"] != plan.HealthHealthy {
		t.Fatalf("first run: %s %v %s", first.Result, first.Apps, first.Error)
	}
	// Both targets got the first outcome: one holds it, one refused it
	// and waits out its backoff on a clock that does not move.
	within(t, hang.seen, "request to the hanging receiver")
	within(t, forge.seen, "request to the failing forge")
	h.wait(t)

	src.set("2222222222222222222222222222222222222222", "2")
	l.Trigger("test")
	second := within(t, runs, "run")
	l.Trigger("test")
	third := within(t, runs, "run")
	if second.Result != reconciler.RunOK || third.Result != reconciler.RunNoop || third.Revision != second.Revision {
		t.Fatalf("later runs: %s %s (%s), %s %s", second.Revision, second.Result, second.Error, third.Revision, third.Result)
	}
	if got := w.images(); len(got) != 2 || got["web-0"] != "reg/web:2" || got["web-1"] != "reg/web:2" {
		t.Errorf("replicas after the second revision: %v", got)
	}
	for _, r := range []reconciler.RunReport{first, second, third} {
		t.Logf("run of %s: %s in %s", r.Revision[:8], r.Result, r.Finished.Sub(r.Started))
	}

	// Every run ended while the webhook's first request was unanswered,
	// and neither target was asked again.
	if got, inFlight := hang.counts(); got != 1 || inFlight != 1 {
		t.Errorf("hanging receiver: %d requests, %d unanswered; want 1 and 1", got, inFlight)
	}
	if n := len(forge.requests()); n != 1 {
		t.Errorf("failing forge: %d requests, want 1", n)
	}
	for _, target := range []string{"webhook", "github"} {
		if d, f, dr := h.count(h.n.Metrics.deliveries, target), h.count(h.n.Metrics.failures, target), h.count(h.n.Metrics.drops, target); d != 0 || f != 0 || dr != 0 {
			t.Errorf("%s: %v delivered, %v failed, %v dropped; want none yet", target, d, f, dr)
		}
	}
	// The second revision's outcome waits in each queue (the no-op run
	// said nothing new to the forge; its webhook payload has another
	// result, so it is queued too).
	for _, q := range h.n.queues {
		q.mu.Lock()
		n := len(q.items)
		q.mu.Unlock()
		if want := map[string]int{"webhook": 2, "github": 1}[q.target.Name()]; n != want {
			t.Errorf("%s queue holds %d outcomes, want %d", q.target.Name(), n, want)
		}
	}
}
