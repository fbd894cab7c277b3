// Package reconciler applies plans and runs berth's daemon loop. The
// Executor is the only writer: it runs a plan.Plan's steps through the
// small Driver interface (package live implements it over LXD and Docker),
// batch by batch under each app's rollout budget. The Loop is `berth run`:
// every trigger asks for a run, and each run takes the lease, fetches the
// revision, loads the specs, observes, plans (package plan, pure), applies
// and publishes a status. See README.md for the flow.
package reconciler
