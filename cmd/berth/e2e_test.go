package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/berth-gitops/berth/ownership"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/internal/testlxd"
	"github.com/berth-gitops/berth/live"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/reconciler/plan"
)

// The end-to-end tests drive the berth CLI against the real LXD of the test
// environment (testenv/testenv.sh), with real nested Docker and real Git
// repositories. Each test works in an LXD project of its own, so names never
// clash with anything else on the machine.

// requireLive skips or fails the test, as testlxd decides, unless the LXD
// test environment (LXD and its image berth/debian-docker) is usable.
func requireLive(t *testing.T) {
	t.Helper()
	testlxd.Short(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := lxd.Connect(ctx, lxd.Config{})
	if err == nil {
		_, _, err = c.GetImageAlias(ctx, "berth/debian-docker")
		c.Close()
	}
	if err != nil {
		err = fmt.Errorf("end-to-end test environment: %w", err)
	}
	testlxd.SkipUnlessUsable(t, err)
}

// e2eProject creates an LXD project sharing the default project's images
// and profiles, and removes it with everything in it at the end.
func e2eProject(t *testing.T) (name string, client *lxd.Client) {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name = "berth-e2e-" + hex.EncodeToString(b)
	ctx := context.Background()
	c, err := lxd.Connect(ctx, lxd.Config{})
	if err != nil {
		t.Fatal(err)
	}
	err = c.RawQuery(ctx, "POST", "/1.0/projects", map[string]any{
		"name": name,
		"config": map[string]string{
			"features.images": "false", "features.profiles": "false", "features.storage.volumes": "false",
		},
	}, "", nil)
	if err != nil {
		t.Fatalf("create project: %v", err)
	}
	pc, err := lxd.Connect(ctx, lxd.Config{Project: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		insts, err := pc.ListInstances(ctx, nil)
		if err != nil {
			t.Errorf("cleanup: list: %v", err)
		}
		for _, i := range insts {
			// An ephemeral instance deletes itself once stopped. A force
			// stop can take LXD over its 30s limit on a loaded machine:
			// try again before calling it a failure.
			var err error
			for try := 0; try < 3; try++ {
				if err = pc.DeleteInstance(ctx, i.Name); err == nil || errors.Is(err, lxd.ErrNotFound) {
					err = nil
					break
				}
			}
			if err != nil {
				t.Errorf("cleanup: delete %s: %v", i.Name, err)
			}
		}
		if err := c.RawQuery(ctx, "DELETE", "/1.0/projects/"+name, nil, "", nil); err != nil {
			t.Errorf("cleanup: delete project %s: %v", name, err)
		}
		pc.Close()
		c.Close()
	})
	return name, pc
}

// liveState observes the project as berth's owner sees it.
func liveState(t *testing.T, c *lxd.Client, owner string) map[string]plan.Instance {
	t.Helper()
	sys := live.New(c, owner, engine.Options{})
	defer sys.Close()
	obs, err := sys.Observe(context.Background())
	if err != nil {
		t.Fatalf("observe: %v", err)
	}
	out := map[string]plan.Instance{}
	for _, i := range obs.Instances {
		out[i.Name] = i
	}
	return out
}

func webSpec(replicas int, image string) string {
	return fmt.Sprintf(`apiVersion: berth/v1
kind: App
metadata:
  name: web
spec:
  replicas: %d
  system:
    image: berth/debian-docker
    profiles: [default, berth-test]
    limits: {memory: 256MiB}
  container:
    image: 127.0.0.1:5000/berth/%s
  update:
    maxUnavailable: 1
    healthTimeout: 40s
`, replicas, image)
}

func apiSpec(image string) string {
	return fmt.Sprintf(`apiVersion: berth/v1
kind: App
metadata:
  name: api
spec:
  replicas: 1
  system:
    image: berth/debian-docker
    profiles: [default, berth-test]
  container:
    image: 127.0.0.1:5000/berth/%s
    env: {PORT: "8081"}
  update:
    healthTimeout: 40s
`, image)
}

// wantReplicas checks that app has exactly the replicas given (instance ->
// image) running and healthy.
func wantReplicas(t *testing.T, state map[string]plan.Instance, app string, want map[string]string) {
	t.Helper()
	got := 0
	for name, inst := range state {
		if inst.Config[ownership.KeyApp] != app || inst.Config[ownership.KeyOwner] != "e2e" {
			continue
		}
		got++
		image, ok := want[name]
		if !ok {
			t.Errorf("%s: unexpected replica", name)
			continue
		}
		c := inst.Container
		if inst.Status != "Running" || c == nil || c.State != "running" {
			t.Errorf("%s: status %s, container %+v", name, inst.Status, c)
			continue
		}
		if !strings.HasSuffix(c.Image, "/berth/"+image) {
			t.Errorf("%s: image %s, want berth/%s", name, c.Image, image)
		}
		if image != "broken:1" && c.Health != "healthy" {
			t.Errorf("%s: health %q", name, c.Health)
		}
	}
	if got != len(want) {
		t.Errorf("%s has %d replicas, want %d (%v)", app, got, len(want), want)
	}
}

// maxConcurrent reads apply's progress lines and returns the largest
// number of steps of the given actions that were in flight at once.
func maxConcurrent(out string, actions ...string) int {
	re := regexp.MustCompile(`^  (\S+)\s+(\S+)\s+(started|done in|FAILED)`)
	inFlight, most := 0, 0
	for _, line := range strings.Split(out, "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil || !contains(actions, m[2]) {
			continue
		}
		if m[3] == "started" {
			inFlight++
			most = max(most, inFlight)
		} else {
			inFlight--
		}
	}
	return most
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestEndToEndConverge(t *testing.T) {
	requireLive(t)
	project, c := e2eProject(t)
	ctx := context.Background()
	apply := func(args ...string) (int, string, string) {
		t.Helper()
		return berth(t, append([]string{"--project", project, "--owner", "e2e", "--count-requests", "apply", "--yes"}, args...)...)
	}
	mustApply := func(r *repo, args ...string) string {
		t.Helper()
		code, out, errOut := apply(append([]string{"--repo", r.dir}, args...)...)
		if code != 0 {
			t.Fatalf("apply: exit %d\n%s\n%s", code, out, errOut)
		}
		return out + errOut
	}

	// Instances berth must never touch: one without berth's keys, one of
	// another owner that even claims to be a web replica.
	for name, cfg := range map[string]map[string]string{
		"hand-0": nil,
		"web-7":  {ownership.KeyOwner: "other-team", ownership.KeyApp: "web", ownership.KeySlot: "7"},
	} {
		if err := c.CreateInstance(ctx, lxd.InstancesPost{Name: name, Source: lxd.ImageSource{Alias: "berth/busybox"}, Config: cfg}); err != nil {
			t.Fatal(err)
		}
	}
	survivors := func(state map[string]plan.Instance) {
		t.Helper()
		if _, ok := state["hand-0"]; !ok {
			t.Error("hand-made instance hand-0 is gone")
		}
		if i, ok := state["web-7"]; !ok || i.Config[ownership.KeyOwner] != "other-team" {
			t.Errorf("other owner's web-7 changed or gone: %+v", i)
		}
	}

	r := newRepo(t)
	r.write("apps/web.yaml", webSpec(2, "hello:1"))
	r.commit("web: two replicas of hello:1")
	t.Log("step 1: two replicas come up healthy")
	mustApply(r)
	state := liveState(t, c, "e2e")
	wantReplicas(t, state, "web", map[string]string{"web-0": "hello:1", "web-1": "hello:1"})
	survivors(state)

	t.Log("step 2: a second apply is a no-op with zero LXD writes")
	out := mustApply(r)
	// Its only writes are the owner's lease: taken, then released.
	if !strings.Contains(out, "No changes.") || !strings.Contains(out, "(writes 2,") {
		t.Errorf("second apply was not a no-op:\n%s", out)
	}

	t.Log("step 2b: drift made by hand shows in plan and apply corrects it; keys berth does not manage are not drift")
	if err := c.PatchInstance(ctx, "web-0", lxd.InstancePatch{Config: map[string]string{
		"limits.memory": "512MiB", "user.note": "made by hand",
	}}, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.StopInstance(ctx, "web-1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	{
		sys := live.New(c, "e2e", engine.Options{})
		if err := sys.Engine.Remove(ctx, "web-0", "web"); err != nil {
			t.Fatal(err)
		}
		sys.Close()
	}
	code, out, errOut := berth(t, "--project", project, "--owner", "e2e", "plan", "--repo", r.dir)
	if code != 2 || !regexp.MustCompile(`web-0\s+update-in-place\s+\(system.limits.memory: 512MiB → 256MiB\)`).MatchString(out) ||
		!regexp.MustCompile(`web-0\s+create-container`).MatchString(out) || !regexp.MustCompile(`web-1\s+start`).MatchString(out) ||
		strings.Contains(out, "user.note") {
		t.Errorf("plan of hand-made drift: exit %d\n%s%s", code, out, errOut)
	}
	mustApply(r)
	state = liveState(t, c, "e2e")
	wantReplicas(t, state, "web", map[string]string{"web-0": "hello:1", "web-1": "hello:1"})
	if m := state["web-0"].Config["limits.memory"]; m != "256MiB" || state["web-0"].Config["user.note"] != "made by hand" {
		t.Errorf("after apply: limits.memory %q, user.note %q", m, state["web-0"].Config["user.note"])
	}
	if code, out, _ := berth(t, "--project", project, "--owner", "e2e", "plan", "--repo", r.dir); code != 0 {
		t.Errorf("plan after correcting drift: exit %d\n%s", code, out)
	}

	t.Log("step 3: scale to 3")
	r.write("apps/web.yaml", webSpec(3, "hello:1"))
	r.commit("web: scale to 3")
	mustApply(r)
	wantReplicas(t, liveState(t, c, "e2e"), "web", map[string]string{"web-0": "hello:1", "web-1": "hello:1", "web-2": "hello:1"})

	t.Log("step 4: image :1 -> :2 rolls one replica at a time")
	r.write("apps/web.yaml", webSpec(3, "hello:2"))
	imageCommit := r.commit("web: hello:2")
	out = mustApply(r)
	if n := maxConcurrent(out, "replace-container", "recreate"); n != 1 {
		t.Errorf("%d replicas were replaced at once, maxUnavailable is 1:\n%s", n, out)
	}
	wantReplicas(t, liveState(t, c, "e2e"), "web", map[string]string{"web-0": "hello:2", "web-1": "hello:2", "web-2": "hello:2"})

	t.Log("step 5: git revert of the image commit brings :1 back")
	r.git("revert", "--no-edit", imageCommit)
	mustApply(r)
	wantReplicas(t, liveState(t, c, "e2e"), "web", map[string]string{"web-0": "hello:1", "web-1": "hello:1", "web-2": "hello:1"})

	t.Log("step 6: a broken image halts web; api in the same commit converges")
	r.write("apps/web.yaml", webSpec(3, "broken:1"))
	r.write("apps/api.yaml", apiSpec("hello:2"))
	r.commit("web: broken image; add api")
	code, out, errOut = apply("--repo", r.dir)
	if code != 1 {
		t.Fatalf("apply of a broken image: exit %d, want 1\n%s%s", code, out, errOut)
	}
	if !regexp.MustCompile(`web\s+Degraded.*web-0: replace-container: .*unhealthy`).MatchString(out) {
		t.Errorf("web is not reported Degraded with the reason:\n%s", out)
	}
	if !regexp.MustCompile(`api\s+Ready`).MatchString(out) {
		t.Errorf("api did not converge:\n%s", out)
	}
	state = liveState(t, c, "e2e")
	// web-0 got the broken container; web-1 and web-2 were never touched.
	wantReplicas(t, state, "web", map[string]string{"web-0": "broken:1", "web-1": "hello:1", "web-2": "hello:1"})
	wantReplicas(t, state, "api", map[string]string{"api-0": "hello:2"})
	code, out, _ = berth(t, "--project", project, "--owner", "e2e", "status", "--repo", r.dir, "-o", "json")
	if code != 0 || !strings.Contains(out, `"health": "Degraded"`) {
		t.Errorf("status after a halted rollout: exit %d\n%s", code, out)
	}

	t.Log("step 7: fixing the spec converges web again")
	r.write("apps/web.yaml", webSpec(3, "hello:1"))
	r.commit("web: back to hello:1")
	mustApply(r)
	wantReplicas(t, liveState(t, c, "e2e"), "web", map[string]string{"web-0": "hello:1", "web-1": "hello:1", "web-2": "hello:1"})

	t.Log("step 8: deleting an app's file prunes its instances")
	r.git("rm", "-q", "apps/api.yaml")
	r.commit("drop api")
	mustApply(r)
	state = liveState(t, c, "e2e")
	wantReplicas(t, state, "api", map[string]string{})
	survivors(state)

	t.Log("step 8b: an invalid spec holds its app as it is, and apply says it did not converge")
	r.write("apps/web.yaml", strings.Replace(webSpec(3, "hello:2"), "replicas: 3", "replicas: three", 1))
	r.commit("web: a typo")
	code, out, errOut = apply("--repo", r.dir)
	if code != 1 || !strings.Contains(errOut, "not converged: 1 app held for an invalid spec (web)") || !strings.Contains(errOut, "spec.replicas") {
		t.Errorf("apply of an invalid spec: exit %d\n%s%s", code, out, errOut)
	}
	wantReplicas(t, liveState(t, c, "e2e"), "web", map[string]string{"web-0": "hello:1", "web-1": "hello:1", "web-2": "hello:1"})
	r.write("apps/web.yaml", webSpec(3, "hello:1"))
	r.commit("web: fix the typo")

	t.Log("step 9: deleting every file prunes nothing without --allow-mass-prune")
	r.git("rm", "-q", "apps/web.yaml")
	r.commit("drop everything")
	// A skipped prune is not convergence: apply says so and exits 1.
	code, out, errOut = apply("--repo", r.dir)
	if code != 1 || !strings.Contains(out+errOut, "not converged: pruning skipped") {
		t.Errorf("apply of a revision with no apps: exit %d\n%s%s", code, out, errOut)
	}
	wantReplicas(t, liveState(t, c, "e2e"), "web", map[string]string{"web-0": "hello:1", "web-1": "hello:1", "web-2": "hello:1"})
	mustApply(r, "--allow-mass-prune")
	state = liveState(t, c, "e2e")
	wantReplicas(t, state, "web", map[string]string{})
	survivors(state)
}
