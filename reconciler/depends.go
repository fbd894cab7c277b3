package reconciler

import (
	"fmt"
	"strings"
	"time"

	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// DefaultDependencyRetry is Loop.DependencyRetry when none is set.
const DefaultDependencyRetry = 2 * time.Second

// trackBlocked keeps, in the loop's memory, since when each app has been
// blocked by its dependencies (plan.Blocked), and holds an app whose
// dependency was not ready within its timeout: the plan, the status and
// the metrics then say so. It reports whether the next run should come
// soon rather than after the poll interval: an app still waits (within
// its timeout) and its dependencies are progressing, so a link of a chain
// costs no poll interval.
func (l *Loop) trackBlocked(r *run, pl *plan.Plan, applied bool) (soon bool) {
	now := l.Clock.Now()
	apps := make(map[string]*spec.App, len(r.desired.Apps))
	for i := range r.desired.Apps {
		apps[r.desired.Apps[i].Metadata.Name] = &r.desired.Apps[i]
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blockedSince == nil {
		l.blockedSince = map[string]time.Time{}
	}
	seen := map[string]bool{}
	waiting := false
	for i := range pl.Blocked {
		b := &pl.Blocked[i]
		seen[b.App] = true
		since, ok := l.blockedSince[b.App]
		if !ok {
			since = now
			l.blockedSince[b.App] = now
		}
		timeout, ok := dependencyTimeout(apps[b.App], b.On)
		if !ok || now.Sub(since) < timeout {
			// A removal waiting for its dependents has no timeout.
			waiting = true
			continue
		}
		b.Why = fmt.Sprintf("held: not ready within %s: %s", spec.ShortDuration(timeout), b.Why)
		r.held = append(r.held, b.App)
		r.rolloutHeld[b.App] = Retrying
		r.log.Warn("app held: its dependencies are not ready within their timeout", "app", b.App, "reason", b.Why)
	}
	for app := range l.blockedSince {
		if !seen[app] {
			delete(l.blockedSince, app)
		}
	}
	// Steps left after an apply that ran with apps blocked are most
	// likely theirs, unblocked by what ran.
	unblocked := r.blockedBefore && applied && len(pl.Steps) > 0
	return unblocked || waiting && (applied || len(pl.Steps) > 0 || starting(pl))
}

// dependencyTimeout is the shortest timeout of app's dependencies on,
// false when app has none of them (a removal).
func dependencyTimeout(app *spec.App, on []string) (time.Duration, bool) {
	if app == nil {
		return 0, false
	}
	var out time.Duration
	found := false
	for _, d := range app.Spec.DependsOn {
		for _, o := range on {
			if d.App == o && (!found || d.Timeout.D() < out) {
				out, found = d.Timeout.D(), true
			}
		}
	}
	return out, found
}

// starting reports whether a replica of the plan is on its way to ready
// by itself: its health check has not decided yet.
func starting(pl *plan.Plan) bool {
	for _, u := range pl.Unready {
		if strings.HasSuffix(u.Why, "health starting") {
			return true
		}
	}
	return false
}
