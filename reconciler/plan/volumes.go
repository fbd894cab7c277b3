package plan

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/spec"
)

// Volume is an LXD custom storage volume as observed.
type Volume struct {
	// Name is the LXD volume name; berth's are <app>-<volume>-<slot>.
	Name string `json:"name"`
	// Pool is the storage pool it is in.
	Pool string `json:"pool"`
	// Location is the cluster member that holds it on a local pool (""
	// or "none" on a single host).
	Location string `json:"location,omitempty"`
	// Config is the volume's config: size, snapshots.*, user.berth.*.
	Config map[string]string `json:"config,omitempty"`
	// AttachedTo are the instances it is attached to.
	AttachedTo []string `json:"attachedTo,omitempty"`
}

// StepVolume is one volume of the replica a step acts on.
type StepVolume struct {
	// Name is the LXD volume name, <app>-<volume>-<slot>.
	Name string `json:"name"`
	// Volume is its name in the spec ("" for a volume of a removed app
	// whose keys do not say).
	Volume string `json:"volume,omitempty"`
	// Pool is its storage pool; "" for a volume to create in the pool of
	// the instance's root disk.
	Pool string `json:"pool,omitempty"`
	// Path is where it is attached in the instance.
	Path string `json:"path,omitempty"`
	// Exists says the plan saw the volume: the executor must find it, and
	// never creates an empty one in its place.
	Exists bool `json:"exists,omitempty"`
	// Delete, on a Delete step, says the volume goes too (onScaleDown or
	// onAppDelete: delete); otherwise it is kept.
	Delete bool `json:"delete,omitempty"`
}

// Device is the disk device that attaches the volume at its path.
func (v StepVolume) Device() map[string]string {
	d := map[string]string{"type": "disk", "source": v.Name, "path": v.Path}
	if v.Pool != "" {
		d["pool"] = v.Pool
	}
	return d
}

// Size is the volume's size as LXD records it ("" when it has no quota).
func (v *Volume) Size() string { return v.Config["size"] }

// volumeIndex is the planner's view of the observed volumes.
type volumeIndex struct {
	byName map[string][]*Volume
	pools  map[string]bool // nil when pools were not observed
	owned  []*Volume       // ours, by name
}

func (pl *planner) indexVolumes(observed Observed) {
	pl.vols.byName = make(map[string][]*Volume, len(observed.Volumes))
	for i := range observed.Volumes {
		v := &observed.Volumes[i]
		pl.vols.byName[v.Name] = append(pl.vols.byName[v.Name], v)
		if v.Config[ownership.KeyOwner] == pl.policy.Owner {
			pl.vols.owned = append(pl.vols.owned, v)
		}
	}
	slices.SortFunc(pl.vols.owned, func(a, b *Volume) int {
		return strings.Compare(a.Name+"\x00"+a.Pool, b.Name+"\x00"+b.Pool)
	})
	if observed.Pools != nil {
		pl.vols.pools = make(map[string]bool, len(observed.Pools))
		for _, p := range observed.Pools {
			pl.vols.pools[p] = true
		}
	}
}

// slotVolumes works out the volumes of one slot of an app: what a step
// attaches, the in-place changes they need (a larger size, snapshot
// settings), and, when a volume is in a state berth must not act on, the
// conflict that halts the replica this run ("" when there is none).
func (pl *planner) slotVolumes(a *appPlan, slot int, inst *Instance) (vols []StepVolume, update []Reason, halt string) {
	instName := ownership.InstanceName(a.name, slot)
	for i, sv := range a.app.Spec.System.Volumes {
		name := ownership.VolumeName(a.name, sv.Name, slot)
		field := fmt.Sprintf("system.volumes[%d]", i)
		if sv.Pool != "" && pl.vols.pools != nil && !pl.vols.pools[sv.Pool] {
			return nil, nil, fmt.Sprintf("%s.pool: storage pool %q does not exist (pools: %s); volume %s cannot be created", field, sv.Pool, strings.Join(slices.Sorted(maps.Keys(pl.vols.pools)), ", "), name)
		}
		var found []*Volume
		for _, v := range pl.vols.byName[name] {
			if sv.Pool == "" || v.Pool == sv.Pool {
				found = append(found, v)
			}
		}
		sv := StepVolume{Name: name, Volume: sv.Name, Pool: sv.Pool, Path: sv.Path}
		switch len(found) {
		case 0:
			if inst != nil && inst.Devices[spec.VolumeDevicePrefix+sv.Volume]["source"] == name {
				return nil, nil, fmt.Sprintf("volume %s is missing, and %s had it attached: berth does not put an empty volume where data was expected; restore the volume, or delete the instance to start the slot afresh", name, instName)
			}
		case 1:
			v := found[0]
			if msg := pl.volumeConflict(v, a.name, sv.Volume, slot, instName); msg != "" {
				return nil, nil, msg
			}
			r, msg := volumeUpdates(field, v, a.app.Spec.System.Volumes[i])
			if msg != "" {
				return nil, nil, msg
			}
			update = append(update, r...)
			sv.Pool, sv.Exists = v.Pool, true
		default:
			pools := make([]string, len(found))
			for j, v := range found {
				pools[j] = v.Pool
			}
			return nil, nil, fmt.Sprintf("volume %s exists in several pools (%s); set %s.pool to say which", name, strings.Join(pools, ", "), field)
		}
		vols = append(vols, sv)
	}
	return vols, update, ""
}

// volumeConflict says why v may not be the slot's volume: it is not
// berth's, its keys name another slot, or another instance has it.
func (pl *planner) volumeConflict(v *Volume, app, volume string, slot int, instName string) string {
	owner := v.Config[ownership.KeyOwner]
	switch {
	case owner == "":
		return fmt.Sprintf("volume %s (pool %s) exists and is not managed by berth: it is never attached; rename or delete it, or rename the volume in the spec", v.Name, v.Pool)
	case owner != pl.policy.Owner:
		return fmt.Sprintf("volume %s (pool %s) is owned by %s", v.Name, v.Pool, owner)
	}
	if got, err := ownership.ParseVolume(v.Name, v.Config); err != nil || got.App != app || got.Name != volume || got.Slot != slot {
		return fmt.Sprintf("volume %s (pool %s) is owned by %s but its keys say app %q volume %q slot %q", v.Name, v.Pool, owner, v.Config[ownership.KeyApp], v.Config[ownership.KeyVolume], v.Config[ownership.KeySlot])
	}
	for _, other := range v.AttachedTo {
		if other != instName {
			return fmt.Sprintf("volume %s is attached to %s: berth attaches a volume to one instance only; detach it there first", v.Name, other)
		}
	}
	return ""
}

// volumeUpdates are the in-place changes that bring volume v to the spec:
// a larger size, the snapshot settings, the recorded onAppDelete. A
// smaller size is refused (msg): LXD cannot shrink every filesystem, and a
// shrink below what is stored loses data.
func volumeUpdates(field string, v *Volume, sv spec.SystemVolume) (update []Reason, msg string) {
	have, want := spec.VolumeBytes(v.Size()), spec.VolumeBytes(sv.Size)
	switch {
	case v.Size() == sv.Size:
	case have > want && want > 0:
		return nil, fmt.Sprintf("%s.size: volume %s is %s and the spec asks %s: volumes only grow; put the size back to %s or more", field, v.Name, v.Size(), sv.Size, v.Size())
	case have != want || v.Size() == "":
		update = append(update, Reason{Field: field + ".size", Old: v.Size(), New: sv.Size})
	}
	var sched, expiry string
	if sv.Snapshots != nil {
		sched, expiry = sv.Snapshots.Schedule, sv.Snapshots.Expiry
	}
	for _, kv := range [][3]string{
		{"snapshots.schedule", ".snapshots.schedule", sched},
		{"snapshots.expiry", ".snapshots.expiry", expiry},
		{ownership.KeyOnAppDelete, ".onAppDelete", sv.OnAppDelete},
	} {
		if got := v.Config[kv[0]]; got != kv[2] {
			update = append(update, Reason{Field: field + kv[1], Old: got, New: kv[2]})
		}
	}
	return update, ""
}

// WantDevices are the local devices the replica should have: the spec's
// and a disk for each of its volumes. The executor creates instances with
// them.
func WantDevices(sys *spec.System, vols []StepVolume) map[string]map[string]string {
	if len(vols) == 0 {
		return sys.Devices
	}
	out := make(map[string]map[string]string, len(sys.Devices)+len(vols))
	maps.Copy(out, sys.Devices)
	for _, v := range vols {
		out[spec.VolumeDevicePrefix+v.Volume] = v.Device()
	}
	return out
}

// unvolumedWarning names, for a step that recreates inst, the app
// container's volume sources that lie on no declared volume: their data
// lives in the instance, and the recreate deletes it.
func unvolumedWarning(app *spec.App, inst string) string {
	var lost []string
	for _, v := range app.Spec.Container.Volumes {
		if _, ok := app.Spec.System.VolumeFor(v.Source); !ok {
			lost = append(lost, v.Source)
		}
	}
	if len(lost) == 0 {
		return ""
	}
	return fmt.Sprintf("%s: recreate deletes %s (not on a volume)", inst, strings.Join(lost, ", "))
}

// deletedVolumes are the volumes of app's slot that a Delete step keeps
// or deletes: for a scale-down the spec's onScaleDown says (sv), for a
// removed app (sv nil) each volume's recorded onAppDelete.
func (pl *planner) deletedVolumes(app string, slot int, specVols []spec.SystemVolume, removed bool) []StepVolume {
	var out []StepVolume
	for _, v := range pl.vols.owned {
		got, err := ownership.ParseVolume(v.Name, v.Config)
		if err != nil || got.App != app || got.Slot != slot {
			continue
		}
		del := got.OnAppDelete == spec.VolumeDelete
		if !removed {
			del = false
			for _, sv := range specVols {
				if sv.Name == got.Name {
					del = sv.OnScaleDown == spec.VolumeDelete
				}
			}
		}
		out = append(out, StepVolume{Name: v.Name, Volume: got.Name, Pool: v.Pool, Exists: true, Delete: del})
	}
	return out
}

// orphanDeletes are Delete steps for the owned volumes of app whose slot
// has no instance and that policy deletes: a slot scaled away (slot >=
// replicas) or an app removed (removed). A kill between an instance's
// delete and its volumes' leaves these behind.
func (pl *planner) orphanDeletes(app string, replicas int, specVols []spec.SystemVolume, removed bool, why Reason) []Step {
	slots := map[int]bool{}
	for _, r := range pl.owned[app] {
		slots[r.slot] = true
	}
	var out []Step
	seen := map[int]bool{}
	for _, v := range pl.vols.owned {
		got, err := ownership.ParseVolume(v.Name, v.Config)
		if err != nil || got.App != app || got.Slot < replicas || slots[got.Slot] || seen[got.Slot] {
			continue
		}
		vols := pl.deletedVolumes(app, got.Slot, specVols, removed)
		if !slices.ContainsFunc(vols, func(v StepVolume) bool { return v.Delete }) {
			continue
		}
		seen[got.Slot] = true
		out = append(out, Step{App: app, Slot: got.Slot, Instance: ownership.InstanceName(app, got.Slot), Action: Delete, Reasons: []Reason{why}, Volumes: vols})
	}
	slices.SortFunc(out, func(x, y Step) int { return y.Slot - x.Slot })
	return out
}

// deletedVolumeCount is how many volumes the plan's Delete steps delete:
// they count against the prune guard as instances do.
func deletedVolumeCount(steps []Step) int {
	n := 0
	for _, s := range steps {
		if s.Action != Delete {
			continue
		}
		for _, v := range s.Volumes {
			if v.Delete {
				n++
			}
		}
	}
	return n
}

// VolumeSummary is "web-data-0 (pool default, 1GiB)" for people.
func (v StepVolume) String() string {
	s := v.Name
	if v.Pool != "" {
		s += " (pool " + v.Pool + ")"
	}
	return s
}

// volumesFor sets a.slotVols and a.volUpdate for the slot, or records the
// conflict that halts the replica and reports false.
func (pl *planner) volumesFor(a *appPlan, slot int, inst *Instance) bool {
	a.slotVols, a.volUpdate = nil, nil
	if len(a.app.Spec.System.Volumes) == 0 {
		return true
	}
	vols, update, halt := pl.slotVolumes(a, slot, inst)
	if halt != "" {
		pl.plan.Conflicts = append(pl.plan.Conflicts, Conflict{Instance: ownership.InstanceName(a.name, slot), App: a.name, Message: halt})
		return false
	}
	a.slotVols, a.volUpdate = vols, update
	return true
}
