package lxd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Sentinel errors, matched with errors.Is against *StatusError and
// *OperationError.
var (
	// ErrNotFound: HTTP 404 (e.g. "Instance not found").
	ErrNotFound = errors.New("lxd: not found")
	// ErrConflict: HTTP 409 (existing alias, certificate, ...), or any
	// error or failed operation saying "already exists" (LXD reports a
	// duplicate instance only in the operation, with HTTP 202 then 200, and
	// a duplicate profile as a 500).
	ErrConflict = errors.New("lxd: conflict")
	// ErrPreconditionFailed: HTTP 412, the If-Match ETag no longer matches.
	ErrPreconditionFailed = errors.New("lxd: precondition failed (stale ETag)")
	// ErrForbidden: HTTP 403, e.g. an untrusted or restricted client.
	ErrForbidden = errors.New("lxd: forbidden")
	// ErrUntrusted: the HTTPS server does not trust the client certificate.
	ErrUntrusted = errors.New("lxd: client certificate is not trusted by the server")
	// ErrUnreachable: no connection to LXD could be made (the socket is
	// missing, the daemon is stopped, the host does not answer). Callers
	// fail fast on it instead of waiting for something inside an instance.
	ErrUnreachable = errors.New("LXD not reachable")
)

// UnreachableError is a failed connection to LXD, naming where it was
// tried: "LXD not reachable at /var/lib/lxd/unix.socket: ...".
type UnreachableError struct {
	Where string
	Err   error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("LXD not reachable at %s: %v", e.Where, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Is matches ErrUnreachable.
func (e *UnreachableError) Is(target error) bool { return target == ErrUnreachable }

// unreachable wraps a dial function so that its failures say where LXD was
// looked for and match ErrUnreachable. A cancelled dial is not LXD's fault
// and stays as it is.
func unreachable(where string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil && ctx.Err() == nil {
			return nil, &UnreachableError{Where: where, Err: err}
		}
		return conn, err
	}
}

// StatusError is an error response from LXD (an "error" envelope, or any
// non-2xx HTTP status).
type StatusError struct {
	Code    int    // HTTP status / error_code
	Message string // LXD's "error" text
	Method  string
	Path    string // request path without query
}

func (e *StatusError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Code)
	}
	return fmt.Sprintf("lxd: %s %s: %d %s", e.Method, e.Path, e.Code, msg)
}

// Permanent reports a request LXD refused as invalid (400: a bad config
// key or value, a device it cannot create): sending it again cannot help,
// so the reconciler stalls the app until a new commit rather than retrying.
func (e *StatusError) Permanent() bool { return e.Code == http.StatusBadRequest }

// Is maps HTTP codes to the sentinel errors. ErrConflict also matches an
// error saying "already exists": LXD 5.0.2 reports a duplicate profile as
// 500 "Error inserting ... The profile already exists".
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == http.StatusNotFound
	case ErrConflict:
		return e.Code == http.StatusConflict || strings.Contains(e.Message, "already exists")
	case ErrPreconditionFailed:
		return e.Code == http.StatusPreconditionFailed
	case ErrForbidden:
		return e.Code == http.StatusForbidden
	}
	return false
}

// OperationError is an operation that ended in Failure (400) or Cancelled
// (401). LXD returns such an operation with HTTP 200, so it is not a
// StatusError.
type OperationError struct {
	ID          string
	Description string
	StatusCode  int // 400 Failure, 401 Cancelled
	Err         string
}

func (e *OperationError) Error() string {
	status := "failed"
	if e.StatusCode == StatusCancelled {
		status = "cancelled"
	}
	if e.Err == "" {
		return fmt.Sprintf("lxd: operation %q (%s) %s", e.Description, e.ID, status)
	}
	return fmt.Sprintf("lxd: operation %q %s: %s", e.Description, status, elideMiddle(e.Err, maxOperationErr))
}

// maxOperationErr bounds an operation's error in its message. LXD passes
// on a failed tool's whole output: an image unpacked onto a full pool
// failed with one tar line per file, 295 KB, which then filled apply's
// summary, the status and the log.
const maxOperationErr = 2 << 10

// elideMiddle keeps the start of s (what failed) and its end (the tool's
// last words), at most limit bytes with the cut said in between.
func elideMiddle(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	head, tail := limit*3/4, limit/4
	for head > 0 && !utf8.RuneStart(s[head]) {
		head--
	}
	from := len(s) - tail
	for from < len(s) && !utf8.RuneStart(s[from]) {
		from++
	}
	return fmt.Sprintf("%s [... %d bytes cut ...] %s", s[:head], from-head, s[from:])
}

// Is reports ErrConflict for operations failing with "already exists" (the
// only way LXD reports creating a duplicate instance or image) and
// ErrNotFound for "not found".
func (e *OperationError) Is(target error) bool {
	switch target {
	case ErrConflict:
		return strings.Contains(e.Err, "already exists")
	case ErrNotFound:
		return strings.Contains(strings.ToLower(e.Err), "not found")
	}
	return false
}

// ErrExecNotStarted is matched by an *ExecStartError: an exec whose
// command LXD never started.
var ErrExecNotStarted = errors.New("lxd: exec not started")

// ExecStartError is an exec that failed before its command ran: its
// websockets could not be connected, or LXD failed the operation with
// one of the errors it reports for an instance that is still starting or
// too busy to attach ("Failed to retrieve PID of executing child
// process", "Timed out waiting for websockets to connect"). It says
// nothing about the instance's own programs, and trying again is safe:
// the command did not run.
type ExecStartError struct {
	Instance string
	Err      error
	// unconfirmed is the operation of an exec whose websockets failed on
	// berth's side: until LXD says the command never ran (see
	// Client.confirmNotStarted), it may have.
	unconfirmed *Operation
}

func (e *ExecStartError) Error() string {
	return fmt.Sprintf("lxd: exec in %s: %v", e.Instance, e.Err)
}

func (e *ExecStartError) Unwrap() error { return e.Err }

// Is matches ErrExecNotStarted.
func (e *ExecStartError) Is(target error) bool { return target == ErrExecNotStarted }

// Permanent is false: the same exec usually works a moment later.
func (e *ExecStartError) Permanent() bool { return false }

// ExecLostError is an exec whose websockets failed on berth's side after
// LXD may have started its command: LXD completes a websocket before the
// client reads its answer. It is not tried again, since the command may
// have run (once is what a provision promises); Outcome says what LXD
// reported.
type ExecLostError struct {
	Instance string
	Err      error
	Outcome  string
}

func (e *ExecLostError) Error() string {
	return fmt.Sprintf("lxd: exec in %s: %v; not tried again, as the command may have run (%s)", e.Instance, e.Err, e.Outcome)
}

func (e *ExecLostError) Unwrap() error { return e.Err }

// Permanent is false: a later run may try again once it has looked.
func (e *ExecLostError) Permanent() bool { return false }

// execNotStartedMessages are the operation errors of LXD 5.0's exec that
// it returns before the command runs (lxd/instance_exec.go and the
// driver's Exec): the forkexec helper could not attach to an instance
// that has only just started, or the websockets came too late.
var execNotStartedMessages = []string{
	"Failed to retrieve PID of executing child process",
	"Timed out waiting for websockets to connect",
}

// execNeverRan reports whether a failed exec operation is one whose
// command never ran.
func execNeverRan(err error) bool {
	var oe *OperationError
	if !errors.As(err, &oe) || oe.StatusCode != StatusFailure {
		return false
	}
	for _, m := range execNotStartedMessages {
		if strings.Contains(oe.Err, m) {
			return true
		}
	}
	return false
}
