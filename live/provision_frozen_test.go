package live

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/spec"
)

// TestProvisionOnAFrozenMemberEndsAtItsTimeout: the instance is Running
// on member m3 as LXD last saw it, but m3 is frozen, so every exec LXD
// forwards there waits for an answer that never comes. The provision
// still ends, as timed out after its own timeout and naming m3, not after
// the client's two-minute response timeout or never: on its clock, its
// timeout and then the bounded attempt to stop what it started (which
// cannot reach m3 either, and says so).
func TestProvisionOnAFrozenMemberEndsAtItsTimeout(t *testing.T) {
	var hung atomic.Int64
	c := newFakeLXD(t, func(w http.ResponseWriter, r *http.Request) {
		reply := func(meta any) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"type": "sync", "status_code": 200, "metadata": meta})
		}
		switch {
		case r.Method == "GET" && r.URL.Path == "/1.0":
			reply(map[string]any{"api_version": "1.0", "auth": "trusted", "environment": map[string]any{"server_version": "5.0.2"}})
		case r.Method == "GET" && r.URL.Path == "/1.0/instances/web-0":
			reply(map[string]any{"name": "web-0", "status": "Running", "status_code": 103, "location": "m3",
				"config": map[string]string{ownership.KeyOwner: "o", ownership.KeyProvisionedAt: "2026-01-01T00:00:00Z"}})
		default:
			// Forwarded to m3, which never answers. The server notices
			// the client gave up only once the body is read.
			_, _ = io.Copy(io.Discard, r.Body)
			hung.Add(1)
			<-r.Context().Done()
		}
	})
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	sys := New(c, "o", engine.Options{})
	sys.Clock = clk
	defer sys.Close()
	done := make(chan error, 1)
	go func() {
		done <- sys.Provision(context.Background(), "web-0", &spec.Provision{Run: []string{"/srv/setup.sh"}, Timeout: spec.Duration(2 * time.Second)})
	}()
	// Each time a request has hung at m3 and a timer waits, time moves
	// to that timer: the provision's timeout, then its attempt to stop
	// what it started.
	var err error
	ended := false
	for step := int64(1); !ended; step++ {
		for deadline := time.Now().Add(30 * time.Second); hung.Load() < step && !ended; time.Sleep(5 * time.Millisecond) {
			select {
			case err = <-done:
				ended = true
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the provision neither ended nor sent request %d in 30s", step)
			}
		}
		if !ended {
			clk.BlockUntil(1)
			d, _ := clk.Next()
			clk.Advance(d)
		}
	}
	took := clk.Since(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t.Logf("ended after %s on the provision's clock, %d requests left unanswered: %v", took, hung.Load(), err)
	// The timeout, then at most the wait for the stop that cannot reach m3.
	if took > 2*time.Second+provisionStopTimeout {
		t.Errorf("took %s on the provision's clock, want at most its timeout (2s) and the stop's %s", took, provisionStopTimeout)
	}
	var pe *ProvisionError
	if !errors.As(err, &pe) || pe.Location != "m3" || !strings.Contains(err.Error(), "provision of web-0 on member m3: timed out after 2s running [/srv/setup.sh]") {
		t.Errorf("a provision on a frozen member: %v; want a timeout after 2s that names m3", err)
	}
	// The stop could not reach m3 either: the user is told what may
	// still run.
	if !strings.Contains(err.Error(), "its processes may still run: stopping them failed") {
		t.Errorf("a provision on a frozen member does not say its processes may still run: %v", err)
	}
	if hung.Load() != 2 {
		t.Errorf("%d requests reached the frozen member, want 2 (the command, the stop)", hung.Load())
	}
}
