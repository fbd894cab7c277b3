package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/lxd"
)

// slowDBSpec is hello whose health check passes only once the container
// has run for 8s, and records, inside the container, when it first
// passed (epoch seconds in /tmp/healthy).
func slowDBSpec(replicas int) string {
	return fmt.Sprintf(`apiVersion: berth/v1
kind: App
metadata:
  name: db
spec:
  replicas: %d
  system:
    image: berth/debian-docker
    profiles: [default, berth-test]
  container:
    image: 127.0.0.1:5000/berth/hello:1
    healthcheck:
      test: [CMD-SHELL, '[ -f /tmp/t0 ] || date +%%s > /tmp/t0; [ $(( $(date +%%s) - $(cat /tmp/t0) )) -ge 8 ] && { [ -f /tmp/healthy ] || date +%%s > /tmp/healthy; }']
      interval: 2s
      timeout: 2s
      startPeriod: 30s
      retries: 3
  update:
    healthTimeout: 90s
`, replicas)
}

func dependentWebSpec() string {
	return `apiVersion: berth/v1
kind: App
metadata:
  name: web
spec:
  replicas: 1
  system:
    image: berth/debian-docker
    profiles: [default, berth-test]
  container:
    image: 127.0.0.1:5000/berth/hello:2
  update:
    healthTimeout: 60s
  dependsOn: [{app: db, minReady: all, timeout: 5m}]
`
}

// inContainer runs a shell command in the app container of the replica,
// through LXD exec and the instance's Docker.
func inContainer(t *testing.T, c *lxd.Client, inst, app, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := fmt.Sprintf(`id=$(docker ps -q --filter label=berth.app=%s) && [ -n "$id" ] && %s`, app, script)
	res, err := c.ExecOutput(ctx, inst, lxd.ExecRequest{Command: []string{"sh", "-c", cmd}}, 4096)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("%s: %s: exit %d, %v: %s", inst, script, res.ExitCode, err, res.Output)
	}
	return strings.TrimSpace(string(res.Output))
}

// From nothing, one apply creates db, waits until all its replicas are
// ready, then creates web: checked from outside, with LXD's creation time
// of web-0 against the moments db's containers started and first passed
// their health check. Removing both deletes web first.
func TestEndToEndDependsOn(t *testing.T) {
	requireLive(t)
	project, c := e2eProject(t)
	ctx := context.Background()
	r := newRepo(t)
	r.write("apps/db.yaml", slowDBSpec(2))
	r.write("apps/web.yaml", dependentWebSpec())
	r.commit("db and web, which depends on it")

	code, out, errOut := berth(t, "--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir)
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "blocked by db: 0/2 ready (db-0: not created)") || !strings.Contains(out, "Dependencies progressed; planned again:") {
		t.Errorf("apply does not show web waiting for db:\n%s", out)
	}
	web, _, err := c.GetInstance(ctx, "web-0")
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range []string{"db-0", "db-1"} {
		started, err := time.Parse(time.RFC3339Nano, inContainer(t, c, db, "db", `docker inspect -f '{{.State.StartedAt}}' "$id"`))
		if err != nil {
			t.Fatal(err)
		}
		secs, err := strconv.ParseInt(inContainer(t, c, db, "db", `docker exec "$id" cat /tmp/healthy`), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		healthy := time.Unix(secs, 0)
		t.Logf("%s container started %s, healthy by %s; web-0 created %s", db, started.Format(time.RFC3339Nano), healthy, web.CreatedAt.Format(time.RFC3339Nano))
		// The health check passes 8s after it first ran, at the
		// earliest: web-0 must come after that, and after the check
		// itself recorded it (whole seconds, rounded down).
		if !web.CreatedAt.After(started.Add(8*time.Second)) || !web.CreatedAt.After(healthy) {
			t.Errorf("web-0 was created at %s, before %s was ready (started %s, healthy by %s)", web.CreatedAt, db, started, healthy)
		}
	}
	if code, out, _ := berth(t, "--project", project, "--owner", "e2e", "plan", "--repo", r.dir); code != 0 {
		t.Errorf("plan after apply: exit %d\n%s", code, out)
	}

	t.Log("removing both: web goes first")
	r.git("rm", "-q", "apps/db.yaml", "apps/web.yaml")
	r.write("apps/keep.yaml", "# no apps left\n")
	r.commit("remove db and web")
	code, out, errOut = berth(t, "--project", project, "--owner", "e2e", "apply", "--yes", "--allow-mass-prune", "--repo", r.dir)
	if code != 0 {
		t.Fatalf("apply of the removal: exit %d\n%s\n%s", code, out, errOut)
	}
	all := out + errOut
	webDone := regexp.MustCompile(`web-0\s+delete\s+done`).FindStringIndex(all)
	dbStart := regexp.MustCompile(`db-\d\s+delete\s+started`).FindStringIndex(all)
	if !strings.Contains(out, "waiting for web to be removed first (it depends on db)") || webDone == nil || dbStart == nil || dbStart[0] < webDone[0] {
		t.Errorf("removal order:\n%s", all)
	}
	if insts, err := c.ListInstances(ctx, nil); err != nil || len(insts) != 0 {
		t.Errorf("left after removal: %d instances, %v", len(insts), err)
	}
}
