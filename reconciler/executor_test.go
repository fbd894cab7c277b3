package reconciler

import (
	"context"
	"errors"
	"fmt"
	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-gitops/berth/spec"
)

// fakeDriver records calls and tracks how many replicas of each app are
// unavailable at once, to check the rollout's maxUnavailable bound.
type fakeDriver struct {
	mu      sync.Mutex
	calls   []string
	fail    map[string]error // "op instance" -> error
	busy    map[string]int   // app -> replicas currently disrupted
	maxBusy map[string]int
	delay   time.Duration
	// config is what UpdateInstance set on each instance, all calls merged.
	config map[string]map[string]string
}

func newFakeDriver() *fakeDriver {
	return &fakeDriver{fail: map[string]error{}, busy: map[string]int{}, maxBusy: map[string]int{}}
}

func (f *fakeDriver) record(op, name string) error {
	f.mu.Lock()
	f.calls = append(f.calls, op+" "+name)
	err := f.fail[op+" "+name]
	f.mu.Unlock()
	return err
}

func appOf(instance string) string { return instance[:strings.LastIndexByte(instance, '-')] }

func (f *fakeDriver) down(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := appOf(name)
	f.busy[a]++
	f.maxBusy[a] = max(f.maxBusy[a], f.busy[a])
}

func (f *fakeDriver) up(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.busy[appOf(name)]--
}

func (f *fakeDriver) CreateInstance(_ context.Context, name string, _ spec.App, cfg map[string]string, _ string) error {
	if cfg[ownership.KeyOwner] == "" || cfg[ownership.KeyApp] == "" {
		return errors.New("create without berth keys")
	}
	return f.record("create", name)
}
func (f *fakeDriver) EnsureVolumes(_ context.Context, name string, _ spec.App, _ int, vols []plan.StepVolume) ([]plan.StepVolume, error) {
	out := slices.Clone(vols)
	for i := range out {
		if out[i].Pool == "" {
			out[i].Pool = "default"
		}
	}
	return out, f.record("ensure-volumes", name)
}
func (f *fakeDriver) SnapshotVolumes(_ context.Context, vols []plan.StepVolume, snap string) error {
	return f.record("snapshot-volumes", vols[0].Name+"@"+snap)
}
func (f *fakeDriver) DeleteVolumes(_ context.Context, vols []plan.StepVolume) error {
	for _, v := range vols {
		if v.Delete {
			if err := f.record("delete-volume", v.Name); err != nil {
				return err
			}
		}
	}
	return nil
}
func (f *fakeDriver) Preflight(_ context.Context, app spec.App) error {
	return f.record("preflight", app.Metadata.Name)
}
func (f *fakeDriver) StartInstance(_ context.Context, name string) error {
	return f.record("start", name)
}
func (f *fakeDriver) StopInstance(_ context.Context, name string) error {
	return f.record("stop", name)
}
func (f *fakeDriver) UpdateInstance(_ context.Context, name string, set map[string]string, remove []string) error {
	f.mu.Lock()
	if f.config == nil {
		f.config = map[string]map[string]string{}
	}
	if f.config[name] == nil {
		f.config[name] = map[string]string{}
	}
	maps.Copy(f.config[name], set)
	f.mu.Unlock()
	return f.record(fmt.Sprintf("update(%d,-%v)", len(set), remove), name)
}
func (f *fakeDriver) DeleteInstance(_ context.Context, name string, backup bool) error {
	f.down(name)
	return f.record(fmt.Sprintf("delete(backup=%v)", backup), name)
}
func (f *fakeDriver) EnsureContainer(_ context.Context, name string, _ spec.App, _ int, _ string) error {
	f.down(name)
	return f.record("ensure", name)
}
func (f *fakeDriver) WaitReady(_ context.Context, name string, _ spec.App) error {
	time.Sleep(f.delay)
	err := f.record("ready", name)
	if err == nil {
		f.up(name)
	}
	return err
}

func (f *fakeDriver) RestartContainer(_ context.Context, name string) error {
	return f.record("restart-container", name)
}

func (f *fakeDriver) Provision(_ context.Context, name string, _ *spec.Provision) error {
	return f.record("provision", name)
}

func (f *fakeDriver) WaitDocker(_ context.Context, name string, _ time.Duration) error {
	return f.record("wait-docker", name)
}

func apply(t *testing.T, f *fakeDriver, desired plan.Desired, obs plan.Observed) (plan.Plan, Result, []Event) {
	t.Helper()
	pl := plan.MakePlan(desired, obs, plan.Policy{})
	var mu sync.Mutex
	var events []Event
	ex := &Executor{Driver: f, OnEvent: func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() }}
	return pl, ex.Apply(context.Background(), pl, desired, obs), events
}

func TestApplyRollingUpdateHonoursMaxUnavailable(t *testing.T) {
	for _, maxU := range []int{1, 2} {
		t.Run(fmt.Sprint("maxUnavailable=", maxU), func(t *testing.T) {
			old := plantest.App("web", 4, maxU, "reg/web:1")
			now := plantest.App("web", 4, maxU, "reg/web:2")
			f := newFakeDriver()
			f.delay = 5 * time.Millisecond
			pl, res, events := apply(t, f, plan.Desired{Revision: "r2", Apps: []spec.App{now}}, plantest.Converged(old))
			if len(pl.Steps) != 4 || !res.OK() {
				t.Fatalf("plan %s\nresult %+v", pl.Text(), res)
			}
			if f.maxBusy["web"] != maxU {
				t.Errorf("at most %d replicas were down at once, want exactly %d", f.maxBusy["web"], maxU)
			}
			if len(events) != 8 || res.Apps[0].Status != AppReady || res.Apps[0].Changed != 4 {
				t.Errorf("events %d, apps %+v", len(events), res.Apps)
			}
		})
	}
}

func TestApplyFailureHaltsOnlyThatApp(t *testing.T) {
	web1 := plantest.App("web", 3, 1, "reg/web:1")
	web2 := plantest.App("web", 3, 1, "reg/broken:1")
	api := plantest.App("api", 2, 1, "reg/api:1")
	f := newFakeDriver()
	f.fail["ready web-0"] = errors.New("not ready: unhealthy")
	_, res, _ := apply(t, f, plan.Desired{Revision: "r2", Apps: []spec.App{web2, api}}, plantest.Converged(web1))
	if res.OK() {
		t.Fatal("want a failure")
	}
	byApp := map[string]AppResult{}
	for _, a := range res.Apps {
		byApp[a.App] = a
	}
	if a := byApp["web"]; a.Status != AppDegraded || !strings.Contains(a.Reason, "web-0: replace-container: not ready: unhealthy") {
		t.Errorf("web = %+v", a)
	}
	if a := byApp["api"]; a.Status != AppReady || a.Changed != 2 {
		t.Errorf("api = %+v", a)
	}
	// web-1 and web-2 were never touched: they keep the old version.
	for _, c := range f.calls {
		if strings.HasSuffix(c, "web-1") || strings.HasSuffix(c, "web-2") {
			t.Errorf("untouched replica was changed: %s", c)
		}
	}
	skipped := 0
	for _, s := range res.Steps {
		if s.Status == StepSkipped {
			skipped++
		}
	}
	if skipped != 2 {
		t.Errorf("skipped = %d, want 2", skipped)
	}
}

func TestApplyStepKinds(t *testing.T) {
	a := plantest.App("web", 2, 1, "reg/web:1")
	obs := plantest.Converged(a)
	obs.Instances[0].Status = "Stopped"
	obs.Instances[0].Container = nil
	obs.Instances[1].Config[spec.KeyLimitsMemory] = "1GiB" // drift: the spec sets no memory limit
	obs.Instances[1].Config[ownership.KeyConfigKeys] = spec.KeyLimitsMemory
	gone := plantest.App("old", 1, 1, "reg/old:1")
	obs.Instances = append(obs.Instances, plantest.Converged(gone).Instances...)
	a.Spec.Update.Snapshot = true
	f := newFakeDriver()
	pl, res, _ := apply(t, f, plan.Desired{Revision: "r1", Apps: []spec.App{a}}, obs)
	if !res.OK() {
		t.Fatalf("%+v", res)
	}
	got := slices.Clone(f.calls)
	slices.Sort(got)
	want := []string{"delete(backup=false) old-0", "ensure web-0", "ready web-0", "start web-0", "update(6,-[limits.memory user.berth.config-keys]) web-1"}
	if !slices.Equal(got, want) {
		t.Errorf("calls = %q\nwant    %q\nplan:\n%s", got, want, pl.Text())
	}
	if len(res.Apps) != 2 || res.Apps[0].App != "old" || res.Apps[0].Status != AppRemoved || res.Apps[1].Status != AppReady {
		t.Errorf("apps = %+v", res.Apps)
	}
}

func TestApplyCancelledSkipsLaterBatches(t *testing.T) {
	old := plantest.App("web", 3, 1, "reg/web:1")
	now := plantest.App("web", 3, 1, "reg/web:2")
	ctx, cancel := context.WithCancel(context.Background())
	f := newFakeDriver()
	obs := plantest.Converged(old)
	desired := plan.Desired{Revision: "r2", Apps: []spec.App{now}}
	pl := plan.MakePlan(desired, obs, plan.Policy{})
	ex := &Executor{Driver: f, OnEvent: func(e Event) {
		if e.Phase == PhaseDone {
			cancel()
		}
	}}
	res := ex.Apply(ctx, pl, desired, obs)
	done := 0
	for _, s := range res.Steps {
		if s.Status == StepDone {
			done++
		} else if s.Status != StepSkipped || !strings.Contains(s.Error, "canceled") {
			t.Errorf("step %+v", s)
		}
	}
	if done != 1 || res.Apps[0].Status != AppDegraded {
		t.Errorf("done = %d, apps = %+v", done, res.Apps)
	}
}

func TestApplyReportsHeldApps(t *testing.T) {
	f := newFakeDriver()
	a := plantest.App("web", 1, 1, "reg/web:1")
	_, res, _ := apply(t, f, plan.Desired{Revision: "r1", Apps: []spec.App{a}, HeldApps: []string{"api"}}, plantest.Converged(a))
	if len(f.calls) != 0 || len(res.Apps) != 2 || res.Apps[0].Status != AppHeld || res.Apps[1].Status != AppReady {
		t.Errorf("calls %v apps %+v", f.calls, res.Apps)
	}
}

func TestCheckFresh(t *testing.T) {
	a := plantest.App("web", 2, 1, "reg/web:1")
	desired := plan.Desired{Revision: "r1", Apps: []spec.App{a}}
	obs := plantest.Converged(plantest.App("web", 1, 1, "reg/web:1"))
	pl := plan.MakePlan(desired, obs, plan.Policy{})
	if err := CheckFresh(pl, desired, obs); err != nil {
		t.Fatal(err)
	}
	if err := CheckFresh(pl, plan.Desired{Revision: "r2", Apps: desired.Apps}, obs); !errors.Is(err, ErrStalePlan) {
		t.Errorf("other revision: %v", err)
	}
	moved := plantest.Converged(plantest.App("web", 2, 1, "reg/web:1"))
	if err := CheckFresh(pl, desired, moved); !errors.Is(err, ErrStalePlan) {
		t.Errorf("changed state: %v", err)
	}
}

func TestRecreateChecksBeforeDeleting(t *testing.T) {
	old := plantest.App("web", 1, 1, "reg/web:1")
	now := old
	now.Spec.System.Image = "typo/alias"
	f := newFakeDriver()
	f.fail["preflight web"] = errors.New(`image alias "typo/alias" not found`)
	_, res, _ := apply(t, f, plan.Desired{Revision: "r2", Apps: []spec.App{now}}, plantest.Converged(old))
	if res.OK() || !strings.Contains(res.Apps[0].Reason, "not deleting the old instance") {
		t.Fatalf("result %+v", res)
	}
	for _, c := range f.calls {
		if strings.HasPrefix(c, "delete") {
			t.Errorf("deleted although the new instance cannot be built: %v", f.calls)
		}
	}
}

// A replica whose Docker does not answer is repaired as a planned step:
// the executor waits (bounded) for Docker, and restarts the instance only
// if it stays silent.
func TestApplyRestartRepairsSilentDocker(t *testing.T) {
	a := plantest.App("web", 2, 1, "reg/web:1")
	for _, silent := range []bool{false, true} {
		t.Run(fmt.Sprint("silent=", silent), func(t *testing.T) {
			obs := plantest.Converged(a)
			obs.Instances[1].Container = nil
			obs.Instances[1].DockerError = "exec docker system dial-stdio: exit status 1"
			f := newFakeDriver()
			if silent {
				f.fail["wait-docker web-1"] = errors.New("docker did not answer in web-1 within 30s")
			}
			pl, res, _ := apply(t, f, plan.Desired{Revision: "r1", Apps: []spec.App{a}}, obs)
			if len(pl.Steps) != 1 || pl.Steps[0].Action != plan.Restart || !res.OK() {
				t.Fatalf("plan:\n%s\nresult %+v", pl.Text(), res)
			}
			want := []string{"wait-docker web-1", "ensure web-1", "ready web-1"}
			if silent {
				want = []string{"wait-docker web-1", "stop web-1", "start web-1", "ensure web-1", "ready web-1"}
			}
			if !slices.Equal(f.calls, want) {
				t.Errorf("calls = %q, want %q", f.calls, want)
			}
		})
	}
}

// A Restart step whose wait finds that LXD could not even run the tunnel
// (ErrDockerUnreached) restarts nothing: Docker's silence was never
// observed. The step fails as transient, for a later run to look again.
func TestApplyRestartLeavesUnreachedDockerAlone(t *testing.T) {
	a := plantest.App("web", 2, 1, "reg/web:1")
	obs := plantest.Converged(a)
	obs.Instances[1].Container = nil
	obs.Instances[1].DockerError = "exec docker system dial-stdio: exit status 1"
	f := newFakeDriver()
	f.fail["wait-docker web-1"] = fmt.Errorf("%w: lxd: exec in web-1: connecting websockets: i/o timeout", ErrDockerUnreached)
	pl, res, _ := apply(t, f, plan.Desired{Revision: "r1", Apps: []spec.App{a}}, obs)
	if len(pl.Steps) != 1 || pl.Steps[0].Action != plan.Restart || res.OK() {
		t.Fatalf("plan:\n%s\nresult %+v", pl.Text(), res)
	}
	if want := []string{"wait-docker web-1"}; !slices.Equal(f.calls, want) {
		t.Errorf("calls = %q, want %q (no stop, no start)", f.calls, want)
	}
}

// A Restart step whose wait finds the instance stopped under it (someone
// ran `lxc stop` after the plan) neither stops nor starts it: the step
// fails InTransition, and the app with it, for a fresh plan to start it.
func TestApplyRestartLeavesStoppedInstanceToTheNextPlan(t *testing.T) {
	a := plantest.App("web", 2, 1, "reg/web:1")
	obs := plantest.Converged(a)
	obs.Instances[1].Container = nil
	obs.Instances[1].DockerError = "exec docker system dial-stdio: exit status 1"
	f := newFakeDriver()
	f.fail["wait-docker web-1"] = &TransitionError{Err: errors.New("waiting for docker in web-1: instance is not running")}
	pl, res, _ := apply(t, f, plan.Desired{Revision: "r1", Apps: []spec.App{a}}, obs)
	if len(pl.Steps) != 1 || pl.Steps[0].Action != plan.Restart || res.OK() {
		t.Fatalf("plan:\n%s\nresult %+v", pl.Text(), res)
	}
	if want := []string{"wait-docker web-1"}; !slices.Equal(f.calls, want) {
		t.Errorf("calls = %q, want %q (no stop, no start)", f.calls, want)
	}
	if res.Steps[0].Retry != InTransition || res.Apps[0].Retry != InTransition {
		t.Errorf("retry: step %q, app %q; want InTransition for both", res.Steps[0].Retry, res.Apps[0].Retry)
	}
}

// An app is InTransition only when every failure of its run was; one
// permanent failure stalls it, one other failure backs it off.
func TestAppRetry(t *testing.T) {
	moved := &TransitionError{Err: errors.New("instance is not running")}
	for _, tc := range []struct {
		errs []error
		want Retry
	}{
		{[]error{moved}, InTransition},
		{[]error{moved, moved}, InTransition},
		{[]error{moved, errors.New("timeout")}, Retrying},
		{[]error{moved, errors.New("timeout"), permanentErr{}}, Stalled},
		{[]error{fmt.Errorf("ensure: %w", moved), nil}, InTransition},
	} {
		var results []StepResult
		var idx []int
		for i, err := range tc.errs {
			r := StepResult{Status: StepDone}
			if err != nil {
				r = StepResult{Status: StepFailed, Error: err.Error(), Retry: RetryOf(err)}
			}
			results, idx = append(results, r), append(idx, i)
		}
		if got := appRetry(idx, results); got != tc.want {
			t.Errorf("appRetry(%v) = %q, want %q", tc.errs, got, tc.want)
		}
	}
}

// A leftover "<app>-next" container is removed by converging the replica's
// container (EnsureContainer removes leftovers first).
func TestApplyRemovesLeftovers(t *testing.T) {
	a := plantest.App("web", 1, 1, "reg/web:1")
	obs := plantest.Converged(a)
	obs.Instances[0].StaleContainers = []string{"web-next"}
	f := newFakeDriver()
	pl, res, _ := apply(t, f, plan.Desired{Revision: "r1", Apps: []spec.App{a}}, obs)
	if len(pl.Steps) != 1 || pl.Steps[0].Action != plan.RemoveLeftovers || !res.OK() {
		t.Fatalf("plan:\n%s\nresult %+v", pl.Text(), res)
	}
	if want := []string{"ensure web-0", "ready web-0"}; !slices.Equal(f.calls, want) {
		t.Errorf("calls = %q, want %q", f.calls, want)
	}
}

// panicDriver panics in EnsureContainer, as a bug in a driver would.
type panicDriver struct{ *fakeDriver }

func (panicDriver) EnsureContainer(context.Context, string, spec.App, int, string) error {
	panic("boom")
}

// A panic in one step fails that step; the executor and other apps go on.
func TestApplyRecoversFromAPanickingStep(t *testing.T) {
	web := plantest.App("web", 1, 1, "reg/web:1")
	api := plantest.App("api", 1, 1, "reg/api:1")
	desired := plan.Desired{Revision: "r1", Apps: []spec.App{web, api}}
	obs := plantest.Converged(api, web)
	obs.Instances[1].Container = nil // web-0: create-container → EnsureContainer
	pl := plan.MakePlan(desired, obs, plan.Policy{})
	res := (&Executor{Driver: panicDriver{newFakeDriver()}}).Apply(context.Background(), pl, desired, obs)
	byApp := map[string]AppResult{}
	for _, a := range res.Apps {
		byApp[a.App] = a
	}
	if a := byApp["web"]; a.Status != AppDegraded || !strings.Contains(a.Reason, "panic: boom") {
		t.Errorf("web = %+v", a)
	}
	if a := byApp["api"]; a.Status != AppReady {
		t.Errorf("api = %+v", a)
	}
	if len(res.Steps) != 1 || res.Steps[0].Status != StepFailed || !strings.Contains(res.Steps[0].Error, "executor.go") {
		t.Errorf("steps = %+v", res.Steps)
	}
}

// permanentErr is a failure that retrying cannot fix, as the engine marks
// a digest mismatch or a missing image.
type permanentErr struct{}

func (permanentErr) Error() string   { return "manifest unknown" }
func (permanentErr) Permanent() bool { return true }

// A permanent failure stalls the app; a transient one is retried. The
// type reaches the step and app results, not only a string.
func TestApplyTellsStalledFromRetrying(t *testing.T) {
	for _, c := range []struct {
		err  error
		want Retry
	}{
		{fmt.Errorf("pull: %w", permanentErr{}), Stalled},
		{errors.New("tunnel reset by peer"), Retrying},
	} {
		old := plantest.App("web", 2, 1, "reg/web:1")
		now := plantest.App("web", 2, 1, "reg/web:2")
		f := newFakeDriver()
		f.fail["ensure web-0"] = c.err
		_, res, _ := apply(t, f, plan.Desired{Revision: "r2", Apps: []spec.App{now}}, plantest.Converged(old))
		if a := res.Apps[0]; a.Status != AppDegraded || a.Retry != c.want || res.Steps[0].Retry != c.want {
			t.Errorf("%v: app %+v, step %+v; want %s", c.err, a, res.Steps[0], c.want)
		}
	}
	if RetryOf(context.Canceled) != "" {
		t.Error("a cancellation is neither stalled nor retrying")
	}
}

// The executor applies what the step says or nothing: a step whose hashes
// are not those of the desired spec fails before touching anything.
func TestApplyChecksTheStepsHashes(t *testing.T) {
	old := plantest.App("web", 1, 1, "reg/web:1")
	now := plantest.App("web", 1, 1, "reg/web:2")
	desired := plan.Desired{Revision: "r2", Apps: []spec.App{now}}
	obs := plantest.Converged(old)
	p := plan.MakePlan(desired, obs, plan.Policy{})
	p.Steps[0].ContainerHash = old.Spec.Container.Hash() // planned for another spec
	f := newFakeDriver()
	res := (&Executor{Driver: f}).Apply(context.Background(), p, desired, obs)
	if res.Steps[0].Status != StepFailed || !strings.Contains(res.Steps[0].Error, "plan again") || len(f.calls) != 0 {
		t.Errorf("step %+v, calls %v", res.Steps[0], f.calls)
	}
}

// recDrainer records drains, interleaved with the driver's calls.
type recDrainer struct{ f *fakeDriver }

func (d recDrainer) Drain(i string) { _ = d.f.record("drain", i) }
func (d recDrainer) Undrain(i string, ready bool) {
	_ = d.f.record(fmt.Sprintf("undrain(ready=%v)", ready), i)
}

// A serving replica leaves discovery, and the drain delay passes, before a
// disruptive step touches it; it comes back after the step. Steps that
// disrupt nothing drain nothing.
func TestApplyDrainsBeforeDisrupting(t *testing.T) {
	old := plantest.App("web", 2, 1, "reg/web:1")
	now := plantest.App("web", 2, 1, "reg/web:2")
	obs := plantest.Converged(old)
	obs.Instances[1].Status = "Stopped" // not serving: a start, no drain
	obs.Instances[1].Container = nil
	desired := plan.Desired{Revision: "r2", Apps: []spec.App{now}}
	p := plan.MakePlan(desired, obs, plan.Policy{})
	f := newFakeDriver()
	clk := clock.NewFake(time.Now())
	ex := &Executor{Driver: f, Drainer: recDrainer{f}, DrainDelay: 6 * time.Second, Clock: clk}
	done := make(chan Result)
	go func() { done <- ex.Apply(context.Background(), p, desired, obs) }()
	clk.BlockUntil(1) // the drain delay is running
	f.mu.Lock()
	early := slices.Clone(f.calls)
	f.mu.Unlock()
	clk.Advance(6 * time.Second)
	res := <-done
	if !res.OK() {
		t.Fatalf("%+v", res)
	}
	if slices.Contains(early, "ensure web-0") {
		t.Errorf("web-0 was disrupted before the drain delay passed: %v", early)
	}
	i, j, k := slices.Index(f.calls, "drain web-0"), slices.Index(f.calls, "ensure web-0"), slices.Index(f.calls, "undrain(ready=true) web-0")
	if i < 0 || j < i || k < j || slices.Contains(f.calls, "drain web-1") {
		t.Errorf("calls = %v", f.calls)
	}
}

// After a batch that recreated a replica (its address may have changed),
// the executor looks at the world again before the next batch drains
// another one; a batch of container replacements does not.
func TestApplyReobservesAfterRecreating(t *testing.T) {
	old := plantest.App("web", 2, 1, "reg/web:1")
	now := plantest.App("web", 2, 1, "reg/web:1")
	now.Spec.System.Image = "berth/other" // a recreate of each replica
	obs := plantest.Converged(old)
	desired := plan.Desired{Revision: "r2", Apps: []spec.App{now}}
	p := plan.MakePlan(desired, obs, plan.Policy{})
	f := newFakeDriver()
	var seen []string
	ex := &Executor{Driver: f, Reobserve: func(context.Context) {
		f.mu.Lock()
		seen = append(seen, strings.Join(f.calls, ","))
		f.mu.Unlock()
	}}
	if res := ex.Apply(context.Background(), p, desired, obs); !res.OK() {
		t.Fatalf("%+v", res)
	}
	if len(seen) != 2 || strings.Contains(seen[0], "web-1") || !strings.Contains(seen[1], "web-1") {
		t.Errorf("reobserved after %q; want once after each batch", seen)
	}
	seen = nil
	now2 := plantest.App("web", 2, 1, "reg/web:2")
	p = plan.MakePlan(plan.Desired{Revision: "r3", Apps: []spec.App{now2}}, obs, plan.Policy{})
	ex.Apply(context.Background(), p, plan.Desired{Revision: "r3", Apps: []spec.App{now2}}, obs)
	if len(seen) != 0 {
		t.Errorf("container replacements reobserved: %q", seen)
	}
}

// A step whose instance changed run state after the plan's observe (its
// container died because someone is stopping it) is not run: skipped with
// the reason, the app's later batches with it, and the app is not failed
// but planned again. Instances that did not change run their steps.
func TestApplySkipsStepsAContradictingEventOutdated(t *testing.T) {
	a := plantest.App("web", 3, 1, "reg/web:1")
	obs := plantest.Converged(a)
	for i := range obs.Instances {
		obs.Instances[i].Container.State = "exited"
	}
	desired := plan.Desired{Revision: "r1", Apps: []spec.App{a}}
	pl := plan.MakePlan(desired, obs, plan.Policy{})
	if len(pl.Steps) != 3 || pl.Steps[0].Action != plan.StartContainer {
		t.Fatalf("plan:\n%s", pl.Text())
	}
	moved := pl.Steps[1].Instance
	f := newFakeDriver()
	ex := &Executor{Driver: f, Moved: func(instance string) (Change, bool) {
		return Change{Instance: instance, Action: "instance-shutdown"}, instance == moved
	}}
	res := ex.Apply(context.Background(), pl, desired, obs)
	for _, c := range f.calls {
		if strings.HasSuffix(c, " "+moved) {
			t.Errorf("acted on %s, which changed since the plan: %v", moved, f.calls)
		}
	}
	app := res.Apps[0]
	if app.Status != AppReady || !app.Replan || app.Retry != "" {
		t.Errorf("app = %+v, want not failed, planned again", app)
	}
	want := "not run: " + moved + " changed since the plan was made (instance-shutdown); planning again"
	for _, s := range res.Steps {
		switch {
		case s.Step.Instance == moved && (s.Status != StepSkipped || s.Error != want):
			t.Errorf("%s: %s %q, want skipped: %q", moved, s.Status, s.Error, want)
		case s.Step.Batch < pl.Steps[1].Batch && s.Status != StepDone:
			t.Errorf("%s of an earlier batch: %s %s", s.Step.Instance, s.Status, s.Error)
		case s.Step.Batch > pl.Steps[1].Batch && (s.Status != StepSkipped || !strings.Contains(s.Error, "planning again")):
			t.Errorf("%s of a later batch: %s %q, want skipped", s.Step.Instance, s.Status, s.Error)
		}
	}
}
