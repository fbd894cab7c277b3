package plan

import (
	"cmp"
	"fmt"
	"github.com/berth-gitops/berth/ownership"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-gitops/berth/spec"
)

// StatusRunning is LXD's status of a running instance.
const StatusRunning = "Running"

// Docker container states the planner tells apart.
const (
	stateRunning    = "running"
	stateRestarting = "restarting"
	stateDead       = "dead"
	healthHealthy   = "healthy"
)

// MakePlan computes the plan that converges observed to desired. It is
// pure: no I/O, no clock, no randomness; it never modifies its inputs, and
// the same inputs give a byte-identical plan whatever the order of
// Observed.Instances or Desired.Apps.
//
// (The function cannot be called Plan: that is the name of its result.)
func MakePlan(desired Desired, observed Observed, policy Policy) Plan {
	policy = policy.withDefaults()
	pl := &planner{
		desired: desired,
		policy:  policy,
		held:    make(map[string]bool, len(desired.HeldApps)),
		apps:    make(map[string]*spec.App, len(desired.Apps)),
		dupName: map[string]bool{},
		owned:   make(map[string][]replica, len(desired.Apps)),
		plan: Plan{
			Revision: desired.Revision,
			Owner:    policy.Owner,
			Steps:    []Step{},
		},
	}
	pl.indexDesired()
	pl.indexObserved(observed)
	pl.planInOrder()
	pl.scaleDownInReverse()
	pl.garbledConflicts()
	pl.planPrune()
	pl.finish()
	return pl.plan
}

// planner holds one planning run's indexes. Nothing in it outlives
// MakePlan, and it only ever points into the inputs to read them.
type planner struct {
	desired Desired
	policy  Policy

	held     map[string]bool
	apps     map[string]*spec.App
	appNames []string // sorted names of the apps to plan (valid, not held)

	instances   []*Instance          // observed, sorted by name
	dupName     map[string]bool      // names observed more than once: never touched
	owned       map[string][]replica // berth's well-labelled instances by app, in name order
	nOwned      int                  // every instance with our owner, garbled ones included
	garbled     []*Instance          // instances with our owner whose keys name no replica, by name
	images      map[string]*Image    // observed images by alias
	members     map[string]*Member   // cluster members by name; empty on a single host
	memberNames []string             // sorted
	at          time.Time            // Observed.At
	memberList  []Member             // Observed.Members, for the fingerprint
	imageList   []Image              // Observed.Images, for the fingerprint
	vols        volumeIndex          // Observed.Volumes and Pools
	// touched are the instances of the apps planned so far that have a
	// step, or one held back: not ready at their desired spec for the
	// apps that depend on theirs.
	touched map[string]bool

	warnings []string
	plan     Plan

	// Scratch space reused by every app.
	slotBuf []*Instance
	keptBuf []*Instance
}

func (pl *planner) warnf(format string, args ...any) {
	pl.warnings = append(pl.warnings, fmt.Sprintf(format, args...))
}

func (pl *planner) indexDesired() {
	for _, h := range pl.desired.HeldApps {
		pl.held[h] = true
	}
	for i := range pl.desired.Apps {
		a := &pl.desired.Apps[i]
		name := a.Metadata.Name
		if pl.held[name] {
			continue
		}
		if _, dup := pl.apps[name]; dup {
			// spec rejects duplicate names; if one slips through, planning
			// either copy would flap between them.
			pl.warnf("app %s is defined more than once; it is held", name)
			pl.held[name] = true
			continue
		}
		pl.apps[name] = a
	}
	for name := range pl.apps {
		if pl.held[name] {
			delete(pl.apps, name)
		}
	}
	pl.plan.Held = slices.Sorted(maps.Keys(pl.held))
	pl.appNames = slices.Sorted(maps.Keys(pl.apps))
}

func (pl *planner) indexObserved(observed Observed) {
	pl.at = observed.At
	pl.memberList, pl.imageList = observed.Members, observed.Images
	pl.indexMembers(observed.Members)
	pl.images = imagesByAlias(observed.Images)
	pl.indexVolumes(observed)
	pl.instances = make([]*Instance, len(observed.Instances))
	for i := range observed.Instances {
		pl.instances[i] = &observed.Instances[i]
	}
	byName := func(a, b *Instance) int { return strings.Compare(a.Name, b.Name) }
	// LXD lists instances by name: checking first spares the sort.
	if !slices.IsSortedFunc(pl.instances, byName) {
		slices.SortStableFunc(pl.instances, byName)
	}
	for i := 1; i < len(pl.instances); i++ {
		if name := pl.instances[i].Name; name == pl.instances[i-1].Name && !pl.dupName[name] {
			pl.warnf("instance %s is observed more than once; left alone", name)
			pl.dupName[name] = true
		}
	}
	for _, inst := range pl.instances {
		if inst.Config[ownership.KeyOwner] != pl.policy.Owner {
			continue
		}
		if pl.dupName[inst.Name] {
			continue
		}
		pl.nOwned++
		app, slot, err := identity(inst)
		if err != nil {
			pl.warnf("%v (owned by %s); left alone", err, pl.policy.Owner)
			pl.garbled = append(pl.garbled, inst)
			continue
		}
		rs := pl.owned[app]
		if rs == nil {
			// Sized for the app's replicas: growing a slice per app
			// was a good part of the plan's allocations.
			n := 1
			if a := pl.apps[app]; a != nil {
				n = max(a.Spec.Replicas, 1)
			}
			rs = make([]replica, 0, n)
		}
		pl.owned[app] = append(rs, replica{slot, inst})
	}
}

// replica is one of berth's instances with the slot its keys give.
type replica struct {
	slot int
	inst *Instance
}

// lookup returns the observed instance named name, nil when there is none
// or several.
func (pl *planner) lookup(name string) *Instance {
	if pl.dupName[name] {
		return nil
	}
	i, ok := slices.BinarySearchFunc(pl.instances, name, func(inst *Instance, name string) int { return cmp.Compare(inst.Name, name) })
	if !ok {
		return nil
	}
	return pl.instances[i]
}

// appPlan is what one app's steps are computed from.
type appPlan struct {
	app        *spec.App
	name       string
	replicas   int
	sysHash    string
	ctrHash    string
	provHash   string
	managed    [][2]string // ManagedConfig without KeyRevision and KeySlot, sorted by key
	configKeys string      // the KeyConfigKeys value the spec gives
	lxdConfig  map[string]string
	nObserved  int
	maxUnavail int
	placer     *placer // nil on a single host
	// slotVols and volUpdate are the volumes of the slot being planned
	// and the in-place changes they need (slotVolumes).
	slotVols  []StepVolume
	volUpdate []Reason
}

// maxUnavailText is the budget as the spec gives it, with what a
// percentage comes to: "2", or "25% (2 of 8)".
func (a *appPlan) maxUnavailText() string {
	v := a.app.Spec.Update.MaxUnavailable
	if v.Percent == 0 {
		return strconv.Itoa(a.maxUnavail)
	}
	return fmt.Sprintf("%s (%d of %d)", v, a.maxUnavail, max(a.app.Spec.Replicas, 0))
}

// slotSteps are the steps of one replica; they stay together in one batch.
type slotSteps struct {
	slot       int
	steps      []Step
	disruptive bool
}

func (pl *planner) planApp(app *spec.App) {
	a := &appPlan{
		app:       app,
		name:      app.Metadata.Name,
		replicas:  max(app.Spec.Replicas, 0),
		sysHash:   app.Spec.System.Hash(),
		ctrHash:   app.Spec.Container.Hash(),
		provHash:  app.Spec.System.Provision.Hash(),
		lxdConfig: app.Spec.System.LXDConfig(),
		nObserved: len(pl.owned[app.Metadata.Name]),
	}
	// A percentage is of the spec's replicas: stand-ins do not widen it.
	a.maxUnavail = app.Spec.Update.MaxUnavailable.Of(a.replicas)
	// The slot key differs per replica and is compared on its own.
	a.managed, a.configKeys = managedPairs(app, a.lxdConfig, a.sysHash, pl.policy.Owner, "", -1)
	replicasReason := Reason{Field: "replicas", Old: strconv.Itoa(a.nObserved), New: strconv.Itoa(a.replicas)}
	// Stand-ins for replicas lost with their member take the slots after
	// the spec's: kept while they are needed, scaled down once the
	// member is back.
	standIns, keep := pl.standIns(app, a.replicas)
	specReplicas := a.replicas
	a.replicas += max(len(standIns), keep)

	bySlot, extra := pl.bySlot(a)
	var quiet, disruptive []slotSteps
	var down []string // replicas unavailable that no step will fix
	for slot, inst := range bySlot {
		if inst == nil {
			name := ownership.InstanceName(a.name, slot)
			if why, ok := pl.lostName(name); ok {
				// Most likely this very replica, on a lost member: LXD
				// keeps its name, and berth never makes a second.
				down = append(down, name)
				pl.plan.Unready = append(pl.plan.Unready, Unready{App: a.name, Instance: name, Why: why})
				continue
			}
			if pl.conflict(a.name, name) {
				continue
			}
			if !pl.volumesFor(a, slot, nil) {
				continue
			}
			why := replicasReason
			if k := slot - specReplicas; k >= len(standIns) {
				continue // a stand-in kept, not one to build
			} else if k >= 0 {
				why = standIns[k]
			}
			target := ""
			if a.placer != nil {
				if target = a.placer.pick(); target == "" {
					pl.unplaceable(a, name, Create)
					continue
				}
			}
			quiet = append(quiet, slotSteps{slot: slot, steps: []Step{{
				App: a.name, Slot: slot, Instance: name, Action: Create,
				Reasons:    []Reason{why},
				SystemHash: a.sysHash, ContainerHash: a.ctrHash, ProvisionHash: a.provHash, Target: target,
				Volumes: a.slotVols,
			}}})
			continue
		}
		if why, ok := pl.unreachable(inst); ok {
			// Its member is down: nothing can be done to it, and its
			// name is taken until the member returns.
			down = append(down, inst.Name)
			pl.plan.Unready = append(pl.plan.Unready, Unready{App: a.name, Instance: inst.Name, Why: why})
			continue
		}
		if !pl.volumesFor(a, slot, inst) {
			continue
		}
		ss := pl.replicaSteps(a, slot, inst)
		switch {
		case len(ss.steps) == 0:
			// Not ready with nothing to do: a replica still starting (for
			// instance after an interrupted rollout) or unhealthy. It is
			// unavailable, so it uses up the budget.
			if ReplicaAvailability(inst) == Unavailable {
				down = append(down, inst.Name)
				// Nothing berth can do fixes it (the same spec runs), but
				// the app has not converged: say so, not "No changes".
				pl.plan.Unready = append(pl.plan.Unready, Unready{App: a.name, Instance: inst.Name, Why: NotReadyReason(inst)})
			}
		case ss.disruptive:
			disruptive = append(disruptive, ss)
		default:
			quiet = append(quiet, ss)
		}
	}

	pl.addBatches(a, quiet, disruptive, down, extra, replicasReason)
}

// addBatches orders an app's steps: the quiet ones together first, then
// the disruptive ones at most maxUnavailable at a time, then the
// scale-down.
func (pl *planner) addBatches(a *appPlan, quiet, disruptive []slotSteps, down []string, extra []replica, replicasReason Reason) {
	batch := 0
	if len(quiet) > 0 {
		batch++
		for _, ss := range quiet {
			pl.addSteps(ss.steps, batch)
		}
	}
	// Replicas already down count against maxUnavailable, as in a
	// Kubernetes rollout: taking more down would break the promise. When
	// nothing is left of the budget the rollout waits (and says why).
	budget := a.maxUnavail - len(down)
	if budget <= 0 && len(disruptive) > 0 {
		// Held back, not dropped: the plan must show that these replicas
		// still differ, and why they wait.
		why := fmt.Sprintf("%s unavailable and maxUnavailable is %s", strings.Join(down, ", "), a.maxUnavailText())
		for _, ss := range disruptive {
			for _, st := range ss.steps {
				pl.plan.Waiting = append(pl.plan.Waiting, Waiting{Step: st, Why: why})
			}
		}
		disruptive = nil
	}
	for i, ss := range disruptive {
		if i%budget == 0 {
			batch++
		}
		pl.addSteps(ss.steps, batch)
	}

	// Scale down last: the replicas that stay are converged first, and the
	// highest slots go first so the survivors are always 0..replicas-1.
	orphans := pl.orphanDeletes(a.name, a.replicas, a.app.Spec.System.Volumes, false, replicasReason)
	if len(extra) > 0 || len(orphans) > 0 {
		batch++
		pl.deleteAll(extra, batch, replicasReason)
		pl.addSteps(orphans, batch)
	}
}

// bySlot places an app's replicas in their slots; those past the last
// slot are extra, for the scale-down. It sets the app's placer, from the
// replicas that stay. The slice is the planner's, reused app after app.
func (pl *planner) bySlot(a *appPlan) (bySlot []*Instance, extra []replica) {
	pl.slotBuf = slices.Grow(pl.slotBuf[:0], a.replicas)[:a.replicas]
	clear(pl.slotBuf)
	bySlot = pl.slotBuf
	for _, r := range pl.owned[a.name] {
		if r.slot < a.replicas {
			bySlot[r.slot] = r.inst
		} else {
			extra = append(extra, r)
		}
	}
	if len(pl.members) > 0 {
		kept := pl.keptBuf[:0]
		for _, inst := range bySlot {
			if inst != nil {
				kept = append(kept, inst)
			}
		}
		pl.keptBuf = kept
		a.placer = pl.newPlacer(a.app, kept)
	}
	return bySlot, extra
}

// deleteAll deletes replicas in one batch, highest slot first, so that
// what survives an interruption is always slots 0..n.
func (pl *planner) deleteAll(rs []replica, batch int, why Reason) {
	slices.SortFunc(rs, func(x, y replica) int { return cmp.Compare(y.slot, x.slot) })
	for _, r := range rs {
		app := r.inst.Config[ownership.KeyApp]
		var specVols []spec.SystemVolume
		if a := pl.apps[app]; a != nil {
			specVols = a.Spec.System.Volumes
		}
		pl.plan.Steps = append(pl.plan.Steps, Step{
			App: app, Slot: r.slot, Instance: r.inst.Name,
			Action: Delete, Batch: batch, Reasons: []Reason{why},
			Volumes: pl.deletedVolumes(app, r.slot, specVols, pl.apps[app] == nil),
		})
	}
}

func (pl *planner) addSteps(steps []Step, batch int) {
	for _, s := range steps {
		s.Batch = batch
		pl.plan.Steps = append(pl.plan.Steps, s)
	}
}

// conflict records a Conflict when name is taken by an instance that is
// not this app's replica, and reports whether it did.
func (pl *planner) conflict(app, name string) bool {
	c := Conflict{Instance: name, App: app}
	if pl.dupName[name] {
		c.Message = "several instances have this name"
		pl.plan.Conflicts = append(pl.plan.Conflicts, c)
		return true
	}
	inst := pl.lookup(name)
	if inst == nil {
		return false
	}
	c.Owner = inst.Config[ownership.KeyOwner]
	switch c.Owner {
	case "":
		c.Message = "instance exists and is not managed by berth"
	case pl.policy.Owner:
		c.Message = fmt.Sprintf("instance is owned by %s but its keys say app %q slot %q", c.Owner, inst.Config[ownership.KeyApp], inst.Config[ownership.KeySlot])
	default:
		c.Message = fmt.Sprintf("instance is owned by %s", c.Owner)
	}
	pl.plan.Conflicts = append(pl.plan.Conflicts, c)
	return true
}

// garbledConflicts reports the owned instances whose keys name no replica
// (edited by hand: another slot, another app) that no app's slot range
// reached: after a scale-down they are still berth's, untouched, and need
// a person, so they stay conflicts, not "No changes.".
func (pl *planner) garbledConflicts() {
	reported := make(map[string]bool, len(pl.plan.Conflicts))
	for _, c := range pl.plan.Conflicts {
		reported[c.Instance] = true
	}
	for _, inst := range pl.garbled {
		if reported[inst.Name] {
			continue
		}
		pl.plan.Conflicts = append(pl.plan.Conflicts, Conflict{
			Instance: inst.Name, App: pl.appOfName(inst), Owner: pl.policy.Owner,
			Message: fmt.Sprintf("instance is owned by %s but its keys say app %q slot %q", pl.policy.Owner, inst.Config[ownership.KeyApp], inst.Config[ownership.KeySlot]),
		})
	}
}

// appOfName is the app an instance's name makes it a replica of
// ("<app>-<slot>" for an app of this revision), else the app its keys say.
func (pl *planner) appOfName(inst *Instance) string {
	if i := strings.LastIndexByte(inst.Name, '-'); i > 0 {
		if _, err := strconv.Atoi(inst.Name[i+1:]); err == nil {
			if _, ok := pl.apps[inst.Name[:i]]; ok {
				return inst.Name[:i]
			}
		}
	}
	return inst.Config[ownership.KeyApp]
}

// replicaSteps diffs one existing replica against its app's spec.
func (pl *planner) replicaSteps(a *appPlan, slot int, inst *Instance) slotSteps {
	ss := slotSteps{slot: slot}
	step := func(action Action, reasons ...Reason) {
		ss.steps = append(ss.steps, Step{
			App: a.name, Slot: slot, Instance: inst.Name, Action: action,
			Reasons: reasons, SystemHash: a.sysHash, ContainerHash: a.ctrHash, ProvisionHash: a.provHash,
			Volumes: a.slotVols,
		})
	}
	// The provision runs in a running instance, before its container is
	// converged: the container may depend on what it configures.
	provision := func() {
		if r, ok := pl.provisionReason(a, inst); ok {
			step(Provision, r)
		}
	}

	recreate, update := pl.systemReasons(a, inst)
	if r, ok := a.placer.misplaced(inst); ok {
		recreate = append(recreate, r)
	}
	if len(recreate) > 0 {
		step(Recreate, append(recreate, update...)...)
		if w := unvolumedWarning(a.app, inst.Name); w != "" {
			pl.warnf("%s", w)
		}
		if !pl.placeRecreate(a, inst, &ss.steps[0]) {
			return slotSteps{slot: slot}
		}
	} else if len(update) > 0 {
		step(UpdateInPlace, update...)
	}

	running := inst.Status == StatusRunning
	switch {
	case len(recreate) > 0:
		// A recreated instance starts with a fresh container.
	case !running:
		// Docker cannot be seen in a stopped instance: Start also ensures
		// the app container (ContainerHash) once the instance is up.
		// A provision due runs in the same step, between the start of
		// the instance and that of its container.
		reasons := []Reason{{Field: "status", Old: inst.Status, New: StatusRunning}}
		if r, ok := pl.provisionReason(a, inst); ok {
			reasons = append(reasons, r)
		}
		step(Start, reasons...)
	case !a.app.Spec.HasContainer():
		// A plain managed system: no Docker to look at.
		provision()
	case inst.DockerUnknown != "":
		// LXD did not run the tunnel: Docker may be fine. Restarting on
		// that would restart the fleet on an LXD hiccup; plan nothing
		// that depends on the container, and say that the plan waits.
		pl.plan.Unobserved = append(pl.plan.Unobserved, Unready{App: a.name, Instance: inst.Name, Why: NotReadyReason(inst)})
	case inst.DockerError != "":
		// The fleet cannot be checked while Docker is silent, and "no
		// changes" would be a lie: the executor waits a bounded time for
		// it to answer, then restarts the instance.
		step(Restart, Reason{Field: "docker", Old: "not answering: " + inst.DockerError, New: "answering"})
		provision()
	default:
		provision()
		if action, rs, ok := containerStep(a, inst.Container); ok {
			step(action, rs...)
		}
	}
	if len(inst.StaleContainers) > 0 && len(recreate) == 0 && running && inst.DockerError == "" && inst.DockerUnknown == "" && a.app.Spec.HasContainer() {
		// A leftover (a "<app>-next" of a killed rollout) is drift. Every
		// container step removes leftovers first; without one, a step
		// of its own does.
		r := Reason{Field: "container.leftovers", Old: strings.Join(slices.Sorted(slices.Values(inst.StaleContainers)), ","), New: ""}
		if i := slices.IndexFunc(ss.steps, func(s Step) bool { return s.Action.containerStep() }); i >= 0 {
			ss.steps[i].Reasons = append(ss.steps[i].Reasons, r)
		} else {
			step(RemoveLeftovers, r)
		}
	}
	if len(inst.ForeignContainers) > 0 {
		names := slices.Sorted(slices.Values(inst.ForeignContainers))
		pl.warnf("instance %s: containers without berth labels left alone: %s", inst.Name, strings.Join(names, ", "))
	}
	// When Docker could not be reached the container is unknown, and it
	// counts as serving: disrupting it must stay within the budget.
	serving := ReplicaAvailability(inst) != Unavailable
	for _, s := range ss.steps {
		if serving && s.Action.Disruptive() {
			ss.disruptive = true
		}
	}
	return ss
}

// placeRecreate sets the member a recreate of inst goes to, on a cluster,
// and names it in the placement reason. It reports false, and records
// why, when no member may take it.
func (pl *planner) placeRecreate(a *appPlan, inst *Instance, st *Step) bool {
	if a.placer == nil {
		return true
	}
	target := a.placer.recreateOn(inst)
	if target == "" {
		pl.unplaceable(a, inst.Name, Recreate)
		return false
	}
	if len(a.app.Spec.System.Volumes) > 0 && inst.Location != "" && target != inst.Location {
		// Its volumes are on its member (a local pool): a recreate
		// elsewhere would delete it and then fail to attach them.
		pl.plan.Unplaceable = append(pl.plan.Unplaceable, Unplaceable{App: a.name, Instance: inst.Name, Action: Recreate,
			Why: fmt.Sprintf("a replica with volumes stays on its member %s: moving it to %s (placement.moveVolumes) is not supported yet", inst.Location, target)})
		return false
	}
	st.Target = target
	for i, r := range st.Reasons {
		if r.Field == "placement" {
			st.Reasons[i].New = target
		}
	}
	return true
}

// containerStep is what converges the app container c (nil when there is
// none) of a running instance whose Docker answered, if anything does.
func containerStep(a *appPlan, c *Container) (Action, []Reason, bool) {
	switch {
	case c == nil:
		return CreateContainer, []Reason{{Field: "container", Old: "absent", New: "present"}}, true
	case c.Labels[ownership.LabelContainerHash] != a.ctrHash:
		var rs []Reason
		if c.Image != a.app.Spec.Container.Image {
			rs = append(rs, Reason{Field: "container.image", Old: c.Image, New: a.app.Spec.Container.Image})
		}
		rs = append(rs, secretReasons(ownership.SecretTags(c.Labels), a.app.Spec.Container.SecretTags())...)
		if len(rs) == 0 {
			rs = append(rs, Reason{Field: "container-hash", Old: c.Labels[ownership.LabelContainerHash], New: a.ctrHash})
		}
		return ReplaceContainer, rs, true
	case c.State == stateDead:
		return ReplaceContainer, []Reason{{Field: "container.state", Old: c.State, New: stateRunning}}, true
	case c.State != stateRunning && c.State != stateRestarting:
		return StartContainer, []Reason{{Field: "container.state", Old: c.State, New: stateRunning}}, true
	}
	return 0, nil, false
}

// secretReasons name the secret files whose value changed, came or went,
// by target, from the tags of the container's label and of the spec. A
// reason says only that: never a value, its MAC or its tag.
func secretReasons(observed, desired map[string]string) []Reason {
	var rs []Reason
	targets := slices.Collect(maps.Keys(observed))
	for t := range desired {
		if _, ok := observed[t]; !ok {
			targets = append(targets, t)
		}
	}
	slices.Sort(targets)
	for _, target := range targets {
		old, had := observed[target]
		tag, has := desired[target]
		what := SecretChanged
		switch {
		case !had:
			what = SecretAdded
		case !has:
			what = SecretRemoved
		case old == tag:
			continue
		}
		rs = append(rs, Reason{Field: SecretField(target), New: what})
	}
	return rs
}

// systemReasons compares the instance with the system spec. Differences
// that LXD cannot apply to a live instance go to recreate; the rest
// (limits, plain config keys, berth's keys) to update.
//
// Image and cloud-init are known only through config keys: they force a
// recreate only when the system hash says the spec changed. With the
// hash unchanged they can only have been edited by hand, and restoring the
// key in place is enough: the instance was built from the right ones.
// Profiles and devices are live properties of the instance, so any
// difference recreates.
func (pl *planner) systemReasons(a *appPlan, inst *Instance) (recreate, update []Reason) {
	sys := &a.app.Spec.System
	cfg := inst.Config
	specChanged := cfg[ownership.KeySystemHash] != a.sysHash

	if specChanged && cfg[ownership.KeyImage] != sys.Image {
		recreate = append(recreate, Reason{Field: "system.image", Old: cfg[ownership.KeyImage], New: sys.Image})
	} else if r, ok := pl.baseImageReason(sys, inst); ok {
		if sys.ImageUpdate == spec.ImageUpdateManual {
			pl.warnf("instance %s runs base image %s; %s now points to %s (imageUpdate: manual, so it is not recreated)", inst.Name, r.Old, sys.Image, r.New)
		} else {
			recreate = append(recreate, r)
		}
	}
	if systemOnly := cfg[ownership.KeySystemOnly] == "true"; systemOnly == a.app.Spec.HasContainer() {
		// Docker is in the instance or not from its image on: adding or
		// dropping the app container builds the replica anew.
		r := Reason{Field: "container", Old: "absent", New: "present"}
		if systemOnly {
			r.Old, r.New = "absent (system-only)", "present"
		} else {
			r.Old, r.New = "present", "absent (system-only)"
		}
		recreate = append(recreate, r)
	}
	if !slices.Equal(inst.Profiles, sys.Profiles) {
		recreate = append(recreate, Reason{Field: "system.profiles", Old: strings.Join(inst.Profiles, ","), New: strings.Join(sys.Profiles, ",")})
	}
	if devices := WantDevices(sys, a.slotVols); !devicesEqual(inst.Devices, devices) {
		names := slices.Sorted(maps.Keys(inst.Devices))
		for n := range devices {
			if _, ok := inst.Devices[n]; !ok {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		for _, n := range names {
			if !maps.Equal(inst.Devices[n], devices[n]) {
				recreate = append(recreate, Reason{Field: "system.devices." + n, Old: formatDevice(inst.Devices[n]), New: formatDevice(devices[n])})
			}
		}
	}

	var labels []Reason // differences in berth's bookkeeping only
	diff := func(key, old, new string) {
		r := Reason{Field: configField(key), Old: old, New: new}
		switch {
		case key == ownership.KeyImage && specChanged:
			// reported as system.image above when it matters
		case strings.HasPrefix(key, ownership.KeyPrefix):
			labels = append(labels, r)
		case specChanged && strings.HasPrefix(key, "cloud-init."):
			recreate = append(recreate, r)
		default:
			update = append(update, r)
		}
	}
	// KeySlot needs no check: the replica was indexed by it.
	for _, kv := range a.managed {
		if got := cfg[kv[0]]; got != kv[1] {
			diff(kv[0], got, kv[1])
		}
	}
	for _, k := range removedConfigKeys(cfg, a.lxdConfig, a.configKeys) {
		diff(k, cfg[k], "")
	}
	if cfg[ownership.KeyDependsOn] != "" && dependsOnValue(a.app) == "" {
		// spec.dependsOn was dropped: the record of it goes, or a later
		// removal would still wait for the apps it named.
		labels = append(labels, Reason{Field: ownership.KeyDependsOn, Old: cfg[ownership.KeyDependsOn], New: ""})
	}
	if sys.Provision == nil && cfg[ownership.KeyProvisionHash] != "" {
		// The provision was dropped from the spec: its record goes (a
		// pending one would keep the replica unready for ever).
		labels = append(labels, Reason{Field: ownership.KeyProvisionHash, Old: cfg[ownership.KeyProvisionHash], New: ""})
	}
	update = append(update, a.volUpdate...)
	slices.SortStableFunc(update, func(x, y Reason) int { return cmp.Compare(x.Field, y.Field) })
	if len(recreate) == 0 && len(update) == 0 {
		update = labels
	}
	return recreate, update
}

// configField names a config key in spec terms.
func configField(key string) string {
	switch {
	case key == spec.KeyLimitsCPU:
		return "system.limits.cpu"
	case key == spec.KeyLimitsMemory:
		return "system.limits.memory"
	case key == spec.KeyCloudInitUser:
		return "system.cloudInit"
	case strings.HasPrefix(key, ownership.KeyPrefix):
		return key
	}
	return "system.config." + key
}

func devicesEqual(a, b map[string]map[string]string) bool {
	return maps.EqualFunc(a, b, func(x, y map[string]string) bool { return maps.Equal(x, y) })
}

// formatDevice writes a device as sorted key=value pairs.
func formatDevice(d map[string]string) string {
	if d == nil {
		return ""
	}
	keys := slices.Sorted(maps.Keys(d))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + d[k]
	}
	return strings.Join(parts, ",")
}

// planPrune deletes the replicas of apps that are gone from Git, unless a
// guard says this revision cannot be trusted to mean it. The share guard
// counts the replicas that scale-downs delete too: "replicas: 0" on every
// app deletes the fleet as surely as removing the apps does, so past the
// share neither runs.
func (pl *planner) planPrune() {
	var gone []string
	pruned := 0
	for app, slots := range pl.owned {
		if _, ok := pl.apps[app]; ok || pl.held[app] {
			continue
		}
		gone = append(gone, app)
		pruned += len(slots)
	}
	slices.Sort(gone)
	why := Reason{Field: "app", Old: "present", New: "absent"}
	// The volumes of removed apps that policy deletes: those of their
	// replicas' slots, and those left without an instance.
	var prunes []Step
	for _, app := range pl.goneVolumeApps() {
		if _, wait := pl.removalBlocker(app); wait != "" {
			continue // with its replicas, after its dependents
		}
		prunes = append(prunes, pl.orphanDeletes(app, 0, nil, true, why)...)
	}
	for _, app := range gone {
		for _, r := range pl.owned[app] {
			for _, v := range pl.deletedVolumes(app, r.slot, nil, true) {
				if v.Delete {
					pruned++
				}
			}
		}
	}
	pruned += deletedVolumeCount(prunes)
	if pl.desired.PruneBlocked != "" {
		pl.plan.PruneBlocked = pl.desired.PruneBlocked
		gone, pruned, prunes = nil, 0, nil
	}
	// Every delete planned so far is a scale-down: apps are planned first.
	scaled := deletedVolumeCount(pl.plan.Steps)
	for _, s := range pl.plan.Steps {
		if s.Action == Delete && pl.lookup(s.Instance) != nil {
			scaled++
		}
	}
	if why := pl.massDelete(pruned, scaled); why != "" {
		if pl.plan.PruneBlocked != "" {
			why = pl.plan.PruneBlocked + "; " + why
		}
		pl.plan.PruneBlocked = why
		pl.plan.Steps = slices.DeleteFunc(pl.plan.Steps, func(s Step) bool { return s.Action == Delete })
		return
	}
	for _, app := range gone {
		if on, wait := pl.removalBlocker(app); wait != "" {
			pl.plan.Blocked = append(pl.plan.Blocked, Blocked{App: app, Why: wait, Steps: len(pl.owned[app]), On: on})
			continue
		}
		pl.deleteAll(slices.Clone(pl.owned[app]), 1, why)
	}
	pl.addSteps(prunes, 1)
}

// goneVolumeApps are the apps, sorted, that own volumes but are neither
// in this revision nor held.
func (pl *planner) goneVolumeApps() []string {
	var out []string
	for _, v := range pl.vols.owned {
		app := v.Config[ownership.KeyApp]
		if _, ok := pl.apps[app]; ok || pl.held[app] || app == "" {
			continue
		}
		out = append(out, app)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// massDelete says why deleting pruned replicas of removed apps and scaled
// replicas of scale-downs in one plan is refused, or "" when it may go on.
func (pl *planner) massDelete(pruned, scaled int) string {
	total := pruned + scaled
	switch {
	case total == 0, pl.policy.AllowMassPrune:
		return ""
	case pruned > 0 && len(pl.desired.Apps) == 0 && len(pl.desired.HeldApps) == 0:
		return fmt.Sprintf("revision has no apps: refusing to delete all %d owned instances (allow mass prune to do it)", pruned)
	case float64(total) <= pl.policy.MaxPruneFraction*float64(pl.nOwned+len(pl.vols.owned)):
		return ""
	}
	owned, what := pl.nOwned, "owned instances"
	if len(pl.vols.owned) > 0 {
		owned, what = pl.nOwned+len(pl.vols.owned), "owned instances and volumes"
	}
	if scaled == 0 {
		return fmt.Sprintf("pruning would delete %d of %d %s, more than the %g%% allowed (allow mass prune to do it)",
			total, owned, what, pl.policy.MaxPruneFraction*100)
	}
	return fmt.Sprintf("pruning and scaling down would delete %d of %d %s (%d by scaling down), more than the %g%% allowed (allow mass prune to do it)",
		total, owned, what, scaled, pl.policy.MaxPruneFraction*100)
}

func (pl *planner) finish() {
	// Apps were planned in name order, prunes after them; a stable sort by
	// app keeps each app's batch and slot order.
	slices.SortStableFunc(pl.plan.Steps, func(x, y Step) int { return cmp.Compare(x.App, y.App) })
	slices.SortStableFunc(pl.plan.Blocked, func(x, y Blocked) int { return cmp.Compare(x.App, y.App) })
	slices.Sort(pl.warnings)
	pl.plan.Warnings = slices.Compact(pl.warnings)
	pl.plan.ObservedFingerprint = fingerprint(pl.instances, pl.policy.Owner, pl.plan.wantedNames(), pl.memberList, pl.imageList)
}
