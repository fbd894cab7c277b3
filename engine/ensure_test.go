package engine

import (
	"context"
	"errors"
	"github.com/berth-gitops/berth/ownership"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"

	"github.com/berth-gitops/berth/spec"
)

// inspected is a container as findCurrent returns it.
func inspected(name, hash, status string) container.InspectResponse {
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{
			ID:   "id-" + name,
			Name: "/" + name,
			State: &container.State{Status: status, Running: status == container.StateRunning,
				Restarting: status == container.StateRestarting, Paused: status == container.StatePaused},
		},
		Config: &container.Config{Labels: map[string]string{ownership.LabelApp: "web", ownership.LabelContainerHash: hash}},
	}
}

func TestDecideEnsure(t *testing.T) {
	ptr := func(c container.InspectResponse) *container.InspectResponse { return &c }
	for _, tc := range []struct {
		name       string
		cur        *container.InspectResponse
		stale      []container.InspectResponse
		action     ensureAction
		steps      string
		id, create string // started or unpaused; created under
		old        string // replaced
	}{
		{name: "none", action: create, steps: "pull,create,start", create: "web"},
		{name: "none, a running leftover", stale: []container.InspectResponse{inspected("web-next", "h1", "running")},
			action: create, steps: "pull,stop-old,remove-old,create,start", create: "web"},
		{name: "up to date", cur: ptr(inspected("web", "h1", "running")), action: keep},
		{name: "up to date, restarting", cur: ptr(inspected("web", "h1", "restarting")), action: keep},
		{name: "up to date, a stopped leftover", cur: ptr(inspected("web", "h1", "running")),
			stale: []container.InspectResponse{inspected("web-next", "h2", "exited")}, action: keep, steps: "remove-old"},
		{name: "paused", cur: ptr(inspected("web", "h1", "paused")), action: unpause, steps: "start", id: "id-web"},
		{name: "exited", cur: ptr(inspected("web", "h1", "exited")), action: start, steps: "start", id: "id-web"},
		{name: "created", cur: ptr(inspected("web", "h1", "created")), action: start, steps: "start", id: "id-web"},
		{name: "paused with a leftover", cur: ptr(inspected("web", "h1", "paused")),
			stale:  []container.InspectResponse{inspected("web-old", "h0", "paused")},
			action: unpause, steps: "stop-old,remove-old,start", id: "id-web"},
		{name: "dead", cur: ptr(inspected("web", "h1", "dead")), action: replace,
			steps: "pull,create,remove-old,start", create: "web-next", old: "web"},
		{name: "removing", cur: ptr(inspected("web", "h1", "removing")), action: replace,
			steps: "pull,create,remove-old,start", create: "web-next", old: "web"},
		{name: "other hash", cur: ptr(inspected("web", "h0", "running")), action: replace,
			steps: "pull,create,stop-old,remove-old,start", create: "web-next", old: "web"},
		{name: "other hash, an interrupted replacement", cur: ptr(inspected("web", "h0", "exited")),
			stale:  []container.InspectResponse{inspected("web-next", "h1", "created")},
			action: replace, steps: "pull,remove-old,create,remove-old,start", create: "web-next", old: "web"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := decideEnsure("web", "h1", tc.cur, tc.stale)
			if p.action != tc.action || p.String() != tc.steps || p.id != tc.id || p.createName != tc.create || p.old.name != tc.old {
				t.Errorf("got action %d, steps %q, id %q, create %q, old %q", p.action, p.String(), p.id, p.createName, p.old.name)
			}
		})
	}
}

// A replacement creates the new container beside the old one, and only
// then stops and removes the old one; leftovers go after the pull.
func TestEnsureReplaceOrder(t *testing.T) {
	f := newFakeDaemon(t, "1.41")
	d := Desired{App: "web", Slot: 1, Spec: spec.Container{Image: "127.0.0.1:5000/berth/hello:1"}}
	old := inspected("web", "stale-hash", "running")
	old.ID = "old"
	leftover := inspected("web-next", "x", "exited")
	leftover.ID = "lo"
	f.handle("GET /containers/json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, []container.Summary{
			{ID: "old", Names: []string{"/web"}, Labels: old.Config.Labels},
			{ID: "lo", Names: []string{"/web-next"}, Labels: leftover.Config.Labels},
		})
	})
	f.handle("GET /containers/old/json", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, old) })
	f.handle("GET /containers/lo/json", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, leftover) })
	f.handle("GET /images/127.0.0.1:5000/berth/hello:1/json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, image.InspectResponse{ID: "sha256:1"})
	})
	f.handle("POST /containers/create", func(w http.ResponseWriter, r *http.Request) {
		if n := r.URL.Query().Get("name"); n != "web-next" {
			t.Errorf("created as %q, want web-next", n)
		}
		writeJSON(w, 201, container.CreateResponse{ID: "new"})
	})
	noContent := func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }
	for _, k := range []string{"POST /containers/old/stop", "DELETE /containers/old", "DELETE /containers/lo", "POST /containers/new/start"} {
		f.handle(k, noContent)
	}
	f.handle("POST /containers/new/rename", func(w http.ResponseWriter, r *http.Request) {
		if n := r.URL.Query().Get("name"); n != "web" {
			t.Errorf("renamed to %q", n)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	opts, _ := fakeClockOpts()
	m := New(f.dialer(), opts)
	defer m.Close()
	var steps []string
	err := m.Ensure(context.Background(), "web-1", d, func(e Event) {
		steps = append(steps, e.Step)
		if e.Duration != 0 || e.Instance != "web-1" || e.App != "web" {
			t.Errorf("event %+v: want instance web-1, app web and, on a clock that stands still, no duration", e)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{StepPull, StepRemoveOld, StepCreate, StepStopOld, StepRemoveOld, StepStart}; !slices.Equal(steps, want) {
		t.Errorf("steps = %v, want %v", steps, want)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := []string{
		"GET /containers/json", "GET /containers/old/json", "GET /containers/lo/json",
		"GET /images/127.0.0.1:5000/berth/hello:1/json",
		"DELETE /containers/lo", "POST /containers/create",
		"POST /containers/old/stop", "DELETE /containers/old",
		"POST /containers/new/rename", "POST /containers/new/start",
	}
	if !slices.Equal(f.requests, want) {
		t.Errorf("requests:\n got %v\nwant %v", f.requests, want)
	}
}

// Without a healthcheck, a container is ready once it has run for Settle
// on the Manager's clock.
func TestWaitReadySettlesOnTheClock(t *testing.T) {
	f := newFakeDaemon(t, "1.41")
	opts, clk := fakeClockOpts()
	startedAt := clk.Now().Format(time.RFC3339Nano)
	f.handle("GET /containers/web/json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, container.InspectResponse{
			ContainerJSONBase: &container.ContainerJSONBase{State: &container.State{Status: "running", Running: true, StartedAt: startedAt}},
			Config:            &container.Config{Labels: map[string]string{ownership.LabelApp: "web"}},
		})
	})
	m := New(f.dialer(), opts)
	defer m.Close()
	took, err := runOnClock(clk, 2, func() error { return m.WaitReady(context.Background(), "web-0", "web", time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	// Polled every PollInterval: ready at the first look after Settle.
	if took < opts.Settle || took >= opts.Settle+opts.PollInterval {
		t.Errorf("ready after %s on the clock; settle %s, poll %s", took, opts.Settle, opts.PollInterval)
	}
	if n := clk.Waiters(); n != 0 {
		t.Errorf("%d timers left armed", n)
	}
}

// TestEnsureWithoutImage: a system-only app has no app container; Ensure
// refuses it as permanent without dialing Docker.
func TestEnsureWithoutImage(t *testing.T) {
	f := newFakeDaemon(t, "1.41")
	m := New(f.dialer(), fastOpts())
	defer m.Close()
	err := m.Ensure(context.Background(), "db-0", Desired{App: "db"}, nil)
	var pe *PermanentError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "system-only") {
		t.Errorf("Ensure without an image: %v", err)
	}
	if n := f.dials.Load(); n != 0 {
		t.Errorf("dialed Docker %d times", n)
	}
}
