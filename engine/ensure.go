package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/berth-gitops/berth/ownership"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"

	"github.com/berth-gitops/berth/spec"
)

// Desired is the app container one instance should run.
type Desired struct {
	App      string
	Slot     int
	Revision string // Git SHA, recorded in ownership.LabelRevision
	Spec     spec.Container
}

// Steps Ensure reports, in the order they happen (a replacement creates
// the new container before it stops and removes the old one).
const (
	StepPull      = "pull"
	StepStopOld   = "stop-old"
	StepRemoveOld = "remove-old"
	StepCreate    = "create"
	StepStart     = "start"
)

// Event reports one step of Ensure or Remove, after it ended.
type Event struct {
	Instance string
	App      string
	Step     string
	Duration time.Duration
	// Detail says what the step did: the image pulled, the container
	// replaced, "up to date" for a pull that was skipped.
	Detail string
	// Err is the step's error, if it failed.
	Err error
}

// ErrNameConflict is matched by Ensure's error when a container with the
// app's name exists but is not berth's: berth never removes it.
var ErrNameConflict = errors.New("container name taken by a container without berth labels")

// PermanentError marks a failure that retrying the same spec cannot fix:
// the image does not exist or is not the pinned digest, the registry
// refuses the credentials, Docker refuses the spec, or a foreign container
// holds the name. Permanent() tells the reconciler to wait for a new
// commit instead of backing off and trying again.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string   { return e.Err.Error() }
func (e *PermanentError) Unwrap() error   { return e.Err }
func (e *PermanentError) Permanent() bool { return true }

// classify marks Ensure's permanent failures. Everything else (a broken
// tunnel, a registry that does not answer, a timeout) may clear by itself.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrBackendUnreachable) {
		return err
	}
	switch {
	case errors.Is(err, ErrDigestMismatch), errors.Is(err, ErrNameConflict),
		cerrdefs.IsNotFound(err), cerrdefs.IsInvalidArgument(err),
		cerrdefs.IsUnauthorized(err), cerrdefs.IsPermissionDenied(err):
		return &PermanentError{Err: err}
	}
	return err
}

// ErrDigestMismatch is matched when the image pulled is not the digest the
// spec pins.
var ErrDigestMismatch = errors.New("digest mismatch")

// Ensure converges the app container of instance to d: nothing when a
// berth container with the same container hash runs; a start when it is
// stopped; otherwise pull (first, so the old container keeps serving during
// the download), stop and remove the old container, create and start the
// new one. report (may be nil) receives an Event per step.
//
// The container is named after the app (one per instance). A container of
// that name without berth's labels is an error wrapping ErrNameConflict and
// is left alone. A berth container of the same app under another name (a
// leftover) is removed before the new one starts, as both would use the
// host network.
//
// A changed Revision alone does not replace a container: labels cannot be
// changed in place, so LabelRevision is the revision that created it.
//
// Ensure observes, decides (decideEnsure, pure) and then does what was
// decided (ensureRun.do).
func (m *Manager) Ensure(ctx context.Context, instance string, d Desired, report func(Event)) error {
	return classify(m.ensure(ctx, instance, d, report))
}

func (m *Manager) ensure(ctx context.Context, instance string, d Desired, report func(Event)) error {
	if d.App == "" {
		return errors.New("engine: Ensure: empty app name")
	}
	// A system-only app has no app container; dialing Docker for it would
	// wait for a dockerd its instance may not even have.
	if d.Spec.Image == "" {
		return &PermanentError{Err: fmt.Errorf("engine: app %s has no container image (a system-only app has no app container)", d.App)}
	}
	if report == nil {
		report = func(Event) {}
	}
	cli, c, err := m.client(ctx, instance)
	if err != nil {
		return err
	}
	img, err := parseImage(d.Spec.Image)
	if err != nil {
		return err
	}
	cfg, hostCfg, err := buildConfig(d, img.runRef)
	if err != nil {
		return err
	}
	cur, stale, err := m.findCurrent(ctx, cli, c, instance, d.App)
	if err != nil {
		return err
	}
	plan := decideEnsure(d.App, cfg.Labels[ownership.LabelContainerHash], cur, stale)
	r := &ensureRun{
		m: m, cli: cli, c: c, d: d, img: img, cfg: cfg, hostCfg: hostCfg, report: report,
		log: m.logger(ctx).With("instance", instance, "app", d.App),
	}
	r.log.Debug("ensure decided", "plan", plan.String())
	return r.do(ctx, plan)
}

// ensureAction is what Ensure does to the container named after the app.
type ensureAction int

const (
	// keep: up to date and running or restarting; WaitReady judges it.
	keep ensureAction = iota
	// start: up to date but created or exited.
	start
	// unpause: up to date but paused.
	unpause
	// create: no container of the app yet: pull, create, start.
	create
	// replace: another container hash, or a dead or dying container:
	// pull, create the new one beside it, remove the old one, rename the
	// new one, start.
	replace
)

// removal is a container Ensure removes, stopping it first when it runs.
type removal struct {
	id, name, hash string
	stop           bool
}

// ensurePlan is Ensure's decision: a value, made without side effects.
type ensurePlan struct {
	action ensureAction
	// stale are berth's other containers of the app (leftovers): removed
	// before anything is created or started, as they would compete for
	// the host network's ports; after the pull, which keeps the old
	// container serving during the download.
	stale []removal
	// id is the container started or unpaused.
	id string
	// createName is the name the new container is created under: the
	// app's, or a temporary one beside the container it replaces.
	createName string
	// old is the container a replace removes once the new one exists.
	old removal
}

// decideEnsure decides what converges app to the container hash, given
// berth's container named app (cur, nil when none) and its other
// containers of app (stale). findCurrent guarantees Config and State.
func decideEnsure(app, hash string, cur *container.InspectResponse, stale []container.InspectResponse) ensurePlan {
	p := ensurePlan{stale: removals(stale)}
	switch {
	case cur == nil:
		p.action, p.createName = create, app
	case cur.Config.Labels[ownership.LabelContainerHash] != hash ||
		cur.State.Status == container.StateDead || cur.State.Status == container.StateRemoving:
		p.action, p.createName, p.old = replace, app+nextSuffix, toRemoval(*cur)
	case cur.State.Status == container.StatePaused:
		p.action, p.id = unpause, cur.ID
	case cur.State.Status == container.StateCreated || cur.State.Status == container.StateExited:
		p.action, p.id = start, cur.ID
	default: // running or restarting
		p.action = keep
	}
	return p
}

func toRemoval(old container.InspectResponse) removal {
	return removal{
		id:   old.ID,
		name: strings.TrimPrefix(old.Name, "/"),
		hash: old.Config.Labels[ownership.LabelContainerHash],
		stop: old.State != nil && (old.State.Running || old.State.Restarting || old.State.Paused),
	}
}

func removals(olds []container.InspectResponse) []removal {
	var out []removal
	for _, old := range olds {
		out = append(out, toRemoval(old))
	}
	return out
}

// steps lists the Events the plan reports when all goes well, in order.
func (p ensurePlan) steps() []string {
	var out []string
	remove := func(rs ...removal) {
		for _, r := range rs {
			if r.stop {
				out = append(out, StepStopOld)
			}
			out = append(out, StepRemoveOld)
		}
	}
	if p.action == create || p.action == replace {
		out = append(out, StepPull)
	}
	remove(p.stale...)
	switch p.action {
	case start, unpause:
		out = append(out, StepStart)
	case create:
		out = append(out, StepCreate, StepStart)
	case replace:
		out = append(out, StepCreate)
		remove(p.old)
		out = append(out, StepStart)
	}
	return out
}

// String is the plan's steps, comma-separated ("" when there is nothing
// to do).
func (p ensurePlan) String() string { return strings.Join(p.steps(), ",") }

// ensureRun does an ensurePlan in one instance.
type ensureRun struct {
	m       *Manager
	cli     *client.Client
	c       *conn
	d       Desired
	img     imageRef
	cfg     *container.Config
	hostCfg *container.HostConfig
	log     *slog.Logger
	report  func(Event)
}

func (r *ensureRun) do(ctx context.Context, p ensurePlan) error {
	if p.action == create || p.action == replace {
		if err := r.pull(ctx); err != nil {
			return err
		}
	}
	if err := r.remove(ctx, p.stale...); err != nil {
		return err
	}
	switch p.action {
	case unpause:
		return r.step(ctx, StepStart, func(ctx context.Context) (string, error) {
			return "unpause " + r.d.App, r.call(ctx, "unpause container "+r.d.App, func(ctx context.Context) error {
				return r.cli.ContainerUnpause(ctx, p.id)
			})
		})
	case start:
		return r.start(ctx, p.id)
	case create, replace:
		// Create the new container before touching the old one, under a
		// temporary name: if Docker refuses the spec (a bad user, mount
		// or config), the old container keeps serving. Only then is the
		// old one stopped, removed, and the new one renamed and started.
		id, err := r.create(ctx, p.createName)
		if err != nil {
			return err
		}
		if p.action == replace {
			if err := r.remove(ctx, p.old); err != nil {
				return err
			}
			if err := r.call(ctx, "rename container "+p.createName, func(ctx context.Context) error {
				return r.cli.ContainerRename(ctx, id, r.d.App)
			}); err != nil {
				return err
			}
		}
		return r.start(ctx, id)
	}
	return nil // keep
}

// step runs one step, timed, logged and reported.
func (r *ensureRun) step(ctx context.Context, name string, fn func(ctx context.Context) (string, error)) error {
	clk := r.m.opts.Clock
	begin := clk.Now()
	detail, err := fn(ctx)
	ev := Event{Instance: r.c.instance, App: r.d.App, Step: name, Duration: clk.Since(begin), Detail: detail, Err: err}
	if err != nil {
		r.log.Info("step failed", "step", name, "detail", detail, "took", ev.Duration, "err", err)
	} else {
		r.log.Info("step done", "step", name, "detail", detail, "took", ev.Duration)
	}
	r.report(ev)
	return err
}

func (r *ensureRun) call(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	return r.m.call(ctx, r.c, what, fn)
}

func (r *ensureRun) pull(ctx context.Context) error {
	return r.step(ctx, StepPull, func(ctx context.Context) (string, error) {
		pulled, err := r.m.ensureImage(ctx, r.cli, r.c, r.img)
		if err == nil && !pulled {
			return r.img.pullRef + " (present)", nil
		}
		return r.img.pullRef, err
	})
}

func (r *ensureRun) remove(ctx context.Context, olds ...removal) error {
	for _, old := range olds {
		what := fmt.Sprintf("%s (hash %s)", old.name, old.hash)
		if old.stop {
			if err := r.step(ctx, StepStopOld, func(ctx context.Context) (string, error) {
				return what, r.m.stop(ctx, r.cli, r.c, old.id, old.name)
			}); err != nil {
				return err
			}
		}
		if err := r.step(ctx, StepRemoveOld, func(ctx context.Context) (string, error) {
			return what, r.m.remove(ctx, r.cli, r.c, old.id, old.name)
		}); err != nil {
			return err
		}
	}
	return nil
}

func (r *ensureRun) create(ctx context.Context, name string) (id string, err error) {
	env := r.d.Spec.Env
	err = r.step(ctx, StepCreate, func(ctx context.Context) (string, error) {
		detail := fmt.Sprintf("%s (hash %s, image %s)", name, r.cfg.Labels[ownership.LabelContainerHash], r.img.runRef)
		return detail, r.call(ctx, "create container "+name, func(ctx context.Context) error {
			resp, err := r.cli.ContainerCreate(ctx, r.cfg, r.hostCfg, nil, nil, name)
			if err != nil {
				return redact(err, env)
			}
			id = resp.ID
			for _, w := range resp.Warnings {
				r.log.Info("docker warning on create", "warning", redact(errors.New(w), env).Error())
			}
			return nil
		})
	})
	return id, err
}

func (r *ensureRun) start(ctx context.Context, id string) error {
	return r.step(ctx, StepStart, func(ctx context.Context) (string, error) {
		return "start " + r.d.App, r.call(ctx, "start container "+r.d.App, func(ctx context.Context) error {
			return redact(r.cli.ContainerStart(ctx, id, container.StartOptions{}), r.d.Spec.Env)
		})
	})
}

// nextSuffix names a replacement container until the old one is gone. A
// leftover of that name carries berth's labels, so a later Ensure removes
// it as a stale container of the app.
const nextSuffix = "-next"

// findCurrent returns the container named app when it is berth's (nil when
// there is none) and other berth containers of the same app (leftovers to
// remove). A foreign container of that name is ErrNameConflict.
func (m *Manager) findCurrent(ctx context.Context, cli *client.Client, c *conn, instance, app string) (cur *container.InspectResponse, stale []container.InspectResponse, err error) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return nil, nil, m.connErr(c, "list containers", err)
	}
	for _, s := range list {
		name := summaryName(s)
		owner, ours := s.Labels[ownership.LabelApp]
		switch {
		case name == app && !ours:
			return nil, nil, fmt.Errorf("%w: %q in %s (berth leaves it alone; rename or remove it)", ErrNameConflict, app, instance)
		case name == app && owner != app:
			return nil, nil, fmt.Errorf("%w: %q in %s is berth's container of app %q", ErrNameConflict, app, instance, owner)
		case !ours || owner != app:
			continue
		}
		insp, err := cli.ContainerInspect(ctx, s.ID)
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return nil, nil, m.connErr(c, "inspect container "+name, err)
		}
		if insp.Config == nil {
			insp.Config = &container.Config{}
		}
		if insp.State == nil {
			insp.State = &container.State{}
		}
		if name == app {
			cur = &insp
		} else {
			stale = append(stale, insp)
		}
	}
	return cur, stale, nil
}

// Remove stops and removes berth's container of app in instance. A missing
// container is not an error; a foreign container of that name is never
// touched (ErrNameConflict).
func (m *Manager) Remove(ctx context.Context, instance, app string) error {
	cli, c, err := m.client(ctx, instance)
	if err != nil {
		return err
	}
	cur, stale, err := m.findCurrent(ctx, cli, c, instance, app)
	if err != nil {
		return err
	}
	if cur != nil {
		stale = append(stale, *cur)
	}
	for _, old := range removals(stale) {
		if old.stop {
			if err := m.stop(ctx, cli, c, old.id, old.name); err != nil {
				return err
			}
		}
		if err := m.remove(ctx, cli, c, old.id, old.name); err != nil {
			return err
		}
		m.logger(ctx).Info("container removed", "instance", instance, "app", app, "container", old.name)
	}
	return nil
}

func (m *Manager) stop(ctx context.Context, cli *client.Client, c *conn, id, name string) error {
	secs := int(m.opts.StopTimeout.Round(time.Second) / time.Second)
	// The daemon waits up to secs before killing: bound the call by that
	// plus a margin, not by CallTimeout.
	ctx, cancel := context.WithTimeout(ctx, m.opts.StopTimeout+m.opts.CallTimeout)
	defer cancel()
	err := cli.ContainerStop(ctx, id, container.StopOptions{Timeout: &secs})
	if err != nil && !isNotFound(err) {
		return m.connErr(c, "stop container "+name, err)
	}
	return nil
}

func (m *Manager) remove(ctx context.Context, cli *client.Client, c *conn, id, name string) error {
	return m.call(ctx, c, "remove container "+name, func(ctx context.Context) error {
		// Force: a container that restarted between stop and remove must
		// still go. RemoveVolumes: anonymous volumes of the image would be
		// orphaned anyway, since the next container gets new ones.
		err := cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if isNotFound(err) {
			return nil
		}
		return err
	})
}

// call runs one Docker API call bounded by CallTimeout and names it in the
// error.
func (m *Manager) call(ctx context.Context, c *conn, what string, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	if err := fn(ctx); err != nil {
		return m.connErr(c, what, err)
	}
	return nil
}

// imageRef is a parsed spec image.
type imageRef struct {
	named  reference.Named
	digest string // "" unless pinned
	// pullRef is what is pulled and inspected: repo:tag when a tag is given
	// (also with a digest, see parseImage), else repo@digest.
	pullRef string
	// runRef is what the container is created from: repo@digest when
	// pinned, so the container runs exactly the pinned content.
	runRef string
}

// parseImage normalizes a spec image. With both a tag and a digest
// ("repo:1@sha256:..."), Docker itself pulls the digest and silently
// ignores the tag; berth pulls the tag and requires that it is the pinned
// digest, so a spec whose tag and digest disagree fails (ErrDigestMismatch)
// instead of running something the tag does not name.
func parseImage(s string) (imageRef, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return imageRef{}, fmt.Errorf("image %q: %w", s, err)
	}
	r := imageRef{named: named}
	repo := named.Name()
	tagged, hasTag := named.(reference.Tagged)
	if dg, ok := named.(reference.Digested); ok {
		r.digest = dg.Digest().String()
		r.runRef = repo + "@" + r.digest
		r.pullRef = r.runRef
		if hasTag {
			r.pullRef = repo + ":" + tagged.Tag()
		}
		return r, nil
	}
	r.pullRef = reference.TagNameOnly(named).String()
	r.runRef = r.pullRef
	return r, nil
}

// ensureImage makes sure img is in the instance (pulling per PullPolicy)
// and, when it pins a digest, that the image is that digest. It reports
// whether it pulled.
func (m *Manager) ensureImage(ctx context.Context, cli *client.Client, c *conn, img imageRef) (bool, error) {
	if m.opts.PullPolicy != PullAlways {
		var insp image.InspectResponse
		err := m.call(ctx, c, "inspect image "+img.pullRef, func(ctx context.Context) (err error) {
			insp, err = cli.ImageInspect(ctx, img.pullRef)
			return err
		})
		if err == nil && img.digestOK(insp) {
			return false, nil
		}
		if err != nil && !isNotFound(err) {
			return false, err
		}
		// Missing, or a local tag that is not (yet) the pinned digest:
		// pull, the registry may have what the spec names.
	}
	if err := m.pull(ctx, cli, c, img.pullRef); err != nil {
		return true, err
	}
	if img.digest == "" {
		return true, nil
	}
	var insp image.InspectResponse
	if err := m.call(ctx, c, "inspect image "+img.pullRef, func(ctx context.Context) (err error) {
		insp, err = cli.ImageInspect(ctx, img.pullRef)
		return err
	}); err != nil {
		return true, err
	}
	if !img.digestOK(insp) {
		return true, fmt.Errorf("%w in %s: %s is %s, the spec pins %s", ErrDigestMismatch, c.instance, img.pullRef, strings.Join(insp.RepoDigests, ", "), img.digest)
	}
	return true, nil
}

// digestOK is true when the image is the pinned digest of the same
// repository (or nothing is pinned). RepoDigests are written in familiar
// form ("nginx@sha256:..."), so both sides are normalized.
func (r imageRef) digestOK(insp image.InspectResponse) bool {
	if r.digest == "" {
		return true
	}
	for _, rd := range insp.RepoDigests {
		n, err := reference.ParseNormalizedNamed(rd)
		if err != nil {
			continue
		}
		if dg, ok := n.(reference.Digested); ok && n.Name() == r.named.Name() && dg.Digest().String() == r.digest {
			return true
		}
	}
	return false
}

// pull pulls ref with the credentials of its registry and reads the
// progress stream to the end: the daemon reports most pull failures inside
// the stream of an HTTP 200 response, so an early close would miss them
// (and abort the pull).
func (m *Manager) pull(ctx context.Context, cli *client.Client, c *conn, ref string) error {
	auth, err := registryAuth(m.opts.AuthFile, ref)
	if err != nil {
		return fmt.Errorf("pull %s in %s: %w", ref, c.instance, err)
	}
	ctx, cancel := context.WithTimeout(ctx, m.opts.PullTimeout)
	defer cancel()
	rc, err := cli.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: auth})
	if err != nil {
		return m.connErr(c, "pull "+ref, err)
	}
	defer rc.Close()
	if err := readPullStream(rc); err != nil {
		return m.connErr(c, "pull "+ref, err)
	}
	return nil
}

// pullMessage is the part of Docker's JSON progress message berth reads
// (pkg/jsonmessage has the full type but drags in terminal packages).
type pullMessage struct {
	Status      string `json:"status"`
	Error       string `json:"error"` // the older spelling of ErrorDetail
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// readPullStream consumes a pull's JSON message stream and returns the
// first error reported in it.
func readPullStream(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var msg pullMessage
		if err := dec.Decode(&msg); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading pull progress: %w", err)
		}
		if msg.ErrorDetail != nil && msg.ErrorDetail.Message != "" {
			return errors.New(msg.ErrorDetail.Message)
		}
		if msg.Error != "" {
			return errors.New(msg.Error)
		}
	}
}

// buildConfig turns the desired state into Docker's create request. It
// uses only fields of API 1.41.
//
// Volumes are bind mounts of the system container's filesystem using the
// "src:dst[:ro]" Binds form, whose documented behaviour is to create a
// missing source directory (root-owned), as `docker run -v` and Compose
// do: a first deploy then works before config management has created the
// directory. A path containing ':' cannot be expressed and is refused.
func buildConfig(d Desired, image string) (*container.Config, *container.HostConfig, error) {
	s := d.Spec
	cfg := &container.Config{
		Image:  image,
		User:   s.User,
		Labels: ownership.Container{App: d.App, Slot: d.Slot, Hash: s.Hash(), Revision: d.Revision, Secrets: s.SecretTags()}.Labels(),
	}
	if len(s.Command) > 0 {
		// Cmd, not Entrypoint: the image's entrypoint (if any) still
		// wraps it, as with `docker run IMAGE CMD...`.
		cfg.Cmd = append([]string(nil), s.Command...)
	}
	if len(s.Env) > 0 {
		keys := make([]string, 0, len(s.Env))
		for k := range s.Env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			cfg.Env = append(cfg.Env, k+"="+s.Env[k])
		}
	}
	if hc := s.Healthcheck; hc != nil {
		cfg.Healthcheck = &container.HealthConfig{
			Test:        append([]string(nil), hc.Test...),
			Interval:    hc.Interval.D(),
			Timeout:     hc.Timeout.D(),
			StartPeriod: hc.StartPeriod.D(),
			Retries:     hc.Retries,
			// StartInterval needs API 1.44: never set.
		}
	}
	host := &container.HostConfig{
		NetworkMode: "host",
		// unless-stopped: the app comes back after a crash and after the
		// instance reboots, but a container an operator stopped stays
		// stopped.
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyUnlessStopped},
		// docker-init (tini) as PID 1 forwards SIGTERM and reaps zombies:
		// an app that is PID 1 itself often ignores SIGTERM, and every
		// replacement and delete would then wait out the stop timeout.
		Init: &initProcess,
	}
	hash := s.Hash()
	for _, f := range s.SecretFiles {
		// A mount, not a bind: a missing source (the instance rebooted and
		// its tmpfs is empty) fails the start instead of becoming an empty
		// directory; berth then writes the secrets again and starts it.
		host.Mounts = append(host.Mounts, mount.Mount{
			Type: mount.TypeBind, Source: SecretSource(d.App, hash, f.Target), Target: f.Target, ReadOnly: true,
		})
	}
	for _, v := range s.Volumes {
		if !strings.HasPrefix(v.Source, "/") || !strings.HasPrefix(v.Target, "/") {
			return nil, nil, fmt.Errorf("volume %s:%s: source and target must be absolute paths", v.Source, v.Target)
		}
		if strings.ContainsAny(v.Source+v.Target, ":,") {
			return nil, nil, fmt.Errorf("volume %s -> %s: paths with ':' or ',' are not supported", v.Source, v.Target)
		}
		b := v.Source + ":" + v.Target
		if v.ReadOnly {
			b += ":ro"
		}
		host.Binds = append(host.Binds, b)
	}
	return cfg, host, nil
}

// initProcess is addressed by HostConfig.Init.
var initProcess = true

func isNotFound(err error) bool { return err != nil && cerrdefs.IsNotFound(err) }

// redact replaces env values quoted in a Docker error by "***". Docker's
// create errors do not normally echo env, but a secret must not reach a
// log even if one day they do. Values shorter than 4 bytes are left: they
// would mangle the message and are not meaningful secrets. A redacted
// error drops its chain (which holds the raw text).
func redact(err error, env map[string]string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	out := msg
	for _, v := range env {
		if len(v) >= 4 {
			out = strings.ReplaceAll(out, v, "***")
		}
	}
	if out == msg {
		return err
	}
	return errors.New(out)
}

// Restart restarts app's current container in instance (a clean stop
// within StopTimeout, then start), e.g. so that it reads configuration a
// re-provision changed. It is an error when there is none.
func (m *Manager) Restart(ctx context.Context, instance, app string) error {
	cli, c, err := m.client(ctx, instance)
	if err != nil {
		return err
	}
	cur, _, err := m.findCurrent(ctx, cli, c, instance, app)
	if err != nil {
		return err
	}
	if cur == nil {
		return fmt.Errorf("%s has no container of app %s to restart", instance, app)
	}
	secs := int(m.opts.StopTimeout.Round(time.Second) / time.Second)
	ctx, cancel := context.WithTimeout(ctx, m.opts.StopTimeout+m.opts.CallTimeout)
	defer cancel()
	if err := cli.ContainerRestart(ctx, cur.ID, container.StopOptions{Timeout: &secs}); err != nil {
		return m.connErr(c, "restart container "+cur.Name, err)
	}
	m.logger(ctx).Info("container restarted", "instance", instance, "app", app, "container", strings.TrimPrefix(cur.Name, "/"))
	return nil
}
