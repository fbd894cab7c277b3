// Package clock is the one time source of berth's code that decides by
// time: waits, timeouts, debounces, step durations. Production code takes a
// Clock (nil or Real means the system clock); tests pass a *Fake and move
// time themselves, so they need no sleeps to synchronise and no real
// waiting.
//
// The interface is as small as berth needs: the time, one-shot timers and
// a context deadline. A poll loop re-arms a timer per wait instead of
// using a ticker: that way a Fake sees the loop wait (BlockUntil) exactly
// when it has finished a look.
package clock

import (
	"context"
	"time"
)

// Clock tells the time and makes timers.
type Clock interface {
	Now() time.Time
	// Since is Now().Sub(t).
	Since(t time.Time) time.Duration
	// After is NewTimer(d).C().
	After(d time.Duration) <-chan time.Time
	NewTimer(d time.Duration) Timer
	// AfterFunc calls f once d has passed. The Real clock calls it in a
	// goroutine of its own; a Fake calls it from Advance.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a one-shot timer, as time.Timer with Go 1.23's semantics: after
// Stop or Reset returns, no stale value is received from C.
type Timer interface {
	// C delivers the time once the timer fires; nil for AfterFunc timers.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it did so
	// (false when the timer had already fired or been stopped).
	Stop() bool
	// Reset re-arms the timer to fire d from now; it reports whether the
	// timer was still pending.
	Reset(d time.Duration) bool
}

// Real is the system clock.
var Real Clock = realClock{}

// Or returns c, or Real when c is nil: the default of a Clock field whose
// zero value means "the system clock".
func Or(c Clock) Clock {
	if c == nil {
		return Real
	}
	return c
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) Since(t time.Time) time.Duration        { return time.Since(t) }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (realClock) NewTimer(d time.Duration) Timer         { return realTimer{time.NewTimer(d)} }
func (realClock) AfterFunc(d time.Duration, f func()) Timer {
	return realTimer{time.AfterFunc(d, f)}
}

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time        { return t.t.C }
func (t realTimer) Stop() bool                 { return t.t.Stop() }
func (t realTimer) Reset(d time.Duration) bool { return t.t.Reset(d) }

// WithTimeout is context.WithTimeout on clock c: the returned context ends
// once d has passed on c, with context.Cause DeadlineExceeded. On the Real
// clock it is exactly context.WithTimeout. On any other clock its Err is
// context.Canceled when the time is up and it reports no Deadline (which
// would be in fake time), so a caller that must tell a timeout from a
// cancellation asks the parent context (parent cancelled: cancellation)
// or context.Cause, not Err.
func WithTimeout(parent context.Context, c Clock, d time.Duration) (context.Context, context.CancelFunc) {
	c = Or(c)
	if _, ok := c.(realClock); ok {
		return context.WithTimeout(parent, d)
	}
	ctx, cancel := context.WithCancelCause(parent)
	t := c.AfterFunc(d, func() { cancel(context.DeadlineExceeded) })
	return ctx, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}

// Jitter spreads d uniformly over d±frac·d (frac 0.1: ±10%). rnd returns
// a number in [0, 1), as math/rand/v2's Float64 and (*rand.Rand).Float64
// do; passing it in keeps the spread deterministic in tests.
func Jitter(d time.Duration, frac float64, rnd func() float64) time.Duration {
	return d + time.Duration((rnd()*2-1)*frac*float64(d))
}
