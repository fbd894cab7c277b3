package reconciler

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
	"github.com/berth-gitops/berth/spec"
)

func provisionedApp(replicas int, digest string, restart bool) spec.App {
	a := plantest.App("web", replicas, 1, "reg/web:1")
	a.Spec.System.Provision = &spec.Provision{
		Files:            []spec.ProvisionFile{{Source: "f", Path: "/etc/f", Mode: "0644", Owner: "0:0", Digest: digest}},
		Run:              []string{"/bin/true"},
		Timeout:          spec.Duration(time.Minute),
		RestartContainer: restart,
	}
	return a
}

func TestApplyProvisionsBeforeTheContainer(t *testing.T) {
	f := newFakeDriver()
	app := provisionedApp(1, "aa", false)
	_, res, _ := apply(t, f, plan.Desired{Revision: "r1", Apps: []spec.App{app}}, plan.Observed{})
	want := []string{"preflight web", "create web-0", "provision web-0", "update(3,-[]) web-0", "ensure web-0", "ready web-0"}
	if !res.OK() || !slices.Equal(withoutPreflight(f.calls), withoutPreflight(want)) {
		t.Fatalf("calls %q, want %q; result %+v", f.calls, want, res)
	}
}

func withoutPreflight(calls []string) []string {
	return slices.DeleteFunc(slices.Clone(calls), func(c string) bool { return strings.HasPrefix(c, "preflight") })
}

func TestApplyReprovisionInPlace(t *testing.T) {
	for _, restart := range []bool{false, true} {
		f := newFakeDriver()
		old, app := provisionedApp(2, "aa", restart), provisionedApp(2, "bb", restart)
		pl, res, _ := apply(t, f, plan.Desired{Revision: "r2", Apps: []spec.App{app}}, plantest.Converged(old))
		if !res.OK() || len(pl.Steps) != 2 {
			t.Fatalf("plan %s\nresult %+v", pl.Text(), res)
		}
		// Marked pending, run, recorded, then checked ready: no create,
		// no delete.
		want := []string{"update(1,-[]) web-0", "provision web-0", "update(3,-[]) web-0"}
		if restart {
			want = append(want, "restart-container web-0")
		}
		want = append(want, "ready web-0")
		if got := f.calls[:len(want)]; !slices.Equal(got, want) {
			t.Errorf("restart=%v: calls %q, want %q", restart, f.calls, want)
		}
		// Status shows the revision whose provision the replica has.
		if got := f.config["web-0"][ownership.KeyRevision]; got != "r2" {
			t.Errorf("restart=%v: %s after the provision = %q, want r2", restart, ownership.KeyRevision, got)
		}
	}
}

func TestApplyFailingProvisionHaltsTheApp(t *testing.T) {
	f := newFakeDriver()
	f.fail["provision web-0"] = errors.New("provision exited 1: E: no such package")
	old, app := provisionedApp(3, "aa", false), provisionedApp(3, "bb", false)
	_, res, _ := apply(t, f, plan.Desired{Revision: "r2", Apps: []spec.App{app}}, plantest.Converged(old))
	if res.OK() || res.Apps[0].Status != AppDegraded || !strings.Contains(res.Apps[0].Reason, "E: no such package") {
		t.Fatalf("result %+v", res.Apps)
	}
	for _, c := range f.calls {
		if strings.HasSuffix(c, "web-1") || strings.HasSuffix(c, "web-2") {
			t.Errorf("the rollout went on after a failed provision: %s", c)
		}
	}
}

func TestApplySystemOnlyAppHasNoContainerSteps(t *testing.T) {
	f := newFakeDriver()
	app := plantest.App("db", 2, 1, "")
	app.Spec.Container = spec.Container{}
	_, res, _ := apply(t, f, plan.Desired{Revision: "r1", Apps: []spec.App{app}}, plan.Observed{})
	if !res.OK() {
		t.Fatalf("result %+v", res)
	}
	for _, c := range f.calls {
		if strings.HasPrefix(c, "ensure") || strings.HasPrefix(c, "wait-docker") {
			t.Errorf("a system-only app got a Docker call: %s", c)
		}
	}
}

func TestApplyDroppedProvisionLeavesNoRecord(t *testing.T) {
	f := newFakeDriver()
	old := provisionedApp(1, "aa", false)
	app := plantest.App("web", 1, 1, "reg/web:1")
	_, res, _ := apply(t, f, plan.Desired{Revision: "r2", Apps: []spec.App{app}}, plantest.Converged(old))
	if !res.OK() || len(f.calls) != 1 || !strings.Contains(f.calls[0], "user.berth.provision-hash") || !strings.Contains(f.calls[0], "user.berth.provisioned-at") {
		t.Errorf("calls %q, result %+v", f.calls, res)
	}
}

func TestApplyStartProvisionsBeforeTheContainer(t *testing.T) {
	f := newFakeDriver()
	old, app := provisionedApp(1, "aa", false), provisionedApp(1, "bb", false)
	obs := plantest.Converged(old)
	obs.Instances[0].Status, obs.Instances[0].Container = "Stopped", nil
	pl, res, _ := apply(t, f, plan.Desired{Revision: "r2", Apps: []spec.App{app}}, obs)
	want := []string{"start web-0", "update(1,-[]) web-0", "provision web-0", "update(3,-[]) web-0", "ensure web-0", "ready web-0"}
	if !res.OK() || len(pl.Steps) != 1 || !slices.Equal(f.calls, want) {
		t.Errorf("plan %s\ncalls %q, want %q", pl.Text(), f.calls, want)
	}
}
