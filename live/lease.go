package live

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler"
)

// Lease keeps one writer per owner (and LXD project) on an LXD server:
// `berth run` for as long as it runs, `berth apply` for one apply. It lives
// in LXD itself, so it needs no other coordination service: the server
// config key user.berth.lease.<owner> (user.berth.lease.<owner>@<project>
// outside the default project) holds "<holder> <expiry unix seconds>".
// Every change goes through If-Match; since LXD checks the ETag and writes
// in separate steps, two PATCHes racing with the same ETag can both
// succeed, so a writer that takes the lease (free, expired, another's)
// reads it again after Settle and holds it only if its own value is the
// one that stayed. A holder renews it; when it stops renewing (killed,
// host gone) another takes over once the expiry passes.
type Lease struct {
	LXD    *lxd.Client
	Owner  string
	Holder string // unique per process, no spaces: see HolderID
	TTL    time.Duration
	// Settle is how long a take waits before it reads the lease back;
	// default 1s, far longer than LXD takes to write a racing PATCH.
	Settle time.Duration
	// Clock decides every time of the lease: expiries, the settle wait,
	// the pauses between attempts, Hold's wait and renewals. Nil is the
	// system clock.
	Clock clock.Clock
}

var (
	// ErrLeaseContended: the server config changed under every attempt
	// (HTTP 412 each time); nobody was refused, try again soon.
	ErrLeaseContended = reconciler.ErrLeaseContended
	// ErrLeaseLost: the lease was taken by another, or could not be
	// renewed before it expired.
	ErrLeaseLost = reconciler.ErrLeaseLost
)

// acquireTries bounds the read-and-write attempts of one Acquire.
const acquireTries = 5

func (l *Lease) key() string { return ownership.LeaseKey(l.Owner, l.LXD.Project()) }

// HolderID names a lease holder: what it is (run, apply), its host and
// pid for people, and a random part, since pids repeat across containers
// and restarts.
func HolderID(kind, host string, pid int) string {
	host = strings.Map(func(r rune) rune {
		if r < 0x21 || r > 0x7e {
			return '_'
		}
		return r
	}, host)
	return fmt.Sprintf("berth-%s@%s:%d:%06x", kind, host, pid, rand.Uint32()&0xffffff)
}

func (l *Lease) clock() clock.Clock { return clock.Or(l.Clock) }

func (l *Lease) now() time.Time { return l.clock().Now() }

// parseLease reads "<holder> <expiry>"; a garbled value counts as expired.
// A holder name with control or non-ASCII characters is quoted: it ends up
// in messages and logs.
func parseLease(v string) (holder string, expiry time.Time) {
	h, exp, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok {
		return "", time.Time{}
	}
	sec, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return "", time.Time{}
	}
	if strings.ContainsFunc(h, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		h = strconv.QuoteToASCII(h)
	}
	return h, time.Unix(sec, 0)
}

// Acquire takes the lease when it is free, expired or already ours, and
// extends it by TTL. When another holds it, the state names the holder and
// its expiry (Held false, no error). ErrLeaseContended means every attempt
// met a concurrent change of the server config: try again soon.
func (l *Lease) Acquire(ctx context.Context) (reconciler.LeaseState, error) {
	return l.write(ctx, false)
}

// Renew extends the lease this holder holds, and never takes one: when
// the key holds another's value, or is gone (deleted by hand, or
// garbled), the lease was lost, and Held is false with the holder found
// ("" when there is none). Taking it back here would let a writer that
// took the free lease in the meantime and this holder both write. The
// holder re-acquires through Acquire, after it stopped its work.
func (l *Lease) Renew(ctx context.Context) (reconciler.LeaseState, error) {
	return l.write(ctx, true)
}

// write is Acquire, or Renew when renew is set.
func (l *Lease) write(ctx context.Context, renew bool) (reconciler.LeaseState, error) {
	// The ETag covers the whole server config, so another owner renewing
	// its own lease makes ours fail with 412: read again and retry.
	for try := 1; ; try++ {
		st, err := l.acquire(ctx, renew)
		if !errors.Is(err, lxd.ErrPreconditionFailed) {
			return st, err
		}
		if try == acquireTries {
			return reconciler.LeaseState{}, fmt.Errorf("%w (%d attempts)", ErrLeaseContended, try)
		}
		// A little random wait, so racing writers fall out of step.
		if err := l.sleep(ctx, time.Duration(10+rand.IntN(40*try))*time.Millisecond); err != nil {
			return reconciler.LeaseState{}, err
		}
	}
}

func (l *Lease) acquire(ctx context.Context, renew bool) (reconciler.LeaseState, error) {
	srv, etag, err := l.LXD.GetServer(ctx)
	if err != nil {
		return reconciler.LeaseState{}, fmt.Errorf("read lease: %w", err)
	}
	cur, _ := srv.Config[l.key()].(string)
	holder, expiry := parseLease(cur)
	if renew && holder != l.Holder {
		return reconciler.LeaseState{Holder: holder, Expiry: expiry}, nil
	}
	now := l.now()
	if holder != "" && holder != l.Holder && now.Before(expiry) {
		return reconciler.LeaseState{Holder: holder, Expiry: expiry}, nil
	}
	// A renewal of our own live lease races with nobody: others write
	// only a free or expired lease. Anything else is a take.
	take := holder != l.Holder || !now.Before(expiry)
	// Unix seconds round down: the lease written never outlasts TTL.
	until := time.Unix(now.Add(l.TTL).Unix(), 0)
	value := fmt.Sprintf("%s %d", l.Holder, until.Unix())
	err = l.LXD.PatchServerConfig(ctx, map[string]any{l.key(): value}, etag)
	if errors.Is(err, lxd.ErrPreconditionFailed) {
		return reconciler.LeaseState{}, err
	}
	if err != nil {
		return reconciler.LeaseState{}, fmt.Errorf("take lease: %w", err)
	}
	if take {
		// A racing take may have passed LXD's ETag check too: the value
		// that stays after both have landed is the one that holds.
		settle := l.Settle
		if settle <= 0 {
			settle = time.Second
		}
		if err := l.sleep(ctx, settle); err != nil {
			return reconciler.LeaseState{}, err
		}
		srv, _, err := l.LXD.GetServer(ctx)
		if err != nil {
			return reconciler.LeaseState{}, fmt.Errorf("read lease: %w", err)
		}
		got, _ := srv.Config[l.key()].(string)
		switch h, exp := parseLease(got); {
		case got == value:
		case h != "" && h != l.Holder && l.now().Before(exp):
			return reconciler.LeaseState{Holder: h, Expiry: exp}, nil
		default:
			return reconciler.LeaseState{}, lxd.ErrPreconditionFailed // changed again: read and retry
		}
	}
	return reconciler.LeaseState{Held: true, Holder: l.Holder, Expiry: until}, nil
}

// Release gives the lease up if this holder holds it.
func (l *Lease) Release(ctx context.Context) error {
	for try := 1; ; try++ {
		srv, etag, err := l.LXD.GetServer(ctx)
		if err != nil {
			return err
		}
		cur, _ := srv.Config[l.key()].(string)
		if holder, _ := parseLease(cur); holder != l.Holder {
			return nil
		}
		err = l.LXD.PatchServerConfig(ctx, map[string]any{l.key(): ""}, etag)
		if !errors.Is(err, lxd.ErrPreconditionFailed) || try == acquireTries {
			return err
		}
	}
}

// BusyError is a lease another holder has: who, and until when.
type BusyError struct {
	Owner string
	State reconciler.LeaseState
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("the lease of owner %q is held by %s", e.Owner, e.State)
}

// Held is a lease taken by Hold: renewed in the background until Release.
type Held struct {
	lease *Lease
	ctx   context.Context
	lose  context.CancelCauseFunc
	stop  context.CancelFunc
	done  chan struct{}

	mu     sync.Mutex
	expiry time.Time
}

// Hold takes the lease for a one-off writer (berth apply). When another
// holds it, Hold returns a *BusyError at once, or with wait > 0 tries
// again (every 2s, and right after the holder's expiry) until wait has
// passed; waiting is called each time it waits. Once taken, the lease is
// renewed every TTL/3 until Release; contention and errors are retried
// every second or so. Context() is ctx, cancelled with an ErrLeaseLost
// cause when another takes the lease or it could not be renewed by TTL/3
// before it expires: stop starting work then. Renewal goes on when ctx is
// cancelled (a Ctrl-C lets running steps finish), until Release.
func (l *Lease) Hold(ctx context.Context, wait time.Duration, waiting func(reconciler.LeaseState)) (*Held, error) {
	if l.TTL < 3*time.Second {
		return nil, fmt.Errorf("lease TTL %v: must be at least 3s", l.TTL)
	}
	deadline := l.now().Add(wait)
	var st reconciler.LeaseState
	for {
		var err error
		st, err = l.Acquire(ctx)
		if err != nil && !errors.Is(err, ErrLeaseContended) {
			return nil, err
		}
		if err == nil && st.Held {
			break
		}
		left := deadline.Sub(l.now())
		if err == nil && left <= 0 {
			return nil, &BusyError{Owner: l.Owner, State: st}
		}
		pause := min(max(left, 0), 2*time.Second)
		if err != nil {
			pause = time.Duration(200+rand.IntN(800)) * time.Millisecond // contended
			if left <= -5*time.Second {
				return nil, err
			}
		} else {
			pause = max(min(pause, st.Expiry.Sub(l.now())+time.Second), 100*time.Millisecond)
			if waiting != nil {
				waiting(st)
			}
		}
		if err := l.sleep(ctx, pause); err != nil {
			return nil, err
		}
	}
	h := &Held{lease: l, done: make(chan struct{}), expiry: st.Expiry}
	h.ctx, h.lose = context.WithCancelCause(ctx)
	renewCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	h.stop = stop
	go h.renew(renewCtx)
	return h, nil
}

// sleep waits d on the lease's clock, or until ctx ends.
func (l *Lease) sleep(ctx context.Context, d time.Duration) error {
	t := l.clock().NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

// Context is the context to work under: cancelled when the lease is lost
// (context.Cause wraps ErrLeaseLost) or the parent context ends.
func (h *Held) Context() context.Context { return h.ctx }

// Lost says why the lease was lost (wrapping ErrLeaseLost), or nil.
func (h *Held) Lost() error {
	if err := context.Cause(h.ctx); errors.Is(err, ErrLeaseLost) {
		return err
	}
	return nil
}

// Expiry is when the lease ends unless renewed again.
func (h *Held) Expiry() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.expiry
}

func (h *Held) renew(ctx context.Context) {
	defer close(h.done)
	every := h.lease.TTL / 3
	next := every
	for {
		if h.lease.sleep(ctx, next) != nil {
			return
		}
		next = every
		st, err := h.lease.Renew(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && st.Held:
			h.mu.Lock()
			h.expiry = st.Expiry
			h.mu.Unlock()
		case err == nil:
			h.lose(reconciler.LeaseLostError(st))
			return
		case !h.lease.now().Before(h.Expiry().Add(-every)):
			h.lose(fmt.Errorf("%w: could not renew it before it expires: %v", ErrLeaseLost, err))
			return
		default:
			next = min(every, time.Second)
		}
	}
}

// Release stops the renewal and gives the lease up (unless it was lost).
// Call it once the work is done, with a context of its own: the work's
// may be cancelled.
func (h *Held) Release(ctx context.Context) error {
	h.stop()
	<-h.done
	lost := h.Lost()
	h.lose(context.Canceled)
	if lost != nil {
		return nil // another holds it now: nothing of ours to give up
	}
	return h.lease.Release(ctx)
}
