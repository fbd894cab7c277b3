package plan

import (
	"fmt"
	"testing"

	"github.com/berth-gitops/berth/spec"
)

// benchInputs is n apps × 5 replicas, converged except for a few: one
// limits change, one container image change, one scale-up, one stopped
// instance and one removed app.
func benchInputs(n int) (Desired, Observed) {
	var apps []spec.App
	for i := range n {
		apps = append(apps, testApp(fmt.Sprintf("app%05d", i), 5))
	}
	obs := Observed{Instances: fleet(apps...)}
	obs.Instances = append(obs.Instances, fleet(testApp("removed", 2))...)
	obs.Instances = setStatus(obs.Instances, "app00500-3", "Stopped")
	apps[10] = with(apps[10], func(a *spec.App) { a.Spec.System.Limits.Memory = "1GiB" })
	apps[20] = with(apps[20], func(a *spec.App) { a.Spec.Container.Image = "registry.example/x:2" })
	apps[30] = with(apps[30], func(a *spec.App) { a.Spec.Replicas = 7 })
	return Desired{Revision: testRev, Apps: apps}, obs
}

// BenchmarkPlan is a fleet of 1,000 apps; BenchmarkPlan10k ten times that,
// to show that planning grows linearly.
func BenchmarkPlan(b *testing.B)    { benchmarkPlan(b, 1000) }
func BenchmarkPlan10k(b *testing.B) { benchmarkPlan(b, 10000) }

func benchmarkPlan(b *testing.B, n int) {
	d, o := benchInputs(n)
	if p := MakePlan(d, o, Policy{}); len(p.Steps) != 5+5+2+1+2 {
		b.Fatalf("unexpected plan: %s", p.Summary())
	}
	b.ReportAllocs()
	for b.Loop() {
		MakePlan(d, o, Policy{})
	}
}
