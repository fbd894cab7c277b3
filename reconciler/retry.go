package reconciler

import (
	"context"
	"errors"
)

// Retry says what a failed step or rollout needs before it can succeed,
// after Flux's conditions: a Stalled failure will not fix itself (a new
// commit must come), a Retrying one may clear by itself (back off, try
// again). The type travels to the top — step results, app results, the
// daemon's failure memory, status and metrics — instead of being
// flattened into a string on the way.
type Retry string

const (
	// Retrying: the failure may clear by itself — a broken tunnel, LXD or a
	// registry not reachable, a timeout. The daemon tries again after a
	// backoff.
	Retrying Retry = "Retrying"
	// Stalled: retrying the same revision cannot help — the image is
	// missing or its digest does not match, Docker or LXD refuses the
	// spec, the new version never gets healthy. The daemon holds the
	// revision until a newer commit comes.
	Stalled Retry = "Stalled"
	// InTransition: the instance changed state under the step — it was
	// stopping, stopped or gone by the time the step acted (someone ran
	// `lxc stop`, it shut itself down). The step was planned from a view
	// that no longer holds: the daemon plans again soon, from a fresh
	// look, instead of holding the app for the rollout backoff.
	InTransition Retry = "InTransition"
)

// permanent is implemented by errors that retrying the same revision
// cannot fix. The adapters (engine, live) mark their errors with it; the
// reconciler imports neither.
type permanent interface{ Permanent() bool }

// transition is implemented by errors caused by an instance changing
// state under a step (see InTransition); the adapters mark theirs with it.
type transition interface{ InTransition() bool }

// TransitionError marks err as caused by an instance changing state
// under the step that failed with it.
type TransitionError struct{ Err error }

func (e *TransitionError) Error() string      { return e.Err.Error() }
func (e *TransitionError) Unwrap() error      { return e.Err }
func (e *TransitionError) InTransition() bool { return true }

// RetryOf classifies a step error: Stalled when something in its chain
// says it is permanent, InTransition when something says the instance
// changed state under it, Retrying otherwise (when in doubt, try again).
func RetryOf(err error) Retry {
	if err == nil || errors.Is(err, context.Canceled) {
		return ""
	}
	var p permanent
	if errors.As(err, &p) && p.Permanent() {
		return Stalled
	}
	if IsInTransition(err) {
		return InTransition
	}
	return Retrying
}

// IsInTransition reports whether something in err's chain says the
// instance changed state under the step that failed with it.
func IsInTransition(err error) bool {
	var t transition
	return errors.As(err, &t) && t.InTransition()
}
