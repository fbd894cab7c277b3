// Package engine manages berth's Docker app container inside an LXD system
// container.
//
// Each replica is one LXD instance housing exactly one app container that
// uses the instance's network. The Docker API of the instance is reached
// through LXD: every new connection execs `docker system dial-stdio` in the
// instance and uses the exec's stdin/stdout as the byte stream, the same
// trick as Docker's ssh:// connection helper. Nothing is needed on the host
// and it works wherever the LXD API reaches.
//
// A Manager caches one Docker client per instance. Its HTTP transport keeps
// idle connections (each one is a running dial-stdio process) for minutes,
// so a steady reconcile loop costs a handful of execs, not one per call.
//
// Ownership: berth's container carries the labels LabelApp, LabelSlot,
// LabelContainerHash and LabelRevision. A container without LabelApp is
// foreign: Observe reports its name, and nothing in this package ever
// stops, removes or replaces it.
//
// Secrets: container env values may be secrets. They are never logged, and
// an error from Docker that happens to quote one is redacted.
package engine
