package lxd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// ExecRequest is a non-interactive command run in an instance.
type ExecRequest struct {
	Command []string
	// Env is added to LXD's defaults (PATH, HOME=/root, USER=root,
	// LANG=C.UTF-8) and the instance's environment.* keys.
	Env   map[string]string
	Cwd   string
	User  uint32
	Group uint32
	// Stdin is copied to the command's standard input, which is closed at
	// EOF; nil gives an empty input. A Stdin whose Read blocks forever keeps
	// one goroutine alive until it returns (like any reader copy).
	Stdin io.Reader
	// Stdout and Stderr receive the outputs; nil discards them.
	Stdout io.Writer
	Stderr io.Writer
}

type execPost struct {
	Command      []string          `json:"command"`
	WaitForWS    bool              `json:"wait-for-websocket"`
	Interactive  bool              `json:"interactive"`
	Environment  map[string]string `json:"environment"`
	RecordOutput bool              `json:"record-output"`
	User         uint32            `json:"user"`
	Group        uint32            `json:"group"`
	Cwd          string            `json:"cwd"`
	Width        int               `json:"width"`
	Height       int               `json:"height"`
}

// execSockets are the websockets of one non-interactive exec.
type execSockets struct {
	control, stdin, stdout, stderr *websocket.Conn
}

func (s *execSockets) closeAll() {
	// Control first: LXD SIGKILLs the command when the control socket goes
	// away (lxd/instance_exec.go control handler), so the process never
	// outlives us.
	for _, c := range []*websocket.Conn{s.control, s.stdin, s.stdout, s.stderr} {
		if c != nil {
			_ = c.Close()
		}
	}
}

// maxExecStarts bounds how many execs one client sets up at once (the POST
// and the websocket handshakes, not the commands' lifetimes). A cold
// observe used to open a tunnel into every instance together: eight exec
// POSTs and 32 handshakes at once, each exec also forking an `lxd
// forkexec`, left a loaded 2-core LXD answering handshakes after berth's
// deadline, and every tunnel of the run failed together. Setting up a few
// at a time costs little (a setup takes milliseconds when LXD is idle).
const maxExecStarts = 4

// wsDialTimeout bounds connecting one exec's websockets. LXD gives up on
// an exec whose stdin/stdout/stderr are not all connected 5 s after it
// starts the operation; a handshake that is slow but succeeds is still
// worth having, since LXD's failure then says so ("Timed out waiting for
// websockets to connect") and the exec is retried as never started.
const wsDialTimeout = 10 * time.Second

// startExec POSTs the exec (non-interactive, wait-for-websocket, so LXD
// gives us separate binary-safe stdin/stdout/stderr sockets instead of a
// PTY) and connects all four websockets. The control socket is connected
// first, alone: LXD runs the command only once 0, 1 and 2 are all
// connected, and closing control kills the command's own process if it
// ever starts. A failure here is an *ExecStartError that is not yet
// confirmed: LXD may have seen all the websockets connected (see
// confirmNotStarted), so Exec asks the operation before it tries again.
func (c *Client) startExec(ctx context.Context, name string, req ExecRequest) (*Operation, *execSockets, error) {
	if name == "" {
		return nil, nil, errEmptyName
	}
	if len(req.Command) == 0 {
		return nil, nil, fmt.Errorf("lxd: exec in %s: empty command", name)
	}
	select {
	case c.execStarts <- struct{}{}:
		defer func() { <-c.execStarts }()
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("lxd: exec in %s: %w", name, ctx.Err())
	}
	env := req.Env
	if env == nil {
		env = map[string]string{}
	}
	body := execPost{
		Command:     req.Command,
		WaitForWS:   true,
		Environment: env,
		User:        req.User,
		Group:       req.Group,
		Cwd:         req.Cwd,
	}
	resp, err := c.do(ctx, request{method: "POST", path: instancePath(name) + "/exec", project: true, body: body})
	if err != nil {
		return nil, nil, err
	}
	if resp.Type != "async" {
		return nil, nil, fmt.Errorf("lxd: exec in %s: expected an operation, got %q", name, resp.Type)
	}
	op, err := c.operationFromResponse(resp)
	if err != nil {
		return nil, nil, err
	}
	var meta struct {
		FDs map[string]string `json:"fds"`
	}
	if err := op.DecodeMetadata(&meta); err != nil {
		return nil, nil, err
	}
	for _, k := range []string{"0", "1", "2", "control"} {
		if meta.FDs[k] == "" {
			return nil, nil, fmt.Errorf("lxd: exec in %s: operation %s has no websocket %q", name, op.ID, k)
		}
	}
	s, err := c.connectExec(ctx, op.ID, meta.FDs)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("lxd: exec in %s: connecting websockets: %w", name, ctx.Err())
		}
		return nil, nil, &ExecStartError{Instance: name, Err: fmt.Errorf("connecting websockets: %w", err), unconfirmed: op}
	}
	return op, s, nil
}

// execSettleTimeout bounds the wait for LXD's word on an exec whose
// websockets failed: LXD itself gives up on missing websockets after 5 s.
const execSettleTimeout = 15 * time.Second

// confirmNotStarted asks LXD whether the exec behind e, whose websockets
// failed on berth's side, ran its command. LXD upgrades a websocket before
// the client has read its answer, so a connection berth saw fail may have
// been complete on LXD's side: with 0, 1 and 2 all up there, LXD ran the
// command, and closing control killed only the command's own process, not
// what it started in a session of its own (a provision's daemon). Running
// it again would then run it twice. Only the operation tells: LXD fails it
// with "Timed out waiting for websockets to connect" when the command
// never ran. Anything else, or no answer, is an *ExecLostError.
func (c *Client) confirmNotStarted(ctx context.Context, e *ExecStartError) error {
	op := e.unconfirmed
	if op == nil {
		return e
	}
	wctx, cancel := context.WithTimeout(ctx, execSettleTimeout)
	defer cancel()
	final, err := c.waitOperation(wctx, op)
	if err != nil && execNeverRan(err) {
		return &ExecStartError{Instance: e.Instance, Err: e.Err}
	}
	lost := &ExecLostError{Instance: e.Instance, Err: e.Err}
	switch {
	case err != nil && errors.As(err, new(*OperationError)):
		lost.Outcome = "LXD failed it: " + err.Error()
	case err != nil:
		lost.Outcome = "LXD did not say whether the command ran: " + err.Error()
	default:
		if code, cerr := exitCode(final); cerr == nil {
			lost.Outcome = fmt.Sprintf("LXD ran the command, which ended with code %d once the websockets closed", code)
		} else {
			lost.Outcome = "LXD ran the command"
		}
	}
	return lost
}

// connectExec connects control, then stdin, stdout and stderr together
// (see startExec for why in that order).
func (c *Client) connectExec(ctx context.Context, opID string, fds map[string]string) (*execSockets, error) {
	dctx, cancel := context.WithTimeout(ctx, wsDialTimeout)
	defer cancel()
	control, err := c.dialOperationWebsocket(dctx, opID, fds["control"])
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	keys := []string{"0", "1", "2"}
	conns := make([]*websocket.Conn, len(keys))
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns[i], errs[i] = c.dialOperationWebsocket(dctx, opID, fds[k])
			if errs[i] != nil {
				errs[i] = fmt.Errorf("fd %s: %w", k, errs[i])
			}
		}()
	}
	wg.Wait()
	s := &execSockets{control: control, stdin: conns[0], stdout: conns[1], stderr: conns[2]}
	if err := errors.Join(errs...); err != nil {
		s.closeAll()
		return nil, err
	}
	return s, nil
}

// dialOperationWebsocket connects to /1.0/operations/<id>/websocket
// (ws:// through the unix socket dialer, or wss:// with the client's TLS
// config). Operation URLs never take ?project=.
func (c *Client) dialOperationWebsocket(ctx context.Context, opID, secret string) (*websocket.Conn, error) {
	path := "/1.0/operations/" + pathEscape(opID) + "/websocket"
	conn, err := c.dialWebsocket(ctx, path, url.Values{"secret": {secret}}, false)
	if err != nil {
		return nil, err
	}
	conn.SetPingHandler(func(data string) error {
		// LXD pings every socket every 10 s. A ping that arrives as LXD
		// closes the socket after the command's last output makes the
		// pong fail (broken pipe); gorilla's own handler would then fail
		// the read, and the output and end-of-stream marker still
		// buffered would be lost. A failed pong only means the peer is
		// going: the next read says so, after the data.
		_ = conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
		return nil
	})
	return conn, nil
}

// discard reads and drops messages until the connection fails. gorilla
// handles ping and close frames only while someone reads, and LXD pings
// every socket every 10 s, so every socket gets a reader.
func discard(conn *websocket.Conn) {
	for {
		if _, _, err := conn.NextReader(); err != nil {
			return
		}
	}
}

// recvStream copies binary frames to w until LXD's end-of-stream marker (an
// empty text message, shared/network.go WebsocketSendStream) or an error.
// It then keeps reading (and dropping) so pings are answered.
func recvStream(conn *websocket.Conn, w io.Writer) error {
	var werr error
	for {
		mt, r, err := conn.NextReader()
		if err != nil {
			return err
		}
		if mt == websocket.TextMessage {
			data, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			if len(data) == 0 {
				discard(conn)
				return werr
			}
			if werr == nil && w != nil {
				_, werr = w.Write(data)
			}
			continue
		}
		if werr == nil && w != nil {
			_, werr = io.Copy(w, r)
		}
	}
}

// sendStream copies r to conn as binary frames and then sends the empty text
// message that closes the command's stdin.
func sendStream(conn *websocket.Conn, r io.Reader) {
	if r != nil {
		buf := make([]byte, 32*1024)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if werr := conn.WriteMessage(websocket.BinaryMessage, buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				break
			}
		}
	}
	_ = conn.WriteMessage(websocket.TextMessage, []byte{})
}

// exitCode reads metadata.return of a finished exec. A non-zero exit is
// still a successful operation.
func exitCode(op *Operation) (int, error) {
	var meta struct {
		Return *int `json:"return"`
	}
	if err := op.DecodeMetadata(&meta); err != nil {
		return -1, err
	}
	if meta.Return == nil {
		return -1, fmt.Errorf("lxd: exec operation %s finished without a return code", op.ID)
	}
	return *meta.Return, nil
}

// execAttempts bounds the tries of an exec whose command LXD never
// started (an *ExecStartError), and execRetryBase is the first pause
// between them, doubled each time: about 8 s in all, enough for an
// instance that has only just started to become ready for exec. (A
// variable only so that unit tests need not wait.)
const execAttempts = 6

var execRetryBase = 250 * time.Millisecond

// Exec runs a command in a running instance, non-interactively (separate,
// binary-safe stdin/stdout/stderr), and returns its exit code once the
// command has finished and its output has been written. A command that
// cannot be started fails the operation (*OperationError). An exec that
// LXD failed before the command ran (*ExecStartError: right after the
// instance started, or under load) is tried again with backoff, at most
// execAttempts times in all, when req.Stdin is nil or can seek back to
// its start. When ctx ends, the control socket is closed, which makes LXD
// kill the command.
func (c *Client) Exec(ctx context.Context, name string, req ExecRequest) (int, error) {
	code, _, err := c.execRetrying(ctx, name, req)
	return code, err
}

// execRetrying is Exec that also says how many tries it took.
func (c *Client) execRetrying(ctx context.Context, name string, req ExecRequest) (code, attempts int, err error) {
	pause := execRetryBase
	for attempts = 1; ; attempts++ {
		code, err = c.execOnce(ctx, name, req)
		if se := (*ExecStartError)(nil); errors.As(err, &se) && se.unconfirmed != nil && ctx.Err() == nil {
			err = c.confirmNotStarted(ctx, se)
		}
		if err == nil || !errors.Is(err, ErrExecNotStarted) || ctx.Err() != nil {
			return code, attempts, err
		}
		if attempts >= execAttempts || !rewind(req.Stdin) {
			return code, attempts, fmt.Errorf("%w (tried %d times)", err, attempts)
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return code, attempts, fmt.Errorf("%w (tried %d times, then %w)", err, attempts, ctx.Err())
		}
		pause *= 2
	}
}

// rewind makes r readable from its start again for another try: nil
// needs nothing, a seekable reader seeks back, any other cannot.
func rewind(r io.Reader) bool {
	if r == nil {
		return true
	}
	sk, ok := r.(io.Seeker)
	if !ok {
		return false
	}
	_, err := sk.Seek(0, io.SeekStart)
	return err == nil
}

// execOnce is one try of Exec.
func (c *Client) execOnce(ctx context.Context, name string, req ExecRequest) (int, error) {
	op, s, err := c.startExec(ctx, name, req)
	if err != nil {
		return -1, err
	}
	defer s.closeAll()

	go discard(s.control)
	go discard(s.stdin)
	// Not waited for: it may be blocked in req.Stdin.Read. Closing the
	// sockets makes its next write fail.
	go sendStream(s.stdin, req.Stdin)

	outDone := make(chan error, 2)
	go func() { outDone <- recvStream(s.stdout, req.Stdout) }()
	go func() { outDone <- recvStream(s.stderr, req.Stderr) }()

	type result struct {
		op  *Operation
		err error
	}
	opDone := make(chan result, 1)
	wctx, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	go func() {
		op, err := c.waitOperation(wctx, op)
		opDone <- result{op, err}
	}()

	// LXD writes all output before it marks the operation done
	// (lxd/instance_exec.go finisher waits for the mirrors), then closes the
	// sockets. Collect both, bounded by ctx.
	var res result
	gotOp := false
	var outErr error
	for pending := 2; pending > 0; {
		select {
		case err := <-outDone:
			pending--
			var ce *websocket.CloseError
			if err != nil && outErr == nil && !errors.As(err, &ce) && !errors.Is(err, io.ErrUnexpectedEOF) {
				outErr = err
			}
		case res = <-opDone:
			gotOp = true
			if res.err != nil {
				pending = 0 // failed: the streams may never end
				continue
			}
			// Output should already be complete; don't hang on a peer
			// that keeps the sockets open.
			go func() {
				t := time.NewTimer(5 * time.Second)
				defer t.Stop()
				select {
				case <-t.C:
					s.closeAll()
				case <-wctx.Done():
				}
			}()
		}
	}
	if !gotOp {
		res = <-opDone
	}
	if res.err != nil {
		if execNeverRan(res.err) {
			return -1, &ExecStartError{Instance: name, Err: res.err}
		}
		return -1, res.err
	}
	code, err := exitCode(res.op)
	if err != nil {
		return -1, err
	}
	if outErr != nil {
		return code, fmt.Errorf("lxd: exec in %s: writing output: %w", name, outErr)
	}
	return code, nil
}
