package lxd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// ExecConn is a net.Conn over the stdin/stdout of a command running in an
// instance: Write sends to the command's stdin, Read returns its stdout.
// It is meant for tunnelling a byte stream such as `docker system
// dial-stdio` and can be handed to an http.Transport: Read and Write may run
// concurrently, Close may be called from any goroutine, any number of times,
// and waits until all of the connection's goroutines have ended.
//
// Deadlines follow net.Conn: a blocked Read or Write returns
// os.ErrDeadlineExceeded. A Read deadline can be extended and the
// connection used again; a Write that times out breaks the connection
// (gorilla/websocket treats a failed write as fatal).
type ExecConn struct {
	c    *Client
	name string
	op   *Operation
	s    *execSockets

	// Reading: a pump goroutine reads stdout frames (it must keep reading
	// anyway, so that pings and close frames are handled) and hands them to
	// Read over frames; readErr is set before frames is closed.
	frames  chan []byte
	readErr error
	rmu     sync.Mutex // serializes Read; guards rbuf
	rbuf    []byte
	rdl     *deadline

	// Writing: gorilla allows one writer at a time.
	wmu     sync.Mutex // serializes Write/CloseWrite on stdin
	wclosed bool
	wdlMu   sync.Mutex
	wdl     time.Time

	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	cancelWait context.CancelFunc
	waitDone   chan struct{}
	exit       int
	exitErr    error
}

var _ net.Conn = (*ExecConn)(nil)

// DialExec starts command in the instance and returns a connection to its
// stdin and stdout. Its stderr is copied to stderr (nil discards it):
// dial-stdio reports its errors there. ctx bounds the start only; the
// command lives until it exits or the connection is closed (closing the
// control socket makes LXD SIGKILL it), as with a process behind
// net.Conn in Docker's ssh connection helper.
func (c *Client) DialExec(ctx context.Context, name string, command []string, stderr io.Writer) (*ExecConn, error) {
	op, s, err := c.startExec(ctx, name, ExecRequest{Command: command})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ec := &ExecConn{
		c:          c,
		name:       name,
		op:         op,
		s:          s,
		frames:     make(chan []byte),
		rdl:        newDeadline(),
		closed:     make(chan struct{}),
		cancelWait: cancel,
		waitDone:   make(chan struct{}),
		exit:       -1,
	}
	ec.wg.Add(5)
	go func() { defer ec.wg.Done(); discard(s.control) }()
	go func() { defer ec.wg.Done(); discard(s.stdin) }()
	go func() { defer ec.wg.Done(); _ = recvStream(s.stderr, stderr) }()
	go func() { defer ec.wg.Done(); ec.pump() }()
	go func() {
		defer ec.wg.Done()
		defer close(ec.waitDone)
		final, err := c.waitOperation(wctx, op)
		if err == nil {
			ec.exit, err = exitCode(final)
		}
		ec.exitErr = err
	}()
	return ec, nil
}

// pump moves stdout frames to Read until LXD's end-of-stream marker (an
// empty text message) or an error, then keeps draining the socket.
func (ec *ExecConn) pump() {
	// readErr is written before frames is closed; Read reads it only after
	// seeing the closed channel.
	for {
		mt, r, err := ec.s.stdout.NextReader()
		var data []byte
		if err == nil {
			data, err = io.ReadAll(r)
		}
		if err != nil {
			ec.readErr = ec.mapReadErr(err)
			if se := ec.startFailure(); se != nil {
				ec.readErr = se
			}
			close(ec.frames)
			return
		}
		if mt == websocket.TextMessage && len(data) == 0 {
			ec.readErr = io.EOF
			close(ec.frames)
			// Keep reading so that pings and the close frame are handled.
			discard(ec.s.stdout)
			return
		}
		if len(data) == 0 {
			continue
		}
		select {
		case ec.frames <- data:
		case <-ec.closed:
			ec.readErr = net.ErrClosed
			close(ec.frames)
			return
		}
	}
}

// startFailure waits briefly for the exec's operation once its stream
// broke, and returns an *ExecStartError when LXD failed it before the
// command ran: LXD closes the streams without a word then, and only the
// operation says why.
func (ec *ExecConn) startFailure() error {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-ec.waitDone:
	case <-ec.closed:
		return nil
	case <-t.C:
		return nil
	}
	if execNeverRan(ec.exitErr) {
		return &ExecStartError{Instance: ec.name, Err: ec.exitErr}
	}
	return nil
}

func (ec *ExecConn) mapReadErr(err error) error {
	select {
	case <-ec.closed:
		return net.ErrClosed
	default:
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure {
		return io.EOF
	}
	return fmt.Errorf("lxd: exec stream %s: %w", ec.name, err)
}

// Read reads the command's stdout. It returns io.EOF once the command has
// closed its stdout.
func (ec *ExecConn) Read(p []byte) (int, error) {
	ec.rmu.Lock()
	defer ec.rmu.Unlock()
	if len(ec.rbuf) > 0 {
		n := copy(p, ec.rbuf)
		ec.rbuf = ec.rbuf[n:]
		return n, nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	select {
	case <-ec.closed:
		return 0, net.ErrClosed
	case <-ec.rdl.wait():
		return 0, os.ErrDeadlineExceeded
	default:
	}
	select {
	case data, ok := <-ec.frames:
		if !ok {
			return 0, ec.readErr
		}
		n := copy(p, data)
		ec.rbuf = data[n:]
		return n, nil
	case <-ec.closed:
		return 0, net.ErrClosed
	case <-ec.rdl.wait():
		return 0, os.ErrDeadlineExceeded
	}
}

// Write sends p to the command's stdin as one binary frame.
func (ec *ExecConn) Write(p []byte) (int, error) {
	ec.wmu.Lock()
	defer ec.wmu.Unlock()
	select {
	case <-ec.closed:
		return 0, net.ErrClosed
	default:
	}
	if ec.wclosed {
		return 0, fmt.Errorf("lxd: exec stream %s: write after CloseWrite", ec.name)
	}
	ec.wdlMu.Lock()
	dl := ec.wdl
	ec.wdlMu.Unlock()
	if !dl.IsZero() && !time.Now().Before(dl) {
		return 0, os.ErrDeadlineExceeded
	}
	_ = ec.s.stdin.SetWriteDeadline(dl)
	if err := ec.s.stdin.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, ec.mapWriteErr(err)
	}
	return len(p), nil
}

func (ec *ExecConn) mapWriteErr(err error) error {
	select {
	case <-ec.closed:
		return net.ErrClosed
	default:
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return os.ErrDeadlineExceeded
	}
	return fmt.Errorf("lxd: exec stream %s: %w", ec.name, err)
}

// CloseWrite closes the command's stdin (an empty text frame on fd 0, LXD's
// end-of-stream marker). Reading goes on until the command closes stdout.
func (ec *ExecConn) CloseWrite() error {
	ec.wmu.Lock()
	defer ec.wmu.Unlock()
	if ec.wclosed {
		return nil
	}
	select {
	case <-ec.closed:
		return net.ErrClosed
	default:
	}
	ec.wclosed = true
	ec.wdlMu.Lock()
	dl := ec.wdl
	ec.wdlMu.Unlock()
	_ = ec.s.stdin.SetWriteDeadline(dl)
	if err := ec.s.stdin.WriteMessage(websocket.TextMessage, []byte{}); err != nil {
		return ec.mapWriteErr(err)
	}
	return nil
}

// Close closes the control socket first, which makes LXD SIGKILL the
// command, then the data sockets, and waits (briefly) for the operation to
// end and for all goroutines of the connection to exit.
func (ec *ExecConn) Close() error {
	ec.closeOnce.Do(func() {
		close(ec.closed)
		ec.s.closeAll()
		ec.rdl.stop()
		// LXD ends the operation right after the kill; wait a moment to
		// record the exit status, but don't let a slow server stall Close.
		t := time.NewTimer(2 * time.Second)
		select {
		case <-ec.waitDone:
		case <-t.C:
		}
		t.Stop()
		ec.cancelWait()
		ec.wg.Wait()
	})
	return nil
}

// Wait waits for the command to finish and returns its exit code (137 when
// it was killed by Close).
func (ec *ExecConn) Wait(ctx context.Context) (int, error) {
	select {
	case <-ec.waitDone:
		return ec.exit, ec.exitErr
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// OperationID is the LXD operation running the command.
func (ec *ExecConn) OperationID() string { return ec.op.ID }

// LocalAddr is the local address of the stdout websocket.
func (ec *ExecConn) LocalAddr() net.Addr { return ec.s.stdout.LocalAddr() }

// RemoteAddr is the remote address of the stdout websocket.
func (ec *ExecConn) RemoteAddr() net.Addr { return ec.s.stdout.RemoteAddr() }

// SetDeadline sets both deadlines.
func (ec *ExecConn) SetDeadline(t time.Time) error {
	_ = ec.SetReadDeadline(t)
	return ec.SetWriteDeadline(t)
}

// SetReadDeadline bounds pending and future Reads.
func (ec *ExecConn) SetReadDeadline(t time.Time) error {
	ec.rdl.set(t)
	return nil
}

// SetWriteDeadline bounds pending and future Writes.
func (ec *ExecConn) SetWriteDeadline(t time.Time) error {
	ec.wdlMu.Lock()
	ec.wdl = t
	ec.wdlMu.Unlock()
	// Reach a Write blocked right now: gorilla sets the socket deadline
	// only when a frame starts, so set it on the socket as well.
	return ec.s.stdin.UnderlyingConn().SetWriteDeadline(t)
}

// deadline is a resettable timer exposing a channel that is closed when the
// deadline passes; a select blocked on it sees a later reset.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer
	ch    chan struct{}
}

func newDeadline() *deadline { return &deadline{ch: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.ch // the timer fired: wait until it has closed the channel
	}
	d.timer = nil
	expired := isClosed(d.ch)
	if t.IsZero() {
		if expired {
			d.ch = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if expired {
			d.ch = make(chan struct{})
		}
		ch := d.ch
		d.timer = time.AfterFunc(dur, func() { close(ch) })
		return
	}
	if !expired {
		close(d.ch)
	}
}

func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.ch
	}
	d.timer = nil
}

func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
