package live

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
)

// memberState remembers whether the server is a cluster, and since when
// each member has been in its status: LXD does not say, and
// placement.replaceUnreachable needs how long a member has been lost.
// Since when each lost member has been lost is also kept in LXD
// (ownership.MembersKey, read once per System, written by a System that
// RecordMembers), so that a restarted daemon, or the next `berth apply`,
// counts from the first time it was seen lost.
type memberState struct {
	mu        sync.Mutex
	known     bool // whether clustered is known
	clustered bool
	since     map[string]statusSince
	// loaded: the stored times were read; stored is the key's value as
	// last read or written.
	loaded bool
	stored string
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
	lostSince := s.loadLostSince(ctx)
	out := make([]plan.Member, 0, len(list))
	for _, cm := range list {
		prev, ok := m.since[cm.ServerName]
		if !ok || prev.status != cm.Status {
			prev = statusSince{status: cm.Status, since: at}
			if t, ok := lostSince[cm.ServerName]; ok && cm.Status != memberOnline && t.Before(at) {
				prev.since = t
			}
			m.since[cm.ServerName] = prev
		}
		groups := append([]string(nil), cm.Groups...)
		sort.Strings(groups)
		out = append(out, plan.Member{Name: cm.ServerName, Status: cm.Status, Groups: groups, Since: prev.since})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	s.storeLostSince(ctx, out)
	return out, nil
}

// memberOnline is LXD's status of a member that answers.
const memberOnline = "Online"

// loadLostSince reads, once per System, since when each member was first
// seen lost by any of the owner's processes. Called with members.mu held.
// A failed read is logged: the times then start now, as they did before
// they were kept.
func (s *System) loadLostSince(ctx context.Context) map[string]time.Time {
	m := &s.members
	if m.loaded {
		return nil
	}
	srv, _, err := s.LXD.GetServer(ctx)
	if err != nil {
		s.Logger.Warn("reading since when cluster members are lost failed; counting from now", "err", err)
		return nil
	}
	m.loaded = true
	m.stored, _ = srv.Config[ownership.MembersKey(s.Owner, s.LXD.Project())].(string)
	return parseLostSince(m.stored)
}

// storeLostSince writes the lost members' times to LXD when they changed,
// if this System records them. Called with members.mu held.
func (s *System) storeLostSince(ctx context.Context, members []plan.Member) {
	m := &s.members
	if !s.RecordMembers || !m.loaded {
		return
	}
	var pairs []string
	for _, mb := range members {
		if mb.Status != memberOnline {
			pairs = append(pairs, fmt.Sprintf("%s=%d", mb.Name, mb.Since.Unix()))
		}
	}
	value := strings.Join(pairs, " ")
	if value == m.stored {
		return
	}
	if err := s.LXD.PatchServerConfig(ctx, map[string]any{ownership.MembersKey(s.Owner, s.LXD.Project()): value}, ""); err != nil {
		s.Logger.Warn("recording since when cluster members are lost failed", "err", err)
		return
	}
	m.stored = value
}

// parseLostSince reads MembersKey's value; pairs that do not parse are
// skipped (their member counts from now).
func parseLostSince(v string) map[string]time.Time {
	out := map[string]time.Time{}
	for _, pair := range strings.Fields(v) {
		name, sec, ok := strings.Cut(pair, "=")
		n, err := strconv.ParseInt(sec, 10, 64)
		if ok && err == nil && name != "" {
			out[name] = time.Unix(n, 0)
		}
	}
	return out
}
