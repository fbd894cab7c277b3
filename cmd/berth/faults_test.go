package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"github.com/berth-gitops/berth/ownership"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-gitops/berth/internal/testlxd"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/reconciler"
)

// The fault tests inject one fault each into the real test environment —
// a kill -9 of apply, LXD dying, the registry going away, a wedged dockerd —
// and end with one check from outside (checkFleet): LXD's instance list
// and `docker ps` run in each instance, not berth's own report.

// testenvCmd runs testenv/testenv.sh with args (a fault or its cure).
func testenvCmd(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("../../testenv/testenv.sh", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv.sh %v: %v\n%s", args, err, out)
	}
}

// requireOwnDaemons skips or fails the test, as testlxd decides, unless the
// test environment started LXD and the registry itself: only then may a
// test kill them.
func requireOwnDaemons(t *testing.T) {
	t.Helper()
	testlxd.Short(t)
	for _, f := range []string{"lxd.pid", "registry.pid"} {
		if _, err := os.Stat(filepath.Join("/var/lib/berth-testenv", f)); err != nil {
			testlxd.SkipUnlessUsable(t, fmt.Errorf("fault test: LXD or the registry was not started by testenv.sh: %w", err))
		}
	}
}

// watchRun runs berth as a process and calls onLine for each line of its
// output (stdout and stderr: apply's progress goes to stderr). It returns
// the output and the process's error; a run over 10 minutes is killed and
// reported as hung.
func watchRun(t *testing.T, onLine func(cmd *exec.Cmd, line string), args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, berthCommand(t), args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var werr error
	go func() { werr = cmd.Wait(); pw.Close() }()
	var out strings.Builder
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		onLine(cmd, sc.Text())
	}
	_, _ = io.Copy(io.Discard, pr)
	if ctx.Err() != nil {
		t.Fatalf("berth %v hung:\n%s", args, out.String())
	}
	return out.String(), werr
}

// killAt runs `berth apply` as a process and kills it with SIGKILL as soon
// as a line of its output matches at. It returns the output and whether the
// kill happened (false: apply ended first).
func killAt(t *testing.T, at *regexp.Regexp, args ...string) (string, bool) {
	t.Helper()
	killed := false
	out, _ := watchRun(t, func(cmd *exec.Cmd, line string) {
		if !killed && at.MatchString(line) {
			_ = cmd.Process.Kill()
			killed = true
		}
	}, args...)
	return out, killed
}

// execRetry runs a command in an instance and returns its output. LXD
// sometimes fails a fresh exec under load ("Failed to retrieve PID of
// executing child process") before the command ran: that is tried again.
func execRetry(ctx context.Context, c *lxd.Client, instance string, command ...string) (stdout, stderr string, code int, err error) {
	for try := 1; ; try++ {
		var out, errb bytes.Buffer
		code, err = c.Exec(ctx, instance, lxd.ExecRequest{Command: command, Stdout: &out, Stderr: &errb})
		if err != nil && strings.Contains(err.Error(), "Failed to retrieve PID") && try < 4 && ctx.Err() == nil {
			time.Sleep(time.Duration(try) * 200 * time.Millisecond)
			continue
		}
		return out.String(), errb.String(), code, err
	}
}

// ctr is one container as `docker ps` in an instance shows it.
type ctr struct{ name, image, app, status string }

// dockerPS lists the containers of instance with the docker CLI inside it.
func dockerPS(t *testing.T, c *lxd.Client, instance string) []ctr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, errOut, code, err := execRetry(ctx, c, instance, "docker", "ps", "-a", "--no-trunc", "--format", `{{.Names}}|{{.Image}}|{{.Label "berth.app"}}|{{.Status}}`)
	if err != nil || code != 0 {
		t.Fatalf("docker ps in %s: exit %d, %v\n%s", instance, code, err, errOut)
	}
	var list []ctr
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.SplitN(l, "|", 4); len(f) == 4 {
			list = append(list, ctr{f[0], f[1], f[2], f[3]})
		}
	}
	return list
}

// checkFleet is the end of every fault test, seen from outside: app has
// exactly replicas instances, <app>-0..n-1, all running; each runs exactly
// one labelled app container, named after the app, of image, up and
// healthy; there are no leftovers (-next containers, kept backups).
func checkFleet(t *testing.T, c *lxd.Client, app, image string, replicas int) {
	t.Helper()
	insts, err := c.ListInstances(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range insts {
		if strings.Contains(i.Name, "-bak-") || i.Config["user.berth.backup-of"] != "" {
			t.Errorf("leftover backup instance %s", i.Name)
		}
		if i.Config[ownership.KeyApp] != app {
			continue
		}
		names = append(names, i.Name)
		if i.Status != "Running" {
			t.Errorf("%s is %s", i.Name, i.Status)
			continue
		}
		var ours []ctr
		for _, k := range dockerPS(t, c, i.Name) {
			if k.app != "" {
				ours = append(ours, k)
			}
		}
		if len(ours) != 1 {
			t.Errorf("%s has %d labelled containers, want 1: %+v", i.Name, len(ours), ours)
			continue
		}
		k := ours[0]
		if k.name != app || k.app != app || !strings.HasSuffix(k.image, "/berth/"+image) ||
			!strings.HasPrefix(k.status, "Up") || !strings.Contains(k.status, "(healthy)") {
			t.Errorf("%s: container %+v, want %s of berth/%s, up and healthy", i.Name, k, app, image)
		}
	}
	slices.Sort(names)
	var want []string
	for s := range replicas {
		want = append(want, ownership.InstanceName(app, s))
	}
	if !slices.Equal(names, want) {
		t.Errorf("instances of %s: %v, want %v", app, names, want)
	}
}

// faultFleet starts a test project and a repo whose web app runs replicas
// of hello:1, converged.
func faultFleet(t *testing.T, replicas int) (project string, c *lxd.Client, r *repo) {
	t.Helper()
	requireLive(t)
	project, c = e2eProject(t)
	r = newRepo(t)
	r.write("apps/web.yaml", webSpec(replicas, "hello:1"))
	r.commit(fmt.Sprintf("web: %d replicas of hello:1", replicas))
	if code, out, errOut := berth(t, "--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir); code != 0 {
		t.Fatalf("first apply: exit %d\n%s%s", code, out, errOut)
	}
	checkFleet(t, c, "web", "hello:1", replicas)
	return project, c, r
}

// engineLine matches apply's progress line for a Docker step on instance:
// "  web-0    create   web-next (hash ..., image ...) (0.1s)".
func engineLine(instance, step string) *regexp.Regexp {
	return regexp.MustCompile(`^\s+` + regexp.QuoteMeta(instance) + `\s+` + regexp.QuoteMeta(step) + `\s`)
}

// kill -9 of apply mid-rollout, then apply again: with a healthy new image
// (killed with web-next created: a leftover to clean up) and with one that
// never gets healthy (killed just after web-0's new container started:
// the next apply must not take a second replica down).
func TestFaultKillApplyMidRollout(t *testing.T) {
	project, c, r := faultFleet(t, 3)
	// The killed apply cannot release its lease: a short TTL, and the next
	// apply waits for it to expire.
	applyArgs := []string{"--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir, "--lease-ttl", "5s", "--wait-lease", "1m"}

	t.Log("healthy image: kill -9 once web-0's replacement container exists")
	r.write("apps/web.yaml", webSpec(3, "hello:2"))
	r.commit("web: hello:2")
	out, killed := killAt(t, engineLine("web-0", "create"), applyArgs...)
	if !killed {
		t.Fatalf("apply ended before the kill point:\n%s", out)
	}
	code, out, errOut := berth(t, "--project", project, "--owner", "e2e", "plan", "--repo", r.dir)
	if code != 2 || !strings.Contains(out, "web-next") {
		t.Errorf("plan after the kill must show the leftover web-next: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := berth(t, applyArgs...); code != 0 {
		t.Fatalf("apply after the kill: exit %d\n%s%s", code, out, errOut)
	}
	checkFleet(t, c, "web", "hello:2", 3)

	t.Log("never-healthy image: kill -9 just after web-0's new container started")
	r.write("apps/web.yaml", webSpec(3, "broken:1"))
	r.commit("web: broken:1")
	out, killed = killAt(t, engineLine("web-0", "start"), applyArgs...)
	if !killed {
		t.Fatalf("apply ended before the kill point:\n%s", out)
	}
	code, out, errOut = berth(t, applyArgs...)
	if code == 0 {
		t.Errorf("apply with web-0 not ready reported success:\n%s%s", out, errOut)
	}
	if !strings.Contains(out+errOut, "web-0 unavailable") && !strings.Contains(out+errOut, "web-0: ") {
		t.Errorf("apply does not say web-0 holds the rollout:\n%s%s", out, errOut)
	}
	// From outside: web-1 and web-2 were never disrupted.
	for _, name := range []string{"web-1", "web-2"} {
		for _, k := range dockerPS(t, c, name) {
			if k.app == "web" && (!strings.HasSuffix(k.image, "/berth/hello:2") || !strings.Contains(k.status, "(healthy)")) {
				t.Errorf("%s was disrupted while web-0 was not ready: %+v", name, k)
			}
		}
	}
	code, out, _ = berth(t, "--project", project, "--owner", "e2e", "plan", "--repo", r.dir)
	if code != exitBlocked || !regexp.MustCompile(`Waiting[^\n]*\n(.*\n)*.*web-1\s+replace-container`).MatchString(out) {
		t.Errorf("plan must show web-1 and web-2 waiting: exit %d\n%s", code, out)
	}

	t.Log("git revert of the broken image converges the fleet")
	r.git("revert", "--no-edit", "HEAD")
	if code, out, errOut := berth(t, applyArgs...); code != 0 {
		t.Fatalf("apply after revert: exit %d\n%s%s", code, out, errOut)
	}
	checkFleet(t, c, "web", "hello:2", 3)
}

// The LXD daemon dies mid-apply: apply fails with a clear error and does
// not hang, plan says LXD is not reachable, and once LXD is back a re-run
// converges.
func TestFaultLXDDiesMidApply(t *testing.T) {
	requireOwnDaemons(t)
	project, c, r := faultFleet(t, 2)
	t.Cleanup(func() { testenvCmd(t, "lxd", "start") })
	r.write("apps/web.yaml", webSpec(2, "hello:2"))
	r.commit("web: hello:2")

	killed := false
	all, err := watchRun(t, func(_ *exec.Cmd, line string) {
		if !killed && engineLine("web-0", "pull").MatchString(line) {
			testenvCmd(t, "lxd", "kill")
			killed = true
		}
	}, "--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir, "--lease-ttl", "5s")
	if !killed {
		t.Fatalf("apply ended before LXD was killed:\n%s", all)
	}
	if err == nil || !strings.Contains(all, "LXD not reachable at") {
		t.Errorf("apply with LXD down: err %v, want a failure saying LXD is not reachable:\n%s", err, all)
	}
	if strings.Contains(all, "docker did not answer") {
		t.Errorf("apply blamed Docker for LXD being down:\n%s", all)
	}

	code, pout, perr := berth(t, "--project", project, "--owner", "e2e", "plan", "--repo", r.dir)
	if code != 1 || !strings.Contains(perr, "LXD not reachable at") {
		t.Errorf("plan with LXD down: exit %d, want 1 and 'LXD not reachable at'\n%s%s", code, pout, perr)
	}

	testenvCmd(t, "lxd", "start")
	// The apply LXD died under could not release its lease: wait it out.
	if code, out, errOut := berth(t, "--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir, "--wait-lease", "1m"); code != 0 {
		t.Fatalf("apply once LXD is back: exit %d\n%s%s", code, out, errOut)
	}
	checkFleet(t, c, "web", "hello:2", 2)
}

// The registry goes away during a rollout: the rollout halts with a clear
// reason, the old replicas keep serving, and a re-run converges once the
// registry is back.
func TestFaultRegistryStopsMidRollout(t *testing.T) {
	requireOwnDaemons(t)
	project, c, r := faultFleet(t, 3)
	t.Cleanup(func() { testenvCmd(t, "registry", "start") })
	r.write("apps/web.yaml", webSpec(3, "hello:2"))
	r.commit("web: hello:2")

	stopped := false
	done := regexp.MustCompile(`^\s+web-0\s+replace-container\s+done`)
	all, err := watchRun(t, func(cmd *exec.Cmd, line string) {
		if !stopped && done.MatchString(line) {
			// Freeze apply while the registry goes away, so the next
			// replica's pull cannot slip through first.
			_ = cmd.Process.Signal(syscall.SIGSTOP)
			testenvCmd(t, "registry", "stop")
			_ = cmd.Process.Signal(syscall.SIGCONT)
			stopped = true
		}
	}, "--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir)
	if !stopped {
		t.Fatalf("apply never finished web-0:\n%s", all)
	}
	if err == nil || !regexp.MustCompile(`web\s+Degraded.*web-1: replace-container: .*pull`).MatchString(all) {
		t.Errorf("apply with the registry gone: err %v, want exit 1 and the pull failure on web-1:\n%s", err, all)
	}
	// The old replicas still serve the old version.
	for _, name := range []string{"web-1", "web-2"} {
		ok := false
		for _, k := range dockerPS(t, c, name) {
			ok = ok || k.app == "web" && strings.HasSuffix(k.image, "/berth/hello:1") && strings.Contains(k.status, "(healthy)")
		}
		if !ok {
			t.Errorf("%s no longer serves hello:1: %+v", name, dockerPS(t, c, name))
		}
	}

	testenvCmd(t, "registry", "start")
	if code, out, errOut := berth(t, "--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir); code != 0 {
		t.Fatalf("apply once the registry is back: exit %d\n%s%s", code, out, errOut)
	}
	checkFleet(t, c, "web", "hello:2", 3)
}

// A dockerd that stops answering in one replica (SIGSTOP: wedged, not
// dead, so the instance's init does not restart it) is not "No changes":
// plan and status show it, and apply repairs it by restarting the
// instance.
func TestFaultDockerdWedged(t *testing.T) {
	project, c, r := faultFleet(t, 2)
	ctx := context.Background()
	_, errOut, code, err := execRetry(ctx, c, "web-1", "sh", "-c", "kill -STOP $(cat /var/run/docker.pid)")
	if err != nil || code != 0 {
		t.Fatalf("wedging dockerd: exit %d, %v: %s", code, err, errOut)
	}

	code, out, errOut := berth(t, "--project", project, "--owner", "e2e", "plan", "--repo", r.dir)
	if code != 2 || !regexp.MustCompile(`web-1\s+restart\s+\(docker: not answering`).MatchString(out) {
		t.Errorf("plan with a wedged dockerd: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = berth(t, "--project", project, "--owner", "e2e", "status", "--repo", r.dir, "-o", "json")
	if !strings.Contains(out, `"health": "Degraded"`) || !strings.Contains(out, "docker not answering") {
		t.Errorf("status with a wedged dockerd: exit %d\n%s", code, out)
	}
	if code, out, errOut := berth(t, "--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir); code != 0 {
		t.Fatalf("apply must repair the wedged replica: exit %d\n%s%s", code, out, errOut)
	}
	checkFleet(t, c, "web", "hello:1", 2)
}

// TestFaultHandStoppedReplicaComesBack: with the daemon following events,
// a replica stopped through LXD's API (as `lxc stop` does: a clean
// shutdown) serves again, and on the way the daemon never holds the app
// for its rollout backoff (Docker's die events come before LXD's
// shutdown, and a step planned in between must be planned again, not held)
// and never restarts the instance (its Docker was not dead: it was
// stopped with the instance).
func TestFaultHandStoppedReplicaComesBack(t *testing.T) {
	requireLive(t)
	requireTestNetwork(t)
	project, c := e2eProject(t)
	const app = "handstop"
	r := newRepo(t)
	r.write("apps/"+app+".yaml", strings.Replace(webWithPorts(2, "hello:1"), "name: web", "name: "+app, 1))
	rev := r.commit(app + ": 2 replicas of hello:1")
	d := startDaemon(t, "--project", project, "--owner", "hs", "run", "--repo", r.dir, "--dir", "apps", "--interval", "1h")
	d.waitFor("first sync", 3*time.Minute, func(st reconciler.LoopStatus) bool { return appReady(st, app, 2, rev) })

	victim := app + "-1"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	// `lxc stop`: a clean shutdown, no force, waiting for it to end. An
	// init still booting may not take the shutdown signal yet (LXD:
	// "shutting down the container failed"): ask again, as a user would.
	for try := 1; ; try++ {
		err := c.SetInstanceState(ctx, victim, lxd.InstanceStatePut{Action: "stop", Timeout: -1})
		if err == nil {
			break
		}
		if try == 10 || !strings.Contains(err.Error(), "shutting down the container failed") {
			t.Fatalf("stop %s: %v", victim, err)
		}
		t.Logf("stop %s: %v; trying again", victim, err)
		time.Sleep(2 * time.Second)
	}
	stopped := time.Now()
	t.Logf("%s stopped through LXD after %s", victim, stopped.Sub(start).Round(time.Millisecond))

	// Poll the status through the recovery: never Held, never a backoff.
	var heldSeen []string
	d.waitFor(victim+" to serve again", 3*time.Minute, func(st reconciler.LoopStatus) bool {
		if f, ok := st.Failures[app]; ok {
			heldSeen = append(heldSeen, fmt.Sprintf("held: %s (retry %s)", f.Reason, f.Retry))
		}
		if st.Phase == "Backoff" {
			heldSeen = append(heldSeen, "phase Backoff: "+st.LastError)
		}
		// A run that ended after the stop: the status before it is stale.
		return st.LastRun.After(stopped) && appReady(st, app, 2, rev)
	})
	body := netHTTPGet(t, "http://"+netWaitAddr(t, c, victim, time.Minute)+":8080/", time.Minute)
	t.Logf("%s serves again %s after the stop began: %q", victim, time.Since(start).Round(time.Millisecond), strings.TrimSpace(body))
	if len(heldSeen) > 0 {
		t.Errorf("the app was held or backed off during the recovery:\n%s\nlog:\n%s", strings.Join(heldSeen, "\n"), tail(d.log(), 60))
	}
	restart := regexp.MustCompile(`"msg":"step started"[^\n]*"action":"restart"`)
	if m := restart.FindString(d.log()); m != "" {
		t.Errorf("a restart step ran on a replica stopped by hand: %s\nlog:\n%s", m, tail(d.log(), 60))
	}
	if code := d.stop(); code != 0 {
		t.Errorf("daemon exited %d", code)
	}
}
