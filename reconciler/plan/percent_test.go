package plan

import (
	"fmt"
	"testing"

	"github.com/berth-gitops/berth/spec"
)

// update.maxUnavailable as a percentage of the spec's replicas: 25% of 8
// disrupts 2 at a time, rounded down but never less than 1.
func TestPlanMaxUnavailablePercentage(t *testing.T) {
	pct := func(p int) func(*spec.App) {
		return func(a *spec.App) { a.Spec.Update.MaxUnavailable = spec.IntOrPercent{Percent: p} }
	}
	replace := func(batch, slot int) string {
		return fmt.Sprintf("%d web-%d replace-container (container.image: registry.example/web:1 → registry.example/web:2)", batch, slot)
	}
	eight := testApp("web", 8)
	newCtr := with(eight, func(a *spec.App) { a.Spec.Container.Image = "registry.example/web:2" })
	three := with(testApp("web", 3), func(a *spec.App) { a.Spec.Container.Image = "registry.example/web:2" })
	runCases(t, []planCase{
		{
			name:     "25% of 8 replicas: 2 at a time",
			apps:     []spec.App{with(newCtr, pct(25))},
			observed: fleet(eight),
			want: []string{replace(1, 0), replace(1, 1), replace(2, 2), replace(2, 3),
				replace(3, 4), replace(3, 5), replace(4, 6), replace(4, 7)},
		},
		{
			name:     "50% of 8 replicas: 4 at a time",
			apps:     []spec.App{with(newCtr, pct(50))},
			observed: fleet(eight),
			want: []string{replace(1, 0), replace(1, 1), replace(1, 2), replace(1, 3),
				replace(2, 4), replace(2, 5), replace(2, 6), replace(2, 7)},
		},
		{
			name:     "25% of 3 replicas rounds down to 0, so 1 at a time",
			apps:     []spec.App{with(three, pct(25))},
			observed: fleet(testApp("web", 3)),
			want:     []string{replace(1, 0), replace(2, 1), replace(3, 2)},
		},
		{
			// web-7 already runs the new container and is unhealthy: no
			// step fixes it, and it uses up one of the two.
			name:     "25% of 8 with one replica down: 1 at a time",
			apps:     []spec.App{with(newCtr, pct(25))},
			observed: edit(fleet(eight), "web-7", func(i *Instance) { *i = unhealthy(converged(newCtr, 7)) }),
			want: []string{replace(1, 0), replace(2, 1), replace(3, 2), replace(4, 3),
				replace(5, 4), replace(6, 5), replace(7, 6)},
		},
		{
			name:     "from 1 to 25% on a converged fleet changes nothing",
			apps:     []spec.App{with(eight, pct(25))},
			observed: fleet(eight),
			want:     []string{},
		},
	})
}

// With the budget used up the plan says what the percentage comes to.
func TestPlanMaxUnavailablePercentageWaiting(t *testing.T) {
	four := testApp("web", 4)
	newCtr := with(four, func(a *spec.App) {
		a.Spec.Container.Image = "registry.example/web:2"
		a.Spec.Update.MaxUnavailable = spec.IntOrPercent{Percent: 25}
	})
	obs := edit(fleet(four), "web-3", func(i *Instance) { *i = unhealthy(converged(newCtr, 3)) })
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{newCtr}}, Observed{Instances: obs}, Policy{})
	const want = "web-3 unavailable and maxUnavailable is 25% (1 of 4)"
	if len(p.Waiting) == 0 || p.Waiting[0].Why != want {
		t.Errorf("want the rollout to wait with %q:\n%s", want, p.Text())
	}
}

func unhealthy(inst Instance) Instance {
	inst.Container.Health = "unhealthy"
	return inst
}
