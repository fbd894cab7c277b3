package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-gitops/berth/internal/testlxd"
)

// BenchmarkConverge compares berth with the raw lower bound: K replicas
// from nothing, by `berth apply`, and by a plain script of direct lxc and
// docker calls run in parallel (launch, wait for dockerd, docker run, wait
// for healthy). It also measures a no-op apply: wall time and LXD requests.
//
//	go test ./cmd/berth -run '^$' -bench Converge -benchtime 1x
func BenchmarkConverge(b *testing.B) {
	const k = 5
	requireLiveB(b)
	for i := 0; i < b.N; i++ {
		project, cleanup := benchProject(b)
		raw := rawConverge(b, project, k)
		cleanup()

		project, cleanup = benchProject(b)
		r := newRepoB(b)
		if err := os.MkdirAll(filepath.Join(r, "apps"), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(r, "apps", "web.yaml"), []byte(webSpec(k, "hello:1")), 0o644); err != nil {
			b.Fatal(err)
		}
		gitB(b, r, "add", "-A")
		gitB(b, r, "commit", "-qm", "web")
		start := time.Now()
		code, out, errOut := runCLI("--project", project, "--owner", "bench", "apply", "--yes", "--repo", r)
		berthTook := time.Since(start)
		if code != 0 {
			b.Fatalf("apply: %d\n%s%s", code, out, errOut)
		}
		start = time.Now()
		code, out, errOut = runCLI("--project", project, "--owner", "bench", "--count-requests", "apply", "--yes", "--repo", r)
		noop := time.Since(start)
		if code != 0 || !strings.Contains(out, "No changes.") {
			b.Fatalf("no-op apply: %d\n%s%s", code, out, errOut)
		}
		m := regexp.MustCompile(`lxd requests: (\d+) \(writes (\d+), execs (\d+)\)`).FindStringSubmatch(errOut)
		cleanup()

		b.ReportMetric(raw.Seconds(), "raw-s")
		b.ReportMetric(berthTook.Seconds(), "berth-s")
		b.ReportMetric(berthTook.Seconds()/raw.Seconds(), "berth/raw")
		b.ReportMetric(float64(noop.Milliseconds()), "noop-apply-ms")
		if m != nil {
			for j, unit := range []string{"noop-lxd-requests", "noop-lxd-writes", "noop-execs"} {
				v, _ := strconv.Atoi(m[j+1])
				b.ReportMetric(float64(v), unit)
			}
		}
	}
}

// requireLiveB skips or fails the benchmark, as testlxd decides, unless
// the test environment's image is there.
func requireLiveB(b *testing.B) {
	b.Helper()
	testlxd.Short(b)
	if out, err := exec.Command("lxc", "image", "info", "berth/debian-docker").CombinedOutput(); err != nil {
		testlxd.SkipUnlessUsable(b, fmt.Errorf("no test environment: %w: %s", err, bytes.TrimSpace(out)))
	}
}

func benchProject(b *testing.B) (string, func()) {
	b.Helper()
	name := fmt.Sprintf("berth-bench-%d", time.Now().UnixNano()%1_000_000)
	lxcB(b, "project", "create", name, "-c", "features.images=false", "-c", "features.profiles=false", "-c", "features.storage.volumes=false")
	var once sync.Once
	cleanup := func() { once.Do(func() { deleteProject(b, name) }) }
	// Also on b.Fatal: a failed run must not leave instances behind.
	b.Cleanup(cleanup)
	return name, cleanup
}

func deleteProject(b *testing.B, name string) {
	out, _ := exec.Command("lxc", "list", "--project", name, "--format", "csv", "-c", "n").Output()
	for _, n := range strings.Fields(string(out)) {
		_ = exec.Command("lxc", "delete", "-f", "--project", name, n).Run()
	}
	lxcB(b, "project", "delete", name)
}

func lxcB(b *testing.B, args ...string) string {
	b.Helper()
	out, err := exec.Command("lxc", args...).CombinedOutput()
	if err != nil {
		b.Fatalf("lxc %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// rawConverge is the lower bound: what a person would script with lxc and
// docker, all replicas in parallel, no checks beyond readiness.
func rawConverge(b *testing.B, project string, k int) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, k)
	for i := 0; i < k; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("raw-%d", i)
			script := fmt.Sprintf(`set -e
lxc launch berth/debian-docker %[1]s --project %[2]s -p default -p berth-test -c limits.memory=256MiB >/dev/null
until lxc exec %[1]s --project %[2]s -- docker info >/dev/null 2>&1; do sleep 0.2; done
lxc exec %[1]s --project %[2]s -- docker run -d --init --network host --restart unless-stopped --name web 127.0.0.1:5000/berth/hello:1 >/dev/null
until [ "$(lxc exec %[1]s --project %[2]s -- docker inspect -f '{{.State.Health.Status}}' web)" = healthy ]; do sleep 0.2; done
`, name, project)
			if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
				errs <- fmt.Errorf("%s: %v\n%s", name, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return time.Since(start)
}

func newRepoB(b *testing.B) string {
	dir := b.TempDir()
	gitB(b, dir, "init", "-q", "-b", "main")
	return dir
}

func gitB(b *testing.B, dir string, args ...string) {
	b.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=bench", "-c", "user.email=bench@localhost"}, args...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

func runCLI(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// BenchmarkDaemonIdle runs the real berth binary as a daemon against a
// repository served over HTTP and reports: per idle poll (nothing changed)
// the Git requests, LXD requests, new Docker execs and CPU time; the latency
// from a webhook to the first apply step; and the daemon's RSS with two
// replicas converged.
//
//	go test ./cmd/berth -run '^$' -bench DaemonIdle -benchtime 1x
func BenchmarkDaemonIdle(b *testing.B) {
	requireLiveB(b)
	bin := filepath.Join(b.TempDir(), "berth")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	for i := 0; i < b.N; i++ {
		project, cleanup := benchProject(b)
		base := b.TempDir()
		bare := filepath.Join(base, "apps.git")
		gitB(b, base, "init", "-q", "--bare", "-b", "main", bare)
		var gitRequests atomic.Int64
		srv := httptest.NewServer(countRequests(&gitRequests, gitBackend(b, base)))
		work := newRepoB(b)
		write := func(replicas int) {
			_ = os.MkdirAll(filepath.Join(work, "apps"), 0o755)
			_ = os.WriteFile(filepath.Join(work, "apps", "web.yaml"), []byte(webSpec(replicas, "hello:1")), 0o644)
			gitB(b, work, "add", "-A")
			gitB(b, work, "commit", "-qm", fmt.Sprint("web: ", replicas))
			gitB(b, work, "push", "-q", bare, "main")
		}
		write(2)
		secret := filepath.Join(base, "secret")
		_ = os.WriteFile(secret, []byte("s"), 0o600)
		addr := freePort(b)
		cmd := exec.Command(bin, "--project", project, "--owner", "bench", "--log-level", "info", "run",
			"--repo", srv.URL+"/apps.git", "--dir", "apps", "--interval", "1s", "--listen", addr,
			"--cache-dir", filepath.Join(base, "cache"), "--webhook-secret-file", secret)
		var logBuf safeBuffer
		cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		// A failed benchmark must not leave a daemon (and its lease) behind.
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		url := "http://" + addr
		waitHTTP(b, url+"/readyz", 3*time.Minute, &logBuf)

		// Idle polls (every second): nothing changed in Git or LXD, and the
		// event stream is up, so a poll is one Git head check.
		const polls = 10
		measure := func(unit string, next func(before float64)) {
			m0, cpu0, git0 := scrape(b, url), cpuTime(b, cmd.Process.Pid), gitRequests.Load()
			for p := 0; p < polls; p++ {
				before := runs(scrape(b, url))
				next(before)
				for deadline := time.Now().Add(30 * time.Second); runs(scrape(b, url)) == before; {
					if time.Now().After(deadline) {
						b.Fatalf("no run\n%s", logBuf.String())
					}
					// Scraping /metrics costs the daemon CPU too: not too often.
					time.Sleep(200 * time.Millisecond)
				}
			}
			m1, cpu1, git1 := scrape(b, url), cpuTime(b, cmd.Process.Pid), gitRequests.Load()
			per := func(k string) float64 { return (m1[k] - m0[k]) / polls }
			b.ReportMetric(float64(git1-git0)/polls, "git-requests/"+unit)
			b.ReportMetric(per("berth_git_fetches_total"), "git-fetches/"+unit)
			b.ReportMetric(per(`berth_lxd_requests_total{method="GET"}`)+per(`berth_lxd_requests_total{method="POST"}`)+
				per(`berth_lxd_requests_total{method="PUT"}`)+per(`berth_lxd_requests_total{method="PATCH"}`)+
				per(`berth_lxd_requests_total{method="DELETE"}`), "lxd-requests/"+unit)
			// With no writes, every POST of an idle run is an exec (a new
			// Docker tunnel).
			b.ReportMetric(per(`berth_lxd_requests_total{method="POST"}`), "docker-execs/"+unit)
			b.ReportMetric(float64((cpu1-cpu0).Microseconds())/1000/polls, "cpu-ms/"+unit)
		}
		// Let the events of the first convergence (instances created and
		// started) pass: each asks for one full observe.
		for settle := runs(scrape(b, url)) + 5; runs(scrape(b, url)) < settle; {
			time.Sleep(50 * time.Millisecond)
		}
		measure("poll", func(float64) {})
		// A sync asked through the API observes everything.
		measure("sync", func(float64) { post(b, url+"/api/v1/sync", "", nil) })
		b.ReportMetric(float64(rssKiB(b, cmd.Process.Pid))/1024, "rss-MiB")

		// Webhook to the first apply step.
		write(3)
		mark := logBuf.Len()
		start := time.Now()
		post(b, url+"/hooks/github", `{"ref":"refs/heads/main"}`, map[string]string{
			"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hmacHex("s", `{"ref":"refs/heads/main"}`)})
		for !strings.Contains(logBuf.String()[mark:], `"msg":"step started"`) {
			if time.Since(start) > time.Minute {
				b.Fatalf("no step after the webhook\n%s", logBuf.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "webhook-to-step-ms")

		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		srv.Close()
		cleanup()
	}
}

type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *safeBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

func gitBackend(b *testing.B, root string) http.Handler {
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		b.Fatal(err)
	}
	return &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(out)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
}

func countRequests(n *atomic.Int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	})
}

func waitHTTP(b *testing.B, url string, timeout time.Duration, log *safeBuffer) {
	for deadline := time.Now().Add(timeout); ; time.Sleep(200 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not ready\n%s", url, log.String())
		}
	}
}

// scrape reads the berth_* samples of /metrics.
func scrape(b *testing.B, url string) map[string]float64 {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, "berth_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// runs is the number of reconcile runs, whatever their result.
func runs(m map[string]float64) float64 {
	var n float64
	for k, v := range m {
		if strings.HasPrefix(k, "berth_reconcile_runs_total{") {
			n += v
		}
	}
	return n
}

func post(b *testing.B, url, body string, headers map[string]string) {
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		b.Fatalf("POST %s: %s", url, resp.Status)
	}
}

func hmacHex(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

// cpuTime is the user+system CPU time of pid, from /proc.
func cpuTime(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

func rssKiB(b *testing.B, pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			v, _ := strconv.Atoi(strings.Fields(line)[1])
			return v
		}
	}
	return 0
}
