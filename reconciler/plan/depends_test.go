package plan

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/spec"
)

// dependent is app depending on deps, each with minReady min.
func dependent(app spec.App, min spec.MinReady, deps ...string) spec.App {
	for _, d := range deps {
		app.Spec.DependsOn = append(app.Spec.DependsOn, spec.Dependency{App: d, MinReady: min, Timeout: spec.DefaultDependencyTimeout})
	}
	return app
}

func blockedLines(p Plan) []string {
	var out []string
	for _, b := range p.Blocked {
		out = append(out, fmt.Sprintf("%s (%d): %s", b.App, b.Steps, b.Why))
	}
	return out
}

func appsWithSteps(p Plan) []string {
	var out []string
	for _, s := range p.Steps {
		out = append(out, s.App)
	}
	return slices.Compact(out)
}

func checkLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\ngot:\n  %s\nwant:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestDependsOnCreateOrder(t *testing.T) {
	db := testApp("db", 2)
	web := dependent(testApp("web", 2), 1, "db")
	webAll := dependent(testApp("web", 2), spec.MinReadyAll, "db")
	tests := []struct {
		name        string
		apps        []spec.App
		observed    []Instance
		wantSteps   []string // apps with steps
		wantBlocked []string
	}{
		{"from nothing only the dependency is created", []spec.App{db, web}, nil,
			[]string{"db"}, []string{"web (2): blocked by db: 0/2 ready, 1 needed (db-0: not created)"}},
		{"one ready is enough for minReady 1", []spec.App{db, web}, []Instance{converged(db, 0), unhealthy(converged(db, 1))},
			[]string{"web"}, nil},
		{"minReady all waits for the last", []spec.App{db, webAll}, []Instance{converged(db, 0), unhealthy(converged(db, 1))},
			nil, []string{"web (2): blocked by db: 1/2 ready (db-1: container health unhealthy)"}},
		{"a dependency rolling out counts only replicas done", []spec.App{
			with(db, func(a *spec.App) { a.Spec.Container.Image = "registry.example/db:2" }),
			with(web, func(a *spec.App) { a.Spec.Container.Env["PORT"] = "9090" })},
			append(fleet(db), converged(web, 0), converged(web, 1)),
			[]string{"db"}, []string{"web (2): blocked by db: 0/2 ready, 1 needed (db-0: being changed)"}},
		{"an unchanged dependent is not blocked", []spec.App{with(db, func(a *spec.App) { a.Spec.Container.Image = "registry.example/db:2" }), web},
			append(fleet(db), fleet(web)...), []string{"db"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := MakePlan(Desired{Revision: testRev, Apps: tt.apps}, Observed{Instances: tt.observed}, Policy{})
			checkLines(t, "apps with steps", appsWithSteps(p), tt.wantSteps)
			checkLines(t, "blocked", blockedLines(p), tt.wantBlocked)
			if len(tt.wantBlocked) > 0 {
				if p.Converged() || !strings.Contains(p.Text(), "Blocked by dependencies (their steps wait):\n  … "+tt.wantBlocked[0][:4]) {
					t.Errorf("plan text does not say it is blocked:\n%s", p.Text())
				}
				if !strings.Contains(p.Summary(), "1 app(s) blocked by dependencies") && len(p.Steps) == 0 {
					t.Errorf("summary %q", p.Summary())
				}
			}
		})
	}
}

func TestDependsOnDiamond(t *testing.T) {
	db := testApp("db", 1)
	left := dependent(testApp("left", 1), 1, "db")
	right := dependent(testApp("right", 1), 1, "db")
	top := dependent(testApp("top", 1), 1, "left", "right")
	d := Desired{Revision: testRev, Apps: []spec.App{top, right, left, db}}
	p := MakePlan(d, Observed{}, Policy{})
	checkLines(t, "apps with steps", appsWithSteps(p), []string{"db"})
	checkLines(t, "blocked", blockedLines(p), []string{
		"left (1): blocked by db: 0/1 ready (db-0: not created)",
		"right (1): blocked by db: 0/1 ready (db-0: not created)",
		"top (1): blocked by left: 0/1 ready (left-0: not created); blocked by right: 0/1 ready (right-0: not created)",
	})
	checkLines(t, "order", p.Order, []string{"db", "left", "right", "top"})

	// db ready: both sides go, in parallel; top still waits.
	p = MakePlan(d, Observed{Instances: fleet(db)}, Policy{})
	checkLines(t, "apps with steps", appsWithSteps(p), []string{"left", "right"})
	checkLines(t, "blocked", blockedLines(p), []string{"top (1): blocked by left: 0/1 ready (left-0: not created); blocked by right: 0/1 ready (right-0: not created)"})
	p = MakePlan(d, Observed{Instances: fleet(db, left, right)}, Policy{})
	checkLines(t, "apps with steps", appsWithSteps(p), []string{"top"})
	checkLines(t, "blocked", blockedLines(p), nil)
}

// A chain of 200 apps, each changed: the first rolls, each other waits for
// the one before, and each is named once.
func TestDependsOnLongChain(t *testing.T) {
	const n = 200
	var apps, changed []spec.App
	for i := range n {
		a := testApp(fmt.Sprintf("a%03d", i), 1)
		if i > 0 {
			a = dependent(a, 1, fmt.Sprintf("a%03d", i-1))
		}
		apps = append(apps, a)
		changed = append(changed, with(a, func(a *spec.App) { a.Spec.Container.Image += "-new" }))
	}
	p := MakePlan(Desired{Revision: testRev, Apps: changed}, Observed{Instances: fleet(apps...)}, Policy{})
	checkLines(t, "apps with steps", appsWithSteps(p), []string{"a000"})
	if len(p.Blocked) != n-1 || len(p.Order) != n {
		t.Fatalf("%d blocked, order of %d", len(p.Blocked), len(p.Order))
	}
	if got := p.Blocked[n-2].Why; got != "blocked by a198: 0/1 ready (a198-0: being changed)" {
		t.Errorf("last: %q", got)
	}
	// From nothing: only the head is created.
	p = MakePlan(Desired{Revision: testRev, Apps: apps}, Observed{}, Policy{})
	checkLines(t, "apps with steps", appsWithSteps(p), []string{"a000"})
}

func TestDependsOnHeldDependency(t *testing.T) {
	web := dependent(testApp("web", 1), 1, "db")
	other := testApp("other", 1)
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{web, other}, HeldApps: []string{"db"}}, Observed{}, Policy{})
	checkLines(t, "apps with steps", appsWithSteps(p), []string{"other"})
	checkLines(t, "blocked", blockedLines(p), []string{"web (1): blocked by db: held at its last applied state (invalid spec, or a failed rollout)"})

	// Missing altogether (a hand-written desired state; the loader refuses it).
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{web}}, Observed{}, Policy{})
	checkLines(t, "blocked", blockedLines(p), []string{"web (1): blocked by db: no such app at this revision"})
}

func TestDependsOnReverseRemoval(t *testing.T) {
	db := testApp("db", 2)
	web := dependent(testApp("web", 2), 1, "db")
	if got := converged(web, 0).Config[ownership.KeyDependsOn]; got != "db" {
		t.Fatalf("web's replicas record %s = %q", ownership.KeyDependsOn, got)
	}
	keep := testApp("keep", 1)
	// Both removed from Git: the dependent goes first.
	obs := fleet(db, web, keep)
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{keep}}, Observed{Instances: obs}, Policy{AllowMassPrune: true})
	checkLines(t, "steps", stepLines(p), []string{
		"1 web-1 delete (app: present → absent)",
		"1 web-0 delete (app: present → absent)",
	})
	checkLines(t, "blocked", blockedLines(p), []string{"db (2): waiting for web to be removed first (it depends on db)"})
	// One replica of web left: db still waits.
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{keep}}, Observed{Instances: append(fleet(db, keep), converged(web, 1))}, Policy{AllowMassPrune: true})
	checkLines(t, "blocked", blockedLines(p), []string{"db (2): waiting for web to be removed first (it depends on db)"})
	// web gone: db goes.
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{keep}}, Observed{Instances: fleet(db, keep)}, Policy{AllowMassPrune: true})
	checkLines(t, "apps with steps", appsWithSteps(p), []string{"db"})
	checkLines(t, "blocked", blockedLines(p), nil)

	// A held dependent keeps its dependency.
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{keep}, HeldApps: []string{"web"}}, Observed{Instances: obs}, Policy{AllowMassPrune: true})
	checkLines(t, "apps with steps", appsWithSteps(p), nil)
	checkLines(t, "blocked", blockedLines(p), []string{"db (2): waiting for web to be removed first (it depends on db)"})
}

// Dropping dependsOn drops its record on the replicas, so a later removal
// no longer waits for the apps it named.
func TestDependsOnDroppedClearsRecord(t *testing.T) {
	db := testApp("db", 1)
	web := dependent(testApp("web", 1), 1, "db")
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{db, testApp("web", 1)}}, Observed{Instances: fleet(db, web)}, Policy{})
	checkLines(t, "steps", stepLines(p), []string{"1 web-0 update-in-place (" + ownership.KeyDependsOn + ": db → )"})
}

func TestDependsOnStatus(t *testing.T) {
	db := testApp("db", 1)
	web := dependent(testApp("web", 1), 1, "db")
	d := Desired{Revision: testRev, Apps: []spec.App{db, web}}
	p := MakePlan(d, Observed{}, Policy{})
	st := BuildStatus(DefaultOwner, &d, Observed{}, &p)
	text := st.Text()
	if !strings.Contains(text, "\n  blocked by db: 0/1 ready (db-0: not created)\n") {
		t.Errorf("status text:\n%s", text)
	}
	for _, a := range st.Apps {
		if a.App == "web" && (a.Blocked == "" || a.Sync != SyncOutOfSync) {
			t.Errorf("web: blocked %q, sync %s", a.Blocked, a.Sync)
		}
	}
}

// Scaling a dependency and its dependent to zero together removes the
// dependent's replicas first; the dependency alone scales down at once.
func TestDependsOnScaleDownInReverse(t *testing.T) {
	db := testApp("db", 2)
	web := dependent(testApp("web", 2), spec.MinReadyAll, "db")
	obs := Observed{Instances: fleet(db, web)}
	zero := func(a spec.App) spec.App { return with(a, func(a *spec.App) { a.Spec.Replicas = 0 }) }
	pol := Policy{AllowMassPrune: true}
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{zero(db), zero(web)}}, obs, pol)
	checkLines(t, "apps with steps", appsWithSteps(p), []string{"web"})
	checkLines(t, "blocked", blockedLines(p), []string{"db (2): waiting for web to scale down first (it depends on db)"})
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{zero(db), zero(web)}}, Observed{Instances: fleet(db)}, pol)
	checkLines(t, "apps with steps", appsWithSteps(p), []string{"db"})
	checkLines(t, "blocked", blockedLines(p), nil)
	// db shrinks from 2 to 1 while web keeps its replicas: no wait.
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{with(db, func(a *spec.App) { a.Spec.Replicas = 1 }), web}}, obs, pol)
	checkLines(t, "steps", stepLines(p), []string{"1 db-1 delete (replicas: 2 → 1)"})
}

// A dependency scaled down in the commit that removes its dependent (or
// while the dependent is held) waits for the dependent's replicas, which
// still record what they depend on.
func TestDependsOnScaleDownWaitsForARemovedDependent(t *testing.T) {
	db := testApp("db", 2)
	web := dependent(testApp("web", 2), 1, "db")
	obs := Observed{Instances: fleet(db, web)}
	pol := Policy{AllowMassPrune: true}
	dbZero := with(db, func(a *spec.App) { a.Spec.Replicas = 0 })
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{dbZero}}, obs, pol)
	checkLines(t, "apps with steps", appsWithSteps(p), []string{"web"})
	if len(p.Blocked) != 1 || p.Blocked[0].App != "db" || !strings.Contains(p.Blocked[0].Why, "web") {
		t.Errorf("db scaled to 0 while web is removed: blocked %q", blockedLines(p))
	}
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{dbZero}, HeldApps: []string{"web"}}, obs, pol)
	checkLines(t, "apps with steps (web held)", appsWithSteps(p), nil)
}

// A dependency removed in the commit where its dependent drops dependsOn
// waits for the dependent's record to be updated, and says so, not that
// the dependent is being removed.
func TestDependsOnRemovalWaitsForAStaleRecordAndSaysSo(t *testing.T) {
	db := testApp("db", 1)
	web := dependent(testApp("web", 1), 1, "db")
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{testApp("web", 1)}}, Observed{Instances: fleet(db, web)}, Policy{AllowMassPrune: true})
	checkLines(t, "blocked", blockedLines(p), []string{"db (1): waiting for the replicas of web to record that they no longer depend on db"})
}
