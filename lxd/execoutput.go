package lxd

import (
	"context"
	"sync"
)

// ExecResult is a finished (or abandoned) command's exit code and the tail
// of its output.
type ExecResult struct {
	// ExitCode is the command's exit status; -1 when it is unknown (the
	// command could not be started, or ctx ended first).
	ExitCode int
	// Output is the end of what the command wrote to stdout and stderr,
	// interleaved as it arrived, at most the limit given.
	Output []byte
	// Truncated says that earlier output was dropped.
	Truncated bool
	// Attempts is how many times the exec was started: more than 1 when
	// LXD failed to start the command at first (see Exec).
	Attempts int
}

// ExecOutput runs a command like Exec and keeps the last limit bytes of
// its combined stdout and stderr (req.Stdout is ignored; req.Stderr, when
// set, gets stderr instead, for a command that uses it as a side channel).
// LXD sends the two on separate streams, so how they interleave is only
// roughly the order they were written in; a caller that needs the exact
// order merges them in the instance (sh -c 'exec "$@" 2>&1').
// It is for commands whose output is read by people when they fail, such
// as a provisioning script. The result carries the output so far even
// when an error is returned: when ctx ends, LXD kills the command (see
// Exec) and the error wraps ctx's.
func (c *Client) ExecOutput(ctx context.Context, name string, req ExecRequest, limit int) (ExecResult, error) {
	tail := &tailBuffer{limit: max(limit, 0)}
	req.Stdout = tail
	if req.Stderr == nil {
		req.Stderr = tail
	}
	code, attempts, err := c.execRetrying(ctx, name, req)
	out, truncated := tail.snapshot()
	return ExecResult{ExitCode: code, Output: out, Truncated: truncated, Attempts: attempts}, err
}

// tailBuffer keeps the last limit bytes written to it. stdout and stderr
// are copied by two goroutines, which may still write after Exec returned
// on a cancelled ctx, hence the lock.
type tailBuffer struct {
	mu        sync.Mutex
	buf       []byte
	limit     int
	truncated bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) > t.limit {
		p = p[len(p)-t.limit:]
		t.truncated = true
		t.buf = t.buf[:0]
	}
	t.buf = append(t.buf, p...)
	// Compact only once the buffer holds twice the limit, so each byte
	// is moved a bounded number of times.
	if len(t.buf) > 2*t.limit {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.limit:]...)
		t.truncated = true
	}
	return n, nil
}

func (t *tailBuffer) snapshot() ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	truncated := t.truncated
	if len(b) > t.limit {
		b = b[len(b)-t.limit:]
		truncated = true
	}
	return append([]byte(nil), b...), truncated
}
