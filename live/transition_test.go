package live

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/reconciler"
)

// transitionLXD serves instance states: web-0 Running (its exec fails in
// LXD), web-1 Stopped, anything else 404.
func transitionLXD(t *testing.T) *lxd.Client {
	t.Helper()
	reply := func(w http.ResponseWriter, code int, meta any, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		body := map[string]any{"type": "sync", "status": "Success", "status_code": code, "metadata": meta}
		if code != 200 {
			body = map[string]any{"type": "error", "error_code": code, "error": msg}
		}
		_ = json.NewEncoder(w).Encode(body)
	}
	return newFakeLXD(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/1.0":
			reply(w, 200, map[string]any{"api_extensions": []string{"instance_get_full"}, "api_version": "1.0", "auth": "trusted"}, "")
		case "/1.0/instances/web-0/state":
			reply(w, 200, map[string]any{"status": "Running", "status_code": 103}, "")
		case "/1.0/instances/web-1/state":
			reply(w, 200, map[string]any{"status": "Stopped", "status_code": 102}, "")
		case "/1.0/instances/web-0/exec":
			reply(w, 500, nil, "Failed to retrieve PID of executing child process")
		case "/1.0/instances/web-2/state":
			reply(w, 200, map[string]any{"status": "Running", "status_code": 103}, "")
		case "/1.0/operations":
			// `lxc stop web-3` in progress: LXD still says Running.
			reply(w, 200, map[string]any{"running": []map[string]any{
				{"id": "op1", "class": "task", "description": "Stopping instance", "status": "Running", "status_code": 103,
					"resources": map[string][]string{"instances": {"/1.0/instances/web-3"}}},
				{"id": "op2", "class": "websocket", "description": "Executing command", "status": "Running", "status_code": 103,
					"resources": map[string][]string{"instances": {"/1.0/instances/web-2"}}},
			}}, "")
		case "/1.0/instances/web-3/state":
			reply(w, 200, map[string]any{"status": "Running", "status_code": 103}, "")
		case "/1.0/instances/web-4/state":
			reply(w, 200, map[string]any{"status": "Running", "status_code": 103}, "")
		case "/1.0/instances/web-4/exec":
			// LXD stalls: the connection drops without an answer.
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				_ = conn.Close()
			}
		case "/1.0/instances/web-2/exec", "/1.0/instances/web-3/exec":
			// An image without systemctl: LXD's "not found" is about
			// the command, not the instance.
			reply(w, 404, nil, "Command not found")
		default:
			reply(w, 404, nil, "Instance not found")
		}
	})
}

// A Docker failure on an instance that LXD has stopped, or that is gone,
// is InTransition (the reconciler plans again soon); on one that runs and
// is not shutting down it stays a plain failure, and a permanent one is
// never reclassified.
func TestTransitionMarksStoppedInstances(t *testing.T) {
	sys := New(transitionLXD(t), "o", engine.Options{})
	defer sys.Close()
	ctx := context.Background()
	refused := errors.New("docker in web-1: start container web: Error response from daemon: cannot start")
	for _, tc := range []struct {
		instance string
		err      error
		want     reconciler.Retry
		says     string
	}{
		{"web-1", refused, reconciler.InTransition, "(web-1 is Stopped)"},
		{"web-9", refused, reconciler.InTransition, "(web-9 is gone)"},
		{"web-0", refused, reconciler.Retrying, ""},
		{"web-1", &engine.PermanentError{Err: errors.New("manifest unknown")}, reconciler.Stalled, ""},
	} {
		err := sys.transition(ctx, tc.instance, tc.err)
		if got := reconciler.RetryOf(err); got != tc.want || !strings.Contains(err.Error(), tc.says) || !errors.Is(err, tc.err) {
			t.Errorf("%s, %v: %v (%s); want %s, saying %q, wrapping the cause", tc.instance, tc.err, err, got, tc.want, tc.says)
		}
	}
	if sys.transition(ctx, "web-1", nil) != nil {
		t.Error("no error became one")
	}
}

// An instance is shutting down only when LXD runs a stop of it, its
// systemd says so, or LXD no longer runs it: a failed exec of systemctl in an image without it (a
// "not found" from LXD) says nothing (a wedged dockerd there was taken for
// a shutdown).
func TestShuttingDownReadsTheInstanceNotTheError(t *testing.T) {
	sys := New(transitionLXD(t), "o", engine.Options{})
	defer sys.Close()
	ctx := context.Background()
	if sys.shuttingDown(ctx, "web-2") {
		t.Error("a running instance without systemctl is taken for one shutting down")
	}
	if !sys.shuttingDown(ctx, "web-1") {
		t.Error("a stopped instance is not taken for one shutting down")
	}
	// LXD running a stop of it: shutting down, whatever its init.
	if !sys.shuttingDown(ctx, "web-3") {
		t.Error("an instance LXD is stopping is not taken for one shutting down")
	}
}

// LXD refusing a start while the instance's stop is still cleaning up is a
// state in transition; another refusal is not.
func TestBusyStopping(t *testing.T) {
	busy := errors.New(`start: lxd: operation "Starting instance" failed: Failed to create instance start operation: Instance is busy running a "stop" operation`)
	if !busyStopping(busy) || busyStopping(errors.New("start: lxd: Failed to start device \"eth0\"")) {
		t.Error("busyStopping misreads LXD's refusals")
	}
}

// Docker's silence is excused when LXD does not run even a trivial command
// in the instance (LXD stalls: its silence, not Docker's), and not when
// LXD refuses the command ("Command not found"): LXD works, and a Docker
// that did not answer did not.
func TestAskInstanceTellsAStalledLXDFromASilentDocker(t *testing.T) {
	sys := New(transitionLXD(t), "o", engine.Options{})
	defer sys.Close()
	ctx := context.Background()
	if w := sys.askInstance(ctx, "web-4"); w.down || w.noExec == nil {
		t.Errorf("an LXD that drops the exec: %+v; want noExec", w)
	}
	if w := sys.askInstance(ctx, "web-2"); w.down || w.noExec != nil {
		t.Errorf("an LXD that refuses systemctl: %+v; want no excuse", w)
	}
}
