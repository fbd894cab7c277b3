package clock

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func received(c <-chan time.Time) (time.Time, bool) {
	select {
	case v := <-c:
		return v, true
	default:
		return time.Time{}, false
	}
}

func TestFakeTimersFireInOrderOnAdvance(t *testing.T) {
	f := NewFake(t0)
	var order []string
	a := f.NewTimer(3 * time.Second)
	f.AfterFunc(time.Second, func() {
		order = append(order, "func@"+f.Since(t0).String())
		// Arming from inside a function works, and fires in the same
		// Advance when it is due by its end.
		f.AfterFunc(time.Second, func() { order = append(order, "nested@"+f.Since(t0).String()) })
	})
	b := f.After(5 * time.Second)
	if n := f.Waiters(); n != 3 {
		t.Fatalf("Waiters = %d, want 3", n)
	}
	if d, ok := f.Next(); !ok || d != time.Second {
		t.Fatalf("Next = %v %v", d, ok)
	}

	f.Advance(2 * time.Second)
	if !slices.Equal(order, []string{"func@1s", "nested@2s"}) {
		t.Errorf("functions ran as %v", order)
	}
	if _, ok := received(a.C()); ok {
		t.Error("3s timer fired at 2s")
	}
	f.Advance(time.Second)
	if v, ok := received(a.C()); !ok || !v.Equal(t0.Add(3*time.Second)) {
		t.Errorf("3s timer: %v %v", v, ok)
	}
	f.Advance(10 * time.Second)
	if v, ok := received(b); !ok || !v.Equal(t0.Add(5*time.Second)) {
		t.Errorf("After(5s) sent %v %v, want the time it came due", v, ok)
	}
	if got := f.Now(); !got.Equal(t0.Add(13 * time.Second)) {
		t.Errorf("Now = %v", got)
	}
	if n := f.Waiters(); n != 0 {
		t.Errorf("Waiters = %d after all fired", n)
	}
	if _, ok := f.Next(); ok {
		t.Error("Next reports a timer when none is armed")
	}
}

func TestFakeStopAndReset(t *testing.T) {
	f := NewFake(t0)
	tm := f.NewTimer(time.Second)
	if !tm.Stop() || tm.Stop() {
		t.Error("Stop: want true once, then false")
	}
	f.Advance(time.Hour)
	if _, ok := received(tm.C()); ok {
		t.Error("a stopped timer fired")
	}
	// Fired but not received: Reset drops the stale value.
	if tm.Reset(time.Second) {
		t.Error("Reset of a stopped timer reported it pending")
	}
	f.Advance(time.Second)
	if tm.Reset(time.Hour) {
		t.Error("Reset of a fired timer reported it pending")
	}
	if _, ok := received(tm.C()); ok {
		t.Error("stale value received after Reset")
	}
	if !tm.Reset(2 * time.Second) {
		t.Error("Reset of an armed timer: want true")
	}
	f.Advance(time.Second)
	if _, ok := received(tm.C()); ok {
		t.Error("fired before its reset deadline")
	}
	f.Advance(time.Second)
	if _, ok := received(tm.C()); !ok {
		t.Error("did not fire at its reset deadline")
	}
	// Zero and negative durations fire at once.
	if _, ok := received(f.After(0)); !ok {
		t.Error("After(0) did not fire at once")
	}
	ran := false
	f.AfterFunc(-time.Second, func() { ran = true })
	if !ran {
		t.Error("AfterFunc(-1s) did not run at once")
	}
}

func TestFakeBlockUntil(t *testing.T) {
	f := NewFake(t0)
	done := make(chan time.Time)
	go func() { done <- <-f.After(time.Minute) }()
	f.BlockUntil(1)
	f.Advance(time.Minute)
	if got := <-done; !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("got %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.BlockUntilContext(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("BlockUntilContext with nothing armed and ctx done = %v", err)
	}
}

func TestWithTimeout(t *testing.T) {
	f := NewFake(t0)
	parent, cancelParent := context.WithCancel(context.Background())
	defer cancelParent()
	ctx, cancel := WithTimeout(parent, f, time.Minute)
	defer cancel()
	f.Advance(59 * time.Second)
	if ctx.Err() != nil {
		t.Fatal("ended early")
	}
	f.Advance(time.Second)
	if ctx.Err() == nil || !errors.Is(context.Cause(ctx), context.DeadlineExceeded) || parent.Err() != nil {
		t.Errorf("after the timeout: err %v, cause %v", ctx.Err(), context.Cause(ctx))
	}

	// Cancelling stops its timer; cancelling the parent ends it too.
	ctx, cancel = WithTimeout(parent, f, time.Minute)
	cancel()
	if f.Waiters() != 0 || !errors.Is(context.Cause(ctx), context.Canceled) {
		t.Errorf("cancel left %d timers, cause %v", f.Waiters(), context.Cause(ctx))
	}
	ctx, cancel = WithTimeout(parent, f, time.Minute)
	defer cancel()
	cancelParent()
	if !errors.Is(context.Cause(ctx), context.Canceled) {
		t.Errorf("parent cancelled: cause %v", context.Cause(ctx))
	}

	// The real clock is context.WithTimeout itself.
	rctx, rcancel := WithTimeout(context.Background(), nil, time.Hour)
	defer rcancel()
	if _, ok := rctx.Deadline(); !ok {
		t.Error("real clock: no deadline")
	}
}

func TestJitter(t *testing.T) {
	for _, tc := range []struct {
		r    float64
		want time.Duration
	}{
		{0, 90 * time.Second},
		{0.5, 100 * time.Second},
		{0.75, 105 * time.Second},
	} {
		if got := Jitter(100*time.Second, 0.1, func() float64 { return tc.r }); got != tc.want {
			t.Errorf("r=%v: got %v, want %v", tc.r, got, tc.want)
		}
	}
}

func TestReal(t *testing.T) {
	if Or(nil) != Real {
		t.Error("Or(nil) is not Real")
	}
	f := NewFake(t0)
	if Or(f) != Clock(f) {
		t.Error("Or(f) is not f")
	}
	start := Real.Now()
	tm := Real.NewTimer(time.Millisecond)
	<-tm.C()
	if Real.Since(start) < time.Millisecond {
		t.Error("real timer fired early")
	}
	fired := make(chan struct{})
	Real.AfterFunc(0, func() { close(fired) })
	<-fired
	<-Real.After(0)
}
