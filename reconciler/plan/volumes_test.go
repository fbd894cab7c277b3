package plan

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/spec"
)

// volApp is testApp with one volume at /srv/data and the container's
// /srv/data/kv on it.
func volApp(replicas int) spec.App {
	a := testApp("db", replicas)
	a.Spec.System.Volumes = []spec.SystemVolume{{Name: "data", Path: "/srv/data", Size: "1GiB", OnScaleDown: spec.VolumeRetain, OnAppDelete: spec.VolumeRetain}}
	a.Spec.Container.Volumes = []spec.Volume{{Source: "/srv/data/kv", Target: "/data"}}
	return a
}

// ownedVolume is the volume berth made for the slot of volApp.
func ownedVolume(slot int, attached bool) Volume {
	cfg := ownership.Volume{Owner: DefaultOwner, App: "db", Name: "data", Slot: slot, OnAppDelete: spec.VolumeRetain}.Config()
	cfg["size"] = "1GiB"
	v := Volume{Name: ownership.VolumeName("db", "data", slot), Pool: "default", Config: cfg}
	if attached {
		v.AttachedTo = []string{ownership.InstanceName("db", slot)}
	}
	return v
}

// volConverged is slot's replica of volApp with its volume attached.
func volConverged(a spec.App, slot int) Instance {
	inst := converged(a, slot)
	inst.Devices = map[string]map[string]string{"berth-volume-data": {"type": "disk", "pool": "default", "source": ownership.VolumeName("db", "data", slot), "path": "/srv/data"}}
	return inst
}

func volObserved(a spec.App, slots int) Observed {
	var obs Observed
	for s := range slots {
		obs.Instances = append(obs.Instances, volConverged(a, s))
		obs.Volumes = append(obs.Volumes, ownedVolume(s, true))
	}
	obs.Pools = []string{"default"}
	return obs
}

func TestVolumesConverged(t *testing.T) {
	a := volApp(2)
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{a}}, volObserved(a, 2), Policy{})
	if !p.Converged() {
		t.Fatalf("want converged, got\n%s", p.Text())
	}
}

func TestVolumesCreateAttaches(t *testing.T) {
	a := volApp(2)
	obs := volObserved(a, 1)
	// Slot 1 was scaled away earlier: its volume is kept, detached.
	obs.Volumes = append(obs.Volumes, ownedVolume(1, false))
	obs.Volumes = append(obs.Volumes, ownedVolume(2, false))
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{a}}, obs, Policy{})
	if len(p.Steps) != 1 || p.Steps[0].Action != Create || p.Steps[0].Instance != "db-1" {
		t.Fatalf("want create db-1, got\n%s", p.Text())
	}
	want := []StepVolume{{Name: "db-data-1", Volume: "data", Pool: "default", Path: "/srv/data", Exists: true}}
	if got := p.Steps[0].Volumes; len(got) != 1 || got[0] != want[0] {
		t.Fatalf("volumes %+v, want %+v", got, want)
	}
	// A fresh slot gets a new volume in the root disk's pool.
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{volApp(1)}}, Observed{Pools: []string{"default"}}, Policy{})
	if len(p.Steps) != 1 || p.Steps[0].Volumes[0] != (StepVolume{Name: "db-data-0", Volume: "data", Path: "/srv/data"}) {
		t.Fatalf("fresh slot: %+v", p.Steps)
	}
}

func TestVolumesConflicts(t *testing.T) {
	a := volApp(1)
	for name, tc := range map[string]struct {
		edit func(*Observed)
		want string
	}{
		"unowned volume of the same name": {func(o *Observed) {
			o.Instances = nil
			o.Volumes = []Volume{{Name: "db-data-0", Pool: "default", Config: map[string]string{"size": "1GiB"}}}
		}, "volume db-data-0 (pool default) exists and is not managed by berth"},
		"another owner's": {func(o *Observed) {
			o.Volumes[0].Config[ownership.KeyOwner] = "them"
		}, "is owned by them"},
		"keys of another slot": {func(o *Observed) {
			o.Volumes[0].Config[ownership.KeySlot] = "3"
		}, `its keys say app "db" volume "data" slot "3"`},
		"attached elsewhere": {func(o *Observed) {
			o.Volumes[0].AttachedTo = []string{"db-0", "intruder"}
		}, "is attached to intruder"},
		"missing once attached": {func(o *Observed) {
			o.Volumes = nil
		}, "volume db-data-0 is missing, and db-0 had it attached"},
		"no such pool": {func(o *Observed) {
			o.Instances, o.Volumes = nil, nil
			o.Pools = []string{"default", "slow"}
		}, `system.volumes[0].pool: storage pool "fast" does not exist (pools: default, slow)`},
		"shrink": {func(o *Observed) {
			o.Volumes[0].Config["size"] = "2GiB"
		}, "system.volumes[0].size: volume db-data-0 is 2GiB and the spec asks 1GiB: volumes only grow"},
	} {
		t.Run(name, func(t *testing.T) {
			app := a
			if name == "no such pool" {
				app = volApp(1)
				app.Spec.System.Volumes[0].Pool = "fast"
			}
			obs := volObserved(a, 1)
			tc.edit(&obs)
			p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{})
			if len(p.Steps) != 0 || len(p.Conflicts) != 1 || !strings.Contains(p.Conflicts[0].Message, tc.want) || p.Converged() {
				t.Fatalf("want only a conflict with %q, got\n%s", tc.want, p.Text())
			}
		})
	}
}

func TestVolumesGrowInPlace(t *testing.T) {
	a := volApp(1)
	obs := volObserved(a, 1)
	a.Spec.System.Volumes[0].Size = "2GiB"
	a.Spec.System.Volumes[0].Snapshots = &spec.VolumeSnapshots{Schedule: "@daily"}
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{a}}, obs, Policy{})
	if len(p.Steps) != 1 || p.Steps[0].Action != UpdateInPlace {
		t.Fatalf("want one update in place, got\n%s", p.Text())
	}
	text := p.Text()
	for _, want := range []string{"system.volumes[0].size: 1GiB → 2GiB", "system.volumes[0].snapshots.schedule: (unset) → @daily"} {
		if !strings.Contains(text, want) {
			t.Errorf("plan lacks %q:\n%s", want, text)
		}
	}
}

func TestVolumesRecreateMovesAndWarns(t *testing.T) {
	a := volApp(1)
	obs := volObserved(a, 1)
	a.Spec.System.CloudInit = "#cloud-config\n"
	a.Spec.Container.Volumes = append(a.Spec.Container.Volumes, spec.Volume{Source: "/srv/web", Target: "/web"})
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{a}}, obs, Policy{})
	if len(p.Steps) != 1 || p.Steps[0].Action != Recreate || len(p.Steps[0].Volumes) != 1 || !p.Steps[0].Volumes[0].Exists {
		t.Fatalf("want a recreate that moves db-data-0, got\n%s", p.Text())
	}
	want := "db-0: recreate deletes /srv/web (not on a volume)"
	if len(p.Warnings) != 1 || p.Warnings[0] != want {
		t.Fatalf("warnings %q, want %q", p.Warnings, want)
	}
	b, _ := json.Marshal(p)
	if !strings.Contains(string(b), want) || !strings.Contains(p.Text(), "* "+want) {
		t.Errorf("the warning is not in the JSON or the text")
	}
	// A volume added to a running app recreates it with the new volume.
	plain := testApp("db", 1)
	obs = Observed{Instances: []Instance{converged(plain, 0)}, Pools: []string{"default"}}
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{volApp(1)}}, obs, Policy{})
	if len(p.Steps) != 1 || p.Steps[0].Action != Recreate || p.Steps[0].Volumes[0].Exists {
		t.Fatalf("adding a volume: want a recreate creating it, got\n%s", p.Text())
	}
}

func TestVolumesScaleDownAndPrune(t *testing.T) {
	a := volApp(3)
	obs := volObserved(a, 3)
	down := volApp(1)
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{down}}, obs, Policy{AllowMassPrune: true})
	if len(p.Steps) != 2 {
		t.Fatalf("want 2 deletes, got\n%s", p.Text())
	}
	for _, s := range p.Steps {
		if s.Action != Delete || len(s.Volumes) != 1 || s.Volumes[0].Delete {
			t.Errorf("scale-down must keep the volume: %+v", s)
		}
	}
	down.Spec.System.Volumes[0].OnScaleDown = spec.VolumeDelete
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{down}}, obs, Policy{AllowMassPrune: true})
	if len(p.Steps) != 2 || !p.Steps[0].Volumes[0].Delete || p.Steps[0].Instance != "db-2" {
		t.Fatalf("onScaleDown: delete, got %+v", p.Steps)
	}
	// The prune guard counts the volumes: 2 instances and 2 volumes of 6
	// is past half; 2 instances of 6 alone would not be.
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{down}}, obs, Policy{MaxPruneFraction: 0.5})
	if len(p.Steps) != 0 || !strings.Contains(p.PruneBlocked, "would delete 4 of 6 owned instances and volumes") {
		t.Fatalf("the guard: %q\n%s", p.PruneBlocked, p.Text())
	}
	down.Spec.System.Volumes[0].OnScaleDown = spec.VolumeRetain
	if p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{down}}, obs, Policy{MaxPruneFraction: 0.5}); len(p.Steps) != 2 {
		t.Fatalf("2 of 6 is within the guard: %s", p.Text())
	}

	// App removed: volumes retained by default; with onAppDelete: delete
	// (recorded on the volume) they go, and so do detached ones.
	obs = volObserved(a, 1)
	obs.Volumes = append(obs.Volumes, ownedVolume(1, false))
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{testApp("other", 0)}}, obs, Policy{AllowMassPrune: true})
	if len(p.Steps) != 1 || p.Steps[0].Instance != "db-0" || p.Steps[0].Volumes[0].Delete {
		t.Fatalf("retain on app removal: %+v", p.Steps)
	}
	for i := range obs.Volumes {
		obs.Volumes[i].Config[ownership.KeyOnAppDelete] = spec.VolumeDelete
	}
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{testApp("other", 0)}}, obs, Policy{AllowMassPrune: true})
	if len(p.Steps) != 2 || !p.Steps[0].Volumes[0].Delete || !p.Steps[1].Volumes[0].Delete {
		t.Fatalf("delete on app removal: %s", p.Text())
	}
	p = MakePlan(Desired{Revision: testRev, Apps: []spec.App{testApp("other", 0)}}, obs, Policy{})
	if len(p.Steps) != 0 || !strings.Contains(p.PruneBlocked, "owned instances and volumes") {
		t.Fatalf("the guard: %q\n%s", p.PruneBlocked, p.Text())
	}
}
