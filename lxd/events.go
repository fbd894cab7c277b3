package lxd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Event is one message of LXD's event stream (GET /1.0/events). berth
// reads lifecycle events: "instance-started", "instance-stopped",
// "instance-deleted", ... with the instance in Source.
type Event struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	// Project is the event's project ("" or "default" for the default).
	Project string `json:"project"`
	// Location is the cluster member the event happened on.
	Location string         `json:"location"`
	Metadata LifecycleEvent `json:"metadata"`
}

// LifecycleEvent is the metadata of a lifecycle event.
type LifecycleEvent struct {
	// Action is what happened: "instance-stopped", "instance-started",
	// "instance-shutdown", "instance-deleted", "instance-created",
	// "instance-updated", "instance-restarted", ...
	Action string `json:"action"`
	// Source is the object's API path: "/1.0/instances/web-0".
	Source string `json:"source"`
	// Requestor is who asked for it (empty for what LXD did by itself,
	// such as an instance whose init exited).
	Requestor *Requestor `json:"requestor,omitempty"`
}

// Requestor says who caused a lifecycle event.
type Requestor struct {
	Username string `json:"username"`
	Protocol string `json:"protocol"`
	Address  string `json:"address"`
}

// String is "user via protocol from address", for logs.
func (r *Requestor) String() string {
	if r == nil {
		return "LXD itself"
	}
	s := r.Username
	if s == "" {
		s = "?"
	}
	if r.Protocol != "" {
		s += " via " + r.Protocol
	}
	if r.Address != "" {
		s += " from " + r.Address
	}
	return s
}

// Instance is the name of the instance the event is about ("" when it is
// about something else).
func (e Event) Instance() string {
	const prefix = "/1.0/instances/"
	src := e.Metadata.Source
	if !strings.HasPrefix(src, prefix) {
		return ""
	}
	name := strings.TrimPrefix(src, prefix)
	if i := strings.IndexAny(name, "/?"); i >= 0 {
		name = name[:i]
	}
	if n, err := url.PathUnescape(name); err == nil {
		name = n
	}
	return name
}

// Events subscribes to LXD's event stream for the given types (e.g.
// "lifecycle") in the client's project — on a cluster, the member it talks
// to relays every member's events — and calls handle for each event until
// ctx ends or the stream breaks. It returns nil only when ctx ended;
// a broken stream is an error, and the caller reconnects (and, having
// possibly missed events, looks at everything again). ready, if not nil,
// is called once the subscription is in place.
func (c *Client) Events(ctx context.Context, types []string, ready func(), handle func(Event)) error {
	const path = "/1.0/events"
	q := url.Values{}
	if len(types) > 0 {
		q.Set("type", strings.Join(types, ","))
	}
	conn, err := c.dialWebsocket(ctx, path, q, true)
	if err != nil {
		if errors.As(err, new(*StatusError)) {
			return err
		}
		return fmt.Errorf("lxd: events: %w", err)
	}
	// Closing the socket is how a blocked read learns that ctx ended.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	defer conn.Close()
	if ready != nil {
		ready()
	}
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("lxd: event stream broke: %w", err)
		}
		var ev Event
		if err := json.Unmarshal(data, &ev); err != nil {
			continue // not ours to judge: skip what does not decode
		}
		handle(ev)
	}
}
