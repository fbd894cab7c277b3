package main

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/berth-gitops/berth/internal/testlxd"
)

// BenchmarkClusterConverge converges N replicas (default 300,
// BERTH_BENCH_REPLICAS) of a plain system on the busybox image, no Docker
// in it, from nothing across the 3-member cluster; then times a cold no-op
// plan and the scale back to zero. `make bench` runs it with the cluster's
// environment:
//
//	eval "$(testenv/testenv.sh cluster env)"
//	go test ./cmd/berth -run '^$' -bench ClusterConverge -benchtime 1x -timeout 60m
func BenchmarkClusterConverge(b *testing.B) {
	testlxd.Cluster(b)
	n := 300
	if v, err := strconv.Atoi(os.Getenv("BERTH_BENCH_REPLICAS")); err == nil && v > 0 {
		n = v
	}
	spec := func(replicas int) string {
		return fmt.Sprintf(`apiVersion: berth/v1
kind: App
metadata: {name: fleet}
spec:
  replicas: %d
  system:
    image: berth/busybox
    profiles: [default, berth-test]
  update: {maxUnavailable: 10, healthTimeout: 2m}
`, replicas)
	}
	owner := fmt.Sprintf("bench-%d", time.Now().UnixNano()%1_000_000)
	for b.Loop() {
		r := newRepo(b)
		r.write("apps/fleet.yaml", spec(n))
		r.commit("fleet")
		cli := func(args ...string) time.Duration {
			start := time.Now()
			code, out, errOut := runCLI(append([]string{"--owner", owner, "--count-requests"}, args...)...)
			if code != 0 && !(code == 2 && args[0] == "plan") {
				b.Fatalf("%v: exit %d\n%s%s", args, code, tail(out, 20), errOut)
			}
			b.Logf("%v: %s; %s", args[:1], time.Since(start).Round(time.Millisecond), lastLine(errOut))
			return time.Since(start)
		}
		converge := cli("apply", "--yes", "--repo", r.dir, "--dir", "apps")
		plan := cli("plan", "--repo", r.dir, "--dir", "apps")
		r.write("apps/fleet.yaml", spec(0))
		r.commit("fleet: 0")
		down := cli("apply", "--yes", "--repo", r.dir, "--dir", "apps")
		b.ReportMetric(converge.Seconds(), "s/converge")
		b.ReportMetric(plan.Seconds(), "s/cold-plan")
		b.ReportMetric(down.Seconds(), "s/scale-to-0")
		b.ReportMetric(float64(n), "replicas")
	}
}

func lastLine(s string) string {
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	return s
}
