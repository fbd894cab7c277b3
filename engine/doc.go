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
// Decisions worth knowing:
//   - Volumes are Docker "Binds", which create a missing source directory
//     (root-owned) in the system container, like `docker run -v` and
//     Compose; config management may still create it first with the right
//     owner.
//   - An image "repo:tag@sha256:..." is pulled by tag and must be that
//     digest (ErrDigestMismatch otherwise); Docker would silently ignore the
//     tag. The container is created from repo@digest.
//   - A change of revision alone does not replace a container: Docker
//     labels are immutable, so LabelRevision is the revision that created
//     the container; LabelContainerHash decides replacement.
//   - Removing a container also removes its anonymous volumes.
//
// Secrets: container env values may be secrets. They are never logged, and
// an error from Docker that happens to quote one is redacted.
package engine
