package plan

import (
	"fmt"
	"slices"
	"strings"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/spec"
)

// This file orders apps by spec.dependsOn: an app's creates and updates
// are planned only once each dependency has enough ready replicas at
// their desired spec, and a removed app is deleted only once no replica
// of an app that depends on it is left.

// Blocked is an app whose steps the plan holds back this run because of
// its dependencies: creates and updates until a dependency is ready, or
// the deletes of a removed app until the apps that depend on it are gone.
type Blocked struct {
	App string `json:"app"`
	// Why is "blocked by db: 1/3 ready (db-2: container health starting)"
	// or "waiting for web to be removed first (it depends on db)".
	Why string `json:"why"`
	// Steps is how many steps are held back.
	Steps int `json:"steps"`
	// On are the apps it waits for.
	On []string `json:"on"`
}

// dependsOnValue is KeyDependsOn's value for app: its dependencies'
// names, sorted, comma-separated.
func dependsOnValue(app *spec.App) string {
	if len(app.Spec.DependsOn) == 0 {
		return ""
	}
	names := make([]string, len(app.Spec.DependsOn))
	for i, d := range app.Spec.DependsOn {
		names[i] = d.App
	}
	slices.Sort(names)
	return strings.Join(slices.Compact(names), ",")
}

// planInOrder plans every app after its dependencies, so that what a
// dependency's own steps are is known when its dependents are planned.
func (pl *planner) planInOrder() {
	pl.touched = map[string]bool{}
	order := pl.dependencyOrder()
	related := map[string]bool{}
	for _, name := range order {
		for _, d := range pl.apps[name].Spec.DependsOn {
			related[name], related[d.App] = true, true
		}
	}
	for _, name := range order {
		if related[name] {
			pl.plan.Order = append(pl.plan.Order, name)
		}
	}
	for _, name := range order {
		a := pl.apps[name]
		blockedBy, why := pl.dependencyBlocker(a)
		nSteps, nWaiting := len(pl.plan.Steps), len(pl.plan.Waiting)
		pl.planApp(a)
		for _, s := range pl.plan.Steps[nSteps:] {
			pl.touched[s.Instance] = true
		}
		for _, w := range pl.plan.Waiting[nWaiting:] {
			pl.touched[w.Instance] = true
		}
		if why == "" {
			continue
		}
		// Scale-down deletes need no dependency; everything else waits.
		held := len(pl.plan.Waiting) - nWaiting
		pl.plan.Waiting = pl.plan.Waiting[:nWaiting]
		kept := pl.plan.Steps[:nSteps]
		for _, s := range pl.plan.Steps[nSteps:] {
			if s.Action == Delete {
				kept = append(kept, s)
			} else {
				held++
			}
		}
		pl.plan.Steps = kept
		if held > 0 {
			pl.plan.Blocked = append(pl.plan.Blocked, Blocked{App: name, Why: why, Steps: held, On: blockedBy})
		}
	}
}

// scaleDownInReverse holds back the scale-down deletes of an app while
// an app that depends on it still has replicas to scale down (in this
// plan or held back): scaling both to zero removes the dependent's
// replicas first, as a removal does.
func (pl *planner) scaleDownInReverse() {
	dependents := map[string][]string{}
	shrinking := map[string]bool{}
	for _, name := range pl.appNames {
		for _, d := range pl.apps[name].Spec.DependsOn {
			dependents[d.App] = append(dependents[d.App], name)
		}
		if a := pl.apps[name]; len(pl.owned[name]) > max(a.Spec.Replicas, 0) {
			shrinking[name] = true
		}
	}
	// An app without a spec here (removed from Git, or held) still has
	// its replicas' record of what they depend on; while any is left, the
	// apps it names keep theirs.
	for other, rs := range pl.owned {
		if pl.apps[other] != nil {
			continue
		}
		for dep := range recordedDependencies(rs) {
			dependents[dep] = append(dependents[dep], other)
			shrinking[other] = true
		}
	}
	if len(dependents) == 0 {
		return
	}
	held := map[string]int{}
	why := map[string][]string{}
	pl.plan.Steps = slices.DeleteFunc(pl.plan.Steps, func(s Step) bool {
		if s.Action != Delete || pl.apps[s.App] == nil {
			return false
		}
		var on []string
		for _, d := range dependents[s.App] {
			if shrinking[d] {
				on = append(on, d)
			}
		}
		if len(on) == 0 {
			return false
		}
		held[s.App]++
		why[s.App] = on
		return true
	})
	for app, n := range held {
		on := why[app]
		pl.plan.Blocked = append(pl.plan.Blocked, Blocked{App: app, Steps: n, On: on,
			Why: fmt.Sprintf("waiting for %s to scale down first (%s on %s)", strings.Join(on, ", "), dependWord(len(on)), app)})
	}
}

// dependencyOrder is the names of the apps to plan, each after the apps
// it depends on, otherwise by name: a depth-first walk, iterative so a
// chain of thousands of apps is linear and does not grow the stack. A
// cycle (the loader refuses them; a hand-written desired state may have
// one) is cut where the walk meets it again.
func (pl *planner) dependencyOrder() []string {
	out := make([]string, 0, len(pl.appNames))
	state := make(map[string]int8, len(pl.appNames)) // 1 on the walk, 2 done
	type frame struct {
		name string
		next int
	}
	for _, root := range pl.appNames {
		if state[root] != 0 {
			continue
		}
		stack := []frame{{name: root}}
		state[root] = 1
		for len(stack) > 0 {
			f := &stack[len(stack)-1]
			deps := pl.apps[f.name].Spec.DependsOn
			if f.next < len(deps) {
				d := deps[f.next].App
				f.next++
				if _, ok := pl.apps[d]; ok && state[d] == 0 {
					state[d] = 1
					stack = append(stack, frame{name: d})
				}
				continue
			}
			state[f.name] = 2
			out = append(out, f.name)
			stack = stack[:len(stack)-1]
		}
	}
	return out
}

// dependencyBlocker says which dependencies of app are not ready enough
// for its creates and updates, and why: "" when all are.
func (pl *planner) dependencyBlocker(app *spec.App) (on []string, why string) {
	var parts []string
	for _, dep := range app.Spec.DependsOn {
		msg := pl.dependencyNotReady(dep)
		if msg != "" {
			on = append(on, dep.App)
			parts = append(parts, "blocked by "+dep.App+": "+msg)
		}
	}
	return on, strings.Join(parts, "; ")
}

// dependencyNotReady says why dep does not have its minReady replicas
// ready at their desired spec, or "". A replica with a step in this plan
// (or one held back) is not counted: it is about to change, and a
// dependency whose rollout halts keeps its dependents where they are.
func (pl *planner) dependencyNotReady(dep spec.Dependency) string {
	if pl.held[dep.App] {
		return "held at its last applied state (invalid spec, or a failed rollout)"
	}
	d := pl.apps[dep.App]
	if d == nil {
		return "no such app at this revision"
	}
	replicas := max(d.Spec.Replicas, 0)
	need := dep.MinReady.Of(replicas)
	ready, first := 0, ""
	for slot := range replicas {
		name := ownership.InstanceName(dep.App, slot)
		inst := pl.lookup(name)
		why := ""
		switch {
		case inst == nil || inst.Config[ownership.KeyOwner] != pl.policy.Owner:
			why = "not created"
		case pl.touched[name]:
			why = "being changed"
		case ReplicaAvailability(inst) != Ready:
			why = NotReadyReason(inst)
		default:
			ready++
			continue
		}
		if first == "" {
			first = name + ": " + why
		}
	}
	if ready >= need {
		return ""
	}
	msg := fmt.Sprintf("%d/%d ready", ready, replicas)
	if need != replicas {
		msg += fmt.Sprintf(", %d needed", need)
	}
	if first != "" {
		msg += " (" + first + ")"
	}
	return msg
}

// removalBlocker says why the replicas of app, removed from Git, must
// wait: an instance of another app that depends on it (by its
// KeyDependsOn) is still there. Those go first, in this plan or an
// earlier one.
func (pl *planner) removalBlocker(app string) (on []string, why string) {
	for other, rs := range pl.owned {
		if other == app {
			continue
		}
		for _, r := range rs {
			if slices.Contains(strings.Split(r.inst.Config[ownership.KeyDependsOn], ","), app) {
				on = append(on, other)
				break
			}
		}
	}
	if len(on) == 0 {
		return nil, ""
	}
	slices.Sort(on)
	var stale []string
	for _, other := range on {
		if a := pl.apps[other]; a != nil && !slices.ContainsFunc(a.Spec.DependsOn, func(d spec.Dependency) bool { return d.App == app }) {
			stale = append(stale, other)
		}
	}
	if len(stale) == len(on) {
		// Still in Git, no longer depending on app: only the record on
		// their replicas is left, until their update writes it.
		return on, fmt.Sprintf("waiting for the replicas of %s to record that they no longer depend on %s", strings.Join(on, ", "), app)
	}
	return on, fmt.Sprintf("waiting for %s to be removed first (%s on %s)", strings.Join(on, ", "), dependWord(len(on)), app)
}

// recordedDependencies are the apps that replicas rs recorded depending
// on (ownership.KeyDependsOn).
func recordedDependencies(rs []replica) map[string]bool {
	deps := map[string]bool{}
	for _, r := range rs {
		for _, d := range strings.Split(r.inst.Config[ownership.KeyDependsOn], ",") {
			if d != "" {
				deps[d] = true
			}
		}
	}
	return deps
}

func dependWord(n int) string {
	if n == 1 {
		return "it depends"
	}
	return "they depend"
}
