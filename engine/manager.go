package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/versions"
	"github.com/docker/docker/client"

	"github.com/berth-gitops/berth/clock"
)

// MinAPIVersion is the oldest Docker API berth works with: Debian 12's
// docker.io 20.10. The package uses no field gated to a newer version (e.g.
// Healthcheck.StartInterval needs 1.44).
const MinAPIVersion = "1.41"

// dialStdio is the command run in the instance for each connection. It
// copies its stdin to the daemon socket and the socket to its stdout.
var dialStdio = []string{"docker", "system", "dial-stdio"}

// ErrInstanceNotRunning is matched (errors.Is) by errors caused by a tunnel
// that could not be opened because the instance is stopped or gone. The
// cached client of that instance has already been dropped.
var ErrInstanceNotRunning = errors.New("instance is not running")

// ErrBackendUnreachable is matched by errors caused by a tunnel that could
// not be opened because the API that reaches the instances (LXD) does not
// answer at all. Waiting for Docker is pointless then: callers fail fast.
var ErrBackendUnreachable = errors.New("backend unreachable")

// ErrTunnel is matched by errors caused by a tunnel that LXD could not set
// up: the exec was refused or failed before dial-stdio ran, its websockets
// did not connect, or LXD was not reachable at all. Such an error says
// nothing about Docker in the instance, whose state is then unknown: it is
// no evidence that Docker is down, and no reason to restart anything.
// A Docker that does not answer through a tunnel that was set up does
// not match it.
var ErrTunnel = errors.New("tunnel not set up")

// Dialer opens a byte stream to a command running in an instance. The
// connection must outlive ctx (ctx bounds the start only), because the HTTP
// transport keeps it for reuse. An error caused by the instance not running
// (or not existing) should match ErrInstanceNotRunning; NewLXDDialer does
// that mapping for berth's LXD client.
type Dialer interface {
	DialExec(ctx context.Context, instance string, command []string, stderr io.Writer) (net.Conn, error)
}

// PullPolicy says when Ensure pulls the image.
type PullPolicy string

const (
	// PullIfNotPresent pulls only when the image (and pinned digest) is not
	// in the instance yet. The default.
	PullIfNotPresent PullPolicy = "IfNotPresent"
	// PullAlways pulls on every container (re)creation, picking up a moved
	// tag.
	PullAlways PullPolicy = "Always"
)

// Options tune a Manager. The zero value is usable.
type Options struct {
	// Logger receives debug and info records; nil discards them.
	Logger *slog.Logger
	// AuthFile is a Docker config.json on the berth host whose "auths"
	// hold registry credentials, sent per pull as X-Registry-Auth. Empty
	// means anonymous pulls. It is read at each pull, so rotating it needs
	// no restart.
	AuthFile string
	// PullPolicy defaults to PullIfNotPresent.
	PullPolicy PullPolicy
	// Settle is how long a container without a healthcheck must run
	// without restarting to be ready (default 5s).
	Settle time.Duration
	// PollInterval is how often WaitReady and WaitDocker look (default
	// 300ms).
	PollInterval time.Duration
	// StopTimeout is the grace period before Docker kills the old
	// container on replace or remove (default 10s).
	StopTimeout time.Duration
	// CallTimeout bounds each Docker API call other than pulls and stops
	// (default 1m), so a wedged daemon or tunnel never blocks a caller
	// whose context has no deadline.
	CallTimeout time.Duration
	// PullTimeout bounds one image pull, stream included (default 15m).
	PullTimeout time.Duration
	// IdleConnTimeout is how long an idle tunnel (a dial-stdio process in
	// the instance) is kept for reuse (default 5m). Longer than a reconcile
	// interval, so steady observing starts no new execs.
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerInstance caps the idle tunnels kept per instance
	// (default 2): each one is a process in the instance.
	MaxIdleConnsPerInstance int
	// Clock times the waits of WaitReady and WaitDocker (polls and
	// timeouts), the retries of a first connection, readiness's settle
	// time and the durations of Events. Nil is the system clock. The
	// bounds of single Docker calls (CallTimeout, PullTimeout,
	// StopTimeout) stay on the system clock: they guard real I/O.
	Clock clock.Clock
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.PullPolicy == "" {
		o.PullPolicy = PullIfNotPresent
	}
	if o.Settle <= 0 {
		o.Settle = 5 * time.Second
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 300 * time.Millisecond
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = time.Minute
	}
	if o.PullTimeout <= 0 {
		o.PullTimeout = 15 * time.Minute
	}
	if o.IdleConnTimeout <= 0 {
		o.IdleConnTimeout = 5 * time.Minute
	}
	if o.MaxIdleConnsPerInstance <= 0 {
		o.MaxIdleConnsPerInstance = 2
	}
	o.Clock = clock.Or(o.Clock)
	return o
}

// Manager talks to the Docker engines of many instances. It is safe for
// concurrent use.
type Manager struct {
	dialer Dialer
	opts   Options
	log    *slog.Logger

	mu      sync.Mutex
	clients map[string]*conn

	execs atomic.Int64
}

// conn is the cached client of one instance.
type conn struct {
	instance string

	// mu serializes the creation (Ping + version check) of cli, so
	// concurrent first calls for an instance start one tunnel, not many.
	mu      sync.Mutex
	cli     *client.Client
	version string

	// dialErr is the last tunnel error (nil after a successful dial). The
	// docker client replaces some dial errors with a generic "Cannot
	// connect to the Docker daemon" text; this keeps the real cause.
	dialErr atomic.Pointer[error]
	// stderr keeps the tail of dial-stdio's stderr: it is where the
	// command says why it could not reach dockerd.
	stderr *tailBuffer
}

// New returns a Manager that reaches instances through d.
func New(d Dialer, opts Options) *Manager {
	opts = opts.withDefaults()
	return &Manager{dialer: d, opts: opts, log: opts.Logger, clients: map[string]*conn{}}
}

// Execs is the number of tunnels (execs of dial-stdio) this manager has
// started, successful or not. With connection reuse it grows by a handful
// per instance, not per call.
func (m *Manager) Execs() int64 { return m.execs.Load() }

type loggerKey struct{}

// WithLogger returns a context whose engine calls log to l instead of the
// Manager's logger: a reconcile run passes one that carries its revision,
// so every line of the run says which revision it belongs to.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

func (m *Manager) logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok && l != nil {
		return l
	}
	return m.log
}

// Forget drops the cached client of instance and closes its idle tunnels.
// Call it when the instance is stopped, recreated or deleted: a recreated
// instance may run another Docker version. A dial that fails because the
// instance is not running forgets it automatically.
func (m *Manager) Forget(instance string) {
	m.mu.Lock()
	c := m.clients[instance]
	delete(m.clients, instance)
	m.mu.Unlock()
	if c != nil {
		c.close()
	}
}

// Close forgets every instance.
func (m *Manager) Close() {
	m.mu.Lock()
	cs := m.clients
	m.clients = map[string]*conn{}
	m.mu.Unlock()
	for _, c := range cs {
		c.close()
	}
}

// forgetConn drops c only if it is still the cached entry, so a stale
// tunnel error cannot evict a newer client.
func (m *Manager) forgetConn(c *conn) {
	m.mu.Lock()
	cur := m.clients[c.instance] == c
	if cur {
		delete(m.clients, c.instance)
	}
	m.mu.Unlock()
	if cur {
		// Not inline: this runs inside the transport's dial, and closing
		// idle connections there is better left to another goroutine.
		go c.close()
	}
}

func (c *conn) close() {
	c.mu.Lock()
	cli := c.cli
	c.cli = nil
	c.mu.Unlock()
	if cli != nil {
		_ = cli.Close()
	}
}

// client returns the negotiated client of instance.
func (m *Manager) client(ctx context.Context, instance string) (*client.Client, *conn, error) {
	c, err := m.conn(ctx, instance)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	cli := c.cli
	c.mu.Unlock()
	if cli == nil { // forgotten in between: try once more
		c, err = m.conn(ctx, instance)
		if err != nil {
			return nil, nil, err
		}
		c.mu.Lock()
		cli = c.cli
		c.mu.Unlock()
		if cli == nil {
			return nil, nil, fmt.Errorf("docker in %s: client was dropped concurrently", instance)
		}
	}
	return cli, c, nil
}

func (m *Manager) conn(ctx context.Context, instance string) (*conn, error) {
	if instance == "" {
		return nil, errors.New("engine: empty instance name")
	}
	m.mu.Lock()
	c := m.clients[instance]
	if c == nil {
		c = &conn{instance: instance, stderr: newTailBuffer(512)}
		m.clients[instance] = c
	}
	m.mu.Unlock()

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cli != nil {
		return c, nil
	}
	cli, err := m.newClient(c)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	version, err := negotiate(cctx, cli)
	// LXD sometimes fails a fresh exec under load ("Failed to retrieve PID
	// of executing child process") and resets its streams: a new tunnel
	// usually works, so try twice more before calling Docker unreachable.
	for try := 1; err != nil && try < 3 && !errors.Is(err, ErrInstanceNotRunning) && !c.backendDown() && cctx.Err() == nil; try++ {
		m.log.Debug("docker ping failed, retrying on a new tunnel", "instance", instance, "err", err)
		pause := m.opts.Clock.NewTimer(time.Duration(try) * m.opts.PollInterval)
		select {
		case <-cctx.Done():
		case <-pause.C():
		}
		pause.Stop()
		v, err2 := negotiate(cctx, cli)
		if err2 != nil && cctx.Err() != nil {
			break // keep the error that says why, not "deadline exceeded"
		}
		version, err = v, err2
	}
	if err != nil {
		_ = cli.Close()
		// An entry that never connected is useless; drop it so the map
		// does not grow with names of instances that are down.
		m.mu.Lock()
		if m.clients[instance] == c {
			delete(m.clients, instance)
		}
		m.mu.Unlock()
		return nil, m.connErr(c, "connect", err)
	}
	m.mu.Lock()
	current := m.clients[instance] == c
	m.mu.Unlock()
	if !current {
		// Forgotten while we were connecting (e.g. the instance was
		// stopped): don't keep a client nobody can reach.
		_ = cli.Close()
		return nil, fmt.Errorf("docker in %s: client forgotten while connecting", instance)
	}
	c.cli, c.version = cli, version
	m.log.Debug("docker connected", "instance", instance, "api", version)
	return c, nil
}

// newClient builds a docker client whose every connection is a tunnel.
// WithHTTPClient first, so our transport settings are the ones kept;
// WithHost next (it reconfigures the transport's dialer); WithDialContext
// last, replacing that dialer with the tunnel. The unix:// host keeps
// http.ProxyFromEnvironment out of the transport, which an http:// host
// would install (and HTTPS_PROXY would then hijack the "connection").
func (m *Manager) newClient(c *conn) (*client.Client, error) {
	tr := &http.Transport{
		// MaxIdleConns non-zero also stops go-connections from resetting
		// IdleConnTimeout to its 30s default.
		MaxIdleConns:        m.opts.MaxIdleConnsPerInstance,
		MaxIdleConnsPerHost: m.opts.MaxIdleConnsPerInstance,
		IdleConnTimeout:     m.opts.IdleConnTimeout,
	}
	cli, err := client.NewClientWithOpts(
		client.WithHTTPClient(&http.Client{Transport: tr, CheckRedirect: client.CheckRedirect}),
		client.WithHost("unix:///var/run/docker.sock"),
		client.WithDialContext(m.tunnel(c)),
	)
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", c.instance, err)
	}
	return cli, nil
}

// backendDown reports whether the last tunnel failed because LXD itself
// could not be reached: a new tunnel would fail the same way.
func (c *conn) backendDown() bool {
	de := c.dialErr.Load()
	return de != nil && errors.Is(*de, ErrBackendUnreachable)
}

// tunnel is the transport's DialContext for one instance.
func (m *Manager) tunnel(c *conn) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		n := m.execs.Add(1)
		start := m.opts.Clock.Now()
		nc, err := m.dialer.DialExec(ctx, c.instance, dialStdio, c.stderr)
		if err != nil {
			err = fmt.Errorf("exec %s: %w", strings.Join(dialStdio, " "), err)
			c.dialErr.Store(&err)
			if errors.Is(err, ErrInstanceNotRunning) {
				m.log.Debug("instance not running; dropping docker client", "instance", c.instance)
				m.forgetConn(c)
			}
			return nil, err
		}
		c.dialErr.Store(nil)
		m.log.Debug("docker tunnel opened", "instance", c.instance, "execs", n, "took", m.opts.Clock.Since(start))
		return &watchedConn{Conn: nc, c: c}, nil
	}
}

// watchedConn records in its conn a tunnel that LXD failed after the dial
// returned (the exec's operation failed before dial-stdio ran), so that
// the error the docker client reports, a bare EOF, is traced to it.
type watchedConn struct {
	net.Conn
	c *conn
}

func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if err != nil && errors.Is(err, ErrTunnel) {
		w.c.dialErr.Store(&err)
	}
	return n, err
}

// CloseWrite half-closes the tunnel when it can (dial-stdio then closes
// its side of the daemon's socket), as the unwrapped connection would.
func (w *watchedConn) CloseWrite() error {
	if cw, ok := w.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// negotiate pings the daemon and pins the client to the daemon's API
// version, checking it. client.NegotiateAPIVersion swallows a failed ping
// and the client would then send /v1.51/... requests that a 20.10 daemon
// rejects; here a failed ping is an error and the result is verified.
func negotiate(ctx context.Context, cli *client.Client) (string, error) {
	ping, err := cli.Ping(ctx)
	if err != nil {
		return "", err
	}
	if ping.APIVersion == "" {
		return "", errors.New("daemon did not report an API version (too old)")
	}
	if err := checkAPIVersion(ping.APIVersion); err != nil {
		return "", err
	}
	cli.NegotiateAPIVersionPing(ping)
	v := cli.ClientVersion()
	if err := checkAPIVersion(v); err != nil {
		return "", fmt.Errorf("negotiation: %w", err)
	}
	if versions.GreaterThan(v, ping.APIVersion) {
		return "", fmt.Errorf("negotiation kept client API %s above the daemon's %s", v, ping.APIVersion)
	}
	return v, nil
}

func checkAPIVersion(v string) error {
	if versions.LessThan(v, MinAPIVersion) {
		return fmt.Errorf("docker API %s is older than the %s berth needs", v, MinAPIVersion)
	}
	return nil
}

// connErr turns a failed call into an error naming the instance and the
// real cause: the tunnel error if the dial failed, plus what dial-stdio
// said on stderr.
//
// A call that timed out, or broke, while the last tunnel had failed in LXD
// also matches ErrTunnel: Docker was never reached, so its silence proves
// nothing.
func (m *Manager) connErr(c *conn, what string, err error) error {
	de := c.dialErr.Load()
	tunnelDown := de != nil && errors.Is(*de, ErrTunnel)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		if tunnelDown {
			return fmt.Errorf("docker in %s: %s: %w (last tunnel: %w)", c.instance, what, err, *de)
		}
		return fmt.Errorf("docker in %s: %s: %w", c.instance, what, err)
	}
	if client.IsErrConnectionFailed(err) && de != nil || tunnelDown && isTransportErr(err) {
		return fmt.Errorf("docker in %s: %s: %w", c.instance, what, *de)
	}
	if tail := c.stderr.String(); tail != "" && isTransportErr(err) {
		return fmt.Errorf("docker in %s: %s: %w (dial-stdio: %s)", c.instance, what, err, tail)
	}
	return fmt.Errorf("docker in %s: %s: %w", c.instance, what, err)
}

// isTransportErr is true for errors where the tunnel broke rather than the
// daemon answering.
func isTransportErr(err error) bool {
	if client.IsErrConnectionFailed(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "EOF") || strings.Contains(s, "connection reset")
}

// WaitDocker waits until the daemon in instance answers a ping (and the API
// version checks out), polling every PollInterval, for at most timeout.
// dockerd takes a few seconds after the instance starts; the socket file
// may exist before it answers, so only a ping counts.
func (m *Manager) WaitDocker(ctx context.Context, instance string, timeout time.Duration) error {
	tctx, cancel := clock.WithTimeout(ctx, m.opts.Clock, timeout)
	defer cancel()
	var last error
	for {
		begin := m.opts.Clock.Now()
		cli, c, err := m.client(tctx, instance)
		if err == nil {
			_, err = cli.Ping(tctx)
			if err != nil {
				err = m.connErr(c, "ping", err)
			}
		}
		if err == nil {
			return nil
		}
		// A stopped instance does not start its Docker by itself: waiting
		// for it would only spend the timeout (a Restart step's 30 s on an
		// instance someone stopped by hand).
		if errors.Is(err, ErrBackendUnreachable) || c != nil && c.backendDown() || errors.Is(err, ErrInstanceNotRunning) {
			return fmt.Errorf("waiting for docker in %s: %w", instance, err)
		}
		if tctx.Err() == nil || last == nil {
			last = err
		}
		if !m.pollWait(tctx, begin) {
			if errors.Is(ctx.Err(), context.Canceled) {
				return fmt.Errorf("waiting for docker in %s: %w", instance, ctx.Err())
			}
			return fmt.Errorf("docker did not answer in %s within %s: %w", instance, timeout, last)
		}
	}
}

// pollWait waits until the next look of a poll loop is due, PollInterval
// after the start of the last one (at once when that look took longer),
// as a ticker would. It reports false when ctx ended first. The timer is
// armed only now, once the look is done, so that a test on a fake clock
// knows the loop waits when the clock has a timer.
func (m *Manager) pollWait(ctx context.Context, lastLook time.Time) bool {
	t := m.opts.Clock.NewTimer(m.opts.PollInterval - m.opts.Clock.Since(lastLook))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// tailBuffer keeps the last bytes written to it (dial-stdio's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// String returns the last non-empty line.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return lastLine(string(t.b))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}
