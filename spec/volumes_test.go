package spec

import (
	"strings"
	"testing"
)

const volumesApp = `apiVersion: berth/v1
kind: App
metadata: {name: db}
spec:
  replicas: 2
  system:
    image: berth/debian-docker
    volumes: %s
  container:
    image: berth/kv:1
    volumes: [{source: /srv/data/kv, target: /data}]
`

func TestVolumesDecode(t *testing.T) {
	r := mustLoadBytes(t, strings.Replace(volumesApp, "%s",
		`[{name: data, path: /srv/data, size: 1GiB, snapshots: {schedule: "@daily", expiry: 7d}}, {name: logs, path: /var/log/app, size: 1073741824, pool: fast, onScaleDown: delete, onAppDelete: delete}]`, 1), Options{})
	if len(r.Apps) != 1 {
		t.Fatalf("%v", r.Diagnostics)
	}
	vs := r.Apps[0].Spec.System.Volumes
	want := []SystemVolume{
		{Name: "data", Path: "/srv/data", Size: "1GiB", Snapshots: &VolumeSnapshots{Schedule: "@daily", Expiry: "7d"}, OnScaleDown: VolumeRetain, OnAppDelete: VolumeRetain},
		{Name: "logs", Path: "/var/log/app", Size: "1073741824", Pool: "fast", OnScaleDown: VolumeDelete, OnAppDelete: VolumeDelete},
	}
	if len(vs) != 2 || vs[0].Name != want[0].Name || *vs[0].Snapshots != *want[0].Snapshots || vs[0].OnScaleDown != "retain" || vs[1] != want[1] {
		t.Fatalf("volumes %+v", vs)
	}
	if v, ok := r.Apps[0].Spec.System.VolumeFor("/srv/data/kv"); !ok || v.Name != "data" {
		t.Errorf("VolumeFor(/srv/data/kv) = %v %v", v, ok)
	}
	if _, ok := r.Apps[0].Spec.System.VolumeFor("/srv/database"); ok {
		t.Error("/srv/database is not under /srv/data")
	}
	if VolumeBytes("1GiB") != 1<<30 || VolumeBytes("2GB") != 2e9 || VolumeBytes("x") != 0 {
		t.Error("VolumeBytes")
	}
}

// Size, snapshots and retention change the volume in place, never the
// instance: they stay out of the system hash. Name, path and pool are the
// instance's devices.
func TestVolumesHash(t *testing.T) {
	hash := func(vols string) string {
		t.Helper()
		r := mustLoadBytes(t, strings.Replace(volumesApp, "%s", vols, 1), Options{})
		if len(r.Apps) != 1 {
			t.Fatalf("%s: %v", vols, r.Diagnostics)
		}
		return r.Apps[0].Spec.System.Hash()
	}
	base := hash(`[{name: data, path: /srv/data, size: 1GiB}]`)
	for _, same := range []string{
		`[{name: data, path: /srv/data, size: 5GiB}]`,
		`[{name: data, path: /srv/data, size: 1GiB, snapshots: {schedule: "@hourly"}, onScaleDown: delete, onAppDelete: delete}]`,
	} {
		if hash(same) != base {
			t.Errorf("%s changes the system hash", same)
		}
	}
	for _, other := range []string{
		`[{name: db, path: /srv/data, size: 1GiB}]`,
		`[{name: data, path: /srv/db, size: 1GiB}]`,
		`[{name: data, path: /srv/data, size: 1GiB, pool: fast}]`,
		`[]`,
	} {
		if hash(other) == base {
			t.Errorf("%s keeps the system hash", other)
		}
	}
}

func TestVolumesRules(t *testing.T) {
	for value, want := range map[string]string{
		`[{name: data, path: /, size: 1GiB}]`:                                                           `cannot be mounted at "/"`,
		`[{name: data, path: /etc, size: 1GiB}]`:                                                        `it is in the system folder /etc`,
		`[{name: data, path: /proc/x, size: 1GiB}]`:                                                     `it is in the system folder /proc`,
		`[{name: data, path: /dev, size: 1GiB}]`:                                                        `system folder /dev`,
		`[{name: data, path: /sys, size: 1GiB}]`:                                                        `system folder /sys`,
		`[{name: data, path: /run/x, size: 1GiB}]`:                                                      `system folder /run`,
		`[{name: data, path: /boot, size: 1GiB}]`:                                                       `system folder /boot`,
		`[{name: data, path: srv, size: 1GiB}]`:                                                         `must be an absolute path`,
		`[{name: data, path: /srv/../etc, size: 1GiB}]`:                                                 `must be a clean path`,
		`[{name: data, path: /srv/, size: 1GiB}]`:                                                       `write "/srv"`,
		`[{name: Data, path: /srv, size: 1GiB}]`:                                                        `"Data" is not a valid volume name`,
		`[{name: "a_b", path: /srv, size: 1GiB}]`:                                                       `is not a valid volume name`,
		`[{name: "../x", path: /srv, size: 1GiB}]`:                                                      `is not a valid volume name`,
		`[{name: d, path: /a, size: 1GiB}, {name: d, path: /b, size: 1GiB}]`:                            `volume name "d" is already used by volumes[0]`,
		`[{name: a, path: /srv, size: 1GiB}, {name: b, path: /srv/x, size: 1GiB}]`:                      `overlaps volumes[0]`,
		`[{name: a, path: /srv, size: 1GiB}, {name: b, path: /srv, size: 1GiB}]`:                        `overlaps volumes[0]`,
		`[{name: data, path: /srv, size: 0}]`:                                                           `volume size must be more than 0`,
		`[{name: data, path: /srv, size: 2PiB}]`:                                                        `too large: at most 1PiB`,
		`[{name: data, path: /srv, size: 50%}]`:                                                         `volume size must be a size like`,
		`[{name: data, path: /srv, size: -1}]`:                                                          `expected a string, got integer -1`,
		`[{name: data, path: /srv, size: 1 GiB}]`:                                                       `volume size must be a size like`,
		`[{name: data, path: /srv}]`:                                                                    `spec.system.volumes[0].size: required field is missing`,
		`[{name: data, path: /srv, size: 1GiB, pool: "a/b"}]`:                                           `is not a valid storage pool name`,
		`[{name: data, path: /srv, size: 1GiB, onScaleDown: drop}]`:                                     `must be "retain" or "delete"`,
		`[{name: data, path: /srv, size: 1GiB, snapshots: {expiry: 7 days}}]`:                           `snapshot expiry must be LXD's form`,
		`[{name: data, path: /srv, size: 1GiB, snapshots: {schedule: "every day"}}]`:                    `snapshot schedule must be a cron line`,
		`[{name: data, path: /srv, size: 1GiB, snapshots: {when: daily}}]`:                              `when`,
		`[{name: a-very-long-volume-name-that-is-too-long-for-lxd-xxxxxxxxxx, path: /srv, size: 1GiB}]`: `at most 63 are allowed`,
	} {
		r := mustLoadBytes(t, strings.Replace(volumesApp, "%s", value, 1), Options{})
		if len(r.Apps) != 0 || !strings.Contains(r.Diagnostics.Error(), want) {
			t.Errorf("%s: want a problem with %q, got %v", value, want, r.Diagnostics)
		}
	}
}

func TestVolumesClashWithDevices(t *testing.T) {
	app := func(devices string) string {
		return strings.Replace(volumesApp, "    volumes: %s\n", "    volumes: [{name: data, path: /srv/data, size: 1GiB}]\n    devices: "+devices+"\n", 1)
	}
	for devices, want := range map[string]string{
		`{berth-volume-data: {type: disk, source: /x, path: /y}}`: "has the name of the volume's own device",
		`{extra: {type: disk, source: /x, path: /srv/data}}`:      "is a disk at the same path /srv/data",
		`{berth-volume-x: {type: disk, source: /x, path: /y}}`:    "reserved for system.volumes",
	} {
		r := mustLoadBytes(t, app(devices), Options{})
		if len(r.Apps) != 0 || !strings.Contains(r.Diagnostics.Error(), want) {
			t.Errorf("%s: want a problem with %q, got %v", devices, want, r.Diagnostics)
		}
	}
}
