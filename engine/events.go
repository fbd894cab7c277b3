package engine

import (
	"context"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/berth-gitops/berth/ownership"
)

// ContainerEvent is a state change of one of berth's app containers, as
// Docker in the instance reports it.
type ContainerEvent struct {
	Instance string
	// Container is the container's name.
	Container string
	// Action is Docker's: "die", "stop", "kill", "oom", "start",
	// "health_status: unhealthy", ...
	Action string
}

// watchedActions are the container actions that change whether a replica
// serves.
var watchedActions = []string{"die", "stop", "kill", "oom", "start", "restart", "health_status", "pause", "unpause"}

// Events streams the state changes of berth's app containers in instance
// (labelled berth.app) through the instance's tunnel until ctx ends (nil)
// or the stream breaks (an error): the caller reconnects.
func (m *Manager) Events(ctx context.Context, instance string, handle func(ContainerEvent)) error {
	cli, c, err := m.client(ctx, instance)
	if err != nil {
		return err
	}
	f := filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)), filters.Arg("label", ownership.LabelApp))
	for _, a := range watchedActions {
		f.Add("event", a)
	}
	msgs, errs := cli.Events(ctx, events.ListOptions{Filters: f})
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			if ctx.Err() != nil {
				return nil
			}
			return m.connErr(c, "events", err)
		case msg := <-msgs:
			handle(ContainerEvent{Instance: instance, Container: msg.Actor.Attributes["name"], Action: string(msg.Action)})
		}
	}
}
