package notify

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
)

const sha = "0123456789abcdef0123456789abcdef01234567"

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// report is a run of sha with apps (name -> status word), each with 2
// replicas desired, and the failures given.
func report(result string, apps map[string]string, failures map[string]reconciler.AppFailure) reconciler.RunReport {
	r := reconciler.RunReport{Revision: sha, Subject: "web: hello:2", Started: t0, Finished: t0.Add(time.Minute),
		Result: result, Apps: apps}
	r.Status.Owner = "berth"
	r.Status.Failures = failures
	for name, st := range apps {
		ready := 2
		if st != plan.HealthHealthy {
			ready = 1
		}
		r.Status.Apps = append(r.Status.Apps, plan.AppStatusView{App: name, Desired: 2, Ready: ready, Health: st})
	}
	return r
}

func TestJudge(t *testing.T) {
	halted := map[string]reconciler.AppFailure{"web": {Revision: sha, Count: 1, Retry: reconciler.Stalled,
		Reason: "web-0: replace-container: container unhealthy after 40s"}}
	for _, tc := range []struct {
		name  string
		r     reconciler.RunReport
		state State
		desc  string
	}{
		{"every app healthy after a rollout", report(reconciler.RunOK, map[string]string{"web": "Healthy", "api": "Healthy"}, nil),
			Success, "2 apps converged at 0123456789ab"},
		{"nothing to do", report(reconciler.RunNoop, map[string]string{"web": "Healthy"}, nil),
			Success, "1 app converged at 0123456789ab"},
		{"a halted rollout is a failure with its reason", report(reconciler.RunError, map[string]string{"web": "Stalled", "api": "Healthy"}, halted),
			Failure, "1 of 2 apps converged at 0123456789ab; web Stalled: web-0: replace-container: container unhealthy after 40s"},
		{"the next run holds the app: still a failure", report(reconciler.RunHeld, map[string]string{"web": "Stalled", "api": "Healthy"}, halted),
			Failure, "1 of 2 apps converged at 0123456789ab; web Stalled: web-0: replace-container: container unhealthy after 40s"},
		// The held app's old replicas are healthy: the revision is not.
		{"held but healthy old replicas", report(reconciler.RunHeld, map[string]string{"web": "Held"}, map[string]reconciler.AppFailure{"web": {Reason: "timed out"}}),
			Failure, "0 of 1 apps converged at 0123456789ab; web Held: timed out"},
		{"a degraded app after a noop", report(reconciler.RunNoop, map[string]string{"web": "Degraded"}, nil),
			Failure, "0 of 1 apps converged at 0123456789ab; web Degraded"},
		{"replicas still coming up", report(reconciler.RunNoop, map[string]string{"web": "Progressing", "api": "Healthy"}, nil),
			Pending, "1 of 2 apps ready at 0123456789ab; web Progressing"},
		{"a run that failed as a whole", reconciler.RunReport{Revision: sha, Result: reconciler.RunError, Error: "lxd: connection refused"},
			Error, "run failed at 0123456789ab: lxd: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Judge(tc.r)
			if o.State != tc.state || o.Description != tc.desc {
				t.Errorf("Judge = %s %q, want %s %q", o.State, o.Description, tc.state, tc.desc)
			}
		})
	}

	// Every app Healthy, but a file did not parse: not a success.
	r := report(reconciler.RunHeld, map[string]string{"web": "Healthy"}, nil)
	r.Status.Diagnostics = []string{"apps/x.yaml:1:1: not YAML"}
	if o := Judge(r); o.State != Failure || !strings.Contains(o.Description, "invalid spec: apps/x.yaml:1:1: not YAML") {
		t.Errorf("held run with healthy apps: %s %q", o.State, o.Description)
	}
	// An invalid app names its diagnostic.
	r = report(reconciler.RunHeld, map[string]string{"web": "Invalid"}, nil)
	r.Status.Diagnostics = []string{"apps/web.yaml:7:3: spec.replica: unknown field"}
	if o := Judge(r); o.State != Failure || o.Apps[0].Reason != "invalid spec: apps/web.yaml:7:3: spec.replica: unknown field" {
		t.Errorf("invalid app: %+v", o)
	}
}

func TestOneLine(t *testing.T) {
	got := oneLine("a\nb\x1b[2J  c\u202ed\u2028e\xff", 140)
	if got != "a b [2J c d e\ufffd" {
		t.Errorf("oneLine = %q", got)
	}
	long := oneLine(strings.Repeat("é", 300), 140)
	if n := utf8.RuneCountInString(long); n != 140 || !strings.HasSuffix(long, "…") {
		t.Errorf("cut to %d runes: %q", n, long)
	}
}
