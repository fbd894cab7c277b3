// Package plantest builds the planner's inputs for tests of the packages
// that plan, apply and report: apps and the observed state of a fleet
// that runs them. It is imported by tests only.
package plantest

import (
	"time"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// App is a small defaulted app: replicas of image with maxUnavailable.
func App(name string, replicas, maxUnavailable int, image string) spec.App {
	return spec.App{
		APIVersion: spec.APIVersion, Kind: spec.KindApp,
		Metadata: spec.Metadata{Name: name},
		Spec: spec.AppSpec{
			Replicas:  replicas,
			System:    spec.System{Image: "berth/debian-docker", Profiles: []string{"default"}},
			Container: spec.Container{Image: image},
			Update:    spec.Update{MaxUnavailable: spec.Count(maxUnavailable), HealthTimeout: spec.Duration(time.Minute)},
		},
	}
}

// ProvisionedAt is when Converged says each provision last ran.
var ProvisionedAt = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Converged is the observed state of apps fully converged at revision
// "r1": every replica running with a healthy app container.
func Converged(apps ...spec.App) plan.Observed {
	var obs plan.Observed
	for _, a := range apps {
		for s := range a.Spec.Replicas {
			inst := plan.Instance{
				Name: ownership.InstanceName(a.Metadata.Name, s), Status: plan.StatusRunning,
				Config: plan.ManagedConfig(a, plan.DefaultOwner, "r1", s), Profiles: a.Spec.System.Profiles,
			}
			if a.Spec.HasContainer() {
				inst.Container = &plan.Container{Name: a.Metadata.Name, State: "running", Health: "healthy", Image: a.Spec.Container.Image,
					Labels: ownership.Container{App: a.Metadata.Name, Slot: s, Hash: a.Spec.Container.Hash(), Revision: "r1"}.Labels()}
			}
			if p := a.Spec.System.Provision; p != nil {
				inst.Config[ownership.KeyProvisionHash] = p.Hash()
				inst.Config[ownership.KeyProvisionedAt] = ProvisionedAt.Format(time.RFC3339)
			}
			obs.Instances = append(obs.Instances, inst)
		}
	}
	return obs
}
