package lxd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// fakeExec adds an exec endpoint to the fake LXD that behaves like LXD's
// non-interactive exec of `cat`: fd 0 frames are echoed on fd 1, an empty
// text frame on fd 0 ends the command (empty text frames on 1 and 2), and
// closing control kills it (exit 137). The operation finishes afterwards
// with metadata.return.
func fakeExec(t *testing.T, f *fakeLXD) { fakeExecWith(t, f, &execFaults{}) }

// execFaults makes the fake's execs fail as LXD's do before the command
// runs, and records what the client did.
type execFaults struct {
	mu sync.Mutex
	// failFirst execs fail with failMsg once their websockets are
	// connected: LXD closes the streams and fails the operation.
	failFirst int
	failMsg   string
	// breakFirst execs have berth's handshake of fd 2 fail. With
	// breakRan, LXD had already counted it connected (it upgrades before
	// the client reads the answer): the command ran, and closing control
	// killed it. Without, LXD times out waiting for it, command not run.
	breakFirst int
	breakRan   bool
	// posts counts exec POSTs; firstFDs are the fds of the first exec in
	// the order their websockets connected; ran counts commands started.
	posts    int
	firstFDs []string
	ran      int
}

func (x *execFaults) runs() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.ran
}

func (x *execFaults) counts() (posts int, firstFDs []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.posts, append([]string(nil), x.firstFDs...)
}

// execOp is one exec of the fake.
type execOp struct {
	conns   map[string]*websocket.Conn
	done    chan int
	fail    bool
	failMsg string
	broken  bool
}

func fakeExecWith(t *testing.T, f *fakeLXD, x *execFaults) {
	var mu sync.Mutex
	ops := map[string]*execOp{}
	n := 0
	up := websocket.Upgrader{}
	f.mux.HandleFunc("POST /1.0/instances/{name}/exec", func(w http.ResponseWriter, r *http.Request) {
		x.mu.Lock()
		x.posts++
		fail := x.posts <= x.failFirst
		broken := x.posts <= x.breakFirst
		x.mu.Unlock()
		mu.Lock()
		n++
		id := fmt.Sprintf("exec%d", n)
		ops[id] = &execOp{conns: map[string]*websocket.Conn{}, done: make(chan int, 1), fail: fail, failMsg: x.failMsg, broken: broken}
		mu.Unlock()
		fds := map[string]string{"0": id + "-0", "1": id + "-1", "2": id + "-2", "control": id + "-control"}
		async202(w, opJSON(id, 103, "", false, map[string]any{"fds": fds}))
	})
	f.mux.HandleFunc("GET /1.0/operations/{id}/websocket", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		fd := strings.TrimPrefix(r.URL.Query().Get("secret"), id+"-")
		if r.URL.Query().Has("project") {
			t.Errorf("websocket URL with project: %s", r.URL)
		}
		// Recorded as the request arrives: a client that waits for
		// one handshake before the next makes them arrive in order.
		x.mu.Lock()
		if id == "exec1" {
			x.firstFDs = append(x.firstFDs, fd)
		}
		x.mu.Unlock()
		mu.Lock()
		op := ops[id]
		control := op.conns["control"]
		mu.Unlock()
		if op.broken && fd == "2" {
			breakHandshake(w, control, x, op)
			return
		}
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		mu.Lock()
		op.conns[fd] = conn
		ready := len(op.conns) == 4
		mu.Unlock()
		switch {
		case ready && op.fail:
			for _, c := range op.conns {
				_ = c.Close()
			}
			op.done <- -1
		case ready:
			x.mu.Lock()
			x.ran++
			x.mu.Unlock()
			go runCat(op.conns, op.done)
		}
	})
	f.mux.HandleFunc("GET /1.0/operations/{id}/wait", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		op := ops[r.PathValue("id")]
		mu.Unlock()
		select {
		case code := <-op.done:
			op.done <- code
			if op.fail {
				sync200(w, opJSON(r.PathValue("id"), 400, op.failMsg, false, nil))
				return
			}
			sync200(w, opJSON(r.PathValue("id"), 200, "", false, map[string]any{"return": code}))
		case <-time.After(200 * time.Millisecond):
			sync200(w, opJSON(r.PathValue("id"), 103, "", false, nil))
		case <-r.Context().Done():
		}
	})
}

// breakHandshake fails berth's handshake of an exec's fd 2, as LXD does
// when the answer to an upgrade it completed never reaches berth, or as
// when it never saw the request: see execFaults.breakRan.
func breakHandshake(w http.ResponseWriter, control *websocket.Conn, x *execFaults, op *execOp) {
	x.mu.Lock()
	ran := x.breakRan
	if ran {
		x.ran++
	}
	x.mu.Unlock()
	if !ran {
		op.fail, op.failMsg = true, "Timed out waiting for websockets to connect"
		op.done <- -1
	} else {
		go func() { // the command runs until control closes
			for {
				if _, _, err := control.NextReader(); err != nil {
					op.done <- 137
					return
				}
			}
		}()
	}
	http.Error(w, "upgrade lost", http.StatusBadGateway)
}

func runCat(conns map[string]*websocket.Conn, done chan int) {
	killed := make(chan struct{})
	go func() { // control: closing it kills the command
		for {
			if _, _, err := conns["control"].NextReader(); err != nil {
				close(killed)
				return
			}
		}
	}()
	go func() { // stdout is never written by the client; drain for control frames
		for {
			if _, _, err := conns["1"].NextReader(); err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			if _, _, err := conns["2"].NextReader(); err != nil {
				return
			}
		}
	}()
	eof := make(chan struct{})
	go func() {
		for {
			mt, data, err := conns["0"].ReadMessage()
			if err != nil {
				return // the client went away: closing control decides (kill)
			}
			if mt == websocket.TextMessage { // an empty text frame is stdin's EOF
				close(eof)
				return
			}
			if conns["1"].WriteMessage(websocket.BinaryMessage, data) != nil {
				return
			}
		}
	}()
	code := 0
	select {
	case <-eof:
		_ = conns["1"].WriteMessage(websocket.TextMessage, nil)
		_ = conns["2"].WriteMessage(websocket.BinaryMessage, []byte("bye\n"))
		_ = conns["2"].WriteMessage(websocket.TextMessage, nil)
	case <-killed:
		code = 137
	}
	for _, c := range conns {
		_ = c.Close()
	}
	done <- code
}

func TestExecFake(t *testing.T) {
	f := newFake(t)
	fakeExec(t, f)
	c := f.connect(t, Config{Project: "p"})
	var out, errb bytes.Buffer
	code, err := c.Exec(context.Background(), "x", ExecRequest{Command: []string{"cat"}, Stdin: strings.NewReader("hello"), Stdout: &out, Stderr: &errb})
	if err != nil || code != 0 || out.String() != "hello" || errb.String() != "bye\n" {
		t.Fatalf("code %d err %v out %q err %q", code, err, out.String(), errb.String())
	}
}

// An exec that LXD fails before the command runs ("Failed to retrieve PID
// of executing child process", as for an instance that has just started)
// is tried again, and the command then runs once. The control socket is
// connected before the others, so a failure never leaves a command
// running without it.
func TestExecRetriesWhatLXDNeverStarted(t *testing.T) {
	f := newFake(t)
	x := &execFaults{failFirst: 2, failMsg: "Failed to retrieve PID of executing child process"}
	fakeExecWith(t, f, x)
	c := f.connect(t, Config{})
	res, err := c.ExecOutput(context.Background(), "x", ExecRequest{Command: []string{"cat"}}, 1024)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec: %+v %v", res, err)
	}
	posts, fds := x.counts()
	if posts != 3 || res.Attempts != 3 {
		t.Errorf("exec POSTs %d, attempts %d; want 3 and 3", posts, res.Attempts)
	}
	if len(fds) != 4 || fds[0] != "control" {
		t.Errorf("websockets connected in the order %v; want control first", fds)
	}
}

// An exec that never starts gives up after execAttempts tries, says how
// many, and matches ErrExecNotStarted; a failure of a command that ran is
// not retried, and neither is an exec whose stdin cannot be replayed.
func TestExecRetryBounds(t *testing.T) {
	defer func(d time.Duration) { execRetryBase = d }(execRetryBase)
	execRetryBase = time.Millisecond
	f := newFake(t)
	x := &execFaults{failFirst: 100, failMsg: "Failed to retrieve PID of executing child process"}
	fakeExecWith(t, f, x)
	c := f.connect(t, Config{})
	_, err := c.Exec(context.Background(), "x", ExecRequest{Command: []string{"cat"}})
	if !errors.Is(err, ErrExecNotStarted) || !strings.Contains(err.Error(), "tried 6 times") {
		t.Fatalf("err = %v; want ErrExecNotStarted after 6 tries", err)
	}
	if posts, _ := x.counts(); posts != execAttempts {
		t.Errorf("exec POSTs %d; want %d", posts, execAttempts)
	}
	_, err = c.Exec(context.Background(), "x", ExecRequest{Command: []string{"cat"}, Stdin: io.MultiReader(strings.NewReader("x"))})
	if !errors.Is(err, ErrExecNotStarted) || !strings.Contains(err.Error(), "tried 1 times") {
		t.Fatalf("err = %v; want no retry with a stdin that cannot rewind", err)
	}

	f2 := newFake(t)
	x2 := &execFaults{failFirst: 1, failMsg: "Some other failure"}
	fakeExecWith(t, f2, x2)
	c2 := f2.connect(t, Config{})
	_, err = c2.Exec(context.Background(), "x", ExecRequest{Command: []string{"cat"}})
	if err == nil || errors.Is(err, ErrExecNotStarted) {
		t.Fatalf("err = %v; want a plain failure", err)
	}
	if posts, _ := x2.counts(); posts != 1 {
		t.Errorf("exec POSTs %d; want 1 (not retried)", posts)
	}
}

// A tunnel whose exec LXD fails after the websockets connected ends its
// stream with an *ExecStartError, not a bare EOF: the command never ran.
func TestExecConnReportsExecNeverStarted(t *testing.T) {
	f := newFake(t)
	fakeExecWith(t, f, &execFaults{failFirst: 1, failMsg: "Failed to retrieve PID of executing child process"})
	c := f.connect(t, Config{})
	ec, err := c.DialExec(context.Background(), "x", []string{"cat"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	_, err = ec.Read(make([]byte, 10))
	if !errors.Is(err, ErrExecNotStarted) {
		t.Fatalf("read: %v; want ErrExecNotStarted", err)
	}
}

func TestExecConnFake(t *testing.T) {
	f := newFake(t)
	fakeExec(t, f)
	c := f.connect(t, Config{})
	ctx := context.Background()
	c.Close()
	before := runtime.NumGoroutine()

	var stderr bytes.Buffer
	conn, err := c.DialExec(ctx, "x", []string{"cat"}, &lockedWriter{w: &stderr})
	if err != nil {
		t.Fatal(err)
	}
	// Read deadline: times out, then the conn is still usable.
	_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	payload := bytes.Repeat([]byte("0123456789"), 10000)
	go func() {
		_, _ = conn.Write(payload)
		_ = conn.CloseWrite()
	}()
	got, err := io.ReadAll(conn)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("read %d bytes, err %v", len(got), err)
	}
	if code, err := conn.Wait(ctx); code != 0 || err != nil {
		t.Fatalf("wait %d %v", code, err)
	}
	if _, err := conn.Write([]byte("x")); err == nil {
		t.Fatal("write after CloseWrite")
	}
	_ = conn.Close()
	_ = conn.Close() // twice is fine
	if stderr.String() != "bye\n" {
		t.Fatalf("stderr %q", stderr.String())
	}

	// Close from another goroutine releases a blocked Read and kills.
	conn, err = c.DialExec(ctx, "x", []string{"cat"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() { _, err := conn.Read(make([]byte, 1)); readErr <- err }()
	time.Sleep(20 * time.Millisecond)
	_ = conn.Close()
	if err := <-readErr; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("blocked read: %v", err)
	}
	if code, err := conn.Wait(ctx); code != 137 || err != nil {
		t.Fatalf("after close: %d %v", code, err)
	}

	c.Close()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		c.Close()
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines %d -> %d\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

func TestDeadlineHelper(t *testing.T) {
	d := newDeadline()
	d.set(time.Now().Add(-time.Second))
	select {
	case <-d.wait():
	default:
		t.Fatal("past deadline not expired")
	}
	d.set(time.Time{})
	select {
	case <-d.wait():
		t.Fatal("cleared deadline expired")
	default:
	}
	d.set(time.Now().Add(20 * time.Millisecond))
	ch := d.wait()
	d.set(time.Now().Add(time.Hour)) // extending keeps waiters blocked
	select {
	case <-ch:
		t.Fatal("extended deadline fired")
	case <-time.After(60 * time.Millisecond):
	}
	d.stop()
}

// A ping that LXD sends as it closes a stream after the command's last
// output makes the pong fail (broken pipe); the output and the
// end-of-stream marker behind it are still read (a provision's rename was
// reported as "writing output: ... broken pipe").
func TestStreamOutlivesAFailedPong(t *testing.T) {
	f := newFake(t)
	closed := make(chan struct{})
	up := websocket.Upgrader{}
	f.mux.HandleFunc("GET /1.0/operations/{id}/websocket", func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		_ = conn.WriteMessage(websocket.BinaryMessage, []byte("hello "))
		_ = conn.WriteControl(websocket.PingMessage, []byte("keepalive"), time.Now().Add(time.Second))
		_ = conn.WriteMessage(websocket.BinaryMessage, []byte("world"))
		_ = conn.WriteMessage(websocket.TextMessage, nil)
		_ = conn.UnderlyingConn().Close()
		close(closed)
	})
	c := f.connect(t, Config{})
	conn, err := c.dialOperationWebsocket(context.Background(), "op1", "s")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	<-closed
	time.Sleep(50 * time.Millisecond) // let the close reach the socket
	var out bytes.Buffer
	if err := recvStream(conn, &out); err != nil || out.String() != "hello world" {
		t.Fatalf("recvStream: %v, output %q", err, out.String())
	}
}

// An exec whose websockets failed on berth's side is tried again only once
// LXD says the command never ran. When LXD had counted them connected, the
// command ran (and was killed when control closed): running it again would
// run a provision twice, so berth stops with an *ExecLostError that says so.
func TestExecRetriesAFailedConnectOnlyWhenLXDSaysItNeverRan(t *testing.T) {
	defer func(d time.Duration) { execRetryBase = d }(execRetryBase)
	execRetryBase = time.Millisecond
	for _, ran := range []bool{false, true} {
		f := newFake(t)
		x := &execFaults{breakFirst: 1, breakRan: ran}
		fakeExecWith(t, f, x)
		c := f.connect(t, Config{})
		res, err := c.ExecOutput(context.Background(), "x", ExecRequest{Command: []string{"cat"}}, 1024)
		posts, _ := x.counts()
		var lost *ExecLostError
		switch {
		case !ran && (err != nil || posts != 2 || x.runs() != 1 || res.Attempts != 2):
			t.Errorf("never ran: err %v, POSTs %d, commands run %d, attempts %d; want a second try that runs it once", err, posts, x.runs(), res.Attempts)
		case ran && (!errors.As(err, &lost) || errors.Is(err, ErrExecNotStarted) || posts != 1 || x.runs() != 1):
			t.Errorf("ran: err %v, POSTs %d, commands run %d; want an *ExecLostError and no second try", err, posts, x.runs())
		case ran && !strings.Contains(err.Error(), "may have run") || ran && !strings.Contains(err.Error(), "code 137"):
			t.Errorf("ran: %v; want it to say the command may have run, and how it ended", err)
		}
	}
}
