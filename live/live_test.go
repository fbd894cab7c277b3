package live

import (
	"context"
	"github.com/berth-gitops/berth/ownership"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

func TestBackupName(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	if got := backupName("web-0", now); got != "web-0-bak-tro8w0" {
		t.Errorf("backupName = %q", got)
	}
	long := strings.Repeat("a", 60) + "-1"
	if got := backupName(long, now); len(got) > 63 || !strings.HasSuffix(got, "-bak-tro8w0") {
		t.Errorf("long backupName = %q (%d)", got, len(got))
	}
}

// TestDeleteKeepsBackup: with update.snapshot, a deleted replica is kept
// stopped, renamed, disowned and snapshotted; without it, it is gone; an
// instance of another owner is refused.
func TestDeleteKeepsBackup(t *testing.T) {
	ctx := context.Background()
	c := realLXD(t)
	sys := New(c, "backup-test", engine.Options{})
	sys.StopTimeout = time.Second // busybox's init ignores the shutdown signal
	defer sys.Close()
	app := spec.App{Metadata: spec.Metadata{Name: "berth-it-bk"}, Spec: spec.AppSpec{
		System: spec.System{Image: "berth/busybox", Profiles: []string{"default"}},
	}}
	if err := sys.Preflight(ctx, app); err != nil {
		t.Fatalf("preflight of a buildable app: %v", err)
	}
	for _, bad := range []spec.System{
		{Image: "berth/no-such-image", Profiles: []string{"default"}},
		{Image: "berth/busybox", Profiles: []string{"default", "no-such-profile"}},
		{Image: "nowhere:debian/12", Profiles: []string{"default"}},
	} {
		b := app
		b.Spec.System = bad
		if err := sys.Preflight(ctx, b); err == nil {
			t.Errorf("preflight of %+v passed", bad)
		}
	}
	name := ownership.InstanceName(app.Metadata.Name, 0)
	var backup string
	t.Cleanup(func() {
		for _, n := range []string{name, backup} {
			if n != "" {
				_ = c.DeleteInstance(context.Background(), n)
			}
		}
	})
	if err := sys.CreateInstance(ctx, name, app, plan.ManagedConfig(app, "backup-test", "r1", 0)); err != nil {
		t.Fatal(err)
	}
	if err := sys.DeleteInstance(ctx, name, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.GetInstance(ctx, name); err == nil {
		t.Fatalf("%s still exists under its name", name)
	}
	insts, err := c.ListInstances(ctx, map[string]string{"config." + ownership.KeyBackupOf: name})
	if err != nil || len(insts) != 1 {
		t.Fatalf("backups of %s: %v %v", name, insts, err)
	}
	b := insts[0]
	backup = b.Name
	if !strings.HasPrefix(b.Name, name+"-bak-") || b.Status != "Stopped" || b.Config[ownership.KeyOwner] != "" || b.Config[ownership.KeyBackupOwner] != "backup-test" {
		t.Errorf("backup = %s %s %v", b.Name, b.Status, b.Config)
	}
	snaps, err := c.ListSnapshots(ctx, b.Name)
	if err != nil || len(snaps) != 1 {
		t.Errorf("snapshots of %s: %v %v", b.Name, snaps, err)
	}
	// Not ours: refused, untouched.
	if err := sys.DeleteInstance(ctx, b.Name, false); err == nil || !strings.Contains(err.Error(), "not owned") {
		t.Errorf("deleting an unowned instance: %v", err)
	}
}
