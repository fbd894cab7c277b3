package live

import (
	"context"
	"errors"
	"sync"

	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
)

// watchState is what a running Watch shares with Observe, which keeps one
// Docker event stream open per running owned instance it sees.
type watchState struct {
	mu      sync.Mutex
	ctx     context.Context // the Watch's; nil when none runs
	handle  func(reconciler.Change)
	streams map[string]*stream // per instance
}

// stream is one instance's Docker event stream.
type stream struct{ cancel context.CancelFunc }

// Watch implements reconciler.Watcher: LXD's lifecycle events (the member
// berth talks to relays every member's on a cluster) and, through each
// instance's tunnel, the Docker events of berth's app containers in the
// instances last observed running, for as long as ctx lasts. It returns
// when the LXD stream breaks; the Docker streams end with it.
func (s *System) Watch(ctx context.Context, ready func(), handle func(reconciler.Change)) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := &s.watch
	w.mu.Lock()
	w.ctx, w.handle, w.streams = wctx, handle, map[string]*stream{}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.ctx, w.handle, w.streams = nil, nil, nil
		w.mu.Unlock()
	}()
	return s.LXD.Events(wctx, []string{"lifecycle"}, ready, func(e lxd.Event) {
		if inst := e.Instance(); inst != "" {
			handle(reconciler.Change{Instance: inst, Action: e.Metadata.Action, Requestor: e.Metadata.Requestor.String(), Location: e.Location})
		}
	})
}

// watchContainers opens a Docker event stream for each running owned
// instance of obs that has none, and closes those of instances no longer
// running. Without a running Watch it does nothing.
func (s *System) watchContainers(obs plan.Observed) {
	w := &s.watch
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil || w.ctx.Err() != nil {
		return
	}
	running := map[string]bool{}
	for _, inst := range obs.Instances {
		if inst.Config[ownership.KeyOwner] == s.Owner && inst.Status == "Running" && inst.DockerError == "" && !isSystemOnly(inst.Config) {
			running[inst.Name] = true
		}
	}
	for name, st := range w.streams {
		if !running[name] {
			st.cancel()
			delete(w.streams, name)
		}
	}
	handle := w.handle
	for name := range running {
		if _, ok := w.streams[name]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(w.ctx)
		st := &stream{cancel: cancel}
		w.streams[name] = st
		go func() {
			err := s.Engine.Events(ctx, name, func(e engine.ContainerEvent) {
				handle(reconciler.Change{Instance: e.Instance, Action: "container-" + e.Action, Requestor: "docker in " + e.Instance})
			})
			if err != nil && !errors.Is(err, context.Canceled) {
				s.Logger.Debug("docker event stream ended", "instance", name, "err", err)
			}
			// Let the next observe open it again.
			cancel()
			w.mu.Lock()
			if w.streams[name] == st {
				delete(w.streams, name)
			}
			w.mu.Unlock()
		}()
	}
}

var _ reconciler.Watcher = (*System)(nil)
