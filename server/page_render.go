package server

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/berth-gitops/berth/discovery"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
)

// The page's template and assets are embedded: the binary serves them, and
// there is no build step for them.
//
//go:embed ui
var uiFS embed.FS

// Every value reaches the page through html/template, which escapes it for
// where it lands (text, attribute, URL). Nothing is ever marked as
// template.HTML: spec values, commit subjects and errors are untrusted.
var pageTemplate = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"short": plan.ShortSHA,
	"dur":   humanDuration,
	"stamp": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
}).ParseFS(uiFS, "ui/page.html"))

// pageData is what the template renders.
type pageData struct {
	Started   time.Time
	Owner     string
	Title     string
	Summary   string
	Apps      []appView
	Run       *runView
	Daemon    daemonView
	Conflicts []plan.Conflict
	Problems  []string
	History   int
}

type appView struct {
	Name           string
	Ready, Desired int
	// Health is Ready, Progressing, Degraded, Held, Stalled, OutOfSync or
	// Orphaned; Tone is its colour (ok, busy, bad, held).
	Health, Tone, Reason string
	Sync                 string
	Revision             revisionView
	// Desired revision when the app runs another (held, failed).
	Target   *revisionView
	Held     *heldView
	Pending  []string
	Replicas []replicaView
	// RetainedVolumes are volumes no instance has attached (kept on a
	// scale-down or the app's removal): data that takes room.
	RetainedVolumes []plan.VolumeView
	DNSName         string
	Ports           []string
	History         []Rollout
}

type revisionView struct {
	SHA, Subject, Author string
}

type heldView struct {
	Revision   revisionView
	Reason     string
	Stalled    bool
	RetryAfter time.Time
	Count      int
}

type replicaView struct {
	Instance, Member, Address, Image string
	Ready                            bool
	Health, Tone, Why                string
	Revision                         string
	BaseImage                        string
	BaseImageAge                     string
	Drift                            []string
	Endpoints                        []string
}

type runView struct {
	Revision revisionView
	Started  time.Time
	Steps    []StepState
	Done     int
}

type daemonView struct {
	Phase, LeaseHolder, LastResult, LastError, SourceWarning string
	LXDEndpoint                                              string
	LeaseExpiry, LastRun, NextRun                            time.Time
	Revision                                                 revisionView
	HeldRevision                                             *reconciler.AppFailure
	Errors                                                   []FailedRun
}

// render writes the whole page.
func (p *Page) render(w io.Writer) error {
	return pageTemplate.ExecuteTemplate(w, "page.html", p.data().pageData)
}

// mainHTML is the content of <main> alone, what an event carries, and the
// channel that is closed at the next change.
func (p *Page) mainHTML() (string, <-chan struct{}, error) {
	var b bytes.Buffer
	d := p.data()
	err := pageTemplate.ExecuteTemplate(&b, "main", d.pageData)
	return b.String(), d.wake, err
}

// data builds the view of the page from the status and what the hooks
// gathered.
func (p *Page) data() pageDataWake {
	b := p.newPageBuilder()
	st := b.st
	d := pageData{Started: p.started, Owner: st.Owner, Conflicts: st.Conflicts, Problems: st.Diagnostics,
		History: p.cfg.History}
	d.Daemon = b.daemonView()
	counts := map[string]int{}
	for _, a := range st.Apps {
		av := b.appView(a)
		counts[av.Health]++
		d.Apps = append(d.Apps, av)
	}
	if run := b.snap.current; run != nil {
		d.Run = b.runView(run)
	}
	d.Summary, d.Title = summary(d.Apps, counts, d.Run != nil)
	return pageDataWake{pageData: d, wake: b.snap.wake}
}

// pageBuilder is what one build of the page reads: a single status and a
// single snapshot, taken once, so every part of the page agrees with the
// others.
type pageBuilder struct {
	snap    snapshot
	st      reconciler.LoopStatus
	dnsZone string
	// endpointApps is discovery's view of the apps; nil when discovery
	// has none to give (its hook is unset or it has not looked yet).
	endpointApps []discovery.App
	observed     observedIndex
}

func (p *Page) newPageBuilder() *pageBuilder {
	b := &pageBuilder{snap: p.snapshot(), st: p.cfg.Status(), dnsZone: p.cfg.DNSZone}
	if p.cfg.Endpoints != nil {
		if eps, ok := p.cfg.Endpoints(); ok {
			b.endpointApps = eps.Apps
		}
	}
	b.observed = indexObserved(b.snap.view)
	return b
}

// rev is a revision with its commit's subject and author when the hooks
// gathered them; the status's own subject stands in for its revision's.
func (b *pageBuilder) rev(sha string) revisionView {
	c := b.snap.commits[sha]
	if c.subject == "" && sha == b.st.Revision {
		c.subject = b.st.Subject
	}
	return revisionView{SHA: sha, Subject: c.subject, Author: c.author}
}

func (b *pageBuilder) daemonView() daemonView {
	st := b.st
	dv := daemonView{Phase: st.Phase, LeaseHolder: st.LeaseHolder, LeaseExpiry: st.LeaseExpiry,
		LastRun: st.LastRun, LastResult: st.LastResult, LastError: st.LastError, NextRun: st.NextRun,
		SourceWarning: st.SourceWarning, HeldRevision: st.HeldRevision, Errors: b.snap.errors, LXDEndpoint: st.LXDEndpoint}
	if st.Revision != "" {
		dv.Revision = b.rev(st.Revision)
	}
	return dv
}

// observedIndex is the latest observe's instances and images by name and
// fingerprint, and when it looked.
type observedIndex struct {
	instances map[string]*plan.Instance
	images    map[string]plan.Image
	at        time.Time
}

// indexObserved indexes the latest view; a nil view (no observe yet)
// gives empty maps and a zero time.
func indexObserved(v *reconciler.View) observedIndex {
	o := observedIndex{instances: map[string]*plan.Instance{}, images: map[string]plan.Image{}}
	if v == nil {
		return o
	}
	for i := range v.Observed.Instances {
		o.instances[v.Observed.Instances[i].Name] = &v.Observed.Instances[i]
	}
	for _, img := range v.Observed.Images {
		o.images[img.Fingerprint] = img
	}
	o.at = v.Observed.At
	if o.at.IsZero() {
		o.at = v.At
	}
	return o
}

// appView is one app's card: its health, the revision it runs and the
// one Git wants, and its replicas and ports.
func (b *pageBuilder) appView(a plan.AppStatusView) appView {
	st := b.st
	av := appView{Name: a.App, Ready: a.Ready, Desired: a.Desired, Sync: a.Sync, History: b.snap.history[a.App]}
	av.Health, av.Tone, av.Reason = appHealth(a, st.Failures[a.App])
	// What the app runs is the last revision it rolled out fully;
	// while it rolls out, is held or failed, Git wants another.
	runs := st.LastGood[a.App]
	if runs != "" {
		av.Revision = b.rev(runs)
	}
	if st.Revision != "" && runs != st.Revision {
		t := b.rev(st.Revision)
		av.Target = &t
	}
	if f, ok := st.Failures[a.App]; ok {
		av.Held = &heldView{Revision: b.rev(f.Revision), Reason: f.Reason, Stalled: f.Retry == reconciler.Stalled,
			RetryAfter: f.RetryAfter, Count: f.Count}
	}
	av.Pending = a.Drift
	epApp := findEndpointApp(b.endpointApps, a.App)
	if b.dnsZone != "" {
		av.DNSName = a.App + "." + strings.TrimSuffix(b.dnsZone, ".")
	}
	byInstance := driftByInstance(a.Drift)
	for _, r := range a.Replicas {
		av.Replicas = append(av.Replicas, b.replicaView(r, byInstance[r.Instance], epApp))
	}
	av.RetainedVolumes = a.RetainedVolumes
	av.Ports = appPorts(epApp, av.DNSName)
	return av
}

// driftByInstance groups the app's pending changes by the instance each
// line starts with, for the replica rows.
func driftByInstance(drift []string) map[string][]string {
	byInstance := map[string][]string{}
	for _, line := range drift {
		inst, _, _ := strings.Cut(line, " ")
		byInstance[inst] = append(byInstance[inst], line)
	}
	return byInstance
}

// findEndpointApp is discovery's entry for the app, nil when it has none.
// The last entry of that name wins.
func findEndpointApp(apps []discovery.App, name string) *discovery.App {
	var found *discovery.App
	for i := range apps {
		if apps[i].Name == name {
			found = &apps[i]
		}
	}
	return found
}

// replicaView is one replica's row: its health, where it runs, its base
// image and its age, and the endpoints discovery gives it.
func (b *pageBuilder) replicaView(r plan.ReplicaView, drift []string, epApp *discovery.App) replicaView {
	rv := replicaView{Instance: r.Instance, Address: r.Address, Image: r.Image, Ready: r.Ready,
		Revision: r.Revision, Drift: drift}
	rv.Health, rv.Tone, rv.Why = replicaHealth(r)
	if inst := b.observed.instances[r.Instance]; inst != nil {
		rv.Member = inst.Location
		if inst.BaseImage != "" {
			rv.BaseImage = inst.BaseImage
			if img, ok := b.observed.images[inst.BaseImage]; ok && !img.Created.IsZero() && !b.observed.at.IsZero() {
				rv.BaseImageAge = humanDuration(b.observed.at.Sub(img.Created))
			}
		}
	}
	if epApp != nil {
		addReplicaEndpoints(&rv, epApp.Replicas)
	}
	// LXD gives "none" as the location on a single host: there is no
	// member to show.
	if rv.Member == "none" {
		rv.Member = ""
	}
	return rv
}

// addReplicaEndpoints fills the replica's endpoints, address:port/protocol,
// from discovery's rows for its instance, and its member when the observe
// did not give one.
func addReplicaEndpoints(rv *replicaView, replicas []discovery.Replica) {
	for _, er := range replicas {
		if er.Instance != rv.Instance {
			continue
		}
		if rv.Member == "" {
			rv.Member = er.Member
		}
		for _, port := range er.Ports {
			if er.Address != "" {
				rv.Endpoints = append(rv.Endpoints, fmt.Sprintf("%s:%d/%s", er.Address, port.Port, port.Protocol))
			}
		}
	}
}

// appPorts lists the app's ports, port/protocol, with the port's name and
// its SRV record when it has one. Every replica declares the same ports,
// so the first one's stand for the app.
func appPorts(epApp *discovery.App, dnsName string) []string {
	if epApp == nil || len(epApp.Replicas) == 0 {
		return nil
	}
	var ports []string
	for _, port := range epApp.Replicas[0].Ports {
		name := fmt.Sprintf("%d/%s", port.Port, port.Protocol)
		if port.Name != "" {
			name = port.Name + " " + name
			if dnsName != "" {
				name += fmt.Sprintf(" (SRV _%s._%s.%s)", port.Name, port.Protocol, dnsName)
			}
		}
		ports = append(ports, name)
	}
	return ports
}

// runView is the run in progress and how many of its steps have ended.
func (b *pageBuilder) runView(run *Run) *runView {
	rv := &runView{Revision: b.rev(run.Revision), Started: run.Started, Steps: run.Steps}
	for _, s := range run.Steps {
		if s.State == StepDone || s.State == StepFailed {
			rv.Done++
		}
	}
	return rv
}

type pageDataWake struct {
	pageData
	wake <-chan struct{}
}

// appHealth is the one word the overview shows for an app, the most
// telling first, with its tone and reason.
func appHealth(a plan.AppStatusView, f reconciler.AppFailure) (health, tone, reason string) {
	switch {
	case f.Revision != "" && f.Retry == reconciler.Stalled:
		return reconciler.AppStatusStalled, "bad", f.Reason
	case f.Revision != "":
		return reconciler.AppStatusHeld, "held", f.Reason
	case a.Sync == plan.SyncHeld:
		return reconciler.AppStatusHeld, "held", "its spec is invalid at this revision: the last applied state is kept"
	case a.Sync == plan.SyncOrphaned:
		return plan.SyncOrphaned, "busy", "gone from Git: its replicas are being removed"
	case a.Blocked != "":
		return reconciler.AppStatusBlocked, "busy", a.Blocked
	case a.Health == plan.HealthDegraded || a.Health == plan.HealthMissing:
		return plan.HealthDegraded, "bad", orText(a.LastError, fmt.Sprintf("%d of %d replicas ready", a.Ready, a.Desired))
	case a.Health == plan.HealthProgressing:
		return plan.HealthProgressing, "busy", orText(a.LastError, "replicas starting")
	case a.Sync == plan.SyncOutOfSync:
		return plan.SyncOutOfSync, "busy", fmt.Sprintf("%d change(s) pending", len(a.Drift))
	}
	return "Ready", "ok", ""
}

func replicaHealth(r plan.ReplicaView) (health, tone, why string) {
	if r.Ready {
		return "Ready", "ok", ""
	}
	why = r.Error
	if why == "" && len(r.ClosedPorts) > 0 {
		why = "closed: " + strings.Join(r.ClosedPorts, ", ")
	}
	if why == "" {
		why = "instance " + strings.ToLower(orText(r.Status, "unknown"))
		if r.Container != "" {
			why += ", container " + r.Container
		}
		if r.Health != "" {
			why += " (" + r.Health + ")"
		}
	}
	if r.Status == "Running" && (r.Health == "starting" || r.Container == "created") {
		return "Starting", "busy", why
	}
	return "Not ready", "bad", why
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// summary is the line under the heading and the document's title.
func summary(apps []appView, counts map[string]int, running bool) (line, title string) {
	if len(apps) == 0 {
		return "No apps yet.", "berth"
	}
	words := make([]string, 0, len(counts))
	for h, n := range counts {
		words = append(words, fmt.Sprintf("%d %s", n, strings.ToLower(h)))
	}
	sort.Strings(words)
	line = fmt.Sprintf("%d app(s): %s.", len(apps), strings.Join(words, ", "))
	title = "berth"
	if bad := len(apps) - counts["Ready"]; bad > 0 {
		title = fmt.Sprintf("berth (%d not ready)", bad)
	}
	if running {
		line += " A run is in progress."
	}
	return line, title
}

// humanDuration rounds d to what a person reads: 850ms, 12s, 4m10s, 3h,
// 2d.
func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + humanDuration(-d)
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		d = d.Round(time.Second)
		m, s := d/time.Minute, (d%time.Minute)/time.Second
		if s == 0 {
			return fmt.Sprintf("%dm", m)
		}
		return fmt.Sprintf("%dm%ds", m, s)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Round(time.Hour)/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}
