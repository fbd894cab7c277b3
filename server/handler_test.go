package server

import "net/http"

// Handler is the server's handler, for tests only: berth serves it through
// Serve and nothing mounts it elsewhere. metrics_test.go still calls it;
// new tests use s.handler.
func (s *Server) Handler() http.Handler { return s.handler }
