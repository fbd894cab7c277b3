package reconciler

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
	"github.com/berth-gitops/berth/spec"
)

func volumeApp(replicas int, cloudInit string) spec.App {
	a := plantest.App("kv", replicas, 1, "reg/kv:1")
	a.Spec.System.CloudInit = cloudInit
	a.Spec.System.Volumes = []spec.SystemVolume{{Name: "data", Path: "/srv/data", Size: "1GiB", OnScaleDown: spec.VolumeDelete, OnAppDelete: spec.VolumeRetain}}
	return a
}

// volumeWorld is kv converged with its volume attached.
func volumeWorld(a spec.App) plan.Observed {
	obs := plantest.Converged(a)
	for i := range obs.Instances {
		name := ownership.VolumeName("kv", "data", i)
		obs.Instances[i].Devices = map[string]map[string]string{"berth-volume-data": {"type": "disk", "pool": "default", "source": name, "path": "/srv/data"}}
		cfg := ownership.Volume{Owner: plan.DefaultOwner, App: "kv", Name: "data", Slot: i, OnAppDelete: spec.VolumeRetain}.Config()
		cfg["size"] = "1GiB"
		obs.Volumes = append(obs.Volumes, plan.Volume{Name: name, Pool: "default", Config: cfg, AttachedTo: []string{obs.Instances[i].Name}})
	}
	return obs
}

// A stateful recreate stops the old instance, snapshots its volume, and
// only then deletes it; the new instance is created with the volume.
func TestApplyStatefulRecreateOrder(t *testing.T) {
	old := volumeApp(1, "")
	now := volumeApp(1, "#cloud-config\n")
	f := newFakeDriver()
	ex := &Executor{Driver: f, Drainer: recDrainer{f}}
	desired := plan.Desired{Revision: "0123456789abcdef0123", Apps: []spec.App{now}}
	obs := volumeWorld(old)
	pl := plan.MakePlan(desired, obs, plan.Policy{})
	if len(pl.Steps) != 1 || pl.Steps[0].Action != plan.Recreate {
		t.Fatalf("plan %s", pl.Text())
	}
	res := ex.Apply(context.Background(), pl, desired, obs)
	if !res.OK() {
		t.Fatalf("result %+v", res)
	}
	want := []string{"drain kv-0", "preflight kv", "stop kv-0", "snapshot-volumes kv-data-0@berth-0123456789ab", "delete(backup=false) kv-0", "ensure-volumes kv-0", "create kv-0", "ensure kv-0", "ready kv-0"}
	if got := f.calls; len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		t.Fatalf("calls %q\nwant them to start with %q", got, want)
	}
}

// A scale-down deletes the instance, then the volumes policy deletes.
func TestApplyScaleDownDeletesVolumesByPolicy(t *testing.T) {
	f := newFakeDriver()
	desired := plan.Desired{Revision: "r2", Apps: []spec.App{volumeApp(1, "")}}
	obs := volumeWorld(volumeApp(2, ""))
	pl := plan.MakePlan(desired, obs, plan.Policy{AllowMassPrune: true})
	res := (&Executor{Driver: f}).Apply(context.Background(), pl, desired, obs)
	if !res.OK() || !slices.Equal(f.calls, []string{"delete(backup=false) kv-1", "delete-volume kv-data-1"}) {
		t.Fatalf("plan %s\ncalls %q", pl.Text(), f.calls)
	}
}

// restoreDriver is the fake driver that can also restore volumes.
type restoreDriver struct{ *fakeDriver }

func (d restoreDriver) RestoreVolume(_ context.Context, v plan.StepVolume, snap string) error {
	return d.record("restore-volume", v.Name+"@"+snap)
}

// A restore drains and stops the replica, rolls the volume back, starts
// it and waits through the health gate; a restore that fails still starts
// the replica again, and says so.
func TestRestoreVolume(t *testing.T) {
	a := volumeApp(1, "")
	obs := volumeWorld(a)
	r := Restore{Instance: &obs.Instances[0], App: a, Slot: 0, Revision: "r1",
		Volume: plan.StepVolume{Name: "kv-data-0", Volume: "data", Pool: "default", Exists: true}, Snapshot: "berth-abc"}
	for _, tc := range []struct {
		name, fail, wantErr string
		want                []string
	}{
		{name: "ok", want: []string{"drain kv-0", "stop kv-0", "restore-volume kv-data-0@berth-abc", "start kv-0", "ensure kv-0", "ready kv-0", "undrain(ready=false) kv-0"}},
		{name: "restore fails", fail: "restore-volume kv-data-0@berth-abc",
			wantErr: "restore kv-data-0 to berth-abc (the volume keeps its data; kv-0 is started again): boom",
			want:    []string{"drain kv-0", "stop kv-0", "restore-volume kv-data-0@berth-abc", "start kv-0", "ensure kv-0", "ready kv-0", "undrain(ready=false) kv-0"}},
		{name: "stop fails", fail: "stop kv-0", wantErr: "stopping kv-0 before the restore (nothing restored): boom",
			want: []string{"drain kv-0", "stop kv-0", "undrain(ready=false) kv-0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeDriver()
			if tc.fail != "" {
				f.fail[tc.fail] = errors.New("boom")
			}
			err := (&Executor{Driver: restoreDriver{f}, Drainer: recDrainer{f}}).RestoreVolume(context.Background(), r)
			if (err == nil) != (tc.wantErr == "") || err != nil && err.Error() != tc.wantErr {
				t.Errorf("err %v, want %q", err, tc.wantErr)
			}
			if !slices.Equal(f.calls, tc.want) {
				t.Errorf("calls %q\nwant %q", f.calls, tc.want)
			}
		})
	}
	if err := (&Executor{Driver: newFakeDriver()}).RestoreVolume(context.Background(), r); err == nil {
		t.Error("a driver that cannot restore restored")
	}
}

// The loop's retained-volume gauges: every app has an entry, so an app
// whose volumes were brought back falls back to 0.
func TestRetainedVolumesMetrics(t *testing.T) {
	st := plan.Status{Apps: []plan.AppStatusView{
		{App: "kv", RetainedVolumes: []plan.VolumeView{{Name: "kv-data-1", Bytes: 1 << 30}, {Name: "kv-data-2", Bytes: 2 << 30}}},
		{App: "web"},
	}}
	counts, bytes := retainedVolumes(st)
	if !maps.Equal(counts, map[string]int{"kv": 2, "web": 0}) || !maps.Equal(bytes, map[string]uint64{"kv": 3 << 30, "web": 0}) {
		t.Errorf("counts %v, bytes %v", counts, bytes)
	}
}

// A recreate's snapshot is one per recreate: the same name when a killed
// run does it again (same old instance), a new one for a later recreate
// at the same revision (a base-image refresh, no commit).
func TestVolumeSnapshotNameIsOnePerRecreate(t *testing.T) {
	rev := "0123456789abcdef0123456789abcdef01234567"
	a := VolumeSnapshotName(rev, "5c3e1f2a-0d1b-4e7c-9a6b-1c2d3e4f5a6b")
	if a != "berth-0123456789ab-5c3e1f2a" || a != VolumeSnapshotName(rev, "5c3e1f2a-0d1b-4e7c-9a6b-1c2d3e4f5a6b") {
		t.Errorf("snapshot name %q", a)
	}
	if b := VolumeSnapshotName(rev, "77aa0000-0000-0000-0000-000000000000"); b == a {
		t.Errorf("a later recreate at the same revision reuses %q", b)
	}
	if got := VolumeSnapshotName("", ""); got != "berth-norev" {
		t.Errorf("no revision, no instance: %q", got)
	}
}
