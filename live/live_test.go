package live

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// TestNewChainsOnRequest: New counts the client's requests without
// dropping a hook the caller set on the client before; OnLXDRequest sees
// them too.
func TestNewChainsOnRequest(t *testing.T) {
	_, c := newLeaseLXD(t)
	var mu sync.Mutex
	var before, metrics []string
	c.OnRequest = func(method, path string) {
		mu.Lock()
		defer mu.Unlock()
		before = append(before, method+" "+path)
	}
	sys := New(c, "o", engine.Options{})
	defer sys.Close()
	sys.OnLXDRequest = func(method, path string) {
		mu.Lock()
		defer mu.Unlock()
		metrics = append(metrics, method+" "+path)
	}
	ctx := context.Background()
	if _, _, err := c.GetServer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.PatchServerConfig(ctx, map[string]any{"user.x": "1"}, ""); err != nil {
		t.Fatal(err)
	}
	want := []string{"GET /1.0", "PATCH /1.0"}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(before, want) {
		t.Errorf("the caller's hook saw %q, want %q", before, want)
	}
	if !slices.Equal(metrics, want) {
		t.Errorf("OnLXDRequest saw %q, want %q", metrics, want)
	}
	if got := sys.Requests(); got != (Requests{Total: 2, Writes: 1}) {
		t.Errorf("Requests = %+v", got)
	}
}

// TestNewTakesTheEngineClock: the system decides by the clock its engine
// was given.
func TestNewTakesTheEngineClock(t *testing.T) {
	_, c := newLeaseLXD(t)
	fc := clock.NewFake(time.Unix(1_800_000_000, 0))
	sys := New(c, "o", engine.Options{Clock: fc})
	defer sys.Close()
	if sys.Clock != fc {
		t.Errorf("System.Clock = %v, want the engine's", sys.Clock)
	}
}

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
	// The backup is named by the system's clock: an hour ago here, which
	// the real clock would never give.
	fc := clock.NewFake(time.Now().Add(-time.Hour))
	sys := New(c, "backup-test", engine.Options{})
	sys.Clock = fc
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
	if err := sys.CreateInstance(ctx, name, app, plan.ManagedConfig(app, "backup-test", "r1", 0), ""); err != nil {
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
	if b.Name != backupName(name, fc.Now()) || b.Status != "Stopped" || b.Config[ownership.KeyOwner] != "" || b.Config[ownership.KeyBackupOwner] != "backup-test" {
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
