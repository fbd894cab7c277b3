package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/berth-gitops/berth/reconciler/plan"
)

// BenchmarkColdPlans converges 10 replicas, then runs `berth plan` cold
// (a new LXD client and a new Docker tunnel into every replica each time)
// BERTH_BENCH_COLD_PLANS times in a row (default 50), and reports the
// restart steps planned (issue 18: an LXD hiccup made 3 of 15 cold plans
// restart all ten), the plans that waited on an unobserved replica, and
// the plans' times. Every plan's time is logged.
//
//	go test ./cmd/berth -run '^$' -bench ColdPlans -benchtime 1x -v
func BenchmarkColdPlans(b *testing.B) {
	const replicas = 10
	requireLiveB(b)
	n := 50
	if v, err := strconv.Atoi(os.Getenv("BERTH_BENCH_COLD_PLANS")); err == nil && v > 0 {
		n = v
	}
	for i := 0; i < b.N; i++ {
		project, cleanup := benchProject(b)
		r := newRepoB(b)
		if err := os.MkdirAll(filepath.Join(r, "apps"), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(r, "apps", "web.yaml"), []byte(webSpec(replicas, "hello:1")), 0o644); err != nil {
			b.Fatal(err)
		}
		gitB(b, r, "add", "-A")
		gitB(b, r, "commit", "-qm", "web")
		if code, out, errOut := runCLI("--project", project, "--owner", "bench", "apply", "--yes", "--repo", r); code != 0 {
			b.Fatalf("apply: %d\n%s%s", code, out, errOut)
		}
		restarts, waited := 0, 0
		took := make([]time.Duration, 0, n)
		for j := range n {
			start := time.Now()
			code, out, errOut := runCLI("--project", project, "--owner", "bench", "plan", "--repo", r, "-o", "json")
			took = append(took, time.Since(start))
			var pl plan.Plan
			if err := json.Unmarshal([]byte(out), &pl); err != nil || code == 1 {
				b.Fatalf("plan %d: exit %d, %v\n%s%s", j+1, code, err, out, errOut)
			}
			for _, s := range pl.Steps {
				if s.Action == plan.Restart {
					restarts++
				}
			}
			if len(pl.Unobserved) > 0 {
				waited++
			}
			b.Logf("cold plan %2d: %s, %d steps, %d unobserved", j+1, took[j].Round(time.Millisecond), len(pl.Steps), len(pl.Unobserved))
		}
		cleanup()
		slices.Sort(took)
		b.ReportMetric(float64(restarts), "restart-steps")
		b.ReportMetric(float64(waited), "plans-waiting")
		b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "median-ms")
		b.ReportMetric(float64(took[len(took)-1].Milliseconds()), "max-ms")
		b.ReportMetric(float64(took[0].Milliseconds()), "min-ms")
	}
}
