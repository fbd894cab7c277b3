package engine

import (
	"context"
	"errors"
	"fmt"
	"github.com/berth-gitops/berth/ownership"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/berth-gitops/berth/clock"
)

// NotReadyError says why a replica's app container did not become ready.
type NotReadyError struct {
	Instance string
	App      string
	// Reason is short and specific: "unhealthy: <last check output>",
	// "exited with code 1", "restarting (3 restarts)", "health still
	// "timed out after 2m0s: health still starting (...)", "no container", "docker: <error>".
	Reason string
	// Transient is set when readiness could not be judged because Docker
	// did not answer (the last look failed in the tunnel), rather than
	// because the container itself failed.
	Transient bool
}

func (e *NotReadyError) Error() string {
	return fmt.Sprintf("%s: app %s not ready: %s", e.Instance, e.App, e.Reason)
}

// Permanent reports that the container itself did not become ready — it
// exited, restarted, turned or stayed unhealthy: the same spec will not do
// better on a retry, so the rollout waits for a new commit.
func (e *NotReadyError) Permanent() bool { return !e.Transient }

// verdict is the judgement of one look at the container.
type verdict int

const (
	waiting verdict = iota // not ready yet, may still become ready
	ready
	failed // will not become ready by waiting
)

// readiness judges one inspect of the app container. baseRestarts is the
// restart count seen first; settle is how long a container without a
// healthcheck must have been running.
func readiness(insp container.InspectResponse, baseRestarts int, settle time.Duration, now time.Time) (verdict, string) {
	st := insp.State
	if st == nil {
		return waiting, "no state reported"
	}
	if insp.RestartCount > baseRestarts {
		return failed, restartReason(insp)
	}
	switch st.Status {
	case container.StateRunning:
	case container.StateRestarting:
		return failed, restartReason(insp)
	case container.StateExited, container.StateDead:
		r := fmt.Sprintf("exited with code %d", st.ExitCode)
		if st.OOMKilled {
			r += " (out of memory)"
		}
		if st.Error != "" {
			r += ": " + st.Error
		}
		return failed, r
	case container.StateCreated:
		if st.Error != "" { // start failed, e.g. a bad command or mount
			return failed, "not started: " + st.Error
		}
		return waiting, "created, not started"
	default: // paused, removing
		return waiting, st.Status
	}

	if h := st.Health; h != nil {
		switch h.Status {
		case container.Healthy:
			return ready, ""
		case container.Unhealthy:
			return failed, "unhealthy: " + lastCheck(h)
		default:
			r := "health still " + h.Status
			if h.FailingStreak > 0 {
				r += fmt.Sprintf(" (%d failed checks, last: %s)", h.FailingStreak, lastCheck(h))
			}
			return waiting, r
		}
	}
	// No healthcheck: running long enough without restarting.
	started, err := time.Parse(time.RFC3339Nano, st.StartedAt)
	if err != nil {
		return waiting, "running (start time unknown)"
	}
	if up := now.Sub(started); up < settle {
		return waiting, fmt.Sprintf("running for %s, settling for %s", up.Round(time.Millisecond), settle)
	}
	return ready, ""
}

func restartReason(insp container.InspectResponse) string {
	r := fmt.Sprintf("restarting (%d restarts)", insp.RestartCount)
	if insp.State != nil && insp.State.ExitCode != 0 {
		r += fmt.Sprintf(", last exit code %d", insp.State.ExitCode)
	}
	return r
}

// lastCheck is the last line of the latest health probe's output.
func lastCheck(h *container.Health) string {
	for i := len(h.Log) - 1; i >= 0; i-- {
		r := h.Log[i]
		if r == nil {
			continue
		}
		if out := lastLine(r.Output); out != "" {
			return out
		}
		return fmt.Sprintf("exit code %d, no output", r.ExitCode)
	}
	return "no check output"
}

// WaitReady waits until berth's container of app in instance is ready:
// running and healthy, or, without a healthcheck, running for Settle with
// no restart. It polls every PollInterval for at most timeout and fails
// early once the container has exited, restarted or turned unhealthy: a
// restart during a rollout means the new version crashed. Failures are
// *NotReadyError; a cancelled ctx is returned as is.
func (m *Manager) WaitReady(ctx context.Context, instance, app string, timeout time.Duration) error {
	clk := m.opts.Clock
	tctx, cancel := clock.WithTimeout(ctx, clk, timeout)
	defer cancel()
	notReady := func(reason string) error { return &NotReadyError{Instance: instance, App: app, Reason: reason} }
	base := -1
	reason := "not looked at yet"
	tunnelDown := false // the last look failed in the tunnel, not the container
	for {
		begin := clk.Now()
		insp, err := m.inspectApp(tctx, instance, app)
		tunnelDown = false
		switch {
		case err == nil:
			if base < 0 {
				base = insp.RestartCount
			}
			v, r := readiness(insp, base, m.opts.Settle, clk.Now())
			switch v {
			case ready:
				return nil
			case failed:
				return notReady(r)
			}
			reason = r
		case errors.Is(err, errNoContainer):
			return notReady("no container")
		case errors.Is(err, errNotBerths):
			return notReady(err.Error())
		case errors.Is(err, ErrBackendUnreachable), errors.Is(err, ErrInstanceNotRunning):
			// No use waiting out the timeout: LXD is gone, or the
			// instance stopped and will not start by itself.
			return err
		case tctx.Err() == nil:
			reason = "docker: " + err.Error() // the tunnel may come back
			tunnelDown = true
		}
		if !m.pollWait(tctx, begin) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &NotReadyError{Instance: instance, App: app, Reason: fmt.Sprintf("timed out after %s: %s", timeout, reason), Transient: tunnelDown}
		}
	}
}

var (
	errNoContainer = errors.New("no container")
	errNotBerths   = errors.New("container is not berth's")
)

func (m *Manager) inspectApp(ctx context.Context, instance, app string) (container.InspectResponse, error) {
	cli, c, err := m.client(ctx, instance)
	if err != nil {
		return container.InspectResponse{}, err
	}
	var insp container.InspectResponse
	err = m.call(ctx, c, "inspect container "+app, func(ctx context.Context) (err error) {
		insp, err = cli.ContainerInspect(ctx, app)
		return err
	})
	if isNotFound(err) {
		return insp, errNoContainer
	}
	if err != nil {
		return insp, err
	}
	if insp.Config == nil || insp.Config.Labels[ownership.LabelApp] != app {
		return insp, fmt.Errorf("%w: %q has no %s=%s label", errNotBerths, app, ownership.LabelApp, app)
	}
	return insp, nil
}
