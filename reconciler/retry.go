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
)

// permanent is implemented by errors that retrying the same revision
// cannot fix. The adapters (engine, live) mark their errors with it; the
// reconciler imports neither.
type permanent interface{ Permanent() bool }

// RetryOf classifies a step error: Stalled when something in its chain
// says it is permanent, Retrying otherwise (when in doubt, try again).
func RetryOf(err error) Retry {
	if err == nil || errors.Is(err, context.Canceled) {
		return ""
	}
	var p permanent
	if errors.As(err, &p) && p.Permanent() {
		return Stalled
	}
	return Retrying
}
