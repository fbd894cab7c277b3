package reconciler

import (
	"context"
	"errors"
	"fmt"
	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/berth-gitops/berth/spec"
)

// Driver performs the single changes the executor sequences. It is the
// only way the executor writes anything; the live implementation talks to
// LXD and Docker (package live), tests use fakes.
type Driver interface {
	// CreateInstance creates the instance from the app's system spec with
	// exactly config, on the cluster member target ("" on a single host,
	// or to let LXD choose), and starts it.
	CreateInstance(ctx context.Context, name string, app spec.App, config map[string]string, target string) error
	// StartInstance starts an instance that is not running.
	StartInstance(ctx context.Context, name string) error
	// StopInstance stops an instance (clean stop with a timeout, then force).
	StopInstance(ctx context.Context, name string) error
	// UpdateInstance sets the config keys in set and deletes those in
	// remove, guarded by the instance's ETag so a concurrent change is an
	// error, not an overwrite.
	UpdateInstance(ctx context.Context, name string, set map[string]string, remove []string) error
	// DeleteInstance deletes an owned instance (stopping it first). With
	// keepBackup, a copy is kept for an operator to restore by hand.
	DeleteInstance(ctx context.Context, name string, keepBackup bool) error
	// EnsureContainer makes the instance's app container match the app's
	// container spec: pull, create or replace, start.
	EnsureContainer(ctx context.Context, name string, app spec.App, slot int, revision string) error
	// WaitReady waits until the instance runs, Docker answers and the app
	// container is ready, within the app's update.healthTimeout.
	WaitReady(ctx context.Context, name string, app spec.App) error
	// Provision copies the provision's files into the running instance
	// and runs its command, within its timeout. A failure says why, with
	// the last lines of the command's output.
	Provision(ctx context.Context, name string, p *spec.Provision) error
	// RestartContainer restarts the instance's app container (after a
	// re-provision with provision.restartContainer).
	RestartContainer(ctx context.Context, name string) error
	// WaitDocker waits up to timeout for the instance's Docker to answer.
	WaitDocker(ctx context.Context, name string, timeout time.Duration) error
	// Preflight checks that an instance of app can be created (its image
	// and profiles exist) without creating anything: a recreate must not
	// delete a replica it cannot build again.
	Preflight(ctx context.Context, app spec.App) error
	// EnsureVolumes makes a replica's volumes (spec.system.volumes) ready
	// for instance: it creates, with berth's keys, those the plan did not
	// see, and fails on one the plan saw that is gone (never an empty one
	// where data was expected), one that is not berth's, or one attached
	// to another instance; it grows sizes and sets the snapshot keys. It
	// returns the volumes with their pools.
	EnsureVolumes(ctx context.Context, instance string, app spec.App, slot int, vols []plan.StepVolume) ([]plan.StepVolume, error)
	// SnapshotVolumes snapshots the existing volumes as snapshot, with an
	// expiry; a snapshot of that name already there is kept.
	SnapshotVolumes(ctx context.Context, vols []plan.StepVolume, snapshot string) error
	// DeleteVolumes deletes the volumes marked Delete, each only when it
	// is berth's and attached to no instance.
	DeleteVolumes(ctx context.Context, vols []plan.StepVolume) error
}

// Observer reads the live state. Each call observes everything anew:
// berth is level-triggered and keeps no state of its own.
type Observer interface {
	Observe(ctx context.Context) (plan.Observed, error)
}

// Drainer takes replicas out of service discovery and puts them back.
type Drainer interface {
	// Drain takes instance out of the answers from now on.
	Drain(instance string)
	// Undrain lets instance back in. ready says the step that disrupted it
	// ended with the replica ready at its old address (the executor waited
	// for it): it is answered again at once. Otherwise (the step failed, or
	// recreated the instance, whose address may have changed) it is
	// answered again once it is observed ready.
	Undrain(instance string, ready bool)
}

// RepairWait is how long a Restart step waits for a silent Docker to
// answer before it restarts the instance: a dockerd that is only slow
// (starting after a reboot, busy) is not worth a restart.
const RepairWait = 30 * time.Second

// StepOverhead is what a step may take beyond its app's healthTimeout:
// creating or recreating the instance, starting Docker, pulling the image.
const StepOverhead = 20 * time.Minute

// ErrDockerUnreached is matched by a driver's WaitDocker error when Docker
// was never reached: LXD did not set up the way in (its exec failed
// before the command ran). That is no evidence that Docker is down, so a
// Restart step restarts nothing on it; the step fails as transient and a
// later run looks again.
var ErrDockerUnreached = errors.New("docker not reached through LXD")

// ErrStalePlan is returned when the live state changed since a plan was
// computed: applying it could undo someone else's change.
var ErrStalePlan = errors.New("plan is stale")

// CheckFresh tells whether plan still describes the way from observed to
// desired: same revision, and the observed state it was computed from.
func CheckFresh(pl plan.Plan, desired plan.Desired, observed plan.Observed) error {
	if pl.Revision != desired.Revision {
		return fmt.Errorf("%w: it was made for revision %s, not %s", ErrStalePlan, plan.ShortSHA(pl.Revision), plan.ShortSHA(desired.Revision))
	}
	if pl.Stale(observed) {
		return fmt.Errorf("%w: the live state changed since it was computed (plan again)", ErrStalePlan)
	}
	return nil
}

// StepStatus is the outcome of one step.
type StepStatus string

// Step outcomes.
const (
	StepDone    StepStatus = "done"
	StepFailed  StepStatus = "failed"
	StepSkipped StepStatus = "skipped" // an earlier batch of the app failed
)

// StepResult is what happened to one step of the plan.
type StepResult struct {
	Step   plan.Step  `json:"step"`
	Status StepStatus `json:"status"`
	// Error says why the step failed or was skipped.
	Error string `json:"error,omitempty"`
	// Retry says, for a failed step, whether trying again can help.
	Retry Retry `json:"retry,omitempty"`
	// Duration is how long the step took, readiness wait included.
	Duration time.Duration `json:"duration"`
}

// AppStatus is an app's state after a run.
type AppStatus string

// App statuses, after Flux's conditions: Ready, Degraded (a rollout
// halted), Held (invalid spec: nothing applied).
const (
	AppReady    AppStatus = "Ready"
	AppDegraded AppStatus = "Degraded"
	AppHeld     AppStatus = "Held"
	// AppRemoved: the app is gone from Git and its instances were pruned.
	AppRemoved AppStatus = "Removed"
	// AppBlocked: the app's steps wait for its dependencies
	// (plan.Blocked); Reason says which and why.
	AppBlocked AppStatus = "Blocked"
)

// AppResult is an app's outcome.
type AppResult struct {
	App    string    `json:"app"`
	Status AppStatus `json:"status"`
	// Reason explains a Degraded or Held status.
	Reason string `json:"reason,omitempty"`
	// Retry says, for a Degraded app, whether its rollout is Stalled
	// (waits for a new commit) or Retrying (backs off and tries again).
	Retry Retry `json:"retry,omitempty"`
	// Changed counts the steps done for the app.
	Changed int `json:"changed"`
	// Replan: steps were not run because their instance changed since the
	// plan was made; the app is planned again from a fresh look.
	Replan bool `json:"replan,omitempty"`
}

// Result is what Apply did: every step's outcome, in plan order, and each
// app's status.
type Result struct {
	Revision string       `json:"revision"`
	Steps    []StepResult `json:"steps"`
	Apps     []AppResult  `json:"apps"`
}

// OK reports whether every step succeeded.
func (r Result) OK() bool {
	for _, s := range r.Steps {
		if s.Status != StepDone {
			return false
		}
	}
	return true
}

// Phase is where a step is in its life, for progress events.
type Phase string

// Event phases.
const (
	PhaseStart  Phase = "start"
	PhaseDone   Phase = "done"
	PhaseFailed Phase = "failed"
)

// Event reports progress: a step starting or ending.
type Event struct {
	Step     plan.Step
	Phase    Phase
	Duration time.Duration
	Err      error
}

// Executor applies plans through a Driver.
type Executor struct {
	Driver Driver
	// Clock times steps and the drain; nil is the real clock.
	Clock clock.Clock
	// OnEvent, if set, is called as steps start and end. It may be called
	// from several goroutines at once, never for the same step at once.
	OnEvent func(Event)
	// Parallel bounds the steps running at once across all apps (default 4):
	// each may be an LXD create and an image pull.
	Parallel int
	// Drainer, if set, is told before a disruptive step on a serving
	// replica (it leaves service discovery, then the step waits
	// DrainDelay so that clients stop using it) and after the step
	// (the replica comes back once it is ready again).
	Drainer Drainer
	// DrainDelay is the wait after draining, for cached DNS answers to
	// expire (the DNS TTL plus a second), unless the app's
	// update.drainDelay says otherwise; 0 waits nothing.
	DrainDelay time.Duration
	// Reobserve, if set, publishes a fresh look at the world (the loop's
	// OnView) after a batch that recreated replicas, before the next batch.
	Reobserve func(ctx context.Context)
	// RepairWait overrides the package's RepairWait (tests).
	RepairWait time.Duration
	// Moved, if set, tells whether an instance changed run state (an
	// event) after the observe the plan was made from. Its first step in
	// the run is then not started: the plan saw another replica (a
	// container that died because someone is stopping the instance is
	// not one to start again). The step is skipped, the app's later
	// batches too, and the loop plans again from a fresh look.
	Moved func(instance string) (Change, bool)
	// Drain, when > 0, lets steps already running go on for up to this long
	// after ctx is cancelled (a shutdown): a half-done step is worse than a
	// finished one. No new batch starts once ctx is done.
	Drain time.Duration
}

// Apply executes the plan's steps and nothing else. Apps run independently
// of each other; within an app, batches run in order and the steps of a
// batch together. A failed step halts its app: later batches are skipped,
// so untouched replicas keep the old version, and the app is Degraded.
// observed is the state the plan was made from (for keys to delete).
func (e *Executor) Apply(ctx context.Context, pl plan.Plan, desired plan.Desired, observed plan.Observed) Result {
	x := &execution{e: e, ctx: ctx, pl: pl, clk: clock.Or(e.Clock),
		apps: map[string]*spec.App{}, insts: map[string]*plan.Instance{}, touched: map[string]bool{},
		results: make([]StepResult, len(pl.Steps))}
	parallel := e.Parallel
	if parallel <= 0 {
		parallel = 4
	}
	x.sem = make(chan struct{}, parallel)
	for i := range desired.Apps {
		x.apps[desired.Apps[i].Metadata.Name] = &desired.Apps[i]
	}
	for i := range observed.Instances {
		x.insts[observed.Instances[i].Name] = &observed.Instances[i]
	}
	var stop func()
	x.stepCtx, stop = e.drainContext(ctx, x.clk)
	defer stop()

	byApp := map[string][]int{}
	var appOrder []string
	for i, s := range pl.Steps {
		x.results[i] = StepResult{Step: s}
		if _, ok := byApp[s.App]; !ok {
			appOrder = append(appOrder, s.App)
		}
		byApp[s.App] = append(byApp[s.App], i)
	}
	appResults := make([]AppResult, len(appOrder))
	var wg sync.WaitGroup
	for ai, name := range appOrder {
		wg.Add(1)
		go func() {
			defer wg.Done()
			appResults[ai] = e.applyApp(ctx, name, byApp[name], pl.Steps, x.results, x.runStep)
		}()
	}
	wg.Wait()
	return Result{Revision: pl.Revision, Steps: x.results, Apps: x.appResults(appResults, desired, byApp)}
}

// execution is one Apply's shared state; runStep may run on several
// goroutines, each on its own result.
type execution struct {
	e            *Executor
	ctx, stepCtx context.Context
	clk          clock.Clock
	pl           plan.Plan
	apps         map[string]*spec.App
	insts        map[string]*plan.Instance
	results      []StepResult
	sem          chan struct{} // bounds the steps running at once
	mu           sync.Mutex
	touched      map[string]bool // instances a step of this run acted on
}

// errReplan ends an instance's steps when the plan is contradicted.
var errReplan = errors.New("planning again")

// contradicted says why step s must not run: its instance changed run
// state since the observe the plan came from, and not by this run's hand
// (a step of the run on it went first), whose own events say nothing.
func (x *execution) contradicted(s plan.Step) string {
	x.mu.Lock()
	defer x.mu.Unlock()
	first := !x.touched[s.Instance]
	x.touched[s.Instance] = true
	if x.e.Moved == nil || s.Instance == "" || !first {
		return ""
	}
	if c, ok := x.e.Moved(s.Instance); ok {
		return fmt.Sprintf("not run: %s changed since the plan was made (%s); planning again", s.Instance, c.Action)
	}
	return ""
}

// drainContext is what steps run under: ctx itself, or with Drain a
// context that outlives ctx's cancellation by Drain.
func (e *Executor) drainContext(ctx context.Context, clk clock.Clock) (context.Context, func()) {
	if e.Drain <= 0 {
		return ctx, func() {}
	}
	stepCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := clk.NewTimer(e.Drain)
		defer t.Stop()
		select {
		case <-t.C():
			cancel()
		case <-stepCtx.Done():
		}
	})
	return stepCtx, func() { stop(); cancel() }
}

// runStep runs step i, readiness included, and records its result.
func (x *execution) runStep(i int) error {
	s := x.pl.Steps[i]
	x.sem <- struct{}{}
	defer func() { <-x.sem }()
	if err := x.ctx.Err(); err != nil {
		// Cancelled while waiting for a slot: don't start it. Skipped,
		// not failed, so the report says nothing was touched.
		x.results[i].Status, x.results[i].Error = StepSkipped, "not run: "+context.Cause(x.ctx).Error()
		return err
	}
	if why := x.contradicted(s); why != "" {
		x.results[i].Status, x.results[i].Error = StepSkipped, why
		return errReplan
	}
	start := x.clk.Now()
	x.e.emit(Event{Step: s, Phase: PhaseStart})
	// No step may hang a run for ever (a wedged image download, a stuck
	// storage call): bound it by the app's health timeout plus room for
	// creating the instance and pulling the image.
	limit := StepOverhead
	if a := x.apps[s.App]; a != nil {
		limit += a.Spec.Update.HealthTimeout.D()
	}
	sctx, cancel := context.WithTimeout(x.stepCtx, limit)
	undrain, err := x.drain(sctx, s)
	if err == nil {
		err = x.e.safeStep(sctx, s, x.apps[s.App], x.insts[s.Instance], x.pl.Revision, x.pl.Owner)
	}
	// Back in at once only when the replica is known ready at the address
	// discovery has: a rollout of N replicas must not empty the name.
	undrain(err == nil && s.Action != plan.Recreate && s.Action != plan.Delete)
	cancel()
	d := x.clk.Since(start)
	x.results[i].Duration = d
	if err != nil {
		x.results[i].Status, x.results[i].Error, x.results[i].Retry = StepFailed, err.Error(), RetryOf(err)
		x.e.emit(Event{Step: s, Phase: PhaseFailed, Duration: d, Err: err})
		return err
	}
	x.results[i].Status = StepDone
	x.e.emit(Event{Step: s, Phase: PhaseDone, Duration: d})
	return nil
}

// drain takes a serving replica out of service discovery before a step
// disrupts it, and waits DrainDelay for clients' cached answers to expire,
// so a rolling update drops no request. The replica is let back in when
// the step ends; discovery answers it again once it is observed ready.
func (x *execution) drain(ctx context.Context, s plan.Step) (undrain func(ready bool), err error) {
	d := x.e.Drainer
	inst := x.insts[s.Instance]
	if d == nil || !s.Action.Disruptive() || inst == nil || plan.ReplicaAvailability(inst) == plan.Unavailable {
		return func(bool) {}, nil
	}
	d.Drain(s.Instance)
	undrain = func(ready bool) { d.Undrain(s.Instance, ready) }
	delay := x.e.DrainDelay
	if a := x.apps[s.App]; a != nil && a.Spec.Update.DrainDelay != nil {
		delay = a.Spec.Update.DrainDelay.D() // the app's own, 0 included
	}
	if delay <= 0 {
		return undrain, nil
	}
	t := x.clk.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C():
		return undrain, nil
	case <-ctx.Done():
		return undrain, ctx.Err()
	}
}

// appResults completes the apps' outcomes: pruned apps are Removed, held
// apps Held, and apps without steps Ready; sorted by name.
func (x *execution) appResults(out []AppResult, desired plan.Desired, byApp map[string][]int) []AppResult {
	for i := range out {
		if a := &out[i]; a.Status == AppReady && x.apps[a.App] == nil {
			a.Status = AppRemoved
		}
	}
	for _, h := range x.pl.Held {
		out = append(out, AppResult{App: h, Status: AppHeld, Reason: "last applied state kept: invalid spec, or a failed rollout of this revision waiting out its backoff"})
	}
	blocked := map[string]string{}
	for _, b := range x.pl.Blocked {
		if _, ok := byApp[b.App]; !ok {
			blocked[b.App] = b.Why
			out = append(out, AppResult{App: b.App, Status: AppBlocked, Reason: b.Why})
		}
	}
	for _, a := range desired.Apps {
		_, ran := byApp[a.Metadata.Name]
		if _, ok := blocked[a.Metadata.Name]; !ok && !ran {
			out = append(out, AppResult{App: a.Metadata.Name, Status: AppReady})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].App < out[j].App })
	return out
}

// applyApp runs one app's steps batch by batch.
func (e *Executor) applyApp(ctx context.Context, app string, idx []int, steps []plan.Step, results []StepResult, run func(int) error) AppResult {
	res := AppResult{App: app, Status: AppReady}
	batches := map[int][]int{}
	var order []int
	for _, i := range idx {
		b := steps[i].Batch
		if _, ok := batches[b]; !ok {
			order = append(order, b)
		}
		batches[b] = append(batches[b], i)
	}
	slices.Sort(order)
	var failed []string
	skip, replan := "", ""
	for _, b := range order {
		if skip == "" && len(failed) > 0 {
			skip = "not run: an earlier batch of " + app + " failed"
		}
		if skip == "" && replan != "" {
			// The batches were sized for the replicas the plan saw:
			// with one changed under it, the next could disrupt more
			// than maxUnavailable.
			skip = replan
		}
		if skip == "" && ctx.Err() != nil {
			skip = "not run: " + context.Cause(ctx).Error()
			failed = append(failed, "interrupted: "+context.Cause(ctx).Error())
		}
		if skip != "" {
			for _, i := range batches[b] {
				results[i].Status, results[i].Error = StepSkipped, skip
			}
			continue
		}
		// Steps on the same instance run in plan order; different
		// instances of the batch run together.
		perInstance := map[string][]int{}
		var insts []string
		for _, i := range batches[b] {
			n := steps[i].Instance
			if _, ok := perInstance[n]; !ok {
				insts = append(insts, n)
			}
			perInstance[n] = append(perInstance[n], i)
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, n := range insts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k, i := range perInstance[n] {
					if err := run(i); err != nil {
						why := "not run: an earlier step on " + n + " failed"
						mu.Lock()
						if errors.Is(err, errReplan) {
							why = results[i].Error
							replan = "not run: " + n + " changed since the plan was made; planning again"
						} else {
							failed = append(failed, fmt.Sprintf("%s: %s: %v", n, steps[i].Action, err))
						}
						mu.Unlock()
						for _, j := range perInstance[n][k+1:] {
							results[j].Status, results[j].Error = StepSkipped, why
						}
						return
					}
				}
			}()
		}
		wg.Wait()
		e.afterBatch(ctx, batches[b], steps, results)
	}
	for _, i := range idx {
		if results[i].Status == StepDone {
			res.Changed++
		}
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		res.Status, res.Reason, res.Retry = AppDegraded, strings.Join(failed, "; "), appRetry(idx, results)
	}
	res.Replan = replan != ""
	return res
}

// appRetry classifies a halted app by its failed steps: one permanent
// failure stalls it; it is InTransition only when every failure was an
// instance changing state under the step (planning again is the fix);
// otherwise it backs off.
func appRetry(idx []int, results []StepResult) Retry {
	retry := InTransition
	for _, i := range idx {
		switch r := results[i].Retry; {
		case r == Stalled:
			return Stalled
		case results[i].Status == StepFailed && r != InTransition:
			retry = Retrying
		}
	}
	return retry
}

func (e *Executor) repairWait() time.Duration {
	if e.RepairWait > 0 {
		return e.RepairWait
	}
	return RepairWait
}

func (e *Executor) emit(ev Event) {
	if e.OnEvent != nil {
		e.OnEvent(ev)
	}
}

// afterBatch looks at the world again when the batch recreated a replica:
// its address may have changed, so discovery answers it only once it is
// observed ready, and the next batch must not drain another replica before
// that — a rollout of recreates would otherwise empty the name.
func (e *Executor) afterBatch(ctx context.Context, batch []int, steps []plan.Step, results []StepResult) {
	if e.Reobserve == nil || ctx.Err() != nil {
		return
	}
	for _, i := range batch {
		if steps[i].Action == plan.Recreate && results[i].Status == StepDone {
			e.Reobserve(ctx)
			return
		}
	}
}

// provision runs the app's provision in the instance, if it has one, and
// records its hash and time once it succeeded, with the revision it came
// from: the instance now has that revision's system, and status shows it.
// A re-run (again) first marks it pending: from then until it succeeds
// the replica is not ready, since what it configures may be half done.
func (e *Executor) provision(ctx context.Context, name string, app *spec.App, revision string, again bool) error {
	p := app.Spec.System.Provision
	if p == nil {
		return nil
	}
	d := e.Driver
	if again {
		if err := d.UpdateInstance(ctx, name, map[string]string{ownership.KeyProvisionHash: ownership.ProvisionPending}, nil); err != nil {
			return err
		}
	}
	if err := d.Provision(ctx, name, p); err != nil {
		return err
	}
	done := map[string]string{
		ownership.KeyProvisionHash: p.Hash(),
		ownership.KeyProvisionedAt: clock.Or(e.Clock).Now().UTC().Format(time.RFC3339),
	}
	if revision != "" {
		done[ownership.KeyRevision] = revision
	}
	return d.UpdateInstance(ctx, name, done, nil)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// safeStep is step with a recover: a bug hit by one step (a panic in a
// driver) fails that step, with its stack in the error, instead of taking
// the daemon and every other app's rollout down with it.
func (e *Executor) safeStep(ctx context.Context, s plan.Step, app *spec.App, inst *plan.Instance, revision, owner string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error (a bug in berth): panic: %v\n%s", r, debug.Stack())
		}
	}()
	return e.step(ctx, s, app, inst, revision, owner)
}

// step performs one step, readiness included: a replica counts as done
// only when it serves again.
// updateInPlace is what an UpdateInPlace step sets and removes: berth's
// keys and the spec's config as they should be, and the keys the spec
// dropped.
func updateInPlace(app spec.App, observedConfig map[string]string, owner, revision string, slot int) (map[string]string, []string) {
	set := plan.ManagedConfig(app, owner, revision, slot)
	remove := append(plan.RemovedConfigKeys(observedConfig, app), ownership.Stale(observedConfig, set)...)
	if app.Spec.System.Provision == nil {
		// A provision dropped from the spec leaves no record behind.
		for _, k := range []string{ownership.KeyProvisionHash, ownership.KeyProvisionedAt} {
			if _, ok := observedConfig[k]; ok {
				remove = append(remove, k)
			}
		}
	}
	return set, remove
}

// moveVolumesOut is the part of a stateful recreate before the old
// instance goes: stop it, so nothing writes, then snapshot its volumes as
// berth-<revision>. The delete that follows detaches them; the create
// attaches them to the new instance, so a volume is never on two
// instances. Killed anywhere, the next run finds the volumes intact,
// on the old instance or on none, and carries on.
func (e *Executor) moveVolumesOut(ctx context.Context, s plan.Step, old *plan.Instance, revision string) error {
	var existing []plan.StepVolume
	for _, v := range s.Volumes {
		if v.Exists {
			existing = append(existing, v)
		}
	}
	if len(existing) == 0 {
		return nil
	}
	if err := e.Driver.StopInstance(ctx, s.Instance); err != nil {
		return fmt.Errorf("stopping the old instance before moving its volumes: %w", err)
	}
	oldID := ""
	if old != nil {
		oldID = old.Config["volatile.uuid"]
	}
	if err := e.Driver.SnapshotVolumes(ctx, existing, VolumeSnapshotName(revision, oldID)); err != nil {
		return fmt.Errorf("snapshot before the recreate (the old instance is stopped, not deleted): %w", err)
	}
	return nil
}

// VolumeSnapshotName is the snapshot a recreate takes of each volume
// before it moves: berth-<revision, short>-<old instance's uuid, short>.
// The instance part makes it one per recreate: a run killed after the
// snapshot finds its own again (and keeps it), while a later recreate at
// the same revision (a base-image refresh, no commit) takes a new one
// instead of keeping a stale one.
func VolumeSnapshotName(revision, instanceID string) string {
	name := "berth-norev"
	if revision != "" {
		name = "berth-" + plan.ShortSHA(revision)
	}
	if id := strings.ReplaceAll(instanceID, "-", ""); id != "" {
		name += "-" + id[:min(8, len(id))]
	}
	return name
}

// repair is a Restart step: wait a bounded time for a silent Docker, and
// restart the instance (rebuild an ephemeral one) only if it stays silent
// through a tunnel LXD set up, in an instance that still runs.
func (e *Executor) repair(ctx context.Context, name string, ephemeral bool, converge, create func() error) error {
	d := e.Driver
	silent := d.WaitDocker(ctx, name, e.repairWait())
	if silent == nil {
		return converge()
	}
	if ctx.Err() != nil || errors.Is(silent, ErrDockerUnreached) || IsInTransition(silent) {
		return silent // not reached, or stopped under the wait: nothing proves Docker dead
	}
	if ephemeral {
		// Stopping an ephemeral instance deletes it: build it anew.
		if err := d.DeleteInstance(ctx, name, false); err != nil {
			return fmt.Errorf("docker does not answer (%v); rebuilding the ephemeral instance: %w", silent, err)
		}
		return create()
	}
	if err := d.StopInstance(ctx, name); err != nil {
		return fmt.Errorf("docker does not answer (%v); restarting the instance: stop: %w", silent, err)
	}
	if err := d.StartInstance(ctx, name); err != nil {
		return fmt.Errorf("restarting the instance: start: %w", err)
	}
	return converge()
}

// converge brings a running instance's app container to the spec and
// waits through the health gate: a replica counts as done only when it
// serves again.
func (e *Executor) converge(ctx context.Context, name string, app spec.App, slot int, revision string) error {
	if app.Spec.HasContainer() {
		if err := e.Driver.EnsureContainer(ctx, name, app, slot, revision); err != nil {
			return err
		}
	}
	return e.Driver.WaitReady(ctx, name, app)
}

// create builds a step's instance with its volumes attached, provisions
// it before anything runs in it, then its app container.
func (e *Executor) create(ctx context.Context, s plan.Step, app *spec.App, revision, owner string) error {
	d := e.Driver
	cfg := plan.ManagedConfig(*app, owner, revision, s.Slot)
	if app.Spec.System.Provision != nil {
		// Not ready until the provision succeeds, even if berth dies half
		// way.
		cfg[ownership.KeyProvisionHash] = ownership.ProvisionPending
	}
	built := *app
	if len(s.Volumes) > 0 {
		vols, err := d.EnsureVolumes(ctx, s.Instance, *app, s.Slot, s.Volumes)
		if err != nil {
			return fmt.Errorf("volumes: %w", err)
		}
		// The instance is created with its volumes attached: it never runs
		// without them.
		built.Spec.System.Devices = plan.WantDevices(&app.Spec.System, vols)
	}
	if err := d.CreateInstance(ctx, s.Instance, built, cfg, s.Target); err != nil {
		return err
	}
	if err := e.provision(ctx, s.Instance, app, revision, false); err != nil {
		return err
	}
	return e.converge(ctx, s.Instance, *app, s.Slot, revision)
}

func (e *Executor) step(ctx context.Context, s plan.Step, app *spec.App, inst *plan.Instance, revision, owner string) error {
	d := e.Driver
	if s.Action != plan.Delete {
		if app == nil {
			return fmt.Errorf("app %s is not in the desired state", s.App)
		}
		// The step says which spec it was planned for: apply exactly that,
		// or nothing.
		if sys, ctr, prov := app.Spec.System.Hash(), app.Spec.Container.Hash(), app.Spec.System.Provision.Hash(); s.SystemHash != sys || s.ContainerHash != ctr || s.ProvisionHash != prov {
			return fmt.Errorf("the step was planned for system %s / container %s / provision %s, but the desired spec is %s / %s / %s: plan again",
				s.SystemHash, s.ContainerHash, orNone(s.ProvisionHash), sys, ctr, orNone(prov))
		}
	}
	converge := func() error { return e.converge(ctx, s.Instance, *app, s.Slot, revision) }
	create := func() error { return e.create(ctx, s, app, revision, owner) }
	switch s.Action {
	case plan.Create:
		return create()
	case plan.Recreate:
		if err := d.Preflight(ctx, *app); err != nil {
			return fmt.Errorf("not deleting the old instance: %w", err)
		}
		if err := e.moveVolumesOut(ctx, s, inst, revision); err != nil {
			return err
		}
		if err := d.DeleteInstance(ctx, s.Instance, app.Spec.Update.Snapshot); err != nil {
			return err
		}
		return create()
	case plan.Provision:
		if err := e.provision(ctx, s.Instance, app, revision, true); err != nil {
			return err
		}
		if app.Spec.System.Provision.RestartContainer && app.Spec.HasContainer() {
			if err := d.RestartContainer(ctx, s.Instance); err != nil {
				return fmt.Errorf("restarting the app container after the provision: %w", err)
			}
		}
		return d.WaitReady(ctx, s.Instance, *app)
	case plan.Start:
		if err := d.StartInstance(ctx, s.Instance); err != nil {
			return err
		}
		if s.ProvisionNeeded() {
			if err := e.provision(ctx, s.Instance, app, revision, true); err != nil {
				return err
			}
		}
		return converge()
	case plan.UpdateInPlace:
		var observedConfig map[string]string
		if inst != nil {
			observedConfig = inst.Config
		}
		if len(s.Volumes) > 0 {
			if _, err := d.EnsureVolumes(ctx, s.Instance, *app, s.Slot, s.Volumes); err != nil {
				return fmt.Errorf("volumes: %w", err)
			}
		}
		set, remove := updateInPlace(*app, observedConfig, owner, revision, s.Slot)
		return d.UpdateInstance(ctx, s.Instance, set, remove)
	case plan.Restart:
		return e.repair(ctx, s.Instance, app.Spec.System.Ephemeral, converge, create)
	case plan.ReplaceContainer, plan.CreateContainer, plan.StartContainer, plan.RemoveLeftovers:
		return converge()
	case plan.Delete:
		snapshot := false
		if app != nil {
			snapshot = app.Spec.Update.Snapshot
		}
		if err := d.DeleteInstance(ctx, s.Instance, snapshot); err != nil {
			return err
		}
		return d.DeleteVolumes(ctx, s.Volumes)
	}
	return fmt.Errorf("unknown action %v", s.Action)
}
