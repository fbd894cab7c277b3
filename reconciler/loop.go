package reconciler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// Revision is what a Source returns for one run: a commit and its specs.
type Revision struct {
	SHA     string `json:"sha"`
	Subject string `json:"subject,omitempty"`
	// Author is the name of the commit's author, for the status page.
	Author string `json:"author,omitempty"`
	// FS is the spec root at that revision (YAML files).
	FS fs.FS `json:"-"`
	// Files is the repository root at that revision, where provision
	// files are read from (spec.Options.Files); nil: none can be read.
	Files fs.FS `json:"-"`
	// Warning, if set, says why this is not the newest revision (e.g. the
	// head's signature did not verify, so the last verified one is used).
	Warning string `json:"warning,omitempty"`
}

// Source yields the revision to converge to. The daemon's Git source
// does a cheap head check and fetches only when the head moved.
type Source interface {
	Fetch(ctx context.Context) (Revision, error)
}

// System is the live side a loop reads and writes.
type System interface {
	Observer
	Driver
}

// Lease keeps one reconciler per target: only the holder acts.
type Lease interface {
	// Acquire takes or renews the lease. When another holds it, it
	// returns Held false with the holder and its expiry, and no error.
	// ErrLeaseContended means the attempt could not complete because
	// others kept writing at the same time: try again soon.
	Acquire(ctx context.Context) (LeaseState, error)
	// Renew extends the lease this reconciler holds, and never takes it:
	// when it is gone (its key deleted) or another's, it returns Held
	// false with the holder found ("" when none), and the reconciler has
	// lost it. Errors are as Acquire's.
	Renew(ctx context.Context) (LeaseState, error)
	// Release gives it up (on shutdown), so another can take over at once.
	Release(ctx context.Context) error
}

// LeaseState is what an Acquire found.
type LeaseState struct {
	// Held: this reconciler holds the lease now.
	Held bool `json:"held"`
	// Holder is who holds it when Held is false.
	Holder string `json:"holder,omitempty"`
	// Expiry is when the lease ends unless renewed: ours when Held, the
	// holder's otherwise. A waiting reconciler tries again right after it.
	Expiry time.Time `json:"expiry,omitzero"`
}

// String names the holder and its expiry, for messages and the status.
func (s LeaseState) String() string {
	if s.Expiry.IsZero() {
		return s.Holder
	}
	return fmt.Sprintf("%s (until %s)", s.Holder, s.Expiry.UTC().Format(time.RFC3339))
}

var (
	// ErrLeaseContended: the lease could not be read and written in one
	// go because the LXD server config kept changing (HTTP 412 on every
	// try). Nobody was refused: try again in a moment.
	ErrLeaseContended = errors.New("lease contended: the LXD server config kept changing")
	// ErrLeaseLost is the cause a run is cancelled with when another
	// reconciler took the lease, or it could not be renewed before it
	// expired.
	ErrLeaseLost = errors.New("lost the lease")
)

// LeaseLostError is why a holder whose renewal found st lost the lease:
// another holds it, or nobody does because its key was removed.
func LeaseLostError(st LeaseState) error {
	if st.Holder == "" {
		return fmt.Errorf("%w: it was removed (its key deleted or garbled) while held", ErrLeaseLost)
	}
	return fmt.Errorf("%w: now held by %s", ErrLeaseLost, st)
}

// Run results, as in LoopStatus.LastResult and the run metrics.
const (
	RunOK    = "ok"    // changes applied; every app converged
	RunNoop  = "noop"  // nothing differed from Git
	RunHeld  = "held"  // the run ended, but some app was held (invalid spec, a failed revision) or the specs had errors
	RunError = "error" // the run failed, or a rollout halted
)

// App statuses as the metrics report them: one per app, the most telling
// first (Invalid, Stalled, Held, Degraded, Missing, Progressing, OutOfSync,
// Orphaned, Healthy).
const (
	AppStatusInvalid  = "Invalid" // its spec is invalid at this revision: kept at its last applied state
	AppStatusHeld     = "Held"    // a rollout of this revision failed and is retried after a backoff (or a newer commit)
	AppStatusStalled  = "Stalled" // a rollout of this revision failed for good (missing image, digest mismatch, never healthy): held until a newer commit
	AppStatusOrphaned = "Orphaned"
	AppStatusBlocked  = "Blocked" // its steps wait for its dependencies (spec.dependsOn)
)

// LoopMetrics is what the loop reports; server.Metrics implements it.
type LoopMetrics interface {
	RunFinished(result string, d time.Duration)
	RunError(reason string)
	// SetRevision is the revision every app converged to; the loop calls
	// it only after a run with result ok or noop.
	SetRevision(sha string)
	// SetApps gives every app's status (app -> Healthy, Degraded, ...,
	// Held, Invalid); apps not in it are gone.
	SetApps(status map[string]string)
	// SetAppRevisions gives, per app, the last revision that rolled out
	// fully.
	SetAppRevisions(revisions map[string]string)
	// SetSpecErrors is the number of spec diagnostics of the revision.
	SetSpecErrors(n int)
	// SetOutdatedBaseImages gives, per app, how many replicas run on
	// another base image than their alias points to now.
	SetOutdatedBaseImages(counts map[string]int)
	// SetUnobservedReplicas gives, per app, how many running replicas'
	// Docker could not be looked at (LXD did not set up the tunnel).
	SetUnobservedReplicas(counts map[string]int)
	// SetRetainedVolumes gives, per app, how many of its volumes no
	// instance has attached (kept on scale-down or app removal) and the
	// sum of their sizes in bytes.
	SetRetainedVolumes(counts map[string]int, bytes map[string]uint64)
	Triggered(source string)
	Succeeded(t time.Time)
}

// Backoff is an exponential backoff with a cap.
type Backoff struct {
	Base, Max time.Duration
}

// Delay is the wait after the n-th consecutive failure (n >= 1).
func (b Backoff) Delay(n int) time.Duration {
	if n < 1 {
		return 0
	}
	d := b.Base
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// failureMemory remembers, per app, a revision whose rollout failed, so the
// daemon does not retry it in a hot loop: it is held until its backoff
// ends, and a newer revision resets it.
type failureMemory struct {
	backoff Backoff
	apps    map[string]AppFailure
	// transitions counts, per app, the runs in a row whose rollout failed
	// only because instances changed state under it: planned again soon,
	// up to maxTransitions, then held like any failure (an instance that
	// keeps stopping must not make a hot loop).
	transitions map[string]int
}

// maxTransitions is how many runs in a row may fail InTransition before
// the app is held for the rollout backoff.
const maxTransitions = 3

// inTransition counts a rollout of app that failed InTransition and
// reports whether it is planned again soon rather than held.
func (m *failureMemory) inTransition(app string) bool {
	if m.transitions == nil {
		m.transitions = map[string]int{}
	}
	m.transitions[app]++
	return m.transitions[app] <= maxTransitions
}

// AppFailure is an app whose rollout of Revision failed Count times in a
// row; the revision is held for the app until RetryAfter.
type AppFailure struct {
	Revision string `json:"revision"`
	Count    int    `json:"count"`
	// Retry is Stalled (held until a newer commit; RetryAfter is unset) or
	// Retrying (held until RetryAfter).
	Retry      Retry     `json:"retry"`
	RetryAfter time.Time `json:"retryAfter,omitzero"`
	Reason     string    `json:"reason"`
	// Instances are the replicas whose steps failed: a change of their
	// run state (an event) ends the backoff.
	Instances []string `json:"instances,omitempty"`
}

// held tells whether app must be held at revision at now.
func (m *failureMemory) held(app, revision string, now time.Time) (AppFailure, bool) {
	f, ok := m.apps[app]
	if !ok || f.Revision != revision {
		return AppFailure{}, false
	}
	return f, f.Retry == Stalled || now.Before(f.RetryAfter)
}

// failed records a failed rollout of app at revision. A Stalled failure
// holds the revision until a newer commit; a Retrying one backs off.
func (m *failureMemory) failed(app, revision, reason string, retry Retry, now time.Time) AppFailure {
	f := m.apps[app]
	if f.Revision != revision {
		f = AppFailure{Revision: revision}
	}
	f.Count++
	f.Reason, f.Retry, f.RetryAfter = reason, retry, time.Time{}
	if retry != Stalled {
		f.Retry = Retrying
		f.RetryAfter = now.Add(m.backoff.Delay(f.Count))
	}
	m.apps[app] = f
	return f
}

// lift ends the backoff of a Retrying failure that failed on instance
// when the instance changed run state at now, after the failure: the
// world changed under the failed step, so a plan from a fresh look is
// due, not the backoff. Its count stays, so a failure again backs off
// longer. It reports the app lifted.
func (m *failureMemory) lift(instance string, now time.Time) (string, bool) {
	for app, f := range m.apps {
		if f.Retry == Retrying && now.Before(f.RetryAfter) && slices.Contains(f.Instances, instance) {
			f.RetryAfter = now
			m.apps[app] = f
			return app, true
		}
	}
	return "", false
}

// succeeded forgets app's failure.
func (m *failureMemory) succeeded(app string) {
	delete(m.apps, app)
	delete(m.transitions, app)
}

// revisionKey is the failure memory's key for a whole revision (a run
// that panicked): no app name can be empty.
const revisionKey = ""

// LoopStatus is the daemon's status: the last run and the apps.
type LoopStatus struct {
	plan.Status
	// Phase is Starting, Idle, Reconciling, WaitingForLease, Backoff or
	// Held (the revision is held after a run of it crashed).
	Phase string `json:"phase"`
	// LastRun is when the last run ended and how.
	LastRun    time.Time `json:"lastRun,omitzero"`
	LastResult string    `json:"lastResult,omitempty"`
	LastError  string    `json:"lastError,omitempty"`
	// NextRun is when the timer fires next (a trigger may come sooner).
	NextRun time.Time `json:"nextRun,omitzero"`
	// Subject is the commit subject of Revision.
	Subject string `json:"subject,omitempty"`
	// LastGood is, per app, the last revision that rolled out fully.
	LastGood map[string]string `json:"lastGood,omitempty"`
	// Failures are the apps held after a failed rollout, until RetryAfter.
	Failures map[string]AppFailure `json:"failures,omitempty"`
	// HeldRevision is a revision held as a whole because a run of it
	// crashed (a panic); a newer commit, or RetryAfter, ends it.
	HeldRevision *AppFailure `json:"heldRevision,omitempty"`
	// LeaseHolder is who holds the lease when this daemon does not, and
	// LeaseExpiry when it ends unless renewed: the daemon tries again
	// right after it.
	LeaseHolder string    `json:"leaseHolder,omitempty"`
	LeaseExpiry time.Time `json:"leaseExpiry,omitzero"`
	// Diagnostics are the spec problems of the revision.
	Diagnostics []string `json:"diagnostics,omitempty"`
	// SourceWarning says why the newest revision is not the one applied.
	SourceWarning string `json:"sourceWarning,omitempty"`
	// LXDEndpoint is the LXD endpoint in use: with several members
	// given, the one that answered last.
	LXDEndpoint string `json:"lxdEndpoint,omitempty"`
}

// Loop is berth's daemon: level-triggered, every trigger only asks for a
// run, and each run observes everything.
type Loop struct {
	Source Source
	System System
	Lease  Lease // nil: no lease
	// Endpoint, if set, says which LXD endpoint is in use, for status.
	Endpoint func() string
	// LeaseRenew is how often the lease is renewed between runs (a long
	// poll interval must not let it expire); default 20s. A lease that
	// could not be renewed by LeaseRenew before it expires counts as lost.
	LeaseRenew time.Duration
	// LeaseMargin is how long after another holder's lease expires a
	// waiting daemon tries to take it; default 1s.
	LeaseMargin time.Duration
	Policy      plan.Policy
	SpecOptions spec.Options
	// Interval between polls, with ±10% jitter so fleets do not poll in step.
	Interval time.Duration
	// ErrorBackoff spaces runs after Git or LXD errors; RolloutBackoff
	// holds an app's failed revision (and a revision whose run crashed).
	ErrorBackoff, RolloutBackoff Backoff
	// TransitionRetry is how soon a run follows one whose rollout failed
	// only because instances changed state under it (InTransition: a
	// replica stopped by hand while a step acted on it); default 2s.
	TransitionRetry time.Duration
	// UnobservedRetry is how soon a run follows one whose plan waited on
	// replicas whose Docker LXD could not reach (plan.Unobserved): their
	// state is unknown, and nothing about them is decided until a look
	// succeeds; default 10s, not the poll interval.
	UnobservedRetry time.Duration
	// DependencyRetry is how soon a run follows one after which an app
	// still waits for its dependencies (spec.dependsOn) while they
	// progress: steps ran, or a replica's health check is starting;
	// default DefaultDependencyRetry, not the poll interval, so each link
	// of a chain costs seconds at most.
	DependencyRetry time.Duration
	// Drain is how long steps in flight may go on after shutdown begins.
	Drain time.Duration
	// Clock is the time everything in the loop decides by (polls, backoff,
	// lease expiry, failure memory); the executor gets the same clock.
	Clock clock.Clock
	// Rand is the randomness of the poll jitter; default math/rand.
	Rand    func() float64
	Metrics LoopMetrics
	Logger  *slog.Logger
	// OnEvent receives executor progress (optional).
	OnEvent func(Event)
	// OnView, if set, receives every fresh look at the world: the desired
	// state of the run and what was just observed (service discovery
	// answers from it). It must not block.
	OnView func(View)
	// Watcher, if set, reports live changes as they happen (LXD's event
	// stream): each one triggers a run, and while the stream is up an idle
	// poll only checks Git; a full observe runs every Resync (default
	// 5m), on every event and after the stream reconnects.
	Watcher Watcher
	Resync  time.Duration
	// OnChange, if set, is told at once of a change that takes an instance
	// out of service (service discovery drops it before the run).
	OnChange func(Change)
	// OnRun, if set, is told of every run that got as far as a revision,
	// after its status is published: the status page's history and the
	// commit status and webhook notifiers read it. It must not block.
	OnRun func(RunReport)
	// ReportOnly (--self-heal=false) reports drift (status, metrics, a log
	// line) and writes nothing; only a revision that arrives while the
	// daemon runs is applied. What it finds at start is reported.
	ReportOnly bool
	// Drainer, if set, takes replicas out of service discovery before the
	// executor disrupts them, and DrainDelay is the wait after that (see
	// Executor.Drainer).
	Drainer    Drainer
	DrainDelay time.Duration

	trigger chan string
	mu      sync.Mutex
	status  LoopStatus
	ready   bool
	errKind string // reason of the last run's error ("" after a good run)
	fails   failureMemory
	// blockedSince is since when each app is blocked by its
	// dependencies (trackBlocked).
	blockedSince map[string]time.Time
	errs         int // consecutive failed runs
	// leaseHeld and leaseExpiry: this daemon holds the lease until then.
	leaseHeld   bool
	leaseExpiry time.Time
	// cancelRun cancels the run in progress (lease lost).
	cancelRun context.CancelCauseFunc
	// Event-driven observing: whether the stream is up, whether events may
	// have been missed or something changed since the last full observe,
	// and what that observe saw.
	eventsUp, eventsMissed, needFull atomic.Bool
	lastObservedRev                  string
	lastFullObserve                  time.Time
	lastView                         *View
	// moved is, per instance, its last run-state change (an event).
	moved map[string]Change
	// lastConverged: the last run's final plan was converged.
	lastConverged bool
	// lastApplied is the revision this daemon last applied in full
	// (ReportOnly leaves its drift alone).
	lastApplied string
	// onIdle, when set (tests), is called each time the loop has finished
	// a run and waits for the next trigger or poll: tests synchronise on
	// it instead of sleeping.
	onIdle func()
}

func (l *Loop) init() {
	if l.trigger == nil {
		l.trigger = make(chan string, 1)
	}
	l.Clock = clock.Or(l.Clock)
	if l.Rand == nil {
		l.Rand = rand.Float64
	}
	if l.Logger == nil {
		l.Logger = slog.New(slog.DiscardHandler)
	}
	if l.Interval <= 0 {
		l.Interval = 30 * time.Second
	}
	if l.ErrorBackoff.Base <= 0 {
		l.ErrorBackoff = Backoff{Base: 2 * time.Second, Max: 5 * time.Minute}
	}
	if l.RolloutBackoff.Base <= 0 {
		l.RolloutBackoff = Backoff{Base: time.Minute, Max: 30 * time.Minute}
	}
	if l.Drain <= 0 {
		l.Drain = 2 * time.Minute
	}
	if l.TransitionRetry <= 0 {
		l.TransitionRetry = 2 * time.Second
	}
	if l.UnobservedRetry <= 0 {
		l.UnobservedRetry = 10 * time.Second
	}
	if l.DependencyRetry <= 0 {
		l.DependencyRetry = DefaultDependencyRetry
	}
	if l.LeaseRenew <= 0 {
		l.LeaseRenew = 20 * time.Second
	}
	if l.LeaseMargin <= 0 {
		l.LeaseMargin = time.Second
	}
	if l.Resync <= 0 {
		l.Resync = 5 * time.Minute
	}
	if l.moved == nil {
		l.moved = map[string]Change{}
	}
	if l.fails.apps == nil {
		l.fails = failureMemory{backoff: l.RolloutBackoff, apps: map[string]AppFailure{}}
	}
	if l.status.Phase == "" {
		l.status = LoopStatus{Status: plan.Status{Owner: l.Policy.Owner, Apps: []plan.AppStatusView{}}, Phase: "Starting", LastGood: map[string]string{}}
	}
}

// Init fills in the defaults; Run calls it, callers that read Status
// before Run may too.
func (l *Loop) Init() { l.init() }

// Trigger asks for a run soon. It never blocks: triggers that arrive while
// one is pending coalesce, since a run observes everything anyway.
func (l *Loop) Trigger(source string) {
	if l.Metrics != nil {
		l.Metrics.Triggered(source)
	}
	select {
	case l.trigger <- source:
	default:
	}
}

// Status returns a copy of the daemon's status (for /api/v1/status).
func (l *Loop) Status() any {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.status
	s.LastGood = cloneMap(s.LastGood)
	if l.Endpoint != nil {
		s.LXDEndpoint = l.Endpoint()
	}
	s.Failures = map[string]AppFailure{}
	for k, v := range l.fails.apps {
		if k == revisionKey {
			s.HeldRevision = &v
			continue
		}
		s.Failures[k] = v
	}
	return s
}

// Ready reports whether the first run succeeded (for /readyz).
func (l *Loop) Ready() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Ready once synced; not while LXD cannot be reached (a rollout
	// failure or a Git hiccup does not make the daemon unready). A lease
	// error is an LXD call that failed too.
	lxdDown := l.errKind == "lxd" || l.errKind == "lease"
	if l.ready && !lxdDown {
		return nil
	}
	if l.status.LastError != "" {
		return errors.New(l.status.LastError)
	}
	return errors.New("first sync not done yet")
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Run reconciles until ctx ends: a run now, then on every trigger and
// timer tick. It releases the lease on the way out and returns nil after a
// clean shutdown. A run that panics is logged and recorded as failed; the
// loop goes on.
func (l *Loop) Run(ctx context.Context) error {
	l.init()
	if l.Lease != nil {
		// Renewal goes on while a shutdown drains running steps: the lease
		// must outlive every write this daemon makes.
		renewCtx, stopRenew := context.WithCancel(context.WithoutCancel(ctx))
		defer stopRenew()
		go l.renewLease(renewCtx)
	}
	if l.Watcher != nil {
		go l.watch(ctx)
	}
	reason := "start"
	for {
		// A run stops starting work when the lease is lost, as on shutdown.
		runCtx, cancelRun := context.WithCancelCause(ctx)
		l.mu.Lock()
		l.cancelRun = cancelRun
		l.mu.Unlock()
		next := l.runOnce(runCtx, reason)
		l.mu.Lock()
		l.cancelRun = nil
		l.mu.Unlock()
		cancelRun(nil)
		l.setStatus(func(s *LoopStatus) { s.NextRun = l.Clock.Now().Add(next) })
		timer := l.Clock.NewTimer(next)
		if l.onIdle != nil {
			l.onIdle()
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			if l.Lease != nil {
				l.mu.Lock()
				l.leaseHeld = false
				l.mu.Unlock()
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				if err := l.Lease.Release(rctx); err != nil {
					l.Logger.Warn("releasing the lease failed", "err", err)
				}
				cancel()
			}
			return nil
		case reason = <-l.trigger:
		case <-timer.C():
			reason = "poll"
		}
		timer.Stop()
	}
}

// renewLease keeps a held lease alive between runs. It takes no lease it
// does not hold: that is for a run to do, so a waiting daemon notices.
// Contention and errors are retried soon; the lease counts as lost when
// another holds it, or when it could not be renewed by LeaseRenew before
// it expires.
func (l *Loop) renewLease(ctx context.Context) {
	wait := l.LeaseRenew
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.Clock.After(wait):
		}
		wait = l.LeaseRenew
		l.mu.Lock()
		holding, expiry := l.leaseHeld, l.leaseExpiry
		l.mu.Unlock()
		if !holding {
			continue
		}
		st, err := l.Lease.Renew(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && st.Held:
			l.mu.Lock()
			if l.leaseHeld {
				l.leaseExpiry = st.Expiry
			}
			l.mu.Unlock()
		case err == nil:
			cause := LeaseLostError(st)
			l.Logger.Warn("lost the lease; stopping the current run and taking it again when free", "why", cause, "holder", st.Holder, "expires", st.Expiry)
			if !l.leaseLost(st, cause) {
				// No run to cancel: one now takes the lease through
				// Acquire, or waits for the new holder.
				l.Trigger("lease")
			}
		case !l.Clock.Now().Before(expiry.Add(-l.LeaseRenew)):
			l.Logger.Error("could not renew the lease before it expires; stopping the current run", "err", err, "expires", expiry)
			l.leaseLost(LeaseState{}, fmt.Errorf("%w: could not renew it before it expires: %v", ErrLeaseLost, err))
		default:
			wait = min(l.LeaseRenew, 2*time.Second)
			if errors.Is(err, ErrLeaseContended) {
				l.Logger.Debug("renewing the lease: contended; trying again soon", "retry_in", wait)
			} else {
				l.Logger.Warn("renewing the lease failed; trying again soon", "err", err, "retry_in", wait, "expires", expiry)
			}
		}
	}
}

// leaseLost notes that this daemon no longer holds the lease and cancels
// the run in progress with cause; it reports whether there was one.
func (l *Loop) leaseLost(st LeaseState, cause error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leaseHeld = false
	l.status.Phase = "WaitingForLease"
	l.status.LeaseHolder, l.status.LeaseExpiry = st.String(), st.Expiry
	if l.cancelRun != nil {
		l.cancelRun(cause)
		return true
	}
	return false
}

func (l *Loop) setStatus(f func(*LoopStatus)) {
	l.mu.Lock()
	f(&l.status)
	l.mu.Unlock()
}

// jitter spreads d by ±10%, so fleets of daemons do not poll in step.
func (l *Loop) jitter(d time.Duration) time.Duration {
	return clock.Jitter(d, 0.1, l.Rand)
}

// leaseWait is how long a daemon waits for a lease another holds: until
// it expires (plus LeaseMargin) or the next poll, whichever comes first.
// The holder may release it sooner (a shutdown); the poll notices that.
func (l *Loop) leaseWait(st LeaseState) time.Duration {
	wait := l.jitter(l.Interval)
	if !st.Expiry.IsZero() {
		wait = min(wait, st.Expiry.Sub(l.Clock.Now())+l.LeaseMargin)
	}
	return max(wait, l.LeaseMargin)
}

// run is one reconcile's state as it goes through its stages.
type run struct {
	start       time.Time
	log         *slog.Logger
	rev         Revision
	res         *spec.Result
	desired     plan.Desired
	diags       []string
	held        []string         // apps held after a failed rollout of this revision
	rolloutHeld map[string]Retry // and why
	result      string
	// replanSoon: a rollout failed only because instances changed state
	// under it; the next run comes after TransitionRetry, not the poll.
	replanSoon bool
	// blockedBefore: the plan applied had apps blocked by dependencies.
	blockedBefore bool
}

// runOnce does one reconcile and returns how long to wait for the next:
// acquire the lease → load the revision → observe, plan and apply →
// publish the status.
func (l *Loop) runOnce(ctx context.Context, reason string) (next time.Duration) {
	r := &run{start: l.Clock.Now(), log: l.Logger.With("trigger", reason), rolloutHeld: map[string]Retry{}}
	defer func() {
		if p := recover(); p != nil {
			next = l.panicked(r.log, p, debug.Stack(), r.rev.SHA, r.start)
		}
	}()
	fail := func(kind string, err error) time.Duration {
		if ctx.Err() != nil {
			// A shutdown or a lost lease cancelled the call: not a
			// failure of the run.
			return l.interrupted(ctx, r.log)
		}
		wait := l.failed(r.log, kind, err, r.start)
		r.result = RunError
		l.report(r, l.Clock.Now(), nil, fmt.Sprintf("%s: %v", kind, err))
		return wait
	}
	if ctx.Err() != nil {
		return 0
	}
	if wait, proceed, err := l.acquire(ctx, r.log); err != nil {
		return fail("lease", err)
	} else if !proceed {
		return wait
	}
	l.setStatus(func(s *LoopStatus) { s.Phase = "Reconciling" })

	rev, err := l.Source.Fetch(ctx)
	if err != nil {
		return fail("git", err)
	}
	r.rev = rev
	r.log = r.log.With("revision", plan.ShortSHA(rev.SHA))
	l.setStatus(func(s *LoopStatus) { s.SourceWarning = rev.Warning })
	if rev.Warning != "" {
		r.log.Warn("not applying the newest revision", "why", rev.Warning)
	}
	if wait, held := l.revisionHeld(r); held {
		return wait
	}
	if l.cheapPoll(reason, rev.SHA, l.Clock.Now()) {
		// Nothing happened that the event stream would have seen, and Git
		// did not move: no LXD list, no Docker look.
		r.log.Debug("idle poll: nothing changed")
		l.setStatus(func(s *LoopStatus) { s.Phase, s.LastRun = "Idle", l.Clock.Now() })
		if l.Metrics != nil {
			l.Metrics.RunFinished(RunNoop, l.Clock.Now().Sub(r.start))
		}
		return l.jitter(l.Interval)
	}
	if err := l.load(ctx, r); err != nil {
		return fail("spec", err)
	}
	observed, pl, err := l.converge(ctx, r)
	switch {
	case ctx.Err() != nil:
		// Shutdown or lost lease: the next run (here or elsewhere)
		// observes afresh. Steps cut short are not a failed rollout.
		return l.interrupted(ctx, r.log)
	case err != nil:
		return fail("lxd", err)
	}
	dependencySoon := l.trackBlocked(r, &pl, r.result == RunOK)
	l.publish(r, observed, pl)
	switch {
	case r.replanSoon:
		return l.TransitionRetry
	case dependencySoon:
		r.log.Info("apps wait for dependencies that are progressing; planning again soon", "apps", len(pl.Blocked), "retry_in", l.DependencyRetry)
		return min(l.DependencyRetry, l.jitter(l.Interval))
	case len(pl.Unobserved) > 0:
		r.log.Info("some replicas could not be observed; looking again soon", "replicas", len(pl.Unobserved), "retry_in", l.UnobservedRetry)
		return min(l.UnobservedRetry, l.jitter(l.Interval))
	}
	return l.jitter(l.Interval)
}

// acquire takes or renews the lease. proceed is false when this run must
// not go on, with how long to wait.
func (l *Loop) acquire(ctx context.Context, log *slog.Logger) (wait time.Duration, proceed bool, err error) {
	if l.Lease == nil {
		return 0, true, nil
	}
	l.mu.Lock()
	held := l.leaseHeld
	fresh := held && l.Clock.Now().Before(l.leaseExpiry.Add(-2*l.LeaseRenew))
	l.mu.Unlock()
	if fresh {
		// Held, and far from expiring: the renewal goroutine keeps it (and
		// cancels the run if it is lost). Taking it again on every poll
		// would write LXD's server config each time.
		return 0, true, nil
	}
	st, err := l.renewOrAcquire(ctx, log, held)
	switch {
	case ctx.Err() != nil:
		return l.interrupted(ctx, log), false, nil
	case errors.Is(err, ErrLeaseContended):
		wait := l.jitter(2 * time.Second)
		log.Info("the lease is contended; trying again soon", "retry_in", wait)
		return wait, false, nil
	case err != nil:
		return 0, false, err
	case !st.Held:
		wait := l.leaseWait(st)
		log.Info("another reconciler holds the lease; waiting", "holder", st.Holder, "expires", st.Expiry, "retry_in", wait)
		l.mu.Lock()
		l.leaseHeld = false
		l.status.Phase, l.status.LeaseHolder, l.status.LeaseExpiry = "WaitingForLease", st.String(), st.Expiry
		l.mu.Unlock()
		return wait, false, nil
	}
	l.mu.Lock()
	if !l.leaseHeld {
		log.Info("took the lease", "expires", st.Expiry)
	}
	l.leaseHeld, l.leaseExpiry = true, st.Expiry
	l.status.LeaseHolder, l.status.LeaseExpiry = "", time.Time{}
	l.mu.Unlock()
	return 0, true, nil
}

// renewOrAcquire renews the lease this daemon believes it holds, or
// takes it. A renewal that finds the lease gone or another's means it was
// lost since the last renewal: that is logged, and the lease taken
// through Acquire like any free one (no steps were started yet).
func (l *Loop) renewOrAcquire(ctx context.Context, log *slog.Logger, held bool) (LeaseState, error) {
	if held {
		st, err := l.Lease.Renew(ctx)
		if err != nil || st.Held {
			return st, err
		}
		log.Warn("lost the lease; taking it again when free", "why", LeaseLostError(st), "holder", st.Holder, "expires", st.Expiry)
		l.mu.Lock()
		l.leaseHeld = false
		l.mu.Unlock()
	}
	return l.Lease.Acquire(ctx)
}

// revisionHeld reports whether a run of this revision crashed before: it
// is then not touched until a newer commit comes, or its backoff ends.
func (l *Loop) revisionHeld(r *run) (time.Duration, bool) {
	now := l.Clock.Now()
	l.mu.Lock()
	f, held := l.fails.held(revisionKey, r.rev.SHA, now)
	l.mu.Unlock()
	if !held {
		return 0, false
	}
	r.log.Info("revision held: a run of it crashed; waiting for a newer commit", "retry_after", f.RetryAfter, "reason", f.Reason)
	l.setStatus(func(s *LoopStatus) { s.Phase, s.LastRun, s.LastResult = "Held", now, RunHeld })
	if l.Metrics != nil {
		l.Metrics.RunFinished(RunHeld, l.Clock.Now().Sub(r.start))
	}
	return max(min(l.jitter(l.Interval), f.RetryAfter.Sub(now)), l.LeaseMargin), true
}

// load reads the revision's specs into the desired state, holding invalid
// apps and apps whose rollout of this revision failed.
func (l *Loop) load(ctx context.Context, r *run) error {
	opts := l.SpecOptions
	opts.Files = r.rev.Files
	res, err := spec.Load(ctx, r.rev.FS, opts)
	if err != nil {
		return err
	}
	r.res = res
	r.desired = plan.NewDesired(r.rev.SHA, res)
	for _, d := range res.Diagnostics {
		r.diags = append(r.diags, d.String())
		r.log.Warn("invalid spec; its app keeps its last applied state", "problem", d.String())
	}
	now := l.Clock.Now()
	for _, a := range r.desired.Apps {
		l.mu.Lock()
		f, ok := l.fails.held(a.Metadata.Name, r.rev.SHA, now)
		l.mu.Unlock()
		if ok {
			r.held = append(r.held, a.Metadata.Name)
			r.rolloutHeld[a.Metadata.Name] = f.Retry
			r.log.Info("app held after a failed rollout", "app", a.Metadata.Name, "retry", f.Retry, "retry_after", f.RetryAfter, "reason", f.Reason)
		}
	}
	r.desired = holdApps(r.desired, r.held)
	return nil
}

// converge observes, plans, applies when there is something to do, and
// observes again, returning what the status is built from.
func (l *Loop) converge(ctx context.Context, r *run) (plan.Observed, plan.Plan, error) {
	// The observer checks the ports the apps declare (readiness).
	if ps, ok := l.System.(interface{ SetPorts(map[string][]spec.Port) }); ok {
		ps.SetPorts(spec.DeclaredPorts(r.desired.Apps))
	}
	started := l.Clock.Now()
	observed, err := l.System.Observe(ctx)
	if err != nil {
		return observed, plan.Plan{}, err
	}
	l.view(r, started, observed)
	pl := plan.MakePlan(r.desired, observed, l.Policy)
	r.blockedBefore = len(pl.Blocked) > 0
	r.result = RunNoop
	if pl.Empty() {
		return observed, pl, nil
	}
	if l.ReportOnly && (l.lastApplied == "" || r.rev.SHA == l.lastApplied) {
		// Without self-heal a daemon applies only revisions that arrive
		// while it runs: what it finds at start, it reports.
		l.lastApplied = r.rev.SHA
		r.log.Warn("drift left alone: self-heal is off", "summary", pl.Summary())
		return observed, pl, nil
	}
	r.result = RunOK
	r.log.Info("applying", "summary", pl.Summary())
	ex := &Executor{Driver: l.System, OnEvent: l.logEvent(r.log), Drain: l.Drain, Clock: l.Clock, Drainer: l.Drainer, DrainDelay: l.DrainDelay,
		Moved: l.movedSince(started)}
	if l.OnView != nil {
		ex.Reobserve = func(ctx context.Context) {
			started := l.Clock.Now()
			if obs, err := l.System.Observe(ctx); err == nil {
				l.view(r, started, obs)
			}
		}
	}
	res := ex.Apply(ctx, pl, r.desired, observed)
	if ctx.Err() != nil {
		return observed, pl, ctx.Err()
	}
	l.remember(r, res)
	started = l.Clock.Now()
	if observed, err = l.System.Observe(ctx); err != nil {
		return observed, pl, err
	}
	l.view(r, started, observed)
	return observed, plan.MakePlan(r.desired, observed, l.Policy), nil
}

// View is one fresh look at the world: the desired state of a run and
// what was observed, at a time.
type View struct {
	Desired  plan.Desired
	Observed plan.Observed
	// Started is when the observe began, At when it ended (the loop's
	// clock): a change received after Started may be missing from it.
	Started, At time.Time
}

func (l *Loop) view(r *run, started time.Time, observed plan.Observed) {
	l.needFull.Store(false)
	v := View{Desired: r.desired, Observed: observed, Started: started, At: l.Clock.Now()}
	l.mu.Lock()
	l.lastObservedRev, l.lastFullObserve = r.rev.SHA, v.At
	l.lastView = &v
	l.mu.Unlock()
	if l.OnView != nil {
		l.OnView(v)
	}
}

// ObservedView is LastView for the HTTP server (server.ViewBackend), with
// the instances of other owners reduced to their name, status, location
// and ownership keys: that is all a plan needs of them (a clash of
// names), and their config is theirs.
func (l *Loop) ObservedView() (observed any, revision string, at time.Time, ok bool) {
	v, ok := l.LastView()
	if !ok {
		return nil, "", time.Time{}, false
	}
	owner := cmp.Or(l.Policy.Owner, plan.DefaultOwner)
	obs := v.Observed
	obs.Instances = make([]plan.Instance, len(v.Observed.Instances))
	for i, inst := range v.Observed.Instances {
		if inst.Config[ownership.KeyOwner] != owner {
			keys := map[string]string{}
			for _, k := range []string{ownership.KeyOwner, ownership.KeyApp, ownership.KeySlot} {
				if val, ok := inst.Config[k]; ok {
					keys[k] = val
				}
			}
			inst = plan.Instance{Name: inst.Name, Status: inst.Status, Location: inst.Location, Config: keys}
		}
		obs.Instances[i] = inst
	}
	return obs, v.Desired.Revision, v.At, true
}

// LastView returns the daemon's last full look at the world, for `berth
// plan --server`: planning against it costs no LXD call and no Docker
// tunnel. ok is false before the first observe.
func (l *Loop) LastView() (v View, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastView == nil {
		return View{}, false
	}
	return *l.lastView, true
}

// remember records each app's rollout outcome in the failure memory.
func (l *Loop) remember(r *run, res Result) {
	for _, a := range res.Apps {
		switch a.Status {
		case AppDegraded:
			r.result = RunError
			l.mu.Lock()
			soon := a.Retry == InTransition && l.fails.inTransition(a.App)
			l.mu.Unlock()
			if soon {
				// Planned from a view that no longer holds (a replica
				// stopped under the step): a fresh look decides again.
				r.replanSoon = true
				r.log.Warn("rollout halted: instances changed state under it; planning again soon", "app", a.App, "reason", a.Reason, "retry_in", l.TransitionRetry)
				continue
			}
			l.mu.Lock()
			f := l.fails.failed(a.App, r.rev.SHA, a.Reason, a.Retry, l.Clock.Now())
			f.Instances = failedInstances(res, a.App)
			l.fails.apps[a.App] = f
			l.mu.Unlock()
			r.rolloutHeld[a.App] = f.Retry
			if f.Retry == Stalled {
				r.log.Error("rollout stalled: held until a newer commit", "app", a.App, "reason", a.Reason)
			} else {
				r.log.Error("rollout halted; retrying after a backoff", "app", a.App, "reason", a.Reason, "retry_after", f.RetryAfter)
			}
			if l.Metrics != nil {
				l.Metrics.RunError("rollout")
			}
		case AppReady, AppRemoved:
			if a.Replan {
				// Not converged, not failed: the event that contradicted
				// the plan has triggered the next run already.
				r.replanSoon = true
				r.log.Info("steps not run: their instances changed since the plan was made; planning again", "app", a.App)
				continue
			}
			l.mu.Lock()
			l.fails.succeeded(a.App)
			l.mu.Unlock()
		}
	}
}

// failedInstances are the instances of app's failed steps in res.
func failedInstances(res Result, app string) []string {
	var out []string
	for _, s := range res.Steps {
		if s.Step.App == app && s.Status == StepFailed && s.Step.Instance != "" && !slices.Contains(out, s.Step.Instance) {
			out = append(out, s.Step.Instance)
		}
	}
	return out
}

// publish derives the status once, at the end of the run, and reports it
// to the status endpoint and the metrics.
func (l *Loop) publish(r *run, observed plan.Observed, pl plan.Plan) {
	st := plan.BuildStatus(l.Policy.Owner, &r.desired, observed, &pl)
	invalid := map[string]bool{}
	for _, a := range r.res.InvalidApps {
		invalid[a] = true
	}
	statuses := make(map[string]string, len(st.Apps))
	for _, a := range st.Apps {
		statuses[a.App] = appMetricStatus(a, invalid[a.App], r.rolloutHeld[a.App])
	}
	if r.result != RunError && (len(r.held) > 0 || len(r.diags) > 0) {
		// Not everything in this revision was applied: not "ok".
		r.result = RunHeld
	}
	l.errs = 0
	end := l.Clock.Now()
	l.mu.Lock()
	l.fails.succeeded(revisionKey)
	known := map[string]bool{}
	for _, a := range st.Apps {
		known[a.App] = true
		if a.Sync == plan.SyncSynced && a.Health == plan.HealthHealthy && !invalid[a.App] && r.rolloutHeld[a.App] == "" {
			l.status.LastGood[a.App] = r.rev.SHA
		}
	}
	for app := range l.status.LastGood {
		if !known[app] {
			delete(l.status.LastGood, app) // gone from Git and from LXD
		}
	}
	lastGood := cloneMap(l.status.LastGood)
	l.lastConverged = pl.Converged()
	if r.result == RunOK || r.result == RunNoop {
		l.lastApplied = r.rev.SHA
	}
	l.status.Status, l.status.Subject, l.status.Diagnostics = st, r.rev.Subject, r.diags
	l.status.Phase, l.status.LastRun, l.status.LastResult, l.status.LastError = "Idle", end, r.result, ""
	l.errKind = ""
	l.ready = true
	l.mu.Unlock()
	if l.Metrics != nil {
		l.Metrics.RunFinished(r.result, end.Sub(r.start))
		l.Metrics.SetApps(statuses)
		l.Metrics.SetAppRevisions(lastGood)
		l.Metrics.SetSpecErrors(len(r.diags))
		l.Metrics.SetOutdatedBaseImages(countReplicas(st, func(r plan.ReplicaView) bool { return r.BaseImageOutdated }))
		l.Metrics.SetUnobservedReplicas(countReplicas(st, func(r plan.ReplicaView) bool { return r.Unobserved }))
		l.Metrics.SetRetainedVolumes(retainedVolumes(st))
		if r.result == RunOK || r.result == RunNoop {
			// Only a revision every app converged to is "applied".
			l.Metrics.SetRevision(r.rev.SHA)
			l.Metrics.Succeeded(end)
		}
	}
	r.log.Debug("reconcile done", "result", r.result, "took", end.Sub(r.start))
	l.report(r, end, statuses, "")
}

// RunReport is what one run did, for OnRun.
type RunReport struct {
	// Revision is the Git SHA the run applied (or tried to), with its
	// commit subject.
	Revision string `json:"revision"`
	Subject  string `json:"subject,omitempty"`
	Author   string `json:"author,omitempty"`
	// Started and Finished bound the run.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Result is one of the Run* results.
	Result string `json:"result"`
	// Error is why a run that failed as a whole (Git, LXD, a spec tree
	// that could not be read) failed.
	Error string `json:"error,omitempty"`
	// Apps is each app's status word (AppStatus*, or a health) after the
	// run, by app; empty when the run failed as a whole.
	Apps map[string]string `json:"apps,omitempty"`
	// Status is the daemon's whole status after the run: per app and per
	// replica, failures with their reasons, diagnostics.
	Status LoopStatus `json:"status"`
}

// report hands the run to OnRun.
func (l *Loop) report(r *run, end time.Time, apps map[string]string, errText string) {
	if l.OnRun == nil || r.rev.SHA == "" {
		return
	}
	st, _ := l.Status().(LoopStatus)
	l.OnRun(RunReport{Revision: r.rev.SHA, Subject: r.rev.Subject, Author: r.rev.Author, Started: r.start, Finished: end,
		Result: r.result, Error: errText, Apps: apps, Status: st})
}

// retainedVolumes counts, per app, the retained volumes and their bytes;
// every app has an entry, so a gauge falls back to 0.
func retainedVolumes(st plan.Status) (map[string]int, map[string]uint64) {
	counts, bytes := make(map[string]int, len(st.Apps)), make(map[string]uint64, len(st.Apps))
	for _, a := range st.Apps {
		counts[a.App], bytes[a.App] = len(a.RetainedVolumes), 0
		for _, v := range a.RetainedVolumes {
			bytes[a.App] += v.Bytes
		}
	}
	return counts, bytes
}

// countReplicas counts, per app, the replicas that match (e.g. those whose
// base image alias has moved on); every app has an entry, so a gauge
// falls back to 0.
func countReplicas(st plan.Status, match func(plan.ReplicaView) bool) map[string]int {
	out := make(map[string]int, len(st.Apps))
	for _, a := range st.Apps {
		n := 0
		for _, r := range a.Replicas {
			if match(r) {
				n++
			}
		}
		out[a.App] = n
	}
	return out
}

// appMetricStatus is one word for an app's state, the most telling first:
// an invalid spec or a held revision before health, health before drift.
func appMetricStatus(a plan.AppStatusView, invalid bool, rolloutHeld Retry) string {
	switch {
	case invalid:
		return AppStatusInvalid
	case rolloutHeld == Stalled:
		return AppStatusStalled
	case rolloutHeld != "" || a.Sync == plan.SyncHeld:
		return AppStatusHeld
	case a.Sync == plan.SyncOrphaned:
		return AppStatusOrphaned
	case a.Blocked != "":
		return AppStatusBlocked
	case a.Health != plan.HealthHealthy && a.Health != "":
		return a.Health
	case a.Sync == plan.SyncOutOfSync:
		return plan.SyncOutOfSync
	}
	return plan.HealthHealthy
}

// failed records a run that failed for reason kind and returns the backoff.
func (l *Loop) failed(log *slog.Logger, kind string, err error, start time.Time) time.Duration {
	l.errs++
	wait := l.ErrorBackoff.Delay(l.errs)
	log.Error("reconcile failed", "reason", kind, "err", err, "retry_in", wait)
	if l.Metrics != nil {
		l.Metrics.RunError(kind)
		l.Metrics.RunFinished(RunError, l.Clock.Now().Sub(start))
	}
	l.mu.Lock()
	l.status.Phase, l.status.LastRun, l.status.LastResult = "Backoff", l.Clock.Now(), RunError
	l.status.LastError = fmt.Sprintf("%s: %v", kind, err)
	l.errKind = kind
	l.mu.Unlock()
	return wait
}

// interrupted ends a run that a shutdown or a lost lease cancelled: no
// error, no backoff; the next run (here or elsewhere) observes afresh.
func (l *Loop) interrupted(ctx context.Context, log *slog.Logger) time.Duration {
	log.Info("run interrupted", "why", context.Cause(ctx))
	return 0
}

// panicked records a run that panicked: logged with its stack, counted as
// a failed run, and its revision held (with the rollout backoff) so a bad
// revision is not retried in a hot loop; a newer commit is tried at once.
func (l *Loop) panicked(log *slog.Logger, p any, stack []byte, revision string, start time.Time) time.Duration {
	err := fmt.Errorf("panic: %v", p)
	wait := l.failed(log.With("stack", string(stack)), "panic", err, start)
	if revision != "" {
		l.mu.Lock()
		f := l.fails.failed(revisionKey, revision, err.Error(), Retrying, l.Clock.Now())
		l.status.Phase = "Held"
		l.mu.Unlock()
		log.Error("holding the revision: a run of it crashed", "retry_after", f.RetryAfter)
	}
	return wait
}

// holdApps moves apps out of the desired set into HeldApps.
func holdApps(d plan.Desired, names []string) plan.Desired {
	if len(names) == 0 {
		return d
	}
	hold := map[string]bool{}
	for _, n := range names {
		hold[n] = true
	}
	out := d
	out.Apps = nil
	for _, a := range d.Apps {
		if hold[a.Metadata.Name] {
			out.HeldApps = append(out.HeldApps, a.Metadata.Name)
		} else {
			out.Apps = append(out.Apps, a)
		}
	}
	return out
}

// stepWhy is what a step's start logs of its reasons: the fields that
// differ (never their values, which may be a secret's tag), and for a
// restart the Docker failure that planned it, the one evidence a
// restart rests on.
func stepWhy(s plan.Step) []any {
	var fields []string
	out := []any{}
	for _, r := range s.Reasons {
		fields = append(fields, r.Field)
		if s.Action == plan.Restart && r.Field == "docker" {
			out = append(out, "docker", r.Old)
		}
	}
	return append(out, "why", strings.Join(fields, ","))
}

func (l *Loop) logEvent(log *slog.Logger) func(Event) {
	return func(e Event) {
		args := []any{"app", e.Step.App, "instance", e.Step.Instance, "action", e.Step.Action.String()}
		switch e.Phase {
		case PhaseStart:
			log.Info("step started", append(args, stepWhy(e.Step)...)...)
		case PhaseDone:
			log.Info("step done", append(args, "took", e.Duration)...)
		case PhaseFailed:
			log.Error("step failed", append(args, "took", e.Duration, "err", e.Err)...)
		}
		if l.OnEvent != nil {
			l.OnEvent(e)
		}
	}
}
