package server

import (
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/berth-gitops/berth/discovery"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
)

// DefaultHistory is how many rollouts per app the status page keeps.
const DefaultHistory = 20

// maxRecentErrors bounds the runs that failed as a whole (Git, LXD) the
// page lists.
const maxRecentErrors = 5

// PageConfig is what the status page reads from the daemon. Status is read
// at every render; the rest of what the page shows (rollout history, the
// run in progress, members and base images) it gathers from the loop's
// hooks: Page.View, Page.Event and Page.Run.
type PageConfig struct {
	// Status returns the daemon's status (reconciler.Loop.Status).
	Status func() reconciler.LoopStatus
	// Endpoints returns service discovery's view; nil when there is none.
	Endpoints func() (discovery.Endpoints, bool)
	// DNSZone is the zone the daemon answers over DNS; "" when it serves
	// no DNS, and the page then shows no DNS names.
	DNSZone string
	// Policy is the loop's planner policy: the page plans the run in
	// progress from the same view the loop does, to list its steps before
	// they start.
	Policy plan.Policy
	// History is how many rollouts per app are kept; DefaultHistory when
	// 0.
	History int
	// Now is the page's clock (ages, step times); time.Now when nil.
	Now func() time.Time
	// Logger receives rendering errors; nil discards them.
	Logger *slog.Logger
}

func (c *PageConfig) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Page is the status page: a read-only HTML view of the daemon, served at
// "/" and kept live by server-sent events (/api/v1/events).
//
// berth keeps no state of its own, so neither does the page: its history
// of rollouts lives in memory and starts again with the daemon.
type Page struct {
	cfg     PageConfig
	started time.Time

	mu         sync.Mutex
	commits    map[string]commit    // revision -> subject and author
	history    map[string][]Rollout // app -> rollouts, newest first
	errors     []FailedRun          // newest first
	view       *reconciler.View     // the latest look at the world
	planned    []StepState          // the plan of the latest view, not started yet
	plannedRev string
	current    *Run // the run whose steps are under way
	// wake is closed and replaced at every change, waking the event
	// streams.
	wake    chan struct{}
	closed  chan struct{}
	closeMu sync.Once
	// streams holds a token per open event stream.
	streams chan struct{}
}

type commit struct{ subject, author string }

// Rollout is one run that changed an app, as the page's history shows it.
type Rollout struct {
	Revision string
	Subject  string
	Author   string
	Started  time.Time
	Finished time.Time
	// Result is "succeeded" or "failed".
	Result string
	// Status is the app's status word after the run (Healthy, Degraded,
	// Held, Stalled, ...).
	Status string
	Steps  int
	// FailedStep is the first step that failed, with its error: "web-1
	// replace-container: ...".
	FailedStep string
}

// FailedRun is a run that failed as a whole (Git, LXD, the spec tree).
type FailedRun struct {
	At       time.Time
	Revision string
	Error    string
}

// Run is a run in progress: the steps of its plan, in plan order.
type Run struct {
	Revision string
	Started  time.Time
	Steps    []StepState
}

// StepState is one step of a run and where it is.
type StepState struct {
	App      string
	Instance string
	Action   string
	Batch    int
	Why      string
	// State is pending, running, done or failed.
	State    string
	Started  time.Time
	Duration time.Duration
	Error    string
}

// Step states.
const (
	StepPending = "pending"
	StepRunning = "running"
	StepDone    = "done"
	StepFailed  = "failed"
)

// NewPage builds the status page. cfg.Status is required.
func NewPage(cfg PageConfig) *Page {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.History <= 0 {
		cfg.History = DefaultHistory
	}
	if cfg.Status == nil {
		cfg.Status = func() reconciler.LoopStatus { return reconciler.LoopStatus{} }
	}
	return &Page{
		cfg: cfg, started: cfg.Now(),
		commits: map[string]commit{}, history: map[string][]Rollout{},
		wake: make(chan struct{}), closed: make(chan struct{}), streams: make(chan struct{}, maxEventStreams),
	}
}

// View takes a fresh look at the world (the loop's OnView): members,
// addresses and base images of the replicas, and the plan a run would
// follow from it. It does not block.
func (p *Page) View(v reconciler.View) {
	steps := plannedSteps(plan.MakePlan(v.Desired, v.Observed, p.cfg.Policy))
	p.mu.Lock()
	defer p.mu.Unlock()
	p.view = &v
	if p.current == nil {
		p.planned, p.plannedRev = steps, v.Desired.Revision
	}
	p.changed()
}

func plannedSteps(pl plan.Plan) []StepState {
	out := make([]StepState, 0, len(pl.Steps))
	for _, s := range pl.Steps {
		out = append(out, StepState{App: s.App, Instance: s.Instance, Action: s.Action.String(), Batch: s.Batch,
			Why: reasons(s), State: StepPending})
	}
	return out
}

// reasons says why a step is planned: "container.image: a → b". Values
// are cut, so a long config value does not swamp the page.
func reasons(s plan.Step) string {
	parts := make([]string, 0, len(s.Reasons))
	for _, r := range s.Reasons {
		parts = append(parts, r.Field+": "+cut(r.Old)+" → "+cut(r.New))
	}
	return strings.Join(parts, "; ")
}

func cut(v string) string {
	const max = 80
	if v == "" {
		return "∅"
	}
	if r := []rune(v); len(r) > max {
		return string(r[:max]) + "…"
	}
	return v
}

// Event records a step starting or ending (the loop's OnEvent). The first
// step of a run starts the run in progress.
func (p *Page) Event(e reconciler.Event) {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current == nil {
		p.current = &Run{Revision: p.plannedRev, Started: now, Steps: p.planned}
		p.planned = nil
	}
	action := e.Step.Action.String()
	i := p.current.find(e.Step.Instance, action, e.Phase == reconciler.PhaseStart)
	if i < 0 {
		// A step the page did not foresee: list it all the same.
		p.current.Steps = append(p.current.Steps, StepState{App: e.Step.App, Instance: e.Step.Instance,
			Action: action, Batch: e.Step.Batch, Why: reasons(e.Step), State: StepPending})
		i = len(p.current.Steps) - 1
	}
	s := &p.current.Steps[i]
	switch e.Phase {
	case reconciler.PhaseStart:
		s.State, s.Started = StepRunning, now
	case reconciler.PhaseDone:
		s.State, s.Duration = StepDone, e.Duration
	case reconciler.PhaseFailed:
		s.State, s.Duration = StepFailed, e.Duration
		if e.Err != nil {
			s.Error = e.Err.Error()
		}
	}
	p.changed()
}

// find returns the index of the step on instance doing action that is
// pending (starting) or running (ending); -1 if none.
func (r *Run) find(instance, action string, starting bool) int {
	want := StepRunning
	if starting {
		want = StepPending
	}
	for i, s := range r.Steps {
		if s.Instance == instance && s.Action == action && s.State == want {
			return i
		}
	}
	return -1
}

// Run records the end of a run (the loop's OnRun): each app it changed
// gets a line in its history, and a run that failed as a whole is listed
// with the daemon's errors.
func (p *Page) Run(r reconciler.RunReport) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.commits[r.Revision] = commit{subject: r.Subject, author: r.Author}
	if r.Error != "" {
		p.errors = append([]FailedRun{{At: r.Finished, Revision: r.Revision, Error: r.Error}}, p.errors...)
		p.errors = p.errors[:min(len(p.errors), maxRecentErrors)]
	}
	if run := p.current; run != nil {
		p.current = nil
		p.record(run, r)
	}
	if len(r.Apps) > 0 {
		// Forget the history of apps gone from Git and from LXD.
		for app := range p.history {
			if _, ok := r.Apps[app]; !ok {
				delete(p.history, app)
			}
		}
	}
	p.pruneCommits()
	p.changed()
}

// record turns a finished run into a history line per app it touched.
func (p *Page) record(run *Run, r reconciler.RunReport) {
	byApp := map[string][]StepState{}
	for _, s := range run.Steps {
		if s.State != StepPending {
			byApp[s.App] = append(byApp[s.App], s)
		}
	}
	for app, steps := range byApp {
		ro := Rollout{Revision: r.Revision, Subject: r.Subject, Author: r.Author, Status: r.Apps[app],
			Started: steps[0].Started, Finished: r.Finished, Steps: len(steps), Result: "succeeded"}
		for _, s := range steps {
			if s.Started.Before(ro.Started) {
				ro.Started = s.Started
			}
			if s.State == StepFailed && ro.FailedStep == "" {
				ro.Result = "failed"
				ro.FailedStep = s.Instance + " " + s.Action
				if s.Error != "" {
					ro.FailedStep += ": " + s.Error
				}
			}
		}
		if end := lastEnd(steps); !end.IsZero() {
			ro.Finished = end
		}
		switch r.Apps[app] {
		case plan.HealthDegraded, plan.HealthMissing, reconciler.AppStatusHeld, reconciler.AppStatusStalled:
			ro.Result = "failed"
		}
		h := append([]Rollout{ro}, p.history[app]...)
		p.history[app] = h[:min(len(h), p.cfg.History)]
	}
}

func lastEnd(steps []StepState) time.Time {
	var end time.Time
	for _, s := range steps {
		if e := s.Started.Add(s.Duration); s.State != StepRunning && e.After(end) {
			end = e
		}
	}
	return end
}

// pruneCommits keeps the subjects and authors of the revisions the page
// can still show.
func (p *Page) pruneCommits() {
	if len(p.commits) <= 4*p.cfg.History {
		return
	}
	keep := map[string]bool{}
	for _, h := range p.history {
		for _, ro := range h {
			keep[ro.Revision] = true
		}
	}
	st := p.cfg.Status()
	keep[st.Revision] = true
	for _, rev := range st.LastGood {
		keep[rev] = true
	}
	for rev := range p.commits {
		if !keep[rev] {
			delete(p.commits, rev)
		}
	}
}

// changed wakes the event streams; p.mu is held.
func (p *Page) changed() {
	close(p.wake)
	p.wake = make(chan struct{})
}

// Close ends the event streams (the server shuts down).
func (p *Page) Close() {
	p.closeMu.Do(func() { close(p.closed) })
}

// snapshot is a consistent copy of what the hooks gathered.
type snapshot struct {
	commits map[string]commit
	history map[string][]Rollout
	errors  []FailedRun
	view    *reconciler.View
	current *Run
	wake    <-chan struct{}
}

func (p *Page) snapshot() snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := snapshot{commits: make(map[string]commit, len(p.commits)), history: make(map[string][]Rollout, len(p.history)),
		errors: append([]FailedRun(nil), p.errors...), view: p.view, wake: p.wake}
	for k, v := range p.commits {
		s.commits[k] = v
	}
	for k, v := range p.history {
		s.history[k] = append([]Rollout(nil), v...)
	}
	if p.current != nil {
		run := *p.current
		run.Steps = append([]StepState(nil), run.Steps...)
		sort.SliceStable(run.Steps, func(i, j int) bool { return run.Steps[i].App < run.Steps[j].App })
		s.current = &run
	}
	return s
}
