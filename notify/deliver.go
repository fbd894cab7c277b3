package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/reconciler"
)

// Target is where outcomes go: a forge's commit status API, a webhook.
type Target interface {
	// Name labels the target in metrics and logs.
	Name() string
	// Key is what the outcome says for this target; an outcome with the
	// same key as the last one queued is not sent again.
	Key(o Outcome) string
	// Request builds one attempt's request. delivery is the same for
	// every attempt of one outcome.
	Request(ctx context.Context, o Outcome, delivery string) (*http.Request, error)
}

// Defaults of a Notifier's knobs.
const (
	DefaultQueueSize   = 32
	DefaultMaxAttempts = 6
	DefaultTimeout     = 10 * time.Second
	DefaultBackoffBase = time.Second
	DefaultBackoffMax  = time.Minute
)

// Notifier delivers each run's outcome to its targets. Notify never
// blocks: each target has a bounded queue (the oldest outcome is dropped,
// and counted, when it is full) served by a goroutine of its own, so a
// target that is down delays neither the loop nor the other targets.
// A delivery is retried with exponential backoff and jitter after a
// network error, a timeout, a 429 or a 5xx, at most MaxAttempts times; any
// other 4xx fails at once (retrying a refused token or a bad request
// cannot help).
type Notifier struct {
	Targets []Target
	Client  *http.Client
	// Clock times the per-request timeout and the backoff waits.
	Clock clock.Clock
	// Rand returns a number in [0, 1) for the jitter; default math/rand.
	Rand    func() float64
	Logger  *slog.Logger
	Metrics *Metrics
	// QueueSize bounds each target's queue; MaxAttempts the attempts per
	// outcome; Timeout each request; BackoffBase doubles after each failed
	// attempt up to BackoffMax, and the wait is drawn from its upper half.
	QueueSize, MaxAttempts  int
	Timeout                 time.Duration
	BackoffBase, BackoffMax time.Duration

	once   sync.Once
	queues []*queue
	// onWait, when set (tests), is called when a worker starts a backoff
	// wait of d, after its timer is armed.
	onWait func(target string, d time.Duration)
	// onDone, when set (tests), is called when a worker is done with an
	// outcome: delivered or given up.
	onDone func(target string, o Outcome, delivered bool)
}

type queue struct {
	target  Target
	mu      sync.Mutex
	items   []queued
	lastKey string
	wake    chan struct{} // capacity 1: "items may have grown"
}

type queued struct {
	o        Outcome
	key      string
	delivery string
}

func (n *Notifier) init() {
	n.once.Do(func() {
		// A forge's token travels in headers that Go's client forwards on
		// a redirect (PRIVATE-TOKEN, unlike Authorization, even to
		// another host): a redirect away from the configured host is
		// refused, on a client of our own so the caller's is left alone.
		client := http.Client{}
		if n.Client != nil {
			client = *n.Client
		}
		client.CheckRedirect = sameOrigin
		n.Client = &client
		n.Clock = clock.Or(n.Clock)
		if n.Rand == nil {
			n.Rand = rand.Float64
		}
		if n.Logger == nil {
			n.Logger = slog.New(slog.DiscardHandler)
		}
		if n.QueueSize <= 0 {
			n.QueueSize = DefaultQueueSize
		}
		if n.MaxAttempts <= 0 {
			n.MaxAttempts = DefaultMaxAttempts
		}
		if n.Timeout <= 0 {
			n.Timeout = DefaultTimeout
		}
		if n.BackoffBase <= 0 {
			n.BackoffBase = DefaultBackoffBase
		}
		if n.BackoffMax < n.BackoffBase {
			n.BackoffMax = max(DefaultBackoffMax, n.BackoffBase)
		}
		for _, t := range n.Targets {
			if u, ok := t.(interface{ url() string }); ok && cleartext(u.url()) {
				n.Logger.Warn("notification URL is plain http to a host that is not this one: the outcome (and a forge's token) cross the network in clear; use https", "target", t.Name(), "url", u.url())
			}
			n.queues = append(n.queues, &queue{target: t, wake: make(chan struct{}, 1)})
			n.Metrics.Init(t.Name())
		}
	})
}

// Notify queues the run's outcome for every target. It never blocks; it
// is the loop's OnRun.
func (n *Notifier) Notify(r reconciler.RunReport) {
	n.init()
	o := Judge(r)
	for _, q := range n.queues {
		q.push(n, o)
	}
}

func (q *queue) push(n *Notifier, o Outcome) {
	key := q.target.Key(o)
	q.mu.Lock()
	if key == q.lastKey {
		q.mu.Unlock()
		return
	}
	q.lastKey = key
	if len(q.items) >= n.QueueSize {
		dropped := q.items[0]
		q.items = q.items[1:]
		n.Metrics.dropped(q.target.Name())
		n.Logger.Warn("notification queue full: dropped the oldest", "target", q.target.Name(), "revision", dropped.o.Revision, "state", dropped.o.State)
	}
	q.items = append(q.items, queued{o: o, key: key, delivery: newDeliveryID()})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) pop() (queued, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return queued{}, false
	}
	it := q.items[0]
	q.items = q.items[1:]
	return it, true
}

// forget lets an outcome that could not be delivered be queued again by
// a later run that says the same.
func (q *queue) forget(key string) {
	q.mu.Lock()
	if q.lastKey == key {
		q.lastKey = ""
	}
	q.mu.Unlock()
}

// Run delivers until ctx ends; outcomes still queued then are dropped (the
// next daemon's first run reports the revision again).
func (n *Notifier) Run(ctx context.Context) error {
	n.init()
	var wg sync.WaitGroup
	for _, q := range n.queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.serve(ctx, q)
		}()
	}
	wg.Wait()
	return nil
}

func (n *Notifier) serve(ctx context.Context, q *queue) {
	for {
		it, ok := q.pop()
		if !ok {
			select {
			case <-q.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		delivered := n.deliver(ctx, q.target, it)
		if ctx.Err() != nil {
			return
		}
		if !delivered {
			q.forget(it.key)
		}
		if n.onDone != nil {
			n.onDone(q.target.Name(), it.o, delivered)
		}
	}
}

// deliver makes up to MaxAttempts attempts and reports whether one
// succeeded.
func (n *Notifier) deliver(ctx context.Context, t Target, it queued) bool {
	log := n.Logger.With("target", t.Name(), "revision", it.o.Revision, "state", it.o.State, "delivery", it.delivery)
	for attempt := 1; ; attempt++ {
		retry, wait, err := n.attempt(ctx, t, it)
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			n.Metrics.delivered(t.Name())
			log.Debug("notification delivered", "attempt", attempt)
			return true
		}
		if !retry || attempt >= n.MaxAttempts {
			n.Metrics.failed(t.Name())
			log.Warn("notification failed; giving up", "attempt", attempt, "err", err)
			return false
		}
		d := n.backoff(attempt)
		if wait > d {
			d = min(wait, n.BackoffMax)
		}
		log.Info("notification failed; retrying", "attempt", attempt, "err", err, "retry_in", d)
		timer := n.Clock.NewTimer(d)
		if n.onWait != nil {
			n.onWait(t.Name(), d)
		}
		select {
		case <-timer.C():
		case <-ctx.Done():
			timer.Stop()
			return false
		}
	}
}

// attempt makes one request. retry says whether trying again may help;
// wait is the server's Retry-After, if it sent one.
func (n *Notifier) attempt(ctx context.Context, t Target, it queued) (retry bool, wait time.Duration, err error) {
	rctx, cancel := clock.WithTimeout(ctx, n.Clock, n.Timeout)
	defer cancel()
	req, err := t.Request(rctx, it.o, it.delivery)
	if err != nil {
		return false, 0, err // a token file that cannot be read, a bad URL
	}
	req.Header.Set("User-Agent", "berth")
	resp, err := n.Client.Do(req)
	if errors.Is(err, errRedirect) {
		return false, 0, err // the same redirect next time
	}
	if err != nil {
		if context.Cause(rctx) == context.DeadlineExceeded && ctx.Err() == nil {
			err = fmt.Errorf("no answer within %s", n.Timeout)
		}
		return true, 0, err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // lets the connection be reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return false, 0, nil
	}
	err = fmt.Errorf("%s: %s", resp.Status, oneLine(string(snippet), 200))
	switch {
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
		return true, wait, err
	}
	return false, 0, err
}

// backoff is the wait after the n-th failed attempt: BackoffBase doubled
// n-1 times, capped at BackoffMax, then drawn from its upper half so that
// daemons that failed together do not retry together.
func (n *Notifier) backoff(attempt int) time.Duration {
	d := n.BackoffBase
	for i := 1; i < attempt && d < n.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, n.BackoffMax)
	return d/2 + time.Duration(n.Rand()*float64(d/2))
}

// errRedirect is a redirect berth does not follow.
var errRedirect = errors.New("redirect refused")

// sameOrigin is the client's CheckRedirect: it follows a redirect only to
// the same scheme and host (a forge's renamed repository), at most 5, so
// a token header never reaches another host or goes out in clear.
func sameOrigin(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	if req.URL.Scheme != first.Scheme || !strings.EqualFold(req.URL.Host, first.Host) {
		return fmt.Errorf("%w: %s to %s://%s (another host)", errRedirect, first.Host, req.URL.Scheme, req.URL.Host)
	}
	if len(via) >= 5 {
		return fmt.Errorf("%w: more than 5", errRedirect)
	}
	return nil
}

// cleartext reports whether raw is a plain http URL to a host other than
// this machine's loopback.
func cleartext(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" {
		return false
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}
