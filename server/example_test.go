package server_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/berth-gitops/berth/server"
)

// daemon stands in for `berth run`'s state.
type daemon struct {
	metrics *server.Metrics
	wake    chan struct{} // buffered, size 1: pending runs coalesce
}

func (d *daemon) Status() any  { return map[string]string{"revision": "abc"} }
func (d *daemon) Ready() error { return nil }

// Trigger counts the request and wakes the run loop without blocking.
func (d *daemon) Trigger(reason string) {
	d.metrics.Triggered(reason) // "webhook:github" counts as source "webhook"
	select {
	case d.wake <- struct{}{}:
	default: // a run is already pending
	}
}

// Wiring the server into the daemon: the daemon owns the Metrics, passes it
// to the server for /metrics, and records its runs in it.
func Example() {
	m := server.NewMetrics()
	d := &daemon{metrics: m, wake: make(chan struct{}, 1)}
	srv, err := server.New(server.Config{
		Listen: "127.0.0.1:0",
		Branch: "main",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}, d, m)
	if err != nil {
		panic(err)
	}
	if err := srv.Listen(); err != nil { // fail early if the port is taken
		panic(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.wake:
				start := time.Now()
				// ... observe, plan, apply ...
				m.RunFinished(server.RunOK, time.Since(start))
				m.Succeeded(time.Now())
			}
		}
	}()
	_ = srv.Serve(ctx)
}
