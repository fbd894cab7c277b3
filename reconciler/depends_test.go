package reconciler

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
	"github.com/berth-gitops/berth/spec"
)

const dependsSpec = `apiVersion: berth/v1
kind: App
metadata: {name: db}
spec:
  replicas: 1
  system: {image: berth/debian-docker}
  container: {image: reg/db:1}
  update: {healthTimeout: 1m}
---
apiVersion: berth/v1
kind: App
metadata: {name: web}
spec:
  replicas: 1
  system: {image: berth/debian-docker}
  container: {image: reg/web:1}
  update: {healthTimeout: 1m}
  dependsOn: [{app: db, timeout: 5m}]
`

func appStatus(l *Loop, app string) plan.AppStatusView {
	for _, a := range l.Status().(LoopStatus).Apps {
		if a.App == app {
			return a
		}
	}
	return plan.AppStatusView{}
}

// From nothing, db is created first; the run that made it ready is
// followed after DependencyRetry, not the poll interval, and that one
// creates web; then the poll interval is back.
func TestLoopConvergesInDependencyOrder(t *testing.T) {
	src := &fakeSource{}
	src.set("r1", dependsSpec)
	w := newWorld()
	l := &Loop{Source: src, System: w, Clock: clock.NewFake(time.Now()), Interval: time.Hour, DependencyRetry: 3 * time.Second}
	l.init()
	ctx := context.Background()
	if wait := l.runOnce(ctx, "start"); wait != 3*time.Second {
		t.Errorf("after db was made ready: next run in %s, want DependencyRetry (3s)", wait)
	}
	if countCalls(w.fakeDriver, "create db-0") != 1 || countCalls(w.fakeDriver, "create web-0") != 0 {
		t.Fatalf("first run: calls %q, want db created and web not", w.calls)
	}
	if wait := l.runOnce(ctx, "poll"); wait < 2*3*time.Second {
		t.Errorf("once converged: next run in %s, want the poll interval", wait)
	}
	if countCalls(w.fakeDriver, "create web-0") != 1 {
		t.Fatalf("second run: calls %q, want web created", w.calls)
	}
	db := slices.Index(w.calls, "create db-0")
	if web := slices.Index(w.calls, "create web-0"); web < db {
		t.Errorf("web created before db: %q", w.calls)
	}
}

// A dependency that stays unhealthy blocks its dependent with the
// reason, at the poll interval (nothing progresses), then holds it once
// the timeout has passed; once the dependency is ready, the dependent is
// created.
func TestLoopHoldsAppWhoseDependencyTimesOut(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	src := &fakeSource{}
	src.set("r1", dependsSpec)
	sys := &fakeSystem{fakeDriver: newFakeDriver()}
	db := plantest.App("db", 1, 1, "reg/db:1")
	sys.obs = plantest.Converged(db)
	sys.obs.Instances[0].Container.Health = "unhealthy"
	l := &Loop{Source: src, System: sys, Clock: clk, Interval: time.Hour}
	l.init()
	ctx := context.Background()
	if wait := l.runOnce(ctx, "start"); wait < time.Minute {
		t.Errorf("nothing progresses: next run in %s, want the poll interval", wait)
	}
	const why = "blocked by db: 0/1 ready (db-0: container health unhealthy)"
	if got := appStatus(l, "web").Blocked; got != why {
		t.Errorf("web blocked %q, want %q", got, why)
	}
	if got := appMetricStatus(appStatus(l, "web"), false, ""); got != AppStatusBlocked {
		t.Errorf("web's metric status %q, want %q", got, AppStatusBlocked)
	}
	clk.Advance(6 * time.Minute)
	l.runOnce(ctx, "poll")
	st := l.Status().(LoopStatus)
	if got := appStatus(l, "web").Blocked; got != "held: not ready within 5m: "+why || st.LastResult != RunHeld {
		t.Errorf("after the timeout: web blocked %q, result %s", got, st.LastResult)
	}
	if len(sys.calls) != 0 {
		t.Errorf("calls %q while blocked", sys.calls)
	}
	sys.obs.Instances[0].Container.Health = "healthy"
	l.runOnce(ctx, "poll")
	if countCalls(sys.fakeDriver, "create web-0") != 1 || strings.Contains(appStatus(l, "web").Blocked, "held") {
		t.Errorf("db ready: calls %q, web blocked %q", sys.calls, appStatus(l, "web").Blocked)
	}
}

// An app whose steps wait for its dependencies is Blocked in the result,
// with the reason, not Ready.
func TestApplyReportsBlockedApps(t *testing.T) {
	db := plantest.App("db", 1, 1, "reg/db:1")
	web := plantest.App("web", 1, 1, "reg/web:1")
	web.Spec.DependsOn = []spec.Dependency{{App: "db", MinReady: 1, Timeout: spec.DefaultDependencyTimeout}}
	f := newFakeDriver()
	_, res, _ := apply(t, f, plan.Desired{Revision: "r1", Apps: []spec.App{db, web}}, plan.Observed{})
	var got []string
	for _, a := range res.Apps {
		got = append(got, string(a.Status)+" "+a.App+": "+a.Reason)
	}
	want := []string{"Ready db: ", "Blocked web: blocked by db: 0/1 ready (db-0: not created)"}
	if !slices.Equal(got, want) {
		t.Errorf("apps %q, want %q", got, want)
	}
	if countCalls(f, "create web-0") != 0 {
		t.Errorf("calls %q", f.calls)
	}
}
