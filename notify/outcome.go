// Package notify tells the outside world how each run of the daemon ended:
// a commit status on the forge (GitHub, GitLab, Gitea) for the revision,
// and a signed JSON webhook. Delivery is asynchronous, bounded and
// retried, so a slow or broken forge never holds up reconciliation.
//
// The verdict of a run is decided once, by Judge, and every target renders
// that one Outcome in its own shape: a forge's commit status and a webhook
// receiver never disagree about whether a revision converged.
package notify

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
)

// State is the verdict on a revision, in the words of GitHub's commit
// status API; each forge maps it to its own.
type State string

const (
	// Success: the run ended ok or noop and every app is Healthy at the
	// revision.
	Success State = "success"
	// Failure: some app did not converge at the revision: its rollout
	// halted (and was held or stalled), its spec is invalid, a replica is
	// degraded, pruning was skipped, ...
	Failure State = "failure"
	// Error: the run failed as a whole (LXD, a spec tree that could not be
	// read) before it could say anything about the apps.
	Error State = "error"
	// Pending: the revision is applied but replicas are still coming up.
	Pending State = "pending"
)

// AppOutcome is one app after the run.
type AppOutcome struct {
	Name string `json:"name"`
	// Status is the reconciler's word for the app: Healthy, Progressing,
	// Degraded, Missing, Held, Stalled, Invalid, OutOfSync, Orphaned.
	Status  string `json:"status"`
	Ready   int    `json:"ready"`
	Desired int    `json:"desired"`
	// Reason says why an app that is not Healthy is not: the failed
	// rollout's reason, a replica's error, the spec diagnostic.
	Reason string `json:"reason,omitempty"`
}

// Outcome is the verdict on one run, what every target reports.
type Outcome struct {
	Revision string `json:"revision"`
	Subject  string `json:"subject,omitempty"`
	Owner    string `json:"owner,omitempty"`
	// Result is the loop's result word: ok, noop, held or error.
	Result string `json:"result"`
	State  State  `json:"state"`
	// Description is the verdict in one line for people, unshortened;
	// each forge shortens it to its own limit.
	Description string `json:"description"`
	// Error is why a run that failed as a whole failed.
	Error    string       `json:"error,omitempty"`
	Apps     []AppOutcome `json:"apps"`
	Started  time.Time    `json:"started"`
	Finished time.Time    `json:"finished"`
}

// Judge decides what a run means for its revision. It is success only
// when the run ended ok or noop and every app is Healthy: a run whose
// rollout halted (the app then reads Held or Stalled, and its untouched
// replicas keep the old version) is a failure, whatever the old replicas'
// health, and so is a revision with an invalid spec or a skipped prune.
func Judge(r reconciler.RunReport) Outcome {
	o := Outcome{
		Revision: r.Revision, Subject: r.Subject, Owner: r.Status.Owner, Result: r.Result,
		Error: r.Error, Started: r.Started, Finished: r.Finished, Apps: []AppOutcome{},
	}
	views := map[string]plan.AppStatusView{}
	for _, a := range r.Status.Apps {
		views[a.App] = a
	}
	var bad, progressing []AppOutcome
	for _, name := range slices.Sorted(maps.Keys(r.Apps)) {
		v := views[name]
		a := AppOutcome{Name: name, Status: r.Apps[name], Ready: v.Ready, Desired: v.Desired}
		if a.Status != plan.HealthHealthy {
			a.Reason = appReason(r, a, v)
		}
		o.Apps = append(o.Apps, a)
		switch a.Status {
		case plan.HealthHealthy:
		case plan.HealthProgressing:
			progressing = append(progressing, a)
		default:
			bad = append(bad, a)
		}
	}
	short := plan.ShortSHA(r.Revision)
	converged := len(o.Apps) - len(bad) - len(progressing)
	switch {
	case r.Result == reconciler.RunError && len(r.Apps) == 0:
		o.State = Error
		o.Description = "run failed at " + short + ": " + orText(r.Error, "unknown error")
	case len(bad) > 0:
		o.State = Failure
		o.Description = fmt.Sprintf("%d of %d apps converged at %s; %s", converged, len(o.Apps), short, appList(bad))
	case r.Result != reconciler.RunOK && r.Result != reconciler.RunNoop:
		// Every app reads Healthy, yet the run did not end well: a file
		// that does not parse (no app to blame), a held revision.
		o.State = Failure
		why := r.Error
		if why == "" && len(r.Status.Diagnostics) > 0 {
			why = "invalid spec: " + r.Status.Diagnostics[0]
		}
		o.Description = fmt.Sprintf("not converged at %s (%s): %s", short, r.Result, orText(why, "see berth status"))
	case len(progressing) > 0:
		o.State = Pending
		o.Description = fmt.Sprintf("%d of %d apps ready at %s; %s", converged, len(o.Apps), short, appList(progressing))
	default:
		o.State = Success
		o.Description = fmt.Sprintf("%d app%s converged at %s", len(o.Apps), plural(len(o.Apps)), short)
	}
	return o
}

// appReason is the most telling reason an app is not Healthy.
func appReason(r reconciler.RunReport, a AppOutcome, v plan.AppStatusView) string {
	if f, ok := r.Status.Failures[a.Name]; ok && f.Reason != "" {
		return f.Reason
	}
	if v.LastError != "" {
		return v.LastError
	}
	switch a.Status {
	case reconciler.AppStatusInvalid:
		for _, d := range r.Status.Diagnostics {
			return "invalid spec: " + d
		}
		return "invalid spec"
	case reconciler.AppStatusOrphaned:
		return "gone from Git but not pruned"
	}
	if len(v.Drift) > 0 {
		return v.Drift[0]
	}
	return ""
}

// appList names each app with its status and reason: "web Stalled:
// web-0: container unhealthy; api Held".
func appList(apps []AppOutcome) string {
	parts := make([]string, len(apps))
	for i, a := range apps {
		parts[i] = a.Name + " " + a.Status
		if a.Reason != "" {
			parts[i] += ": " + a.Reason
		}
	}
	return strings.Join(parts, "; ")
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// oneLine makes s fit a forge's one-line description field: control and
// bidi characters become spaces, runs of spaces one, and a text longer
// than max runes is cut with "…". Forges show descriptions as plain text,
// but a newline or a bidi override would still garble what people read.
func oneLine(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		s = string(r[:max-1]) + "…"
	}
	return s
}
