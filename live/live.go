// Package live is the reconciler's Observer and Driver on a real LXD
// server and the Docker engines reached through it, plus the owner's
// lease in LXD's server config (lease.go). Besides translating between
// the adapters' types and the planner's model it has logic of its own: it
// bounds each Docker look (ObserveTimeout) and retries it once on a fresh
// tunnel, blames LXD for a Docker failure when LXD itself stopped
// answering, re-checks ownership before changing an instance, keeps a
// deleted instance as a disowned, snapshotted backup when asked,
// provisions instances (files through LXD's file API, then a command
// through exec, bounded, with the tail of its output on failure;
// provision.go), leaves Docker alone for system-only replicas, and takes
// (reading each take back), renews and releases the lease.
package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// Defaults for the live system's timeouts.
const (
	// DockerTimeout bounds the wait for dockerd after an instance starts.
	DockerTimeout = 90 * time.Second
	// StopTimeout is the clean-shutdown grace before a forced stop.
	StopTimeout = 30 * time.Second
	// observeParallel bounds concurrent Docker observations: each is an
	// exec-tunnelled API call, and LXD and the host have few cores.
	observeParallel = 8
	// ObserveTimeout bounds the look at one instance's Docker (a list and
	// an inspect, milliseconds when Docker is well): a wedged dockerd must
	// not hold every plan for the engine's minute-long call timeout.
	ObserveTimeout = 15 * time.Second
)

// System is the live LXD + Docker pair berth converges.
type System struct {
	LXD    *lxd.Client
	Engine *engine.Manager
	Owner  string
	Logger *slog.Logger
	// Remotes maps the "remote" part of a system.image "remote:alias" to an
	// image server URL (simplestreams).
	Remotes map[string]string
	// StopTimeout is the clean-shutdown grace before a forced stop
	// (default StopTimeout).
	StopTimeout time.Duration
	// OnLXDRequest, if set, is called for every LXD request (metrics).
	OnLXDRequest func(method, path string)
	// OnEngineEvent, if set, receives the Docker-side steps (pull, create,
	// start, ...) for progress output.
	OnEngineEvent func(engine.Event)
	// Clock names backups by their time; nil is the system clock. New
	// sets it to the engine's Options.Clock. ObserveTimeout, a bound on
	// real I/O as the engine's call timeouts are, stays on the system
	// clock.
	Clock clock.Clock

	requests, writes, execs atomic.Int64

	// ports are the declared ports Observe checks (SetPorts, ports.go).
	ports portsState

	// watch is the running Watch's state: its handler, and one Docker
	// event stream per running owned instance.
	watch watchState

	// members is what Observe knows of the cluster (members.go).
	members memberState
	// RecordMembers makes Observe keep in LXD since when each cluster
	// member has been lost (see memberState). Set by the commands that
	// act (apply, run), not by those that only look.
	RecordMembers bool
}

// Requests counts the LXD requests made through the system.
type Requests struct {
	// Total is every HTTP request, websocket dials included.
	Total int64 `json:"total"`
	// Writes are the requests that change LXD state: every method but GET
	// and HEAD, except exec POSTs (Docker tunnels run commands, they
	// change nothing in LXD).
	Writes int64 `json:"writes"`
	// Execs are exec POSTs: each starts a Docker tunnel in an instance.
	Execs int64 `json:"execs"`
}

// Requests returns the LXD request counts so far.
func (s *System) Requests() Requests {
	return Requests{Total: s.requests.Load(), Writes: s.writes.Load(), Execs: s.execs.Load()}
}

func (s *System) countRequest(method, path string) {
	s.requests.Add(1)
	switch {
	case method == "POST" && strings.HasSuffix(path, "/exec"):
		s.execs.Add(1)
	case method != "GET" && method != "HEAD":
		s.writes.Add(1)
	}
	if s.OnLXDRequest != nil {
		s.OnLXDRequest(method, path)
	}
}

// New connects the engine to the LXD client, with the engine's clock as
// the system's. It hooks c.OnRequest to count requests; a hook set
// before is still called, after the count.
func New(c *lxd.Client, owner string, opts engine.Options) *System {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &System{
		LXD: c, Engine: engine.New(engine.NewLXDDialer(c), opts), Owner: owner, Logger: opts.Logger,
		StopTimeout: StopTimeout, Clock: opts.Clock,
	}
	prev := c.OnRequest
	c.OnRequest = func(method, path string) {
		s.countRequest(method, path)
		if prev != nil {
			prev(method, path)
		}
	}
	return s
}

// Close drops the engine's Docker connections.
func (s *System) Close() { s.Engine.Close() }

var replicaName = regexp.MustCompile(`^[a-z][a-z0-9-]*-[0-9]+$`)

// Observe lists berth's instances in one request, the names of all
// instances in a second (an unowned instance named like a replica is a
// conflict the planner must see), the server's images in a third, and the
// app container of each running owned instance through its Docker engine,
// in parallel. Replicas of system-only apps (ownership.KeySystemOnly)
// have no Docker to look at; their ports are checked all the same. At is
// the time on s.Clock when the look began.
func (s *System) Observe(ctx context.Context) (plan.Observed, error) {
	at := clock.Or(s.Clock).Now()
	owned, err := s.LXD.ListInstances(ctx, map[string]string{"config." + ownership.KeyOwner: s.Owner})
	if err != nil {
		return plan.Observed{}, fmt.Errorf("list instances: %w", err)
	}
	// Every other instance whose name could be a replica's: a clash is a
	// conflict, and on a cluster an instance on a lost member is known
	// only by its name, status and location (the owner filter drops it).
	records, err := s.LXD.ListInstanceRecords(ctx)
	if err != nil {
		return plan.Observed{}, fmt.Errorf("list instance names: %w", err)
	}
	seen := map[string]bool{}
	obs := plan.Observed{Instances: make([]plan.Instance, 0, len(owned)), At: at}
	for i := range owned {
		seen[owned[i].Name] = true
		obs.Instances = append(obs.Instances, toInstance(&owned[i]))
	}
	for i := range records {
		if seen[records[i].Name] || !replicaName.MatchString(records[i].Name) {
			continue
		}
		obs.Instances = append(obs.Instances, toInstance(&records[i]))
	}
	sort.Slice(obs.Instances, func(i, j int) bool { return obs.Instances[i].Name < obs.Instances[j].Name })
	if obs.Images, err = s.observeImages(ctx); err != nil {
		return plan.Observed{}, err
	}
	if obs.Members, err = s.observeMembers(ctx, at); err != nil {
		return plan.Observed{}, err
	}
	if obs.Volumes, obs.Pools, err = s.observeVolumes(ctx); err != nil {
		return plan.Observed{}, err
	}

	var withDocker []*plan.Instance
	for i := range obs.Instances {
		inst := &obs.Instances[i]
		if inst.Config[ownership.KeyOwner] != s.Owner {
			continue
		}
		if inst.Status != "Running" {
			s.Engine.Forget(inst.Name)
			continue
		}
		if !isSystemOnly(inst.Config) {
			withDocker = append(withDocker, inst)
		}
	}
	s.observeContainers(ctx, withDocker)
	s.lookAgain(ctx, withDocker)
	s.checkPorts(ctx, obs.Instances)
	if err := ctx.Err(); err != nil {
		return plan.Observed{}, err
	}
	s.watchContainers(obs)
	return obs, nil
}

// observeContainers looks at the Docker of each instance,
// observeParallel at a time.
func (s *System) observeContainers(ctx context.Context, insts []*plan.Instance) {
	sem := make(chan struct{}, observeParallel)
	var wg sync.WaitGroup
	for _, inst := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			s.observeContainer(ctx, inst)
		}()
	}
	wg.Wait()
}

// unknownPauses are the waits before each new look at replicas whose
// Docker is unknown because LXD did not set up the tunnel: an LXD that
// stalls for a few seconds under load (its exec websockets answered late
// for several instances at once) usually answers the next look, and a
// plan from that look is one that knows.
var unknownPauses = []time.Duration{time.Second, 3 * time.Second}

// lookAgain observes again, after a pause, the instances whose Docker is
// unknown, as many times as unknownPauses says; those still unknown then
// stay so, and the plan waits for them.
func (s *System) lookAgain(ctx context.Context, insts []*plan.Instance) {
	for _, pause := range unknownPauses {
		var again []*plan.Instance
		var names []string
		for _, inst := range insts {
			if inst.DockerUnknown != "" {
				again = append(again, inst)
				names = append(names, inst.Name)
			}
		}
		if len(again) == 0 || ctx.Err() != nil {
			return
		}
		s.Logger.Info("LXD did not set up the Docker tunnel of some replicas; looking again", "replicas", names, "after", pause)
		t := clock.Or(s.Clock).NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		for _, inst := range again {
			inst.DockerUnknown = ""
			s.Engine.Forget(inst.Name)
		}
		s.observeContainers(ctx, again)
	}
}

func (s *System) observeContainer(ctx context.Context, inst *plan.Instance) {
	octx, cancel := context.WithTimeout(ctx, ObserveTimeout)
	defer cancel()
	o, err := s.Engine.Observe(octx, inst.Name)
	// A wedged daemon gets no second try: it would only wait again.
	if err != nil && !errors.Is(err, engine.ErrInstanceNotRunning) && octx.Err() == nil {
		// A tunnel can break (LXD resets an exec stream under load); one
		// fresh try on a new client tells a blip from a dead dockerd.
		s.Logger.Debug("docker observe failed, retrying once", "instance", inst.Name, "err", err)
		s.Engine.Forget(inst.Name)
		o, err = s.Engine.Observe(octx, inst.Name)
	}
	if err != nil {
		if octx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("docker in %s did not answer within %s: %w", inst.Name, ObserveTimeout, err)
			// The tunnel is stuck on the wedged daemon: drop it.
			s.Engine.Forget(inst.Name)
		}
		if errors.Is(err, engine.ErrTunnel) {
			// LXD did not run dial-stdio: nothing is known of Docker,
			// and nothing may be concluded from its silence.
			s.Logger.Debug("docker state unknown: LXD did not set up the tunnel", "instance", inst.Name, "err", err)
			inst.DockerUnknown = "LXD did not run the tunnel: " + err.Error()
			return
		}
		switch why := s.askInstance(ctx, inst.Name); {
		case why.down:
			// `lxc stop` shuts the instance down cleanly: its Docker
			// stops first, while LXD still says Running. That silence is
			// no reason to restart it; the shutdown's event brings the
			// next look.
			s.Logger.Debug("docker state unknown: the instance is shutting down", "instance", inst.Name, "err", err)
			inst.DockerUnknown = fmt.Sprintf("the instance is shutting down: %v", err)
			return
		case why.noExec != nil:
			// LXD set up the tunnel, then stalled: it does not run even
			// a trivial command now, so Docker's silence may be LXD's.
			s.Logger.Debug("docker state unknown: LXD does not run commands in the instance", "instance", inst.Name, "err", err, "probe", why.noExec)
			inst.DockerUnknown = fmt.Sprintf("LXD did not run a command in the instance either (%v): %v", why.noExec, err)
			return
		}
		inst.DockerError = err.Error()
		return
	}
	app := inst.Config[ownership.KeyApp]
	inst.ForeignContainers = o.Foreign
	inst.StaleContainers = o.Stale(app)
	if c, ok := o.Container(app); ok {
		inst.Container = &plan.Container{
			Name: c.Name, ID: c.ID, Image: c.Image, State: c.State, Health: c.Health,
			RestartCount: c.RestartCount, Labels: c.Labels,
		}
	}
}

func toInstance(i *lxd.Instance) plan.Instance {
	return plan.Instance{
		Name:       i.Name,
		Status:     i.Status,
		Config:     i.Config,
		Profiles:   i.Profiles,
		Devices:    i.Devices,
		Addresses:  i.State.GlobalIPv4(),
		Location:   i.Location,
		BaseImage:  i.Config["volatile.base_image"],
		Ephemeral:  i.Ephemeral,
		Privileged: i.Privileged(),
	}
}

// isSystemOnly reports a replica of an app without an app container: it
// has no Docker to dial.
func isSystemOnly(config map[string]string) bool {
	return config[ownership.KeySystemOnly] == "true"
}

// observeImages lists the server's images in one request, sorted by
// fingerprint. Images only serve to tell a replica on an outdated base
// image: when the list fails it is left out (nil) and the observe goes on,
// unless LXD itself is not reachable, which fails the observe anyway.
func (s *System) observeImages(ctx context.Context) ([]plan.Image, error) {
	imgs, err := s.LXD.ListImages(ctx)
	if err != nil {
		if errors.Is(err, lxd.ErrUnreachable) || ctx.Err() != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		s.Logger.Warn("listing images failed; base images are not compared this time", "err", err)
		return nil, nil
	}
	out := make([]plan.Image, 0, len(imgs))
	for _, img := range imgs {
		pi := plan.Image{Fingerprint: img.Fingerprint, Created: img.CreatedAt}
		// An image whose metadata has no creation date reports the zero
		// time or the epoch; its upload is the next best thing.
		if pi.Created.Unix() <= 0 {
			pi.Created = img.UploadedAt
		}
		if pi.Created.Unix() <= 0 {
			pi.Created = time.Time{}
		}
		for _, a := range img.Aliases {
			pi.Aliases = append(pi.Aliases, a.Name)
		}
		sort.Strings(pi.Aliases)
		out = append(out, pi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Fingerprint < out[j].Fingerprint })
	return out, nil
}

// imageSource turns a spec's system.image into an LXD image source.
func (s *System) imageSource(image string) (lxd.ImageSource, error) {
	remote, src := lxd.ParseImageRef(image)
	if remote == "" {
		return src, nil
	}
	url, ok := s.Remotes[remote]
	if !ok {
		return lxd.ImageSource{}, fmt.Errorf("system.image %q: unknown image remote %q (known: %s)", image, remote, strings.Join(sortedKeys(s.Remotes), ", "))
	}
	src.Server, src.Protocol = url, "simplestreams"
	return src, nil
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Preflight checks that app's image and profiles exist on the server. A
// remote image cannot be checked without pulling it; it is left to create.
func (s *System) Preflight(ctx context.Context, app spec.App) error {
	src, err := s.imageSource(app.Spec.System.Image)
	if err != nil {
		return err
	}
	switch {
	case src.Server != "":
	case src.Fingerprint != "":
		if _, _, err := s.LXD.GetImage(ctx, src.Fingerprint); err != nil {
			return fmt.Errorf("system.image %q: %w", app.Spec.System.Image, err)
		}
	default:
		if _, _, err := s.LXD.GetImageAlias(ctx, src.Alias); err != nil {
			return fmt.Errorf("system.image %q: %w", app.Spec.System.Image, err)
		}
	}
	for _, p := range app.Spec.System.Profiles {
		if _, _, err := s.LXD.GetProfile(ctx, p); err != nil {
			return fmt.Errorf("profile %q: %w", p, err)
		}
	}
	return nil
}

// CreateInstance creates the instance with exactly config and starts it.
// With system.ephemeral it is an LXD ephemeral instance: stopping it
// deletes it.
func (s *System) CreateInstance(ctx context.Context, name string, app spec.App, config map[string]string, target string) error {
	src, err := s.imageSource(app.Spec.System.Image)
	if err != nil {
		return err
	}
	profiles := app.Spec.System.Profiles
	if profiles == nil {
		profiles = []string{} // explicit: the spec's list is the whole list
	}
	s.Engine.Forget(name)
	if err := s.LXD.CreateInstance(ctx, lxd.InstancesPost{
		Name: name, Source: src, Profiles: profiles, Config: config, Devices: app.Spec.System.Devices,
		Ephemeral:   app.Spec.System.Ephemeral,
		Description: "berth: " + app.Metadata.Name,
		Target:      target,
	}); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if err := s.LXD.StartInstance(ctx, name); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	return nil
}

// StartInstance starts an instance; its Docker client is dropped, since the
// old tunnel died with the old dockerd.
func (s *System) StartInstance(ctx context.Context, name string) error {
	inst, _, err := s.LXD.GetInstance(ctx, name)
	if err != nil {
		return err
	}
	// The plan was made a while ago: re-check that the instance is ours.
	if inst.Config[ownership.KeyOwner] != s.Owner {
		return fmt.Errorf("%s is not owned by %q any more; not starting it", name, s.Owner)
	}
	s.Engine.Forget(name)
	if inst.Status == "Frozen" {
		// LXD answers "already running" to a start of a frozen instance.
		if err := s.LXD.SetInstanceState(ctx, name, lxd.InstanceStatePut{Action: "unfreeze", Timeout: 30}); err != nil {
			return fmt.Errorf("unfreeze: %w", err)
		}
		return nil
	}
	if err := s.LXD.StartInstance(ctx, name); err != nil {
		err = fmt.Errorf("start: %w", err)
		if busyStopping(err) {
			// Seen stopped while its `lxc stop` is still cleaning up:
			// the shutdown's event brings the next plan within seconds.
			return &reconciler.TransitionError{Err: err}
		}
		return err
	}
	return nil
}

// busyStopping recognizes LXD refusing a start because the instance's stop
// has not finished ("Instance is busy running a "stop" operation").
func busyStopping(err error) bool {
	return strings.Contains(err.Error(), `busy running a "stop" operation`)
}

// StopInstance stops an owned instance cleanly, then by force.
func (s *System) StopInstance(ctx context.Context, name string) error {
	inst, _, err := s.LXD.GetInstance(ctx, name)
	if err != nil {
		return err
	}
	// The plan was made a while ago: re-check that the instance is ours.
	if inst.Config[ownership.KeyOwner] != s.Owner {
		return fmt.Errorf("%s is not owned by %q any more; not stopping it", name, s.Owner)
	}
	s.Engine.Forget(name)
	return s.LXD.StopInstance(ctx, name, s.StopTimeout)
}

// RestartContainer restarts the instance's app container, after a
// re-provision with provision.restartContainer.
func (s *System) RestartContainer(ctx context.Context, name string) error {
	inst, _, err := s.LXD.GetInstance(ctx, name)
	if err != nil {
		return err
	}
	if inst.Config[ownership.KeyOwner] != s.Owner {
		return fmt.Errorf("%s is not owned by %q any more; not restarting its container", name, s.Owner)
	}
	return s.transition(ctx, name, s.blameLXD(ctx, s.Engine.Restart(ctx, name, inst.Config[ownership.KeyApp])))
}

// WaitDocker waits up to timeout for the instance's Docker to answer.
// An error that matches engine.ErrTunnel (LXD never ran the tunnel) also
// matches reconciler.ErrDockerUnreached.
func (s *System) WaitDocker(ctx context.Context, name string, timeout time.Duration) error {
	err := s.Engine.WaitDocker(ctx, name, timeout)
	if errors.Is(err, engine.ErrTunnel) {
		err = fmt.Errorf("%w: %w", reconciler.ErrDockerUnreached, err)
	}
	return s.transition(ctx, name, s.blameLXD(ctx, err))
}

// UpdateInstance patches config keys live with the ETag of a fresh read,
// so a change made between the read and the write fails instead of being
// overwritten. It refuses to touch an instance that is not berth's.
func (s *System) UpdateInstance(ctx context.Context, name string, set map[string]string, remove []string) error {
	inst, etag, err := s.LXD.GetInstance(ctx, name)
	if err != nil {
		return err
	}
	if inst.Config[ownership.KeyOwner] != s.Owner {
		return fmt.Errorf("%s is not owned by %q any more; not touching it", name, s.Owner)
	}
	patch := make(map[string]string, len(set)+len(remove))
	for k, v := range set {
		patch[k] = v
	}
	for _, k := range remove {
		patch[k] = "" // an empty value deletes the key
	}
	if err := s.LXD.PatchInstance(ctx, name, lxd.InstancePatch{Config: patch}, etag); err != nil {
		return fmt.Errorf("patch config: %w", err)
	}
	return nil
}

// DeleteInstance deletes an owned instance. With keepBackup the instance is
// kept instead, stopped, renamed <name>-bak-<time>, disowned (so berth never
// touches it again) and snapshotted: an operator restores it by hand.
func (s *System) DeleteInstance(ctx context.Context, name string, keepBackup bool) error {
	inst, _, err := s.LXD.GetInstance(ctx, name)
	if errors.Is(err, lxd.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if inst.Config[ownership.KeyOwner] != s.Owner {
		return fmt.Errorf("%s is not owned by %q; not deleting it", name, s.Owner)
	}
	s.Engine.Forget(name)
	if inst.Ephemeral {
		// Stopping an ephemeral instance deletes it: that is the delete
		// (spec refuses update.snapshot with ephemeral: nothing to keep).
		if err := s.LXD.StopInstance(ctx, name, s.StopTimeout); err != nil && !errors.Is(err, lxd.ErrNotFound) {
			return fmt.Errorf("stop: %w", err)
		}
		return s.waitGone(ctx, name)
	}
	if err := s.LXD.StopInstance(ctx, name, s.StopTimeout); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if !keepBackup {
		if err := s.LXD.DeleteInstance(ctx, name); err != nil {
			return fmt.Errorf("delete: %w", err)
		}
		return nil
	}
	if err := s.detachVolumes(ctx, name); err != nil {
		return fmt.Errorf("detach volumes before keeping a backup: %w", err)
	}
	backup := backupName(name, clock.Or(s.Clock).Now())
	// Rename first: if disowning then fails, the slot's name is free and
	// the backup is only an owned instance with a name berth ignores.
	if err := s.LXD.RawQuery(ctx, "POST", "/1.0/instances/"+name, map[string]string{"name": backup}, "", nil); err != nil {
		return fmt.Errorf("rename to %s: %w", backup, err)
	}
	if err := s.LXD.PatchInstance(ctx, backup, lxd.InstancePatch{Config: map[string]string{
		ownership.KeyOwner: "", ownership.KeyBackupOf: name, ownership.KeyBackupOwner: s.Owner,
	}}, ""); err != nil {
		return fmt.Errorf("disown backup %s: %w", backup, err)
	}
	if err := s.LXD.CreateSnapshot(ctx, backup, "berth-backup", false); err != nil {
		return fmt.Errorf("snapshot %s: %w", backup, err)
	}
	s.Logger.Info("kept a backup of a deleted instance", "instance", name, "backup", backup)
	return nil
}

// waitGone waits until LXD has finished deleting a stopped ephemeral
// instance (it does so after the stop returns), so that its name is free
// for the create that may follow; bounded by ctx.
func (s *System) waitGone(ctx context.Context, name string) error {
	for {
		_, _, err := s.LXD.GetInstance(ctx, name)
		if errors.Is(err, lxd.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ephemeral %s still there after its stop: %w", name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// backupName is <name>-bak-<unix seconds in base 36>, cut to LXD's 63
// characters by shortening the name part.
func backupName(name string, now time.Time) string {
	suffix := "-bak-" + strconv.FormatInt(now.Unix(), 36)
	if len(name)+len(suffix) > 63 {
		name = strings.TrimRight(name[:63-len(suffix)], "-")
	}
	return name + suffix
}

// EnsureContainer waits for the instance's dockerd, then converges its app
// container. A system-only app has none: asking for it is a bug in the
// caller, refused at once rather than after waiting for a dockerd that is
// not there.
func (s *System) EnsureContainer(ctx context.Context, name string, app spec.App, slot int, revision string) error {
	if !app.Spec.HasContainer() {
		return &engine.PermanentError{Err: fmt.Errorf("%s: app %s has no container (a system-only app); there is no app container to ensure", name, app.Metadata.Name)}
	}
	ctx = engine.WithLogger(ctx, s.Logger.With("revision", plan.ShortSHA(revision)))
	if err := s.Engine.WaitDocker(ctx, name, DockerTimeout); err != nil {
		return s.transition(ctx, name, s.blameLXD(ctx, err))
	}
	if err := s.deliverSecrets(ctx, name, app); err != nil {
		return s.transition(ctx, name, s.blameLXD(ctx, err))
	}
	err := s.Engine.Ensure(ctx, name, engine.Desired{
		App: app.Metadata.Name, Slot: slot, Revision: revision, Spec: app.Spec.Container,
	}, s.OnEngineEvent)
	if err == nil {
		s.removeOldSecrets(ctx, name, app)
	}
	return s.transition(ctx, name, s.blameLXD(ctx, err))
}

// blameLXD turns a failed Docker call into "LXD not reachable" when LXD
// itself no longer answers: a tunnel that broke because LXD went away is
// not Docker's fault, and saying so tells the operator where to look.
func (s *System) blameLXD(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil || errors.Is(err, lxd.ErrUnreachable) {
		return err
	}
	if _, _, lerr := s.LXD.GetServer(ctx); errors.Is(lerr, lxd.ErrUnreachable) {
		return fmt.Errorf("%w (while: %v)", lerr, err)
	}
	return err
}

// transition marks a failed Docker call on name as InTransition when the
// instance was changing state under it: LXD has it stopped, frozen or gone,
// or its init is shutting it down (`lxc stop` runs a clean shutdown, and
// LXD reports Running until it ends; meanwhile Docker refuses to start
// containers and its socket goes away). The step was planned from a view
// that no longer holds, and the reconciler plans again soon instead of
// holding the app for its rollout backoff. Other errors pass unchanged.
func (s *System) transition(ctx context.Context, name string, err error) error {
	if err == nil || ctx.Err() != nil || reconciler.RetryOf(err) != reconciler.Retrying {
		return err
	}
	st, serr := s.LXD.GetInstanceState(ctx, name)
	switch {
	case errors.Is(serr, lxd.ErrNotFound):
		return &reconciler.TransitionError{Err: fmt.Errorf("%w (%s is gone)", err, name)}
	case serr != nil:
		return err
	case st.StatusCode != lxd.StatusRunning:
		return &reconciler.TransitionError{Err: fmt.Errorf("%w (%s is %s)", err, name, st.Status)}
	}
	if s.shuttingDown(ctx, name) {
		return &reconciler.TransitionError{Err: fmt.Errorf("%w (%s is shutting down)", err, name)}
	}
	return err
}

// shuttingDown reports whether the instance is on its way down (see
// askInstance).
func (s *System) shuttingDown(ctx context.Context, name string) bool {
	return s.askInstance(ctx, name).down
}

// instanceWord is what an instance says when its Docker did not answer.
type instanceWord struct {
	// down: LXD runs a stop or restart of it (an `lxc stop` sends the
	// init its shutdown signal and waits; the init stops dockerd first,
	// while LXD still says Running), its systemd says it is stopping, or
	// it stopped while we asked.
	down bool
	// noExec is set when LXD did not run a trivial command in it within
	// askTimeout: LXD itself stalls, and Docker's silence says nothing.
	noExec error
}

// askTimeout bounds askInstance: a healthy LXD runs systemctl in well
// under a second, even on a busy host.
const askTimeout = 5 * time.Second

// askInstance asks LXD and the instance's init whether a Docker that did
// not answer has a reason other than itself.
func (s *System) askInstance(ctx context.Context, name string) instanceWord {
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	if stopping, err := s.LXD.InstanceStopping(ctx, name); err == nil && stopping {
		return instanceWord{down: true}
	}
	res, err := s.LXD.ExecOutput(ctx, name, lxd.ExecRequest{Command: []string{"systemctl", "is-system-running"}}, 256)
	if err == nil {
		return instanceWord{down: strings.TrimSpace(string(res.Output)) == "stopping"}
	}
	// The exec failed. LXD failing the operation ("Command not found" in
	// an image without systemctl) shows it runs commands; a transport
	// failure or no answer in time shows it does not, unless the
	// instance stopped while we asked, which only its state says.
	st, serr := s.LXD.GetInstanceState(ctx, name)
	if serr == nil && st.StatusCode != lxd.StatusRunning {
		return instanceWord{down: true}
	}
	if lxdRefused(err) {
		return instanceWord{}
	}
	return instanceWord{noExec: err}
}

// lxdRefused reports an exec that LXD answered with a refusal of the
// command ("Command not found"), which shows that it runs commands in the
// instance. One it never started (*lxd.ExecStartError) does not.
func lxdRefused(err error) bool {
	if errors.Is(err, lxd.ErrExecNotStarted) {
		return false
	}
	return errors.As(err, new(*lxd.OperationError)) || errors.As(err, new(*lxd.StatusError))
}

// WaitReady waits until the app container is ready and the app's
// declared TCP ports accept connections on the instance's address, both
// within the app's update.healthTimeout. Ports that cannot be checked
// from here (no address, no route) are logged and left to the
// healthcheck (see waitPorts). A system-only app has no container: it is
// ready once the instance runs and its ports accept connections.
func (s *System) WaitReady(ctx context.Context, name string, app spec.App) error {
	clk := clock.Or(s.Clock)
	start := clk.Now()
	timeout := app.Spec.Update.HealthTimeout.D()
	if !app.Spec.HasContainer() {
		if err := s.checkRunning(ctx, name, app); err != nil {
			return s.blameLXD(ctx, err)
		}
		return s.blameLXD(ctx, s.waitPorts(ctx, name, app, timeout))
	}
	if err := s.blameLXD(ctx, s.Engine.WaitReady(ctx, name, app.Metadata.Name, timeout)); err != nil {
		return s.transition(ctx, name, err)
	}
	return s.transition(ctx, name, s.blameLXD(ctx, s.waitPorts(ctx, name, app, timeout-clk.Since(start))))
}

// checkRunning fails with a *engine.NotReadyError when the instance is not
// running: nothing restarts a system-only replica that stopped, so
// waiting would only delay the verdict.
func (s *System) checkRunning(ctx context.Context, name string, app spec.App) error {
	st, err := s.LXD.GetInstanceState(ctx, name)
	if err != nil {
		return fmt.Errorf("read the state of %s: %w", name, err)
	}
	if st.StatusCode != lxd.StatusRunning {
		return &engine.NotReadyError{Instance: name, App: app.Metadata.Name, Reason: "instance is " + st.Status}
	}
	return nil
}

var (
	_ reconciler.Observer = (*System)(nil)
	_ reconciler.Driver   = (*System)(nil)
)
