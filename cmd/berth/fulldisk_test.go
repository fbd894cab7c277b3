package main

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/lxd"
)

// lxcT runs lxc and fails the test when it fails.
func lxcT(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("lxc", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("lxc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestFullPoolLeavesNoHalfMadeInstance: a replica whose root disk is on a
// storage pool too small for its image (a 128 MiB pool of its own, made
// for the test, against the Debian image's hundreds of MB) cannot be
// created. apply fails and says why and which replica, in a few lines
// (LXD's error is cut in the middle); no instance of
// that name is left in LXD, nor a volume of one on the pool; the next plan
// plans the create again.
func TestFullPoolLeavesNoHalfMadeInstance(t *testing.T) {
	requireLive(t)
	project, c := e2eProject(t)
	small := strings.Replace(project, "berth-e2e-", "berth-full-", 1)
	lxcT(t, "storage", "create", small, "btrfs", "size=128MiB")
	t.Cleanup(func() {
		// An instance left on the pool would keep it, and its profile, in
		// use: it goes first (the project's own cleanup comes later).
		if out, _ := exec.Command("lxc", "list", "--project", project, "--format", "csv", "-c", "n").Output(); len(out) > 0 {
			for _, n := range strings.Fields(string(out)) {
				_ = exec.Command("lxc", "delete", "-f", "--project", project, n).Run()
			}
		}
		_ = exec.Command("lxc", "profile", "delete", small).Run()
		if out, err := exec.Command("lxc", "storage", "delete", small).CombinedOutput(); err != nil {
			t.Errorf("delete the pool %s: %v\n%s", small, err, out)
		}
	})
	lxcT(t, "profile", "create", small)
	lxcT(t, "profile", "device", "add", small, "root", "disk", "path=/", "pool="+small)

	r := newRepo(t)
	r.write("apps/web.yaml", strings.Replace(webSpec(1, "hello:1"), "profiles: [default, berth-test]", "profiles: [default, berth-test, "+small+"]", 1))
	r.commit("web on a pool too small for it")
	args := []string{"--project", project, "--owner", "e2e", "--repo", r.dir, "--dir", "apps"}
	code, out, errOut := berth(t, append([]string{"apply", "--yes"}, args...)...)
	t.Logf("apply: exit %d\n%s%s", code, out, errOut)
	if code == 0 || !strings.Contains(out+errOut, "web-0") || !strings.Contains(out+errOut, "No space left on device") {
		t.Errorf("apply onto a full pool: exit %d; want a failure naming web-0 and the full disk", code)
	}
	// LXD's error carries tar's line for every file it could not write.
	if n := len(out) + len(errOut); n > 16<<10 {
		t.Errorf("apply printed %d bytes about one failed create", n)
	}

	if _, _, err := c.GetInstance(context.Background(), "web-0"); !errors.Is(err, lxd.ErrNotFound) {
		t.Errorf("web-0 after the failed create: %v, want not found", err)
	}
	if st := liveState(t, c, "e2e"); len(st) != 0 {
		t.Errorf("instances after the failed create: %v", st)
	}
	vols := lxcT(t, "storage", "volume", "list", small, "--format", "csv", "-c", "tn")
	for _, l := range strings.Split(strings.TrimSpace(vols), "\n") {
		if strings.HasPrefix(l, "container,") || strings.HasPrefix(l, "virtual-machine,") {
			t.Errorf("a volume of an instance is left on the pool: %s", l)
		}
	}
	if code, out, errOut := berth(t, append([]string{"plan"}, args...)...); !strings.Contains(out, "create") || !strings.Contains(out, "web-0") {
		t.Errorf("plan after the failed create: exit %d, want the create of web-0 again\n%s%s", code, out, errOut)
	}
}
