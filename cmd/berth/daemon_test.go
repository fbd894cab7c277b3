package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/berth-gitops/berth/ownership"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
)

// daemon is an in-process `berth run`; stop is its SIGTERM.
type daemon struct {
	t      *testing.T
	url    string
	cancel context.CancelFunc
	done   chan int
	out    safeBuffer
}

func (d *daemon) log() string { return d.out.String() }

func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	addr := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{t: t, url: "http://" + addr, cancel: cancel, done: make(chan int, 1)}
	all := append([]string{"--log-level", "debug"}, args...)
	all = append(all, "--listen", addr)
	go func() { d.done <- run(ctx, all, &d.out, &d.out) }()
	t.Cleanup(func() { d.stop() })
	return d
}

// stop ends the daemon as SIGTERM does and returns its exit code.
func (d *daemon) stop() int {
	d.cancel()
	select {
	case code := <-d.done:
		d.done <- code
		return code
	case <-time.After(3 * time.Minute):
		d.t.Fatalf("daemon did not stop\n%s", d.log())
		return -1
	}
}

func (d *daemon) status() (reconciler.LoopStatus, error) {
	var st reconciler.LoopStatus
	resp, err := http.Get(d.url + "/api/v1/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitFor polls the daemon's status until cond holds.
func (d *daemon) waitFor(what string, timeout time.Duration, cond func(reconciler.LoopStatus) bool) reconciler.LoopStatus {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	var st reconciler.LoopStatus
	var err error
	for time.Now().Before(deadline) {
		if st, err = d.status(); err == nil && cond(st) {
			return st
		}
		time.Sleep(250 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	d.t.Fatalf("timed out waiting for %s (last error %v)\nstatus: %s\nlog:\n%s", what, err, b, tail(d.log(), 40))
	return st
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func appReady(st reconciler.LoopStatus, app string, ready int, revision string) bool {
	if revision != "" && st.Revision != revision {
		return false
	}
	for _, a := range st.Apps {
		if a.App == app {
			return a.Ready == ready && a.Desired == ready && a.Sync == plan.SyncSynced
		}
	}
	return ready == 0
}

// gitHTTP serves the bare repositories under root with git http-backend.
func gitHTTP(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatal(err)
	}
	h := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(out)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func webhook(t *testing.T, d *daemon, secret, body string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", d.url+"/hooks/github", strings.NewReader(body))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestDaemonEndToEnd runs `berth run` against a bare repository served over
// HTTP by git http-backend: webhooks, metrics, the lease between two
// daemons, a shutdown during a rollout and a restart.
func TestDaemonEndToEnd(t *testing.T) {
	requireLive(t)
	project, _ := e2eProject(t)
	base := t.TempDir()
	bare := filepath.Join(base, "apps.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", bare).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	url := gitHTTP(t, base) + "/apps.git"
	work := newRepo(t)
	push := func(msg string) string {
		t.Helper()
		sha := work.commit(msg)
		work.git("push", "-q", bare, "main")
		return sha
	}
	secretFile := filepath.Join(base, "webhook-secret")
	os.WriteFile(secretFile, []byte("s3cret\n"), 0o600)
	common := []string{"--project", project, "--owner", "d1", "run", "--repo", url, "--dir", "apps",
		"--cache-dir", filepath.Join(base, "cache"), "--lease-ttl", "20s"}

	work.write("apps/web.yaml", webSpec(1, "hello:1"))
	first := push("web: 1 replica")
	a := startDaemon(t, append(common, "--interval", "1h", "--webhook-secret-file", secretFile)...)
	a.waitFor("first sync", 2*time.Minute, func(st reconciler.LoopStatus) bool { return appReady(st, "web", 1, first) })
	if resp, err := http.Get(a.url + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz after first sync: %v %v", resp, err)
	}

	t.Log("webhooks: a bad signature is refused; a good one triggers a run long before the next poll (1h)")
	work.write("apps/web.yaml", webSpec(2, "hello:1"))
	second := push("web: 2 replicas")
	body := `{"ref":"refs/heads/main","after":"` + second + `"}`
	if code := webhook(t, a, "wrong", body); code != http.StatusUnauthorized {
		t.Errorf("bad signature: %d, want 401", code)
	}
	time.Sleep(2 * time.Second)
	if st, _ := a.status(); st.Revision != first {
		t.Errorf("a refused webhook triggered a run: revision %s", st.Revision)
	}
	if code := webhook(t, a, "s3cret", body); code != http.StatusAccepted {
		t.Errorf("good webhook: %d, want 202", code)
	}
	a.waitFor("the webhook's run", 2*time.Minute, func(st reconciler.LoopStatus) bool { return appReady(st, "web", 2, second) })

	t.Log("metrics")
	resp, err := http.Get(a.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"berth_reconcile_runs_total", "berth_reconcile_duration_seconds", "berth_git_polls_total",
		"berth_git_fetches_total", `berth_applied_revision_info{revision="` + second + `"} 1`, "berth_apps{",
		"berth_lxd_requests_total{", `berth_webhooks_total{provider="github",result="unauthorized"} 1`, `berth_triggers_total{source="webhook"}`} {
		if !strings.Contains(string(metrics), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	t.Log("a second daemon for the same owner waits for the lease")
	b := startDaemon(t, append(common, "--interval", "1s")...)
	b.waitFor("b to wait for the lease", time.Minute, func(st reconciler.LoopStatus) bool {
		return st.Phase == "WaitingForLease" && strings.Contains(st.LeaseHolder, ":")
	})
	work.write("apps/web.yaml", webSpec(2, "hello:2"))
	third := push("web: hello:2")
	time.Sleep(3 * time.Second) // b polls every second but must not act
	if st, _ := b.status(); st.Revision != "" || st.Phase != "WaitingForLease" {
		t.Fatalf("b acted while a holds the lease: %+v", st)
	}
	if code := a.stop(); code != 0 {
		t.Fatalf("a exited %d\n%s", code, tail(a.log(), 20))
	}
	t.Log("a stopped and released the lease; b takes over, and is stopped in the middle of the rollout")
	b.waitFor("b to start the rollout", time.Minute, func(reconciler.LoopStatus) bool {
		return strings.Contains(b.log(), `"msg":"step started"`)
	})
	if code := b.stop(); code != 0 {
		t.Fatalf("b exited %d after SIGTERM during a rollout\n%s", code, tail(b.log(), 30))
	}
	if !strings.Contains(b.log(), `"msg":"step done"`) && !strings.Contains(b.log(), `"msg":"step failed"`) {
		t.Errorf("the running step did not finish before b exited:\n%s", tail(b.log(), 30))
	}

	t.Log("a restart converges")
	c := startDaemon(t, append(common, "--interval", "1h")...)
	st := c.waitFor("c to converge", 3*time.Minute, func(st reconciler.LoopStatus) bool { return appReady(st, "web", 2, third) })
	for _, a := range st.Apps {
		for _, r := range a.Replicas {
			if !strings.HasSuffix(r.Image, "hello:2") {
				t.Errorf("%s runs %s after the restart", r.Instance, r.Image)
			}
		}
	}
	if code := c.stop(); code != 0 {
		t.Errorf("c exited %d", code)
	}
}

// TestDaemonLocalRepo: fsnotify on a local path triggers a run, and with
// --verify-signatures an unsigned head is not applied.
func TestDaemonLocalRepo(t *testing.T) {
	requireLive(t)
	project, _ := e2eProject(t)
	r := newRepo(t)
	r.write("apps/web.yaml", webSpec(1, "hello:1"))
	first := r.commit("web: 1")
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("pr-check\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Scaling the fleet to zero below is a mass delete: allowed.
	d := startDaemon(t, "--project", project, "--owner", "d2", "run", "--repo", r.dir, "--dir", "apps", "--interval", "1h", "--sync-token-file", token, "--allow-mass-prune")
	d.waitFor("first sync", 2*time.Minute, func(st reconciler.LoopStatus) bool { return appReady(st, "web", 1, first) })
	// A pull-request check plans against the daemon's last observe.
	if code, out, errOut := berth(t, "--project", project, "--owner", "d2", "plan", "--repo", r.dir, "--dir", "apps", "--server", d.url, "--server-token-file", token); code != 0 || !strings.Contains(out, "No changes") {
		t.Errorf("plan --server: exit %d\n%s%s", code, out, errOut)
	}
	r.write("apps/web.yaml", webSpec(0, "hello:1"))
	second := r.commit("web: scale to zero")
	start := time.Now()
	d.waitFor("the commit to be seen through fsnotify", time.Minute, func(st reconciler.LoopStatus) bool { return appReady(st, "web", 0, second) })
	t.Logf("commit to converged (scale to zero) in %s, with a 1h poll interval", time.Since(start).Round(time.Millisecond))
	if code := d.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}

	// A throwaway public key: no commit is signed with it.
	keyring := filepath.Join("testdata", "public-key.asc")
	v := startDaemon(t, "--project", project, "--owner", "d2", "run", "--repo", r.dir, "--dir", "apps", "--interval", "1h",
		"--verify-signatures", "--keyring", keyring)
	st := v.waitFor("the unsigned head to be refused", time.Minute, func(st reconciler.LoopStatus) bool { return st.LastError != "" })
	if !strings.Contains(st.LastError, "not signed") || st.Revision != "" {
		t.Errorf("unsigned head: status %+v", st)
	}
	if resp, err := http.Get(v.url + "/readyz"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("readyz with an unverified head: %v %v", resp, err)
	}
}

// freePort returns a loopback address nothing listens on right now.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// fromOneRevision checks, from LXD and Docker, that app has exactly
// replicas instances, each running one healthy labelled container of
// image, and that every instance key and container label of the app names
// revision: nothing of another revision, no leftover (-next) containers.
func fromOneRevision(t *testing.T, c *lxd.Client, app, image, revision string, replicas int) {
	t.Helper()
	state := liveState(t, c, "e2e")
	want := map[string]string{}
	for s := range replicas {
		want[ownership.InstanceName(app, s)] = image
	}
	wantReplicas(t, state, app, want)
	for name, inst := range state {
		if inst.Config[ownership.KeyApp] != app {
			continue
		}
		if r := inst.Config[ownership.KeyRevision]; r != revision {
			t.Errorf("%s: %s = %s, want %s", name, ownership.KeyRevision, r, revision)
		}
		if k := inst.Container; k != nil && k.Labels[ownership.LabelRevision] != revision {
			t.Errorf("%s: container label %s = %s, want %s", name, ownership.LabelRevision, k.Labels[ownership.LabelRevision], revision)
		}
		if len(inst.StaleContainers) > 0 || len(inst.ForeignContainers) > 0 {
			t.Errorf("%s: leftover containers %v %v", name, inst.StaleContainers, inst.ForeignContainers)
		}
	}
}

// TestTwoAppliesOfDifferentRevisions: two applies of different revisions
// started together: exactly one writes, the other refuses at once naming
// the holder of the lease, and the fleet ends all of one revision. Then an
// apply whose lease is taken from it mid-rollout starts no further step and
// exits 1.
func TestTwoAppliesOfDifferentRevisions(t *testing.T) {
	requireLive(t)
	project, c := e2eProject(t)
	r := newRepo(t)
	r.write("apps/web.yaml", webSpec(3, "hello:1"))
	revA := r.commit("web: 3 replicas of hello:1")
	r.write("apps/web.yaml", webSpec(3, "hello:2"))
	revB := r.commit("web: 3 replicas of hello:2")
	image := map[string]string{revA: "hello:1", revB: "hello:2"}

	type result struct {
		rev, out, errOut string
		code             int
	}
	results := make(chan result, 2)
	start := make(chan struct{})
	for _, rev := range []string{revA, revB} {
		go func() {
			<-start
			var out, errOut safeBuffer
			code := run(context.Background(), []string{"--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir, "--rev", rev}, &out, &errOut)
			results <- result{rev: rev, out: out.String(), errOut: errOut.String(), code: code}
		}()
	}
	close(start)
	one, two := <-results, <-results
	winner, loser := one, two
	if two.code == 0 {
		winner, loser = two, one
	}
	t.Logf("apply of %s: exit %d\n%s%s", plan.ShortSHA(winner.rev), winner.code, winner.out, winner.errOut)
	t.Logf("apply of %s: exit %d\n%s%s", plan.ShortSHA(loser.rev), loser.code, loser.out, loser.errOut)
	if winner.code != 0 || loser.code != 1 {
		t.Fatalf("exit codes %d and %d, want exactly one 0 and one 1", winner.code, loser.code)
	}
	if !regexp.MustCompile(`the lease of owner "e2e" is held by berth-apply@\S+ \(until \d{4}-\d\d-\d\dT[0-9:]+Z\), another berth apply converging this owner`).MatchString(loser.errOut) {
		t.Errorf("the refused apply does not say who holds the lease until when:\n%s", loser.errOut)
	}
	if strings.Contains(loser.out+loser.errOut, "started") {
		t.Errorf("the refused apply started steps:\n%s%s", loser.out, loser.errOut)
	}
	fromOneRevision(t, c, "web", image[winner.rev], winner.rev, 3)

	t.Log("an apply whose lease is taken mid-rollout starts no further step and exits 1")
	other := revA
	if winner.rev == revA {
		other = revB
	}
	key := ownership.LeaseKey("e2e", project)
	t.Cleanup(func() { _ = c.PatchServerConfig(context.Background(), map[string]any{key: ""}, "") })
	var out safeBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(context.Background(), []string{"--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir, "--rev", other, "--lease-ttl", "3s"}, &out, &out)
	}()
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(out.String(), "started") {
		if time.Now().After(deadline) {
			t.Fatalf("no step started:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Another takes the lease. It writes again until the apply ends: a
	// raw write (no read-back, as a take does) can race with a renewal.
	thief := fmt.Sprintf("thief %d", time.Now().Add(time.Hour).Unix())
	var code int
	for written := false; !written; {
		if err := c.PatchServerConfig(context.Background(), map[string]any{key: thief}, ""); err != nil {
			t.Fatal(err)
		}
		select {
		case code = <-done:
			written = true
		case <-time.After(300 * time.Millisecond):
		}
	}
	t.Logf("apply that lost its lease: exit %d\n%s", code, out.String())
	if code != 1 || !strings.Contains(out.String(), "lost the lease: now held by thief") {
		t.Errorf("apply that lost its lease: exit %d, want 1 and why", code)
	}
	if n := strings.Count(out.String(), "started\n"); n >= 3 {
		t.Errorf("%d steps started (of 3, one at a time) although the lease was lost in the first", n)
	}
	srv, _, err := c.GetServer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := srv.Config[key].(string); v != thief {
		t.Errorf("the lease after the apply = %q, want the thief's untouched", v)
	}
}

var (
	daemonBinOnce sync.Once
	daemonBin     string
	daemonBinErr  error
)

// berthCommand builds the berth command once, for tests that must kill -9
// a real process.
func berthCommand(t *testing.T) string {
	t.Helper()
	daemonBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-daemon-test-")
		if err != nil {
			daemonBinErr = err
			return
		}
		daemonBin = filepath.Join(dir, "berth")
		if out, err := exec.Command("go", "build", "-buildvcs=false", "-o", daemonBin, ".").CombinedOutput(); err != nil {
			daemonBinErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if daemonBinErr != nil {
		t.Fatal(daemonBinErr)
	}
	return daemonBin
}

// TestDaemonRestartAfterKill9: a daemon killed with -9 leaves its lease
// behind; a new one started with a short --lease-ttl and a long --interval
// takes over when that lease expires, not at its next poll, and converges
// a new commit within about the TTL plus one run.
func TestDaemonRestartAfterKill9(t *testing.T) {
	requireLive(t)
	project, c := e2eProject(t)
	bin := berthCommand(t)
	r := newRepo(t)
	r.write("apps/web.yaml", webSpec(1, "hello:1"))
	first := r.commit("web: hello:1")
	const ttl = 15 * time.Second
	args := []string{"--project", project, "--owner", "e2e", "--log-level", "info", "run", "--repo", r.dir, "--dir", "apps",
		"--interval", "1h", "--lease-ttl", ttl.String(), "--listen", ""}
	startDaemonProcess := func() (*exec.Cmd, *safeBuffer) {
		var out safeBuffer
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd, &out
	}
	converged := func(what, image, revision string, timeout time.Duration, log *safeBuffer) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			inst, ok := liveState(t, c, "e2e")["web-0"]
			if ok && inst.Status == "Running" && inst.Container != nil && inst.Container.Health == "healthy" &&
				strings.HasSuffix(inst.Container.Image, "/berth/"+image) && inst.Container.Labels[ownership.LabelRevision] == revision {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not converged within %s\n%s", what, timeout, tail(log.String(), 30))
			}
			time.Sleep(2 * time.Second)
		}
	}

	a, aLog := startDaemonProcess()
	converged("the first daemon", "hello:1", first, 3*time.Minute, aLog)
	if err := a.Process.Kill(); err != nil { // kill -9: the lease stays
		t.Fatal(err)
	}
	_ = a.Wait()
	killed := time.Now()
	r.write("apps/web.yaml", webSpec(1, "hello:2"))
	second := r.commit("web: hello:2")

	b, bLog := startDaemonProcess()
	// Within about the TTL plus one run; the poll (1h) would be far later.
	converged("the restarted daemon", "hello:2", second, ttl+3*time.Minute, bLog)
	t.Logf("converged the new commit %s after the kill -9 (lease TTL %s, poll interval 1h)", time.Since(killed).Round(time.Second), ttl)
	if !regexp.MustCompile(`"level":"INFO","msg":"another reconciler holds the lease; waiting".*"holder":"berth-run@[^"]+","expires":"\d{4}-`).MatchString(bLog.String()) {
		t.Errorf("the wait for the lease is not logged at info with holder and expiry:\n%s", tail(bLog.String(), 30))
	}
	if err := b.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(); err != nil {
		t.Errorf("the daemon exited with %v after SIGTERM\n%s", err, tail(bLog.String(), 20))
	}
}
