package main

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestDaemonDNSAnswersAgainAfterSIGCONT stops a real `berth run` process
// serving DNS on the bridge (SIGSTOP: a daemon wedged, or paused by a
// debugger or a checkpoint), then lets it go on (SIGCONT): its answers
// come back at once, with the replica's address, not after the next run
// or a restart. How long the first answer took after SIGCONT is logged;
// the bound on waiting for it is only there so a daemon that never answers
// again fails the test.
func TestDaemonDNSAnswersAgainAfterSIGCONT(t *testing.T) {
	requireLive(t)
	requireTestNetwork(t)
	project, c := e2eProject(t)
	dnsAddr := freeUDPPort(t)
	r := newRepo(t)
	r.write("apps/svc.yaml", systemOnlySpec("svc", 1, ""))
	r.commit("svc: 1 replica")
	bin := berthCommand(t)
	var out safeBuffer
	cmd := exec.Command(bin, "--project", project, "--owner", "dnsstop", "--log-level", "info", "run", "--repo", r.dir, "--dir", "apps",
		"--interval", "1h", "--listen", "", "--dns-listen", dnsAddr, "--dns-ttl", "1s")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// SIGCONT first: a stopped process would take its lease to the grave
	// only after the kill, and the kill must not wait on it.
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGCONT); _ = cmd.Process.Kill(); _ = cmd.Wait() })

	want := netWaitAddr(t, c, "svc-0", 3*time.Minute)
	ask := func(timeout time.Duration) ([]string, error) {
		q := new(dns.Msg)
		q.SetQuestion("svc-0.svc.berth.internal.", dns.TypeA)
		in, _, err := (&dns.Client{Net: "udp", Timeout: timeout}).Exchange(q, dnsAddr)
		if err != nil {
			return nil, err
		}
		var got []string
		for _, rr := range in.Answer {
			if a, ok := rr.(*dns.A); ok {
				got = append(got, a.A.String())
			}
		}
		return got, nil
	}
	// answered waits, within limit, for the answer to be want.
	answered := func(what string, limit time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		var got []string
		var err error
		for time.Since(start) < limit {
			if got, err = ask(200 * time.Millisecond); err == nil && slices.Equal(got, []string{want}) {
				return time.Since(start)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("%s: svc-0.svc.berth.internal is %v (%v), want %s\n%s", what, got, err, want, tail(out.String(), 30))
		return 0
	}
	answered("before the stop", 3*time.Minute)

	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// A signal is delivered asynchronously: wait until the kernel shows
	// the process stopped, before a query it could still answer.
	waitStopped(t, cmd.Process.Pid)
	// A stopped process cannot answer: this shows the stop took hold.
	if got, err := ask(time.Second); err == nil {
		t.Fatalf("a stopped daemon answered %v", got)
	}
	time.Sleep(3 * time.Second)
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	took := answered("after SIGCONT", 30*time.Second)
	t.Logf("the first right answer came %s after SIGCONT", took.Round(time.Millisecond))
	// It keeps answering: not one lucky packet.
	for i := range 20 {
		if got, err := ask(2 * time.Second); err != nil || !slices.Equal(got, []string{want}) {
			t.Errorf("query %d after SIGCONT: %v (%v), want %s", i, got, err, want)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("the daemon exited with %v after SIGTERM\n%s", err, tail(out.String(), 20))
	}
}

// waitStopped waits, bounded, until /proc says the process is stopped
// (state T).
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// The state follows the command's name in parentheses.
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && strings.HasPrefix(string(stat[i+1:]), " T") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d did not stop within 10s of SIGSTOP", pid)
}
