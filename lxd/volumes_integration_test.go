package lxd

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// testPool is the test environment's storage pool (btrfs, so sizes are
// quotas LXD can grow in place).
const testPool = "default"

// createTestVolume creates a custom volume that is deleted when the test
// ends, even on failure.
func createTestVolume(tb testing.TB, c *Client, t VolumeTarget, config map[string]string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tb.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := c.DeleteVolume(ctx, t); err != nil && !errors.Is(err, ErrNotFound) {
			tb.Errorf("cleanup: delete volume %s: %v", t.Name, err)
		}
	})
	if err := c.CreateVolume(ctx, t, StorageVolumePut{Config: config}); err != nil {
		tb.Fatalf("create volume %s: %v", t.Name, err)
	}
}

func TestIntegrationVolumes(t *testing.T) {
	c := realLXD(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sfx := randSuffix()
	owner := "berth-it-owner-" + sfx
	vt := VolumeTarget{Pool: testPool, Name: "berth-it-vol-" + sfx}
	createTestVolume(t, c, vt, map[string]string{
		"size": "64MiB", "snapshots.schedule": "@daily", "snapshots.expiry": "7d",
		"user.berth.owner": owner, "user.berth.app": "it",
	})

	t.Run("create twice is a conflict", func(t *testing.T) {
		err := c.CreateVolume(ctx, vt, StorageVolumePut{})
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("want ErrConflict, got %v", err)
		}
	})

	t.Run("a pool that does not exist is not found", func(t *testing.T) {
		err := c.CreateVolume(ctx, VolumeTarget{Pool: "berth-no-such-pool-" + sfx, Name: vt.Name}, StorageVolumePut{})
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("want ErrNotFound, got %v", err)
		}
	})

	t.Run("list and get carry the config", func(t *testing.T) {
		before := c.RequestCounts()["GET"]
		all, err := c.ListVolumes(ctx, testPool)
		if err != nil {
			t.Fatal(err)
		}
		if n := c.RequestCounts()["GET"] - before; n != 1 {
			t.Errorf("ListVolumes made %d requests", n)
		}
		i := slices.IndexFunc(all, func(v StorageVolume) bool { return v.Name == vt.Name })
		if i < 0 {
			t.Fatalf("volume %s not listed in %d volumes", vt.Name, len(all))
		}
		v := all[i]
		if v.Pool != testPool || v.Type != "custom" || v.Config["user.berth.owner"] != owner || v.Config["size"] != "64MiB" ||
			v.Config["snapshots.schedule"] != "@daily" || v.Config["snapshots.expiry"] != "7d" {
			t.Fatalf("listed: %+v", v)
		}
		for _, v := range all {
			if v.Type != "custom" {
				t.Errorf("non-custom volume listed: %s (%s)", v.Name, v.Type)
			}
		}
		got, etag, err := c.GetVolume(ctx, vt)
		if err != nil || etag == "" || got.Config["user.berth.app"] != "it" || got.Pool != testPool {
			t.Fatalf("get: %v %q %+v", err, etag, got)
		}
		if _, _, err := c.GetVolume(ctx, VolumeTarget{Pool: testPool, Name: vt.Name + "-missing"}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing volume: want ErrNotFound, got %v", err)
		}
	})

	t.Run("grow, stale etag, usage", func(t *testing.T) {
		if err := c.ResizeVolume(ctx, vt, "128MiB"); err != nil {
			t.Fatal(err)
		}
		got, etag, err := c.GetVolume(ctx, vt)
		if err != nil || got.Config["size"] != "128MiB" || got.Config["user.berth.owner"] != owner {
			t.Fatalf("after resize: %v %+v", err, got)
		}
		if err := c.PatchVolume(ctx, vt, map[string]string{"user.berth.test": "1"}, etag); err != nil {
			t.Fatal(err)
		}
		if err := c.PatchVolume(ctx, vt, map[string]string{"user.berth.test": "2"}, etag); !errors.Is(err, ErrPreconditionFailed) {
			t.Fatalf("stale etag: want ErrPreconditionFailed, got %v", err)
		}
		u, err := c.VolumeUsage(ctx, vt)
		if err != nil || u.Total != 128<<20 {
			t.Fatalf("usage: %v %+v", err, u)
		}
	})

	t.Run("attach, used by, write, snapshot, restore", func(t *testing.T) {
		name := "berth-it-vol-" + sfx
		launch(t, c, name, nil)
		inst, etag, err := c.GetInstance(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if inst.RootPool() != testPool {
			t.Errorf("root pool %q, want %q (devices %v)", inst.RootPool(), testPool, inst.ExpandedDevices)
		}
		dev := map[string]map[string]string{"data": {"type": "disk", "pool": vt.Pool, "source": vt.Name, "path": "/data"}}
		if err := c.PatchInstance(ctx, name, InstancePatch{Devices: dev}, etag); err != nil {
			t.Fatal(err)
		}
		v, _, err := c.GetVolume(ctx, vt)
		if err != nil || !slices.Equal(v.AttachedTo(), []string{name}) {
			t.Fatalf("attached to: %v %v (used by %v)", err, v.AttachedTo(), v.UsedBy)
		}
		// An attached volume is not deleted.
		if err := c.DeleteVolume(ctx, vt); err == nil {
			t.Fatal("deleting an attached volume succeeded")
		}
		write := func(s string) {
			t.Helper()
			if code, err := c.Exec(ctx, name, ExecRequest{Command: []string{"sh", "-c", "echo " + s + " > /data/k"}}); err != nil || code != 0 {
				t.Fatalf("write %s: %d %v", s, code, err)
			}
		}
		write("one")
		expires := time.Now().Add(time.Hour).Truncate(time.Second)
		if err := c.CreateVolumeSnapshot(ctx, vt, "s1", expires); err != nil {
			t.Fatal(err)
		}
		snaps, err := c.ListVolumeSnapshots(ctx, vt)
		if err != nil || len(snaps) != 1 || snaps[0].Name != "s1" || !snaps[0].ExpiresAt.Equal(expires) {
			t.Fatalf("snapshots: %v %+v (want expiry %v)", err, snaps, expires)
		}
		// LXD 5.0 lists a volume's snapshots with the volumes; the list
		// keeps the volumes only.
		all, err := c.ListVolumes(ctx, testPool)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range all {
			if strings.Contains(v.Name, "/") {
				t.Errorf("snapshot listed as a volume: %s", v.Name)
			}
		}
		write("two")
		// LXD restores only while nothing that uses the volume runs.
		if err := c.StopInstance(ctx, name, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := c.RestoreVolumeSnapshot(ctx, vt, "s1"); err != nil {
			t.Fatal(err)
		}
		if got, _, err := c.GetVolume(ctx, vt); err != nil || got.Config["size"] != "128MiB" || got.Config["user.berth.owner"] != owner {
			t.Fatalf("restore changed the config: %v %+v", err, got)
		}
		if err := c.StartInstance(ctx, name); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		if code, err := c.Exec(ctx, name, ExecRequest{Command: []string{"cat", "/data/k"}, Stdout: &out}); err != nil || code != 0 || out.String() != "one\n" {
			t.Fatalf("after restore: %d %v %q", code, err, out.String())
		}
		if err := c.DeleteVolumeSnapshot(ctx, vt, "s1"); err != nil {
			t.Fatal(err)
		}
		if snaps, err := c.ListVolumeSnapshots(ctx, vt); err != nil || len(snaps) != 0 {
			t.Fatalf("after delete: %v %+v", err, snaps)
		}
		// Deleting the instance keeps the volume.
		if err := c.DeleteInstance(ctx, name); err != nil {
			t.Fatal(err)
		}
		if v, _, err := c.GetVolume(ctx, vt); err != nil || len(v.AttachedTo()) != 0 {
			t.Fatalf("after instance delete: %v %+v", err, v)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if err := c.DeleteVolume(ctx, vt); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.GetVolume(ctx, vt); !errors.Is(err, ErrNotFound) {
			t.Fatalf("after delete: %v", err)
		}
	})
}

func TestVolumeAttachedTo(t *testing.T) {
	v := StorageVolume{UsedBy: []string{"/1.0/instances/web-0", "/1.0/instances/a%2Fb?project=p", "/1.0/profiles/default", "/1.0/instances/x/snapshots/s"}}
	if got := v.AttachedTo(); !slices.Equal(got, []string{"web-0", "a/b"}) {
		t.Fatalf("AttachedTo = %q", got)
	}
	if got := RootPool(map[string]map[string]string{"eth0": {"type": "nic"}, "root": {"type": "disk", "path": "/", "pool": "fast"}}); got != "fast" {
		t.Fatalf("RootPool = %q", got)
	}
}
