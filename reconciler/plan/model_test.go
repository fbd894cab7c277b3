package plan_test

import (
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/spec"
)

func TestNewDesiredBlocksPruneForUnnamedInvalidApp(t *testing.T) {
	res, err := spec.LoadBytes("apps/web.yaml", []byte("apiVersion: berth/v1\nkind: App\nmetadata: {nme: web}\nspec:\n  system: {image: x}\n  container: {image: reg/x:1}\n"), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := plan.NewDesired("r1", res)
	if d.PruneBlocked == "" || !strings.Contains(d.PruneBlocked, "apps/web.yaml") {
		t.Fatalf("PruneBlocked = %q (unidentified %v)", d.PruneBlocked, res.Unidentified)
	}
}

func TestRolloutBudgetCountsReplicasAlreadyDown(t *testing.T) {
	old := plantest.App("web", 3, 1, "reg/web:1")
	now := plantest.App("web", 3, 2, "reg/web:2")
	obs := plantest.Converged(old)
	// web-0 is down with the new hash already: no step fixes it.
	obs.Instances[0].Container.Labels[ownership.LabelContainerHash] = now.Spec.Container.Hash()
	obs.Instances[0].Container.Health = "unhealthy"
	p := plan.MakePlan(plan.Desired{Revision: "r2", Apps: []spec.App{now}}, obs, plan.Policy{})
	batches := map[int]int{}
	for _, s := range p.Steps {
		batches[s.Batch]++
	}
	if len(p.Steps) != 2 || batches[1] != 1 || batches[2] != 1 {
		t.Errorf("with one replica down and maxUnavailable 2, want one replacement per batch:\n%s", p.Text())
	}
	now.Spec.Update.MaxUnavailable = spec.Count(1)
	p = plan.MakePlan(plan.Desired{Revision: "r2", Apps: []spec.App{now}}, obs, plan.Policy{})
	if len(p.Steps) != 0 || len(p.Waiting) != 2 || p.Waiting[0].Why != "web-0 unavailable and maxUnavailable is 1" || p.Converged() {
		t.Errorf("with the budget used up the rollout must wait:\n%s", p.Text())
	}
}
