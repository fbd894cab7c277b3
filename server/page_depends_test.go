package server

import (
	"testing"

	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
)

// The page says why an app waits for its dependencies.
func TestPageAppBlockedByDependency(t *testing.T) {
	const why = "blocked by db: 1/3 ready (db-2: container health starting)"
	health, tone, reason := appHealth(plan.AppStatusView{App: "web", Sync: plan.SyncOutOfSync, Health: plan.HealthMissing, Blocked: why}, reconciler.AppFailure{})
	if health != reconciler.AppStatusBlocked || tone != "busy" || reason != why {
		t.Errorf("appHealth = %q, %q, %q", health, tone, reason)
	}
}
