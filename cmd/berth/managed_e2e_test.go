package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/reconciler"
)

// Managed systems on real LXD: provisioning from the repo, base images
// kept current, system-only and ephemeral replicas, refused privilege.

// provisionedWeb is web with a provision of two files from the repo and a
// script that copies the first to /srv/provisioned.
func provisionedWeb(replicas int) string {
	return fmt.Sprintf(`apiVersion: berth/v1
kind: App
metadata:
  name: web
spec:
  replicas: %d
  system:
    image: berth/debian-docker
    profiles: [default, berth-test]
    provision:
      files:
        - {source: provision/motd, path: /etc/berth/motd, mode: "0640"}
        - {source: provision/setup.sh, path: /usr/local/sbin/berth-setup, mode: "0755"}
      run: [/usr/local/sbin/berth-setup]
      timeout: 1m
  container:
    image: 127.0.0.1:5000/berth/hello:1
    ports: [{name: http, port: 8080}]
  update:
    maxUnavailable: 1
    healthTimeout: 40s
    drainDelay: 0s
`, replicas)
}

const setupScript = `#!/bin/sh
set -e
mkdir -p /srv
cp /etc/berth/motd /srv/provisioned
echo "provisioned: $(cat /etc/berth/motd)"
`

// systemOnlySpec is a plain managed system on the busybox image: no
// Docker; its provision starts busybox httpd on 8080.
func systemOnlySpec(name string, replicas int, extra string) string {
	return fmt.Sprintf(`apiVersion: berth/v1
kind: App
metadata:
  name: %s
spec:
  replicas: %d
  system:
    image: berth/busybox
    profiles: [default, berth-test]
    ports: [{name: http, port: 8080}]
    provision:
      run: [/bin/sh, -c, "mkdir -p /www && hostname > /www/index.html && httpd -p 8080 -h /www"]
      timeout: 30s
%s  update:
    maxUnavailable: 1
    healthTimeout: 40s
    drainDelay: 0s
`, name, replicas, extra)
}

func instanceConfig(t *testing.T, c *lxd.Client, name string) map[string]string {
	t.Helper()
	inst, _, err := c.GetInstance(context.Background(), name)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return inst.Config
}

func TestManagedProvisionInPlace(t *testing.T) {
	requireLive(t)
	requireTestNetwork(t)
	project, c := e2eProject(t)
	r := newRepo(t)
	r.write("apps/web.yaml", provisionedWeb(2))
	r.write("provision/motd", "release one\n")
	r.write("provision/setup.sh", setupScript)
	r.commit("web with a provision")
	args := []string{"--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir, "--dir", "apps"}
	if code, out, errOut := berth(t, args...); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	before := map[string]string{}
	containers := map[string]string{}
	addrs := map[string]string{}
	state := liveState(t, c, "e2e")
	for _, n := range []string{"web-0", "web-1"} {
		if code, out := netExec(t, c, n, "cat", "/srv/provisioned"); code != 0 || out != "release one\n" {
			t.Fatalf("%s: /srv/provisioned: exit %d %q", n, code, out)
		}
		if code, out := netExec(t, c, n, "stat", "-c", "%a %u:%g", "/etc/berth/motd"); code != 0 || strings.TrimSpace(out) != "640 0:0" {
			t.Errorf("%s: /etc/berth/motd mode and owner: %q", n, out)
		}
		before[n] = instanceConfig(t, c, n)["volatile.uuid"]
		if state[n].Container == nil {
			t.Fatalf("%s has no app container", n)
		}
		containers[n] = state[n].Container.ID
		addrs[n] = netWaitAddr(t, c, n, time.Minute)
	}

	r.write("provision/motd", "release two\n")
	r.commit("motd: release two")
	code, out, _ := berth(t, "--project", project, "--owner", "e2e", "plan", "--repo", r.dir, "--dir", "apps")
	if code != 2 || !regexp.MustCompile(`web-0\s+provision\s+\(system.provision: `).MatchString(out) || strings.Contains(out, "recreate") {
		t.Fatalf("plan of a provision change: exit %d\n%s", code, out)
	}

	// The app keeps serving: both replicas answer all through the
	// re-provision (its container is not restarted).
	ctx, stop := context.WithCancel(context.Background())
	var failed, served atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	for _, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := client.Get("http://" + a + ":8080/")
				if err == nil && resp.StatusCode == http.StatusOK {
					served.Add(1)
				} else {
					failed.Add(1)
				}
				if err == nil {
					resp.Body.Close()
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	code, out, errOut := berth(t, args...)
	stop()
	wg.Wait()
	if code != 0 {
		t.Fatalf("apply of the provision change: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("during the re-provision: %d requests served, %d failed", served.Load(), failed.Load())
	if failed.Load() != 0 || served.Load() == 0 {
		t.Errorf("requests failed during the re-provision: %d of %d", failed.Load(), failed.Load()+served.Load())
	}
	state = liveState(t, c, "e2e")
	for _, n := range []string{"web-0", "web-1"} {
		if got := instanceConfig(t, c, n)["volatile.uuid"]; got != before[n] {
			t.Errorf("%s was recreated: volatile.uuid %s → %s", n, before[n], got)
		}
		if code, out := netExec(t, c, n, "cat", "/srv/provisioned"); code != 0 || out != "release two\n" {
			t.Errorf("%s: /srv/provisioned after the change: exit %d %q", n, code, out)
		}
		if st := state[n].Container; st == nil || st.ID != containers[n] {
			t.Errorf("%s: app container replaced or gone (restartContainer is off): %+v", n, st)
		}
	}
	if code, out, _ := berth(t, "--project", project, "--owner", "e2e", "plan", "--repo", r.dir, "--dir", "apps"); code != 0 {
		t.Errorf("plan after the re-provision: exit %d\n%s", code, out)
	}
}

func TestManagedProvisionFailureHaltsWithItsOutput(t *testing.T) {
	requireLive(t)
	project, c := e2eProject(t)
	r := newRepo(t)
	spec := strings.Replace(systemOnlySpec("db", 2, ""), `run: [/bin/sh, -c, "mkdir -p /www && hostname > /www/index.html && httpd -p 8080 -h /www"]`,
		`run: [/bin/sh, -c, "echo step one; echo 'E: Unable to locate package nosuch' >&2; exit 100"]`, 1)
	r.write("apps/db.yaml", spec)
	rev := r.commit("db with a failing provision")
	d := startDaemon(t, "--project", project, "--owner", "e2e", "run", "--repo", r.dir, "--dir", "apps", "--interval", "1h")
	st := d.waitFor("the failed provision in status", 2*time.Minute, func(st reconciler.LoopStatus) bool {
		return strings.Contains(st.Failures["db"].Reason, "Unable to locate package")
	})
	if f := st.Failures["db"]; f.Revision != rev || !strings.Contains(f.Reason, "100") {
		t.Errorf("failure: %+v", f)
	}
	for _, a := range st.Apps {
		if a.App == "db" && (a.Ready != 0 || a.Health == "Healthy") {
			t.Errorf("db with a failed provision: %+v", a)
		}
	}
	// Seen from outside: the replica exists, is not marked provisioned,
	// and the app container phase never started (there is none).
	if cfg := instanceConfig(t, c, "db-0"); cfg["user.berth.provision-hash"] != "pending" {
		t.Errorf("db-0 provision-hash %q, want pending", cfg["user.berth.provision-hash"])
	}
	d.stop()
}

func TestManagedSystemOnlyAppConvergesAndScales(t *testing.T) {
	requireLive(t)
	requireTestNetwork(t)
	project, c := e2eProject(t)
	r := newRepo(t)
	apply := func(replicas int, flags ...string) {
		t.Helper()
		r.write("apps/db.yaml", systemOnlySpec("db", replicas, ""))
		r.commit(fmt.Sprintf("db: %d", replicas))
		args := append([]string{"--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir, "--dir", "apps"}, flags...)
		if code, out, errOut := berth(t, args...); code != 0 {
			t.Fatalf("apply %d: exit %d\n%s%s", replicas, code, out, errOut)
		}
	}
	serves := func(n int) {
		t.Helper()
		state := liveState(t, c, "e2e")
		if len(state) != n {
			t.Fatalf("want %d instances, have %d", n, len(state))
		}
		for i := range n {
			name := fmt.Sprintf("db-%d", i)
			if got := netHTTPGet(t, "http://"+netWaitAddr(t, c, name, time.Minute)+":8080/", 30*time.Second); strings.TrimSpace(got) != name {
				t.Errorf("%s serves %q", name, got)
			}
			if code, _ := netExec(t, c, name, "/bin/test", "-e", "/usr/bin/dockerd"); code == 0 {
				t.Errorf("%s has docker: a system-only app runs on a plain system", name)
			}
		}
	}
	apply(1)
	serves(1)
	apply(3)
	serves(3)
	// 2 of the fleet's 3 instances deleted: over the mass-prune share.
	apply(1, "--allow-mass-prune")
	serves(1)
}

func TestManagedEphemeralReplicaComesBack(t *testing.T) {
	requireLive(t)
	project, c := e2eProject(t)
	r := newRepo(t)
	r.write("apps/eph.yaml", systemOnlySpec("eph", 1, "    ephemeral: true\n"))
	rev := r.commit("eph")
	d := startDaemon(t, "--project", project, "--owner", "e2e", "run", "--repo", r.dir, "--dir", "apps", "--interval", "1h", "--resync", "1h")
	d.waitFor("eph ready", 2*time.Minute, func(st reconciler.LoopStatus) bool { return appReady(st, "eph", 1, rev) })
	first := instanceConfig(t, c, "eph-0")["volatile.uuid"]
	inst, _, err := c.GetInstance(context.Background(), "eph-0")
	if err != nil || !inst.Ephemeral {
		t.Fatalf("eph-0 is not ephemeral: %+v %v", inst, err)
	}
	if err := c.StopInstance(context.Background(), "eph-0", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The event stream sees it go; the slot is missing, and is filled.
	back := func(rev, before string) string {
		var uuid string
		d.waitFor("eph-0 back", 2*time.Minute, func(st reconciler.LoopStatus) bool {
			if !appReady(st, "eph", 1, rev) {
				return false
			}
			i, _, err := c.GetInstance(context.Background(), "eph-0")
			if err != nil {
				return false
			}
			uuid = i.Config["volatile.uuid"]
			return uuid != before
		})
		return uuid
	}
	second := back(rev, first)
	// A change that recreates it: the stop of the old one is its delete.
	r.write("apps/eph.yaml", systemOnlySpec("eph", 1, "    ephemeral: true\n    cloudInit: \"#cloud-config\\n\"\n"))
	rev = r.commit("eph: cloud-init, a recreate")
	back(rev, second)
	if st, _ := d.status(); len(st.Failures) != 0 {
		t.Errorf("failures after recreating an ephemeral replica: %+v", st.Failures)
	}
	d.stop()
}

func TestManagedBaseImageRollsOntoARefreshedAlias(t *testing.T) {
	requireLive(t)
	project, c := e2eProject(t)
	r := newRepo(t)
	r.write("apps/db.yaml", systemOnlySpec("db", 2, ""))
	r.commit("db")
	args := []string{"--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir, "--dir", "apps"}
	if code, out, errOut := berth(t, args...); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	old := instanceConfig(t, c, "db-0")["volatile.base_image"]
	refresh := exec.Command("../../testenv/testenv.sh", "image", "refresh", "busybox")
	if out, err := refresh.CombinedOutput(); err != nil {
		t.Fatalf("testenv.sh image refresh busybox: %v\n%s", err, out)
	}
	alias, _, err := c.GetImageAlias(context.Background(), "berth/busybox")
	if err != nil {
		t.Fatal(err)
	}
	target := alias.Target
	if target == old {
		t.Fatalf("alias after the refresh: %q (was %q), %v", target, old, err)
	}
	code, out, _ := berth(t, "--project", project, "--owner", "e2e", "plan", "--repo", r.dir, "--dir", "apps")
	want := fmt.Sprintf("recreate  (base image: %s → %s)", old[:8], target[:8])
	if code != 2 || strings.Count(out, want) != 2 {
		t.Fatalf("plan after the refresh: exit %d, want twice %q\n%s", code, want, out)
	}
	if code, out, _ := berth(t, "--project", project, "--owner", "e2e", "status", "--repo", r.dir, "--dir", "apps"); !strings.Contains(out, "OUTDATED") {
		t.Errorf("status before the rollout: exit %d\n%s", code, out)
	}
	if code, out, errOut := berth(t, args...); code != 0 {
		t.Fatalf("apply of the new base image: exit %d\n%s%s", code, out, errOut)
	}
	for _, n := range []string{"db-0", "db-1"} {
		if got := instanceConfig(t, c, n)["volatile.base_image"]; got != target {
			t.Errorf("%s runs base image %s, want %s", n, got, target)
		}
	}
}

func TestManagedPrivilegeIsRefusedUnlessAllowed(t *testing.T) {
	requireLive(t)
	project, _ := e2eProject(t)
	r := newRepo(t)
	// The privileged one last: it is the one then applied with the flag.
	for _, value := range []string{
		"    config: {raw.lxc: \"lxc.apparmor.profile=unconfined\"}\n",
		"    devices: {kmsg: {type: unix-char, source: /dev/kmsg}}\n",
		"    config: {security.privileged: \"true\"}\n",
	} {
		key := strings.TrimSpace(value)
		r.write("apps/db.yaml", systemOnlySpec("db", 1, value))
		r.commit(key)
		code, out, errOut := berth(t, "validate", r.dir, "--dir", "apps")
		if code == 0 || !strings.Contains(out+errOut, "--allow-privileged") {
			t.Errorf("%s: validate exit %d\n%s%s", key, code, out, errOut)
		}
		if code, out, errOut := berth(t, "--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir, "--dir", "apps"); code == 0 {
			t.Errorf("%s: apply of a privileged spec succeeded\n%s%s", key, out, errOut)
		}
	}
	// Allowed explicitly, it runs, and status says it is privileged.
	if code, out, errOut := berth(t, "--project", project, "--owner", "e2e", "apply", "--yes", "--allow-privileged", "--repo", r.dir, "--dir", "apps"); code != 0 {
		t.Fatalf("apply --allow-privileged: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, _ := berth(t, "--project", project, "--owner", "e2e", "status", "--allow-privileged", "--repo", r.dir, "--dir", "apps"); !strings.Contains(out, "PRIVILEGED") {
		t.Errorf("status of a privileged replica: exit %d\n%s", code, out)
	}
}
