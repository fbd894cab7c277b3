package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
)

// Stateful replicas on real LXD and Docker: berth/kv keeps its keys on a
// volume; each change is followed by reading the keys back through the
// app's own API.

// kvSpec is app (berth/kv:1) with its /data on the volume "data" at
// /srv/kv; extra goes under system.
func kvSpec(app string, replicas int, size, extra string) string {
	return fmt.Sprintf(`apiVersion: berth/v1
kind: App
metadata:
  name: %s
spec:
  replicas: %d
  system:
    image: berth/debian-docker
    profiles: [default, berth-test]
    volumes:
      - {name: data, path: /srv/kv, size: %s, snapshots: {expiry: 2d}}
%s  container:
    image: 127.0.0.1:5000/berth/kv:1
    volumes: [{source: /srv/kv/data, target: /data}]
    ports: [{name: http, port: 8080}]
  update:
    maxUnavailable: 1
    healthTimeout: 60s
    drainDelay: 0s
`, app, replicas, size, extra)
}

// kvClient talks to the kv replicas of one app from the host.
type kvClient struct {
	t    *testing.T
	c    *lxd.Client
	http *http.Client
}

func (k *kvClient) do(inst, method, key, value string) (int, string) {
	k.t.Helper()
	addr := netWaitAddr(k.t, k.c, inst, 2*time.Minute)
	var last error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		req, _ := http.NewRequest(method, "http://"+addr+":8080/kv/"+key, strings.NewReader(value))
		resp, err := k.http.Do(req)
		if err != nil {
			last = err
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	k.t.Fatalf("%s %s/kv/%s: %v", method, inst, key, last)
	return 0, ""
}

func (k *kvClient) put(inst, key, value string) {
	k.t.Helper()
	if code, body := k.do(inst, http.MethodPut, key, value); code != http.StatusNoContent {
		k.t.Fatalf("PUT %s/kv/%s: %d %s", inst, key, code, body)
	}
}

// expect reads every key of want back from inst.
func (k *kvClient) expect(inst string, want map[string]string) {
	k.t.Helper()
	for key, v := range want {
		if code, body := k.do(inst, http.MethodGet, key, ""); code != http.StatusOK || body != v {
			k.t.Errorf("GET %s/kv/%s: %d %q, want %q", inst, key, code, body, v)
		}
	}
}

// volumeCleanup deletes, at the end of the test, the project's instances
// (a volume in use cannot go) and the default project's volumes of owner:
// the e2e project keeps its volumes in the default project.
func volumeCleanup(t *testing.T, pc *lxd.Client, owner string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		insts, _ := pc.ListInstances(ctx, nil)
		for _, i := range insts {
			if err := pc.DeleteInstance(ctx, i.Name); err != nil && !errors.Is(err, lxd.ErrNotFound) {
				t.Errorf("cleanup: delete %s: %v", i.Name, err)
			}
		}
		c, err := lxd.Connect(ctx, lxd.Config{})
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer c.Close()
		vols, err := c.ListVolumes(ctx, "default")
		if err != nil {
			t.Errorf("cleanup: list volumes: %v", err)
		}
		for _, v := range vols {
			if v.Config[ownership.KeyOwner] == owner || v.Config["user.e2e"] == owner {
				if err := c.DeleteVolume(ctx, lxd.VolumeTarget{Pool: "default", Name: v.Name}); err != nil {
					t.Errorf("cleanup: delete volume %s: %v", v.Name, err)
				}
			}
		}
	})
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// volumeRun is the setup of a stateful end-to-end test: a project of its
// own, an app and owner named with prefix and a random suffix, a client of
// the host's LXD (custom volumes are not in the project's view of the
// default pool), the kv client and a repository.
type volumeRun struct {
	project, app, owner string
	pc, host            *lxd.Client
	kv                  *kvClient
	r                   *repo
}

func newVolumeRun(t *testing.T, appPrefix, ownerPrefix string) *volumeRun {
	t.Helper()
	requireLive(t)
	requireTestNetwork(t)
	v := &volumeRun{r: newRepo(t)}
	v.project, v.pc = e2eProject(t)
	sfx := randHex(2)
	v.app, v.owner = appPrefix+sfx, ownerPrefix+sfx
	volumeCleanup(t, v.pc, v.owner)
	host, err := lxd.Connect(context.Background(), lxd.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(host.Close)
	v.host = host
	v.kv = &kvClient{t: t, c: v.pc, http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}}
	return v
}

// args are berth's arguments for cmd on the run's project, owner and repo.
func (v *volumeRun) args(cmd ...string) []string {
	return append([]string{"--project", v.project, "--owner", v.owner}, append(cmd, "--repo", v.r.dir, "--dir", "apps")...)
}

func TestStatefulVolumes(t *testing.T) {
	vr := newVolumeRun(t, "kv", "e2e-vol-")
	pc, app, owner, host, kv, r := vr.pc, vr.app, vr.owner, vr.host, vr.kv, vr.r
	args := vr.args
	apply := func(why string) string {
		t.Helper()
		code, out, errOut := berth(t, args("apply", "--yes")...)
		if code != 0 {
			t.Fatalf("apply (%s): exit %d\n%s%s", why, code, out, errOut)
		}
		return out
	}
	vol := func(slot int) *lxd.StorageVolume {
		t.Helper()
		v, _, err := host.GetVolume(context.Background(), lxd.VolumeTarget{Pool: "default", Name: ownership.VolumeName(app, "data", slot)})
		if err != nil {
			t.Fatalf("volume of slot %d: %v", slot, err)
		}
		return v
	}
	i0, i1 := app+"-0", app+"-1"
	keys0 := map[string]string{"a": "one", "b": "two"}
	keys1 := map[string]string{"c": "three"}

	r.write("apps/kv.yaml", kvSpec(app, 2, "64MiB", ""))
	r.commit("kv with a volume")
	apply("first")
	if v := vol(0); v.Config["size"] != "64MiB" || v.Config["snapshots.expiry"] != "2d" || v.Config[ownership.KeyOwner] != owner || len(v.AttachedTo()) != 1 || v.AttachedTo()[0] != i0 {
		t.Fatalf("volume of slot 0: %+v", v)
	}
	for k, v := range keys0 {
		kv.put(i0, k, v)
	}
	for k, v := range keys1 {
		kv.put(i1, k, v)
	}

	t.Run("cloudInit change recreates, keys stay", func(t *testing.T) {
		r.write("apps/kv.yaml", kvSpec(app, 2, "64MiB", "    cloudInit: |\n      #cloud-config\n      runcmd: [[touch, /tmp/v2]]\n"))
		sha := r.commit("kv: cloud-init")
		code, out, _ := berth(t, args("plan")...)
		if code != 2 || !strings.Contains(out, "recreate") || strings.Contains(out, "not on a volume") {
			t.Fatalf("plan: exit %d\n%s", code, out)
		}
		uuid := instanceConfig(t, pc, i0)["volatile.uuid"]
		apply("cloud-init")
		if instanceConfig(t, pc, i0)["volatile.uuid"] == uuid {
			t.Fatal("the instance was not recreated")
		}
		kv.expect(i0, keys0)
		kv.expect(i1, keys1)
		snaps, err := host.ListVolumeSnapshots(context.Background(), lxd.VolumeTarget{Pool: "default", Name: ownership.VolumeName(app, "data", 0)})
		if err != nil || len(snaps) == 0 || !strings.HasPrefix(snaps[0].Name, "berth-"+sha[:12]+"-") || snaps[0].ExpiresAt.IsZero() {
			t.Errorf("snapshot before the recreate: %v %+v", err, snaps)
		}
	})

	t.Run("base image refresh recreates, keys stay", func(t *testing.T) {
		testenvCmd(t, "image", "refresh", "debian-docker")
		code, out, _ := berth(t, args("plan")...)
		if code != 2 || !strings.Contains(out, "recreate") {
			t.Fatalf("plan after the refresh: exit %d\n%s", code, out)
		}
		apply("image refresh")
		kv.expect(i0, keys0)
		kv.expect(i1, keys1)
	})

	t.Run("scale 2 to 1 to 2, slot 1's keys come back", func(t *testing.T) {
		r.write("apps/kv.yaml", kvSpec(app, 1, "64MiB", ""))
		r.commit("kv: 1 replica")
		berthOut := apply("scale down")
		if v := vol(1); len(v.AttachedTo()) != 0 {
			t.Fatalf("kept volume still attached: %v (%s)", v.UsedBy, berthOut)
		}
		r.write("apps/kv.yaml", kvSpec(app, 2, "64MiB", ""))
		r.commit("kv: 2 replicas")
		apply("scale up")
		kv.expect(i1, keys1)
	})

	t.Run("grow in place, shrink refused", func(t *testing.T) {
		uuid := instanceConfig(t, pc, i0)["volatile.uuid"]
		r.write("apps/kv.yaml", kvSpec(app, 2, "128MiB", ""))
		r.commit("kv: 128MiB")
		code, out, _ := berth(t, args("plan")...)
		if code != 2 || !strings.Contains(out, "update-in-place") || !strings.Contains(out, "system.volumes[0].size: 64MiB → 128MiB") || strings.Contains(out, "recreate") {
			t.Fatalf("plan of a grow: exit %d\n%s", code, out)
		}
		apply("grow")
		if v := vol(0); v.Config["size"] != "128MiB" || instanceConfig(t, pc, i0)["volatile.uuid"] != uuid {
			t.Fatalf("grow: size %s, instance recreated: %v", v.Config["size"], instanceConfig(t, pc, i0)["volatile.uuid"] != uuid)
		}
		kv.expect(i0, keys0)

		r.write("apps/kv.yaml", kvSpec(app, 2, "32MiB", ""))
		r.commit("kv: 32MiB")
		code, out, _ = berth(t, args("apply", "--yes")...)
		if code == 0 || !strings.Contains(out, "volumes only grow") {
			t.Fatalf("shrink: exit %d\n%s", code, out)
		}
		if v := vol(0); v.Config["size"] != "128MiB" {
			t.Fatalf("shrink changed the volume: %s", v.Config["size"])
		}
		r.write("apps/kv.yaml", kvSpec(app, 2, "128MiB", ""))
		r.commit("kv: back to 128MiB")
	})

	t.Run("bad input changes nothing", func(t *testing.T) {
		// An unowned volume where slot 2's would go: a conflict, and
		// no instance for that slot.
		clash := lxd.VolumeTarget{Pool: "default", Name: ownership.VolumeName(app, "data", 2)}
		if err := host.CreateVolume(context.Background(), clash, lxd.StorageVolumePut{Config: map[string]string{"user.e2e": owner}}); err != nil {
			t.Fatal(err)
		}
		r.write("apps/kv.yaml", kvSpec(app, 3, "128MiB", ""))
		r.commit("kv: 3 replicas")
		code, out, _ := berth(t, args("apply", "--yes")...)
		if code == 0 || !strings.Contains(out, "exists and is not managed by berth") {
			t.Fatalf("unowned volume: exit %d\n%s", code, out)
		}
		if _, _, err := pc.GetInstance(context.Background(), app+"-2"); !errors.Is(err, lxd.ErrNotFound) {
			t.Fatalf("slot 2 was created next to an unowned volume: %v", err)
		}
		// A pool that does not exist: nothing created.
		r.write("apps/kv.yaml", strings.Replace(kvSpec(app, 2, "128MiB", ""), "snapshots: {expiry: 2d}}", "snapshots: {expiry: 2d}}\n      - {name: more, path: /srv/more, size: 1GiB, pool: berth-no-such-pool}", 1))
		r.commit("kv: a pool that does not exist")
		code, out, _ = berth(t, args("apply", "--yes")...)
		if code == 0 || !strings.Contains(out, `storage pool "berth-no-such-pool" does not exist`) {
			t.Fatalf("missing pool: exit %d\n%s", code, out)
		}
		// A hostile path: the spec is refused, the app held.
		r.write("apps/kv.yaml", strings.Replace(kvSpec(app, 2, "128MiB", ""), "path: /srv/kv", "path: /etc", 1))
		r.commit("kv: hostile path")
		code, out, errOut := berth(t, args("plan")...)
		if code == 0 || !strings.Contains(out+errOut, "system folder /etc") {
			t.Fatalf("hostile path: exit %d\n%s%s", code, out, errOut)
		}
		kv.expect(i0, keys0)
		r.write("apps/kv.yaml", kvSpec(app, 2, "128MiB", ""))
		r.commit("kv: back")
		apply("back")
	})

	t.Run("app removed and restored, data back", func(t *testing.T) {
		r.write("apps/other.yaml", systemOnlySpec("other"+strings.TrimPrefix(app, "kv"), 0, ""))
		r.git("rm", "-q", "apps/kv.yaml")
		r.commit("kv removed")
		code, out, errOut := berth(t, args("apply", "--yes", "--allow-mass-prune")...)
		if code != 0 {
			t.Fatalf("remove: exit %d\n%s%s", code, out, errOut)
		}
		if _, _, err := pc.GetInstance(context.Background(), i0); !errors.Is(err, lxd.ErrNotFound) {
			t.Fatalf("%s still there: %v", i0, err)
		}
		vol(0)
		vol(1)
		r.write("apps/kv.yaml", kvSpec(app, 2, "128MiB", ""))
		r.commit("kv restored")
		apply("restore")
		kv.expect(i0, keys0)
		kv.expect(i1, keys1)
	})
}

// berth volume restore brings an older key back and drops a newer one,
// through the app's API; a snapshot that is not there changes nothing.
func TestStatefulVolumeRestore(t *testing.T) {
	vr := newVolumeRun(t, "kvr", "e2e-volr-")
	pc, app, host, kv, r := vr.pc, vr.app, vr.host, vr.kv, vr.r
	args := vr.args
	r.write("apps/kv.yaml", kvSpec(app, 1, "64MiB", ""))
	r.commit("kv with a volume")
	if code, out, errOut := berth(t, args("apply", "--yes")...); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	i0 := app + "-0"
	kv.put(i0, "a", "older")
	vt := lxd.VolumeTarget{Pool: "default", Name: ownership.VolumeName(app, "data", 0)}
	if err := host.CreateVolumeSnapshot(context.Background(), vt, "before-b", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	kv.put(i0, "b", "newer")

	code, out, errOut := berth(t, args("volume", "restore", i0, "data", "no-such-snap")...)
	if code == 0 || !strings.Contains(errOut, `has no snapshot "no-such-snap" (it has: before-b)`) {
		t.Fatalf("unknown snapshot: exit %d\n%s%s", code, out, errOut)
	}
	kv.expect(i0, map[string]string{"a": "older", "b": "newer"})
	uuid := instanceConfig(t, pc, i0)["volatile.uuid"]

	code, out, errOut = berth(t, args("volume", "restore", i0, "data", "before-b")...)
	if code != 0 || !strings.Contains(out, i0+": volume "+vt.Name+" restored to before-b; ready again") {
		t.Fatalf("restore: exit %d\n%s%s", code, out, errOut)
	}
	kv.expect(i0, map[string]string{"a": "older"})
	if code, body := kv.do(i0, http.MethodGet, "b", ""); code == http.StatusOK {
		t.Errorf("key b written after the snapshot is still there: %q", body)
	}
	if instanceConfig(t, pc, i0)["volatile.uuid"] != uuid {
		t.Error("the restore recreated the instance")
	}
	if v, _, err := host.GetVolume(context.Background(), vt); err != nil || !slices.Equal(v.AttachedTo(), []string{i0}) {
		t.Errorf("volume after the restore: %v %+v", err, v)
	}
	if code, out, errOut := berth(t, args("plan")...); code != 0 {
		t.Errorf("plan after the restore: exit %d\n%s%s", code, out, errOut)
	}
}

// kill -9 of apply in a stateful recreate, once the old instance is
// stopped and its volume snapshotted and before the new one exists: the
// next apply carries on, the keys are there, and the volume is attached
// to exactly one instance.
func TestFaultKillApplyStatefulRecreate(t *testing.T) {
	vr := newVolumeRun(t, "kvk", "e2e-volk-")
	project, app, owner, host, kv, r := vr.project, vr.app, vr.owner, vr.host, vr.kv, vr.r
	// The killed apply cannot release its lease: a short TTL, and the
	// next apply waits for it to expire.
	applyArgs := []string{"--project", project, "--owner", owner, "--log-level", "info", "apply", "--yes",
		"--repo", r.dir, "--dir", "apps", "--lease-ttl", "5s", "--wait-lease", "1m"}
	r.write("apps/kv.yaml", kvSpec(app, 1, "64MiB", ""))
	r.commit("kv with a volume")
	if code, out, errOut := berth(t, applyArgs...); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	i0 := app + "-0"
	keys := map[string]string{"a": "one", "b": "two"}
	for k, v := range keys {
		kv.put(i0, k, v)
	}
	vt := lxd.VolumeTarget{Pool: "default", Name: ownership.VolumeName(app, "data", 0)}

	r.write("apps/kv.yaml", kvSpec(app, 1, "64MiB", "    cloudInit: |\n      #cloud-config\n      runcmd: [[touch, /tmp/v2]]\n"))
	r.commit("kv: cloud-init")
	out, killed := killAt(t, regexp.MustCompile(`snapshotted volume.*`+regexp.QuoteMeta(vt.Name)), applyArgs...)
	if !killed {
		t.Fatalf("apply ended before the kill point:\n%s", out)
	}
	v, _, err := host.GetVolume(context.Background(), vt)
	if err != nil || len(v.AttachedTo()) > 1 {
		t.Fatalf("volume right after the kill: %v %+v", err, v)
	}
	t.Logf("after the kill the volume is attached to %v", v.AttachedTo())
	if code, out, errOut := berth(t, applyArgs...); code != 0 {
		t.Fatalf("apply after the kill: exit %d\n%s%s", code, out, errOut)
	}
	kv.expect(i0, keys)
	if v, _, err := host.GetVolume(context.Background(), vt); err != nil || !slices.Equal(v.AttachedTo(), []string{i0}) {
		t.Errorf("volume after the second apply: %v %+v", err, v)
	}
	if code, out, errOut := berth(t, "--project", project, "--owner", owner, "plan", "--repo", r.dir, "--dir", "apps"); code != 0 {
		t.Errorf("plan after the second apply: exit %d\n%s%s", code, out, errOut)
	}
}
