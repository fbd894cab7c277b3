package reconciler

import (
	"context"
	"strings"
	"time"
)

// Change is something that happened to an instance, as LXD reports it in
// its event stream: by berth's own hand or behind its back.
type Change struct {
	Instance string
	// Action is LXD's lifecycle action ("instance-stopped",
	// "instance-deleted", "instance-started", ...) or, for the app
	// container, "container-" and Docker's action ("container-die").
	Action string
	// Requestor is who asked for it, for the log ("root via unix").
	Requestor string
	// Location is the cluster member it happened on ("" on one host).
	Location string
	// At is when the loop received it, on the loop's clock: a view
	// observed before that (View.Started) does not know of it.
	At time.Time
}

// Down reports whether the change takes the instance out of service at
// once: discovery drops it without waiting for the run it triggers.
func (c Change) Down() bool {
	switch c.Action {
	case "instance-stopped", "instance-shutdown", "instance-deleted", "instance-paused", "instance-renamed",
		"container-die", "container-stop", "container-kill", "container-oom", "container-pause",
		"container-health_status: unhealthy":
		return true
	}
	return false
}

// Moved reports whether the change is to the instance's run state (it
// stopped, started, went away...): a step planned before it may act on a
// replica that is not what the plan saw, and a failure of such a step may
// have been caused by it.
func (c Change) Moved() bool {
	switch c.Action {
	case "instance-stopped", "instance-shutdown", "instance-deleted", "instance-paused",
		"instance-renamed", "instance-started", "instance-restarted", "instance-resumed":
		return c.Instance != ""
	}
	return false
}

// relevant reports whether a change can make the live state differ from
// what the last run saw. Exec and file operations (every Docker tunnel is
// one) are not: reacting to them would loop.
func (c Change) relevant() bool {
	switch c.Action {
	case "instance-stopped", "instance-shutdown", "instance-deleted", "instance-paused",
		"instance-renamed", "instance-started", "instance-restarted", "instance-resumed",
		"instance-created", "instance-updated":
		return c.Instance != ""
	}
	// The app containers' Docker events (live prefixes them "container-").
	return c.Instance != "" && strings.HasPrefix(c.Action, "container-")
}

// Watcher reports changes to the live state as they happen; package live
// implements it over LXD's event stream.
type Watcher interface {
	// Watch calls handle for each change until ctx ends (nil) or the
	// stream breaks (an error). ready is called once subscribed.
	Watch(ctx context.Context, ready func(), handle func(Change)) error
}

// watch keeps the event stream open for as long as ctx lasts. Each
// relevant change asks for a run (and, for one that takes an instance down,
// tells OnChange at once); after a break it reconnects with a backoff and
// asks for a full resync, since events may have been missed.
func (l *Loop) watch(ctx context.Context) {
	fails := 0
	for ctx.Err() == nil {
		err := l.Watcher.Watch(ctx, func() {
			if fails > 0 || l.eventsMissed.Load() {
				l.needFull.Store(true)
				l.Trigger("resync")
			}
			l.eventsMissed.Store(false)
			l.eventsUp.Store(true)
			fails = 0
		}, l.change)
		l.eventsUp.Store(false)
		l.eventsMissed.Store(true)
		if ctx.Err() != nil {
			return
		}
		fails++
		wait := l.ErrorBackoff.Delay(fails)
		l.Logger.Warn("LXD event stream broke; the poll is the backstop until it is back", "err", err, "retry_in", wait)
		t := l.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// change handles one event.
func (l *Loop) change(c Change) {
	if !c.relevant() {
		return
	}
	c.At = l.Clock.Now()
	l.Logger.Info("instance changed", "instance", c.Instance, "action", c.Action, "by", c.Requestor, "member", c.Location)
	if c.Down() && l.OnChange != nil {
		l.OnChange(c)
	}
	if c.Moved() {
		l.mu.Lock()
		l.moved[c.Instance] = c
		app, lifted := l.fails.lift(c.Instance, c.At)
		l.mu.Unlock()
		if lifted {
			// The failed step may have been refused because of this
			// (Docker shutting down with the instance): what the next
			// plan finds is another situation, not the same retry.
			l.Logger.Info("rollout hold lifted: a replica it failed on changed state since", "app", app, "instance", c.Instance, "action", c.Action)
		}
	}
	l.needFull.Store(true)
	l.Trigger("event")
}

// cheapPoll reports whether this poll may skip observing: the event stream
// is up and has reported nothing since the last full observe, the revision
// has not moved, and the last full observe is younger than Resync.
func (l *Loop) cheapPoll(reason, revision string, now time.Time) bool {
	if reason != "poll" || l.Watcher == nil || !l.eventsUp.Load() || l.needFull.Load() {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// Only a converged fleet may go unobserved: a rollout held for a
	// backoff, steps waiting for a replica or replicas not ready need the
	// poll to look again.
	return l.lastConverged && len(l.fails.apps) == 0 &&
		revision == l.lastObservedRev && !l.lastFullObserve.IsZero() && now.Sub(l.lastFullObserve) < l.Resync
}

// movedSince returns, for the executor, the run-state change an instance
// went through after since (the start of the observe a plan was made
// from), or ok false.
func (l *Loop) movedSince(since time.Time) func(instance string) (Change, bool) {
	return func(instance string) (Change, bool) {
		l.mu.Lock()
		defer l.mu.Unlock()
		c, ok := l.moved[instance]
		return c, ok && c.At.After(since)
	}
}
