package lxd

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestEventInstance(t *testing.T) {
	for src, want := range map[string]string{
		"/1.0/instances/web-0":              "web-0",
		"/1.0/instances/web-0?project=p":    "web-0",
		"/1.0/instances/web-0/snapshots/s1": "web-0",
		"/1.0/instances/a%2Db":              "a-b",
		"/1.0/networks/berthbr0":            "",
	} {
		if got := (Event{Metadata: LifecycleEvent{Source: src}}).Instance(); got != want {
			t.Errorf("Instance(%q) = %q, want %q", src, got, want)
		}
	}
	if s := (*Requestor)(nil).String(); s != "LXD itself" {
		t.Error(s)
	}
	if s := (&Requestor{Username: "root", Protocol: "unix"}).String(); s != "root via unix" {
		t.Error(s)
	}
}

// The event stream reports a stop made behind berth's back, with who made
// it, and ends cleanly with its context.
func TestIntegrationEvents(t *testing.T) {
	c := realLXD(t)
	name := "berth-it-ev-" + randSuffix()
	launch(t, c, name, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan Event, 64)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- c.Events(ctx, []string{"lifecycle"}, func() { close(ready) }, func(e Event) { events <- e })
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("events: %v", err)
	}
	if err := c.StopInstance(ctx, name, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		select {
		case e := <-events:
			if e.Instance() == name && (e.Metadata.Action == "instance-stopped" || e.Metadata.Action == "instance-shutdown") {
				if e.Metadata.Requestor == nil || e.Metadata.Requestor.Protocol == "" {
					t.Errorf("no requestor on %+v", e)
				}
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Events after cancel: %v", err)
				}
				return
			}
		case err := <-done:
			t.Fatalf("event stream ended: %v", errors.Join(err))
		case <-deadline:
			t.Fatal("no stop event within 30s")
		}
	}
}
