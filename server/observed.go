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

// observed serves the last observed state. It holds the owned instances'
// config (cloud-init included), so it is served only behind the sync
// token, as POST /api/v1/sync is, or the status page's basic-auth users
// (checked by protect); never open. Other owners' instances are reduced
// to what the planner needs of them (ObservedView).
func (s *Server) observed(b ViewBackend) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.basic == nil && s.token == nil {
			writeText(w, http.StatusForbidden, "the observed state holds instance config: serve it with --sync-token-file (or --ui-basic-auth-file) set")
			return
		}
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
