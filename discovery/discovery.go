// Package discovery tells apps where their peers are: a DNS zone, the
// endpoints as JSON and Prometheus HTTP service discovery, all served from
// one in-memory snapshot of the replicas.
//
// The reconciler publishes every fresh look at the world (Update, wired to
// reconciler.Loop.OnView); discovery turns it into a Snapshot and swaps it
// in atomically. Readers (a DNS query, an HTTP request) load the current
// snapshot and never wait on LXD, Docker or a lock the writer holds, as a
// CoreDNS plugin answers from memory. Like Consul's DNS, the service name
// holds only the replicas that serve:
//
//	<app>.<zone>                          A    ready replicas only
//	<instance>.<app>.<zone>               A    every replica with an address
//	_<port>._<proto>.<app>.<zone>         SRV  ready replicas, targets' A records in the additional section
//
// A replica is ready when plan.ReplicaAvailability says plan.Ready (the one
// definition berth has), it has an IPv4 address, and it is not drained.
// The executor drains a replica (Drain) before it disrupts it and lets it
// back (Undrain) after; an undrained replica is answered again once a view
// published after the Undrain shows it ready, never on the strength of the
// view from before the step.
package discovery

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
)

// Defaults of Config.
const (
	DefaultZone = "berth.internal"
	DefaultTTL  = 5 * time.Second
	// MaxTTL bounds Config.TTL: answers are meant to go stale fast.
	MaxTTL = time.Hour
)

// Config configures a Discovery.
type Config struct {
	// Owner is the owner whose replicas are served (user.berth.owner);
	// plan.DefaultOwner when empty. Other owners' instances are never
	// answered.
	Owner string
	// Zone is the DNS zone served, e.g. "berth.internal" (DefaultZone
	// when empty). A trailing dot is optional; case does not matter.
	Zone string
	// TTL is the TTL of every record and of negative answers; DefaultTTL
	// when zero, rounded up to whole seconds, at most MaxTTL. Use a
	// negative value for a TTL of 0 (no caching).
	TTL time.Duration
}

// Discovery holds the current snapshot and the drain marks. Its methods
// are safe for concurrent use.
type Discovery struct {
	owner string
	zone  string // canonical: lower case, with the trailing dot
	ttl   uint32 // seconds

	snap atomic.Pointer[Snapshot]
	// rotate turns the A records of <app>.<zone> one step per answer, so
	// clients that take the first address spread over the replicas.
	rotate atomic.Uint32

	mu      sync.Mutex // serialises writers; readers never take it
	view    *reconciler.View
	drained map[string]drainMark
	// since is, for a replica a change took down, when the loop received
	// that change: only a view observed after it may bring it back.
	since map[string]time.Time
}

// drainMark is why a replica is held out of the answers.
type drainMark int

const (
	// draining: between Drain and Undrain.
	draining drainMark = iota + 1
	// awaitingReady: undrained, but no view since has shown it ready.
	awaitingReady
)

// New returns a Discovery with no view yet: until the first Update, DNS
// answers SERVFAIL in the zone and the endpoints are unavailable.
func New(cfg Config) (*Discovery, error) {
	if cfg.Owner == "" {
		cfg.Owner = plan.DefaultOwner
	}
	zone, err := canonicalZone(cfg.Zone)
	if err != nil {
		return nil, err
	}
	ttl := cfg.TTL
	switch {
	case ttl == 0:
		ttl = DefaultTTL
	case ttl < 0:
		ttl = 0
	case ttl > MaxTTL:
		return nil, fmt.Errorf("discovery: TTL %s is over %s", ttl, MaxTTL)
	}
	secs := uint32(math.Ceil(ttl.Seconds()))
	return &Discovery{owner: cfg.Owner, zone: zone, ttl: secs, drained: map[string]drainMark{}, since: map[string]time.Time{}}, nil
}

// canonicalZone checks a zone name and returns it in lower case with the
// trailing dot.
func canonicalZone(z string) (string, error) {
	if z == "" {
		z = DefaultZone
	}
	z = dns.CanonicalName(strings.TrimSpace(z))
	if z == "." {
		return "", errors.New("discovery: the zone cannot be the root")
	}
	if _, ok := dns.IsDomainName(z); !ok || strings.Contains(z, "..") || !hostnameLabels(z) {
		return "", fmt.Errorf("discovery: %q is not a DNS zone name: want labels of letters, digits and inner hyphens, at least two of them", z)
	}
	// <instance>.<app>.<zone> must fit in 253 characters with the longest
	// instance and app names (63 each).
	if len(z) > 253-2*64 {
		return "", fmt.Errorf("discovery: zone %q is too long: at most %d characters", z, 253-2*64)
	}
	return z, nil
}

// hostnameLabels reports whether z (canonical, with its trailing dot) has
// at least two labels, each of letters, digits and inner hyphens.
func hostnameLabels(z string) bool {
	labels := strings.Split(strings.TrimSuffix(z, "."), ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Zone returns the zone served, without the trailing dot.
func (d *Discovery) Zone() string { return strings.TrimSuffix(d.zone, ".") }

// TTL returns the TTL of the answers, as a duration of whole seconds. The
// executor's drain delay should exceed it (TTL plus a second), so that
// cached answers naming a drained replica have expired when it goes down.
func (d *Discovery) TTL() time.Duration { return time.Duration(d.ttl) * time.Second }

// Update publishes a fresh view: it is reconciler.Loop.OnView. It builds a
// new snapshot and swaps it in; readers in flight keep the one they have.
func (d *Discovery) Update(v reconciler.View) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.view = &v
	// The view is fresh, so it decides for every undrained replica: one
	// it shows ready is back; one that is gone needs no mark.
	present := make(map[string]*plan.Instance, len(v.Observed.Instances))
	for i := range v.Observed.Instances {
		present[v.Observed.Instances[i].Name] = &v.Observed.Instances[i]
	}
	for name, m := range d.drained {
		if m != awaitingReady {
			continue
		}
		if t, ok := d.since[name]; ok && !v.Started.After(t) {
			continue // observed before the change took it down
		}
		if inst := present[name]; inst == nil || plan.ReplicaAvailability(inst) == plan.Ready {
			delete(d.drained, name)
			delete(d.since, name)
		}
	}
	d.publish()
}

// Drain takes instance out of <app>.<zone> and the SRV records at once
// (reconciler.Drainer). It stays out until Undrain and a view after that
// showing it ready.
func (d *Discovery) Drain(instance string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.drained[instance] = draining
	d.publish()
}

// Undrain ends a Drain (reconciler.Drainer). With ready, the executor
// has seen the replica ready again at the address discovery knows, and it
// is answered at once: a rollout moving from replica to replica between
// two views must not empty the name. Otherwise it is answered again once a
// later view shows it ready. Undraining a replica that was not drained
// does nothing.
func (d *Discovery) Undrain(instance string, ready bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.drained[instance] != draining {
		return
	}
	if !ready {
		d.drained[instance] = awaitingReady // stays out until the next view
		return
	}
	delete(d.drained, instance)
	d.publish()
}

// Change takes out at once a replica that LXD or Docker reports going
// down (reconciler.Loop.OnChange), without waiting for the run the event
// triggers; like an undrained replica, it is answered again once a later
// view shows it ready. Changes that do not take an instance down are
// ignored: the views bring them.
func (d *Discovery) Change(c reconciler.Change) {
	if !c.Down() || c.Instance == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.drained[c.Instance] == draining {
		return // already out, and the executor will undrain it
	}
	d.drained[c.Instance] = awaitingReady
	if !c.At.IsZero() {
		d.since[c.Instance] = c.At
	}
	d.publish()
}

// publish builds the snapshot from the last view and the drain marks.
// d.mu is held.
func (d *Discovery) publish() {
	if d.view == nil {
		return
	}
	prev := d.snap.Load()
	s := build(d.owner, d.view.Desired, d.view.Observed, d.isDrained, prev)
	s.At = d.view.At
	s.index(d.zone, d.ttl)
	d.snap.Store(s)
}

// isDrained reports whether a drain mark holds instance out. d.mu is held.
func (d *Discovery) isDrained(instance string) bool { return d.drained[instance] != 0 }

// Snapshot returns the current snapshot, nil before the first Update. It
// must not be modified.
func (d *Discovery) Snapshot() *Snapshot { return d.snap.Load() }

// Endpoints returns the body of GET /api/v1/endpoints; ok is false before
// the first view.
func (d *Discovery) Endpoints() (body any, ok bool) {
	s := d.snap.Load()
	if s == nil {
		return nil, false
	}
	return s.Endpoints(), true
}

// PrometheusTargets returns the body of GET /api/v1/sd/prometheus; ok is
// false before the first view.
func (d *Discovery) PrometheusTargets() (body any, ok bool) {
	s := d.snap.Load()
	if s == nil {
		return nil, false
	}
	return s.PrometheusTargets(), true
}
