package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/berth-gitops/berth/lxd"
)

// NewLXDDialer returns a Dialer that opens tunnels with LXD's exec API
// through berth's LXD client. The engine depends on LXD only through this
// adapter; tests use fakes of Dialer.
func NewLXDDialer(c *lxd.Client) Dialer { return lxdDialer{c} }

type lxdDialer struct{ c *lxd.Client }

func (d lxdDialer) DialExec(ctx context.Context, instance string, command []string, stderr io.Writer) (net.Conn, error) {
	ec, err := d.c.DialExec(ctx, instance, command, stderr)
	if err != nil {
		if notRunning(err) {
			return nil, &notRunningError{err: err}
		}
		if errors.Is(err, lxd.ErrUnreachable) {
			return nil, &unreachableError{err: err}
		}
		if ctx.Err() != nil {
			return nil, err
		}
		// Whatever else failed, it failed in LXD before dial-stdio ran.
		return nil, &tunnelError{err: err}
	}
	return execConn{ec}, nil
}

// execConn is a tunnel whose stream ends with a *tunnelError when LXD
// failed the exec before dial-stdio ran: LXD accepted it, then could not
// attach to the instance, and closed the streams.
type execConn struct{ *lxd.ExecConn }

func (c execConn) Read(p []byte) (int, error) {
	n, err := c.ExecConn.Read(p)
	if err != nil && errors.Is(err, lxd.ErrExecNotStarted) {
		err = &tunnelError{err: err}
	}
	return n, err
}

// tunnelError matches ErrTunnel and keeps LXD's error.
type tunnelError struct{ err error }

func (e *tunnelError) Error() string   { return e.err.Error() }
func (e *tunnelError) Unwrap() []error { return []error{ErrTunnel, e.err} }

// Permanent is false: LXD sets up the next exec.
func (e *tunnelError) Permanent() bool { return false }

// notRunning recognizes LXD's synchronous 400 "Instance is not running" to
// an exec POST, and a 404 for an instance that is gone.
func notRunning(err error) bool {
	if errors.Is(err, lxd.ErrNotFound) {
		return true
	}
	var se *lxd.StatusError
	return errors.As(err, &se) && se.Code == http.StatusBadRequest &&
		strings.Contains(strings.ToLower(se.Message), "not running")
}

// notRunningError matches ErrInstanceNotRunning and keeps LXD's error.
type notRunningError struct{ err error }

func (e *notRunningError) Error() string {
	return fmt.Sprintf("instance is not running (%v)", e.err)
}

func (e *notRunningError) Unwrap() []error { return []error{ErrInstanceNotRunning, e.err} }

// unreachableError matches ErrBackendUnreachable (and ErrTunnel: no tunnel
// reached Docker) and keeps LXD's error,
// which names where LXD was looked for.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() []error {
	return []error{ErrBackendUnreachable, ErrTunnel, e.err}
}

// Permanent is false for an instance that is not running: LXD answers 400,
// but the instance may be started again; it is not a refused spec.
func (e *notRunningError) Permanent() bool { return false }

// InTransition is true: the instance stopped (or went) under the caller,
// whose step was planned while it ran. The reconciler plans again soon
// instead of holding the app for its rollout backoff.
func (e *notRunningError) InTransition() bool { return true }

// Permanent is false: LXD coming back fixes it.
func (e *unreachableError) Permanent() bool { return false }
