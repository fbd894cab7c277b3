package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
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

func requireLiveB(b *testing.B) {
	b.Helper()
	if out, err := exec.Command("lxc", "image", "info", "berth/debian-docker").CombinedOutput(); err != nil {
		b.Skipf("!!! SKIPPING: no test environment: %v %s", err, out)
	}
}

func benchProject(b *testing.B) (string, func()) {
	b.Helper()
	name := fmt.Sprintf("berth-bench-%d", time.Now().UnixNano()%1_000_000)
	lxcB(b, "project", "create", name, "-c", "features.images=false", "-c", "features.profiles=false", "-c", "features.storage.volumes=false")
	return name, func() {
		out, _ := exec.Command("lxc", "list", "--project", name, "--format", "csv", "-c", "n").Output()
		for _, n := range strings.Fields(string(out)) {
			_ = exec.Command("lxc", "delete", "-f", "--project", name, n).Run()
		}
		lxcB(b, "project", "delete", name)
	}
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
