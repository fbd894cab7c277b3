package reconciler

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/berth-gitops/berth/spec"
)

// Revision is what a Source returns for one run: a commit and its specs.
type Revision struct {
	SHA     string `json:"sha"`
	Subject string `json:"subject,omitempty"`
	// FS is the spec root at that revision (YAML files).
	FS fs.FS `json:"-"`
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
	// Acquire takes or renews the lease; held=false with the current
	// holder when someone else holds it.
	Acquire(ctx context.Context) (held bool, holder string, err error)
	// Release gives it up (on shutdown), so another can take over at once.
	Release(ctx context.Context) error
}

// Clock is the time the loop runs on; tests inject a fake.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// LoopMetrics is what the loop reports; server.Metrics implements it.
type LoopMetrics interface {
	RunFinished(result string, d time.Duration)
	RunError(reason string)
	SetRevision(sha string)
	SetApps(byStatus map[string]int)
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
}

// AppFailure is an app whose rollout of Revision failed Count times in a
// row; the revision is held for the app until RetryAfter.
type AppFailure struct {
	Revision   string    `json:"revision"`
	Count      int       `json:"count"`
	RetryAfter time.Time `json:"retryAfter"`
	Reason     string    `json:"reason"`
}

// held tells whether app must be held at revision at now.
func (m *failureMemory) held(app, revision string, now time.Time) (AppFailure, bool) {
	f, ok := m.apps[app]
	if !ok || f.Revision != revision {
		return AppFailure{}, false
	}
	return f, now.Before(f.RetryAfter)
}

// failed records a failed rollout of app at revision.
func (m *failureMemory) failed(app, revision, reason string, now time.Time) AppFailure {
	f := m.apps[app]
	if f.Revision != revision {
		f = AppFailure{Revision: revision}
	}
	f.Count++
	f.Reason = reason
	f.RetryAfter = now.Add(m.backoff.Delay(f.Count))
	m.apps[app] = f
	return f
}

// succeeded forgets app's failure.
func (m *failureMemory) succeeded(app string) { delete(m.apps, app) }

// LoopStatus is the daemon's status: the last run and the apps.
type LoopStatus struct {
	Status
	// Phase is Starting, Idle, Reconciling, WaitingForLease or Backoff.
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
	// LeaseHolder is who holds the lease when this daemon does not.
	LeaseHolder string `json:"leaseHolder,omitempty"`
	// Diagnostics are the spec problems of the revision.
	Diagnostics []string `json:"diagnostics,omitempty"`
	// SourceWarning says why the newest revision is not the one applied.
	SourceWarning string `json:"sourceWarning,omitempty"`
}

// Loop is berth's daemon: level-triggered, every trigger only asks for a
// run, and each run observes everything.
type Loop struct {
	Source Source
	System System
	Lease  Lease // nil: no lease
	// LeaseRenew is how often the lease is renewed between runs (a long
	// poll interval must not let it expire); default 20s.
	LeaseRenew  time.Duration
	Policy      Policy
	SpecOptions spec.Options
	// Interval between polls, with ±10% jitter so fleets do not poll in step.
	Interval time.Duration
	// ErrorBackoff spaces runs after Git or LXD errors; RolloutBackoff
	// holds an app's failed revision.
	ErrorBackoff, RolloutBackoff Backoff
	// Drain is how long steps in flight may go on after shutdown begins.
	Drain   time.Duration
	Clock   Clock
	Metrics LoopMetrics
	Logger  *slog.Logger
	// OnEvent receives executor progress (optional).
	OnEvent func(Event)

	trigger chan string
	mu      sync.Mutex
	status  LoopStatus
	ready   bool
	fails   failureMemory
	errs    int // consecutive failed runs
	// cancelRun cancels the run in progress (lease lost).
	cancelRun context.CancelFunc
}

func (l *Loop) init() {
	if l.trigger == nil {
		l.trigger = make(chan string, 1)
	}
	if l.Clock == nil {
		l.Clock = realClock{}
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
	if l.LeaseRenew <= 0 {
		l.LeaseRenew = 20 * time.Second
	}
	if l.fails.apps == nil {
		l.fails = failureMemory{backoff: l.RolloutBackoff, apps: map[string]AppFailure{}}
	}
	if l.status.Phase == "" {
		l.status = LoopStatus{Status: Status{Owner: l.Policy.Owner, Apps: []AppStatusView{}}, Phase: "Starting", LastGood: map[string]string{}}
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
	s.Failures = map[string]AppFailure{}
	for k, v := range l.fails.apps {
		s.Failures[k] = v
	}
	return s
}

// Ready reports whether the first run succeeded (for /readyz).
func (l *Loop) Ready() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ready && !strings.HasPrefix(l.status.LastError, "lxd:") {
		// Ready once synced; not while LXD cannot be reached (a rollout
		// failure or a Git hiccup does not make the daemon unready).
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
// clean shutdown.
func (l *Loop) Run(ctx context.Context) error {
	l.init()
	if l.Lease != nil {
		// Renewal goes on while a shutdown drains running steps: the lease
		// must outlive every write this daemon makes.
		renewCtx, stopRenew := context.WithCancel(context.WithoutCancel(ctx))
		defer stopRenew()
		go l.renewLease(renewCtx)
	}
	reason := "start"
	for {
		// A run stops starting work when the lease is lost, as on shutdown.
		runCtx, cancelRun := context.WithCancel(ctx)
		l.mu.Lock()
		l.cancelRun = cancelRun
		l.mu.Unlock()
		next := l.runOnce(runCtx, reason)
		cancelRun()
		l.setStatus(func(s *LoopStatus) { s.NextRun = l.Clock.Now().Add(next) })
		select {
		case <-ctx.Done():
			if l.Lease != nil {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				if err := l.Lease.Release(rctx); err != nil {
					l.Logger.Warn("releasing the lease failed", "err", err)
				}
				cancel()
			}
			return nil
		case reason = <-l.trigger:
		case <-l.Clock.After(next):
			reason = "poll"
		}
	}
}

// renewLease keeps a held lease alive between runs. It takes no lease it
// does not hold: that is for a run to do, so a waiting daemon notices.
func (l *Loop) renewLease(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.Clock.After(l.LeaseRenew):
		}
		l.mu.Lock()
		holding := l.status.LeaseHolder == "" && l.status.Phase != "Starting" && l.status.Phase != "WaitingForLease"
		l.mu.Unlock()
		if !holding {
			continue
		}
		if held, holder, err := l.Lease.Acquire(ctx); err != nil {
			l.Logger.Warn("renewing the lease failed", "err", err)
		} else if !held {
			l.Logger.Warn("lost the lease; stopping the current run", "holder", holder)
			l.mu.Lock()
			l.status.Phase, l.status.LeaseHolder = "WaitingForLease", holder
			if l.cancelRun != nil {
				l.cancelRun()
			}
			l.mu.Unlock()
		}
	}
}

func (l *Loop) setStatus(f func(*LoopStatus)) {
	l.mu.Lock()
	f(&l.status)
	l.mu.Unlock()
}

// jitter spreads d by ±10%.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// runOnce does one reconcile and returns how long to wait for the next.
func (l *Loop) runOnce(ctx context.Context, reason string) time.Duration {
	start := l.Clock.Now()
	log := l.Logger.With("trigger", reason)
	fail := func(kind string, err error) time.Duration {
		l.errs++
		wait := l.ErrorBackoff.Delay(l.errs)
		log.Error("reconcile failed", "reason", kind, "err", err, "retry_in", wait)
		if l.Metrics != nil {
			l.Metrics.RunError(kind)
			l.Metrics.RunFinished("error", l.Clock.Now().Sub(start))
		}
		l.setStatus(func(s *LoopStatus) {
			s.Phase, s.LastRun, s.LastResult = "Backoff", l.Clock.Now(), "error"
			s.LastError = fmt.Sprintf("%s: %v", kind, err)
		})
		return wait
	}
	if ctx.Err() != nil {
		return 0
	}
	if l.Lease != nil {
		held, holder, err := l.Lease.Acquire(ctx)
		if err != nil {
			return fail("lease", err)
		}
		if !held {
			log.Info("another reconciler holds the lease; waiting", "holder", holder)
			l.setStatus(func(s *LoopStatus) { s.Phase, s.LeaseHolder = "WaitingForLease", holder })
			return jitter(l.Interval)
		}
		l.setStatus(func(s *LoopStatus) { s.LeaseHolder = "" })
	}
	l.setStatus(func(s *LoopStatus) { s.Phase = "Reconciling" })

	rev, err := l.Source.Fetch(ctx)
	if err != nil {
		return fail("git", err)
	}
	log = log.With("revision", ShortSHA(rev.SHA))
	l.setStatus(func(s *LoopStatus) { s.SourceWarning = rev.Warning })
	if rev.Warning != "" {
		log.Warn("not applying the newest revision", "why", rev.Warning)
	}
	res, err := spec.Load(ctx, rev.FS, l.SpecOptions)
	if err != nil {
		return fail("spec", err)
	}
	desired := NewDesired(rev.SHA, res)
	var diags []string
	for _, d := range res.Diagnostics {
		diags = append(diags, d.String())
		log.Warn("invalid spec; its app keeps its last applied state", "problem", d.String())
	}
	now := l.Clock.Now()
	var held []string
	for _, a := range desired.Apps {
		l.mu.Lock()
		f, ok := l.fails.held(a.Metadata.Name, rev.SHA, now)
		l.mu.Unlock()
		if ok {
			held = append(held, a.Metadata.Name)
			log.Info("app held after a failed rollout", "app", a.Metadata.Name, "retry_after", f.RetryAfter, "reason", f.Reason)
		}
	}
	desired = holdApps(desired, held)

	observed, err := l.System.Observe(ctx)
	if err != nil {
		return fail("lxd", err)
	}
	plan := MakePlan(desired, observed, l.Policy)
	result := "noop"
	if !plan.Empty() {
		result = "ok"
		log.Info("applying", "summary", plan.Summary())
		ex := &Executor{Driver: l.System, OnEvent: l.logEvent(log), Drain: l.Drain}
		r := ex.Apply(ctx, plan, desired, observed)
		for _, a := range r.Apps {
			switch a.Status {
			case AppDegraded:
				l.mu.Lock()
				f := l.fails.failed(a.App, rev.SHA, a.Reason, l.Clock.Now())
				l.mu.Unlock()
				result = "error"
				log.Error("rollout halted", "app", a.App, "reason", a.Reason, "retry_after", f.RetryAfter)
				if l.Metrics != nil {
					l.Metrics.RunError("rollout")
				}
			case AppReady, AppRemoved:
				l.mu.Lock()
				l.fails.succeeded(a.App)
				l.mu.Unlock()
			}
		}
		if ctx.Err() != nil {
			// Shutdown or lost lease: the next run (here or elsewhere)
			// observes afresh; don't report the cancelled observe.
			log.Info("run interrupted", "why", context.Cause(ctx))
			return 0
		}
		if observed, err = l.System.Observe(ctx); err != nil {
			return fail("lxd", err)
		}
		plan = MakePlan(desired, observed, l.Policy)
	}
	st := BuildStatus(l.Policy.Owner, &desired, observed, &plan)
	l.errs = 0
	end := l.Clock.Now()
	l.mu.Lock()
	for _, a := range st.Apps {
		if a.Sync == SyncSynced && a.Health == HealthHealthy {
			l.status.LastGood[a.App] = rev.SHA
		}
	}
	l.status.Status, l.status.Subject, l.status.Diagnostics = st, rev.Subject, diags
	l.status.Phase, l.status.LastRun, l.status.LastResult, l.status.LastError = "Idle", end, result, ""
	l.ready = true
	l.mu.Unlock()
	if l.Metrics != nil {
		l.Metrics.RunFinished(result, end.Sub(start))
		l.Metrics.SetRevision(rev.SHA)
		byStatus := map[string]int{}
		for _, a := range st.Apps {
			byStatus[a.Health]++
		}
		l.Metrics.SetApps(byStatus)
		if result != "error" {
			l.Metrics.Succeeded(end)
		}
	}
	log.Debug("reconcile done", "result", result, "took", end.Sub(start))
	return jitter(l.Interval)
}

// holdApps moves apps out of the desired set into HeldApps.
func holdApps(d Desired, names []string) Desired {
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

func (l *Loop) logEvent(log *slog.Logger) func(Event) {
	return func(e Event) {
		args := []any{"app", e.Step.App, "instance", e.Step.Instance, "action", e.Step.Action.String()}
		switch e.Phase {
		case PhaseStart:
			log.Info("step started", args...)
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
