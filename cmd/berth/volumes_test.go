package main

import (
	"strings"
	"testing"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
	"github.com/berth-gitops/berth/spec"
)

func TestWriteVolumes(t *testing.T) {
	var b strings.Builder
	rows := []volumeRow{
		{App: "kv", Volume: "data", Slot: 1, Name: "kv-data-1", Pool: "default", Size: "1GiB", Used: 3 << 20, State: "retained"},
		{App: "kv", Volume: "data", Slot: 0, Name: "kv-data-0", Pool: "default", Size: "1GiB", Used: 1536 << 20, AttachedTo: []string{"kv-0"}, State: "attached", Snapshots: []string{"berth-aaa", "berth-bbb"}},
		{App: "gone\x1b[2J", Volume: "data", Slot: 0, Name: "gone-data-0", Pool: "default", State: "orphaned"},
	}
	if err := writeVolumes(&b, rows); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"APP  SLOT  VOLUME       POOL     SIZE  USED    ATTACHED TO  STATE     SNAPSHOTS",
		`gone\x1b[2J  0     gone-data-0  default  -     0B      -            orphaned  0`,
		"kv   0     kv-data-0    default  1GiB  1.5GiB  kv-0         attached  2 (last berth-bbb)",
		"kv   1     kv-data-1    default  1GiB  3MiB    -            retained  0",
	}
	got := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(got) != len(want) {
		t.Fatalf("got\n%s", b.String())
	}
	for i := range want {
		if strings.Join(strings.Fields(got[i]), " ") != strings.Join(strings.Fields(want[i]), " ") {
			t.Errorf("line %d: %q, want %q", i, got[i], want[i])
		}
	}
	b.Reset()
	if _ = writeVolumes(&b, nil); b.String() != "No volumes.\n" {
		t.Errorf("empty: %q", b.String())
	}
}

// restoreWorld is kv with 2 replicas converged, each with its volume
// "data" attached.
func restoreWorld() (plan.Desired, plan.Observed) {
	a := plantest.App("kv", 2, 1, "reg/kv:1")
	a.Spec.System.Volumes = []spec.SystemVolume{{Name: "data", Path: "/srv/data", Size: "1GiB", OnScaleDown: spec.VolumeRetain, OnAppDelete: spec.VolumeRetain}}
	obs := plantest.Converged(a)
	for i := range obs.Instances {
		name := ownership.VolumeName("kv", "data", i)
		obs.Instances[i].Devices = map[string]map[string]string{spec.VolumeDevicePrefix + "data": {"type": "disk", "pool": "default", "source": name, "path": "/srv/data"}}
		cfg := ownership.Volume{Owner: plan.DefaultOwner, App: "kv", Name: "data", Slot: i, OnAppDelete: spec.VolumeRetain}.Config()
		cfg["size"] = "1GiB"
		obs.Volumes = append(obs.Volumes, plan.Volume{Name: name, Pool: "default", Config: cfg, AttachedTo: []string{obs.Instances[i].Name}})
	}
	return plan.Desired{Revision: "0123456789abcdef", Apps: []spec.App{a}}, obs
}

// A restore finds the replica, its app's spec and its volume, and refuses
// before touching anything a replica, volume or app that is not there, a
// volume on another instance, and a replica with changes pending.
func TestRestoreTarget(t *testing.T) {
	desired, obs := restoreWorld()
	if pl := plan.MakePlan(desired, obs, plan.Policy{}); !pl.Empty() {
		t.Fatalf("the world is not converged:\n%s", pl.Text())
	}
	r, err := restoreTarget(desired, obs, plan.Policy{Owner: plan.DefaultOwner}, "kv-1", "data")
	if err != nil || r.Instance.Name != "kv-1" || r.Slot != 1 || r.Volume.Name != "kv-data-1" || r.Volume.Pool != "default" || r.App.Metadata.Name != "kv" {
		t.Fatalf("kv-1 data: %+v, %v", r, err)
	}
	for _, tc := range []struct {
		name, replica, volume, want string
		change                      func(*plan.Desired, *plan.Observed)
	}{
		{name: "unknown replica", replica: "kv-7", volume: "data", want: `replica "kv-7": owner "berth" has no instance of that name`},
		{name: "unknown volume", replica: "kv-1", volume: "logs", want: `volume "logs": app kv has no such volume in system.volumes (it has: data)`},
		{name: "app not in the repository", replica: "kv-1", volume: "data", want: "replica kv-1: app kv is not in the repository at 0123456789ab",
			change: func(d *plan.Desired, _ *plan.Observed) { d.Apps = nil }},
		{name: "volume gone", replica: "kv-1", volume: "data", want: "volume kv-data-1 of kv-1 is not there",
			change: func(_ *plan.Desired, o *plan.Observed) { o.Volumes = o.Volumes[:1] }},
		{name: "volume on another instance", replica: "kv-1", volume: "data", want: "volume kv-data-1 is attached to kv-0, not to kv-1 alone",
			change: func(_ *plan.Desired, o *plan.Observed) { o.Volumes[1].AttachedTo = []string{"kv-0"} }},
		{name: "changes pending", replica: "kv-1", volume: "data", want: "replica kv-1 has changes pending in the repository (recreate): apply first",
			change: func(d *plan.Desired, _ *plan.Observed) { d.Apps[0].Spec.System.CloudInit = "#cloud-config\n" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, o := restoreWorld()
			if tc.change != nil {
				tc.change(&d, &o)
			}
			_, err := restoreTarget(d, o, plan.Policy{Owner: plan.DefaultOwner}, tc.replica, tc.volume)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}
