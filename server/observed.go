package server

import (
	"net/http"
	"time"
)

// ViewBackend is a Backend that also keeps its last look at the world:
// `berth plan --server` plans against it instead of observing every
// instance and tunnelling into each one's Docker.
type ViewBackend interface {
	// ObservedView returns the last observed state (the format of `berth
	// plan --observed`), its revision, and when it was observed; ok is
	// false before the first observe.
	ObservedView() (observed any, revision string, at time.Time, ok bool)
}

// ObservedResponse is the body of GET /api/v1/observed.
type ObservedResponse struct {
	// Revision is the revision the daemon last planned for.
	Revision string `json:"revision"`
	// At is when the state was observed.
	At time.Time `json:"at"`
	// Observed is the state, as `berth plan --observed FILE` reads it.
	Observed any `json:"observed"`
}

// observed serves the last observed state. It holds the instances' config
// (cloud-init included), so it needs the sync token when there is one, as
// POST /api/v1/sync does, unless the basic-auth users of the status page
// (checked by protect) guard it.
func (s *Server) observed(b ViewBackend) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.basic == nil && !s.syncAuthorized(w, r) {
			return
		}
		obs, rev, at, ok := b.ObservedView()
		if !ok {
			writeText(w, http.StatusServiceUnavailable, "nothing observed yet")
			return
		}
		writeJSON(w, http.StatusOK, ObservedResponse{Revision: rev, At: at, Observed: obs})
	}
}
