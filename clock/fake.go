package clock

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Fake is a Clock whose time moves only when a test calls Advance. Its
// timers fire during Advance, in deadline order, each seeing Now at its
// deadline; an AfterFunc's function runs in Advance's goroutine (not
// concurrently), so when Advance returns every due function has run. A
// timer of zero or negative duration fires as it is made.
//
// A test synchronises with the code under test through BlockUntil: the
// code arms a timer when it is about to wait, the test waits until that
// many timers are armed, then advances.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	seq     uint64
	timers  []*fakeTimer  // armed: not fired, not stopped
	changed chan struct{} // closed (and replaced) when timers changes
}

// NewFake returns a Fake clock that reads start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, changed: make(chan struct{})}
}

type fakeTimer struct {
	f   *Fake
	at  time.Time
	seq uint64         // ties on at fire in arming order
	c   chan time.Time // nil for AfterFunc
	fn  func()
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Since returns Now().Sub(t).
func (f *Fake) Since(t time.Time) time.Duration { return f.Now().Sub(t) }

// After returns NewTimer(d).C().
func (f *Fake) After(d time.Duration) <-chan time.Time { return f.NewTimer(d).C() }

// NewTimer arms a timer that sends on C once the clock has advanced by d.
func (f *Fake) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{f: f, c: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// AfterFunc arms a timer that calls fn, from Advance, once the clock has
// advanced by d (at once, before AfterFunc returns, when d <= 0).
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	t := &fakeTimer{f: f, fn: fn}
	t.Reset(d)
	return t
}

// Advance moves the clock forward by d, firing every timer that comes due
// on the way.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	end := f.now.Add(d)
	f.mu.Unlock()
	f.fireUntil(end)
}

// Waiters is the number of armed timers.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// Next returns how far away the earliest armed timer is; ok is false when
// none is armed.
func (f *Fake) Next() (d time.Duration, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.timers) == 0 {
		return 0, false
	}
	return f.timers[0].at.Sub(f.now), true
}

// BlockUntil waits until at least n timers are armed.
func (f *Fake) BlockUntil(n int) {
	_ = f.BlockUntilContext(context.Background(), n)
}

// BlockUntilContext waits until at least n timers are armed, or ctx ends
// (its error is returned then).
func (f *Fake) BlockUntilContext(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		armed, changed := len(f.timers), f.changed
		f.mu.Unlock()
		if armed >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// fireUntil fires, one at a time and in order, the timers due by end, then
// sets the clock to end (never backwards). The lock is released around an
// AfterFunc's function, which may arm or stop timers itself.
func (f *Fake) fireUntil(end time.Time) {
	f.mu.Lock()
	for len(f.timers) > 0 && !f.timers[0].at.After(end) {
		t := f.timers[0]
		f.removeLocked(t)
		if t.at.After(f.now) {
			f.now = t.at
		}
		if t.c != nil {
			select {
			case t.c <- f.now:
			default: // unreachable: an armed timer's buffer is empty
			}
			continue
		}
		f.mu.Unlock()
		t.fn()
		f.mu.Lock()
	}
	if end.After(f.now) {
		f.now = end
	}
	f.mu.Unlock()
}

// notifyLocked wakes BlockUntil.
func (f *Fake) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *Fake) removeLocked(t *fakeTimer) bool {
	for i, x := range f.timers {
		if x == t {
			f.timers = append(f.timers[:i], f.timers[i+1:]...)
			f.notifyLocked()
			return true
		}
	}
	return false
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	f := t.f
	f.mu.Lock()
	defer f.mu.Unlock()
	t.drain()
	return f.removeLocked(t)
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	f := t.f
	f.mu.Lock()
	t.drain()
	was := f.removeLocked(t)
	f.seq++
	t.at, t.seq = f.now.Add(d), f.seq
	i := sort.Search(len(f.timers), func(i int) bool {
		x := f.timers[i]
		return x.at.After(t.at) || x.at.Equal(t.at) && x.seq > t.seq
	})
	f.timers = append(f.timers, nil)
	copy(f.timers[i+1:], f.timers[i:])
	f.timers[i] = t
	f.notifyLocked()
	now := f.now
	f.mu.Unlock()
	if d <= 0 {
		f.fireUntil(now)
	}
	return was
}

// drain drops a value fired but not received: after Stop or Reset no stale
// time is delivered, as with Go 1.23's timers.
func (t *fakeTimer) drain() {
	if t.c == nil {
		return
	}
	select {
	case <-t.c:
	default:
	}
}
