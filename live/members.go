package live

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/reconciler/plan"
)

// memberState remembers whether the server is a cluster, and since when
// each member has been in its status: LXD does not say, and
// placement.replaceUnreachable needs how long a member has been lost. It
// is memory, not state: a restarted daemon starts counting again, which
// only delays a replacement.
type memberState struct {
	mu        sync.Mutex
	known     bool // whether clustered is known
	clustered bool
	since     map[string]statusSince
}

type statusSince struct {
	status string
	since  time.Time
}

// observeMembers lists the cluster's members (nil on a single host, at
// the cost of one request per System to find out).
func (s *System) observeMembers(ctx context.Context, at time.Time) ([]plan.Member, error) {
	m := &s.members
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.known {
		c, err := s.LXD.GetCluster(ctx)
		switch {
		case errors.Is(err, lxd.ErrNotFound):
			// A server without the clustering API is a single host.
		case err != nil:
			return nil, fmt.Errorf("cluster: %w", err)
		}
		m.known, m.clustered = true, c.Enabled
	}
	if !m.clustered {
		return nil, nil
	}
	list, err := s.LXD.ListClusterMembers(ctx)
	if err != nil {
		if errors.Is(err, lxd.ErrUnreachable) || ctx.Err() != nil {
			return nil, fmt.Errorf("list cluster members: %w", err)
		}
		// Without members nothing is placed this run, and no replica is
		// judged unreachable: say so and go on.
		s.Logger.Warn("listing cluster members failed; placement waits", "err", err)
		return nil, nil
	}
	if m.since == nil {
		m.since = map[string]statusSince{}
	}
	out := make([]plan.Member, 0, len(list))
	for _, cm := range list {
		prev, ok := m.since[cm.ServerName]
		if !ok || prev.status != cm.Status {
			prev = statusSince{status: cm.Status, since: at}
			m.since[cm.ServerName] = prev
		}
		groups := append([]string(nil), cm.Groups...)
		sort.Strings(groups)
		out = append(out, plan.Member{Name: cm.ServerName, Status: cm.Status, Groups: groups, Since: prev.since})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
