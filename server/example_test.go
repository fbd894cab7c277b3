package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
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
// to the server for /metrics, and records its runs in it. Here a client
// then asks for a run, reads the status and the metrics, and the daemon
// shuts the server down.
func Example() {
	m := server.NewMetrics()
	d := &daemon{metrics: m, wake: make(chan struct{}, 1)}
	srv, err := server.New(server.Config{
		Listen: "127.0.0.1:0", // berth run: DefaultListen, or --listen
		Branch: "main",
		// Logger: the daemon's *slog.Logger; nil discards the logs.
	}, d, m)
	if err != nil {
		panic(err)
	}
	if err := srv.Listen(); err != nil { // fail early if the port is taken
		panic(err)
	}
	// berth run ends on SIGINT/SIGTERM (signal.NotifyContext); here the
	// example ends it itself.
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()

	ran := make(chan struct{}, 1)
	go func() { // the run loop
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.wake:
				start := time.Now()
				// ... observe, plan, apply ...
				m.RunFinished(server.RunOK, time.Since(start))
				m.Succeeded(time.Now())
				ran <- struct{}{}
			}
		}
	}()

	base := "http://" + srv.Addr().String()
	show := func(resp *http.Response, err error) string {
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			panic(err)
		}
		return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	fmt.Println(show(http.Post(base+"/api/v1/sync", "", nil)))
	<-ran
	fmt.Println(show(http.Get(base + "/api/v1/status")))
	metrics := show(http.Get(base + "/metrics"))
	for sc := bufio.NewScanner(strings.NewReader(metrics)); sc.Scan(); {
		if line := sc.Text(); strings.HasPrefix(line, `berth_reconcile_runs_total{result="ok"}`) ||
			strings.HasPrefix(line, `berth_triggers_total{`) {
			fmt.Println(line)
		}
	}

	stop()
	fmt.Println("stopped:", <-served)
	// Output:
	// 202 {"triggered":true}
	// 200 {"revision":"abc"}
	// berth_reconcile_runs_total{result="ok"} 1
	// berth_triggers_total{source="api"} 1
	// stopped: <nil>
}
