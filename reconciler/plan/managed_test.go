package plan

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/spec"
)

var provisioned = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// withProvision gives app a provision and marks obs as having run it.
func withProvision(app spec.App, every time.Duration) spec.App {
	return with(app, func(a *spec.App) {
		a.Spec.System.Provision = &spec.Provision{
			Files:   []spec.ProvisionFile{{Source: "files/motd", Path: "/etc/motd", Mode: "0644", Owner: "0:0", Digest: "aa"}},
			Run:     []string{"/bin/sh", "-c", "true"},
			Timeout: spec.Duration(time.Minute),
			Every:   spec.Duration(every),
		}
	})
}

func provisionedFleet(app spec.App) []Instance {
	insts := fleet(app)
	for i := range insts {
		insts[i].Config[ownership.KeyProvisionHash] = app.Spec.System.Provision.Hash()
		insts[i].Config[ownership.KeyProvisionedAt] = provisioned.Format(time.RFC3339)
	}
	return insts
}

func TestProvisionChangeRunsInPlace(t *testing.T) {
	old := withProvision(testApp("web", 3), 0)
	insts := provisionedFleet(old)
	app := with(old, func(a *spec.App) {
		p := *a.Spec.System.Provision
		p.Files = []spec.ProvisionFile{{Source: "files/motd", Path: "/etc/motd", Mode: "0644", Owner: "0:0", Digest: "bb"}}
		a.Spec.System.Provision = &p
	})
	pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, Observed{Instances: insts}, Policy{})
	h0, h1 := old.Spec.System.Provision.Hash(), app.Spec.System.Provision.Hash()
	want := []string{
		"1 web-0 provision (system.provision: " + h0 + " → " + h1 + ")",
		"2 web-1 provision (system.provision: " + h0 + " → " + h1 + ")",
		"3 web-2 provision (system.provision: " + h0 + " → " + h1 + ")",
	}
	if got := stepLines(pl); !slices.Equal(got, want) {
		t.Fatalf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if pl.Steps[0].ProvisionHash != h1 {
		t.Errorf("step provision hash %q, want %q", pl.Steps[0].ProvisionHash, h1)
	}
	// The system hash leaves the provision out: no recreate, and a
	// timeout change re-runs nothing.
	timeout := with(old, func(a *spec.App) {
		p := *a.Spec.System.Provision
		p.Timeout = spec.Duration(time.Hour)
		a.Spec.System.Provision = &p
	})
	if pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{timeout}}, Observed{Instances: insts}, Policy{}); len(pl.Steps) != 0 {
		t.Errorf("a timeout change planned %v", stepLines(pl))
	}
}

func TestProvisionPendingIsNotReadyAndRunsAgain(t *testing.T) {
	app := withProvision(testApp("web", 2), 0)
	insts := provisionedFleet(app)
	insts[1].Config[ownership.KeyProvisionHash] = ownership.ProvisionPending
	if av := ReplicaAvailability(&insts[1]); av != Unavailable {
		t.Fatalf("a replica whose provision failed is %v", av)
	}
	if why := NotReadyReason(&insts[1]); !strings.Contains(why, "provision") {
		t.Errorf("NotReadyReason = %q", why)
	}
	pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, Observed{Instances: insts}, Policy{})
	if got := stepLines(pl); len(got) != 1 || !strings.HasPrefix(got[0], "1 web-1 provision (system.provision: not done") {
		t.Errorf("steps %q", got)
	}
	st := BuildStatus("", &Desired{Revision: testRev, Apps: []spec.App{app}}, Observed{Instances: insts}, &pl)
	if r := st.Apps[0].Replicas[1]; r.Ready || !strings.Contains(r.Error, "provision") {
		t.Errorf("status replica %+v", r)
	}
}

func TestProvisionEveryIsSpread(t *testing.T) {
	app := withProvision(testApp("web", 20), 24*time.Hour)
	insts := provisionedFleet(app)
	plan := func(at time.Time) int {
		pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, Observed{Instances: insts, At: at}, Policy{})
		n := 0
		for _, s := range append(pl.Steps, waitingSteps(pl)...) {
			if s.Action == Provision {
				n++
			}
		}
		return n
	}
	if n := plan(provisioned.Add(20 * time.Hour)); n != 0 {
		t.Errorf("%d replicas due after 20h of 24h", n)
	}
	if n := plan(provisioned.Add(23 * time.Hour)); n == 0 || n == 20 {
		t.Errorf("%d of 20 replicas due after 23h: want them spread over the last tenth of the period", n)
	}
	if n := plan(provisioned.Add(24 * time.Hour)); n != 20 {
		t.Errorf("%d of 20 replicas due after 24h", n)
	}
	if n := plan(time.Time{}); n != 0 {
		t.Errorf("%d replicas due with no time observed", n)
	}
}

func waitingSteps(pl Plan) []Step {
	var out []Step
	for _, w := range pl.Waiting {
		out = append(out, w.Step)
	}
	return out
}

func TestBaseImageMoved(t *testing.T) {
	app := testApp("web", 2)
	insts := fleet(app) // built from "abc123"
	images := []Image{
		{Fingerprint: "abc123", Created: provisioned},
		{Fingerprint: "def4567890", Aliases: []string{"debian-docker"}, Created: provisioned.Add(24 * time.Hour)},
	}
	obs := Observed{Instances: insts, Images: images, At: provisioned.Add(72 * time.Hour)}
	pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{})
	want := []string{"1 web-0 recreate (base image: abc123 → def45678)", "2 web-1 recreate (base image: abc123 → def45678)"}
	if got := stepLines(pl); !slices.Equal(got, want) {
		t.Errorf("rolling: %q, want %q", got, want)
	}
	st := BuildStatus("", &Desired{Revision: testRev, Apps: []spec.App{app}}, obs, &pl)
	if r := st.Apps[0].Replicas[0]; !r.BaseImageOutdated || r.BaseImage != "abc123" || r.BaseImageAge != "72h" {
		t.Errorf("status replica %+v", r)
	}

	manual := with(app, func(a *spec.App) { a.Spec.System.ImageUpdate = spec.ImageUpdateManual })
	pl = MakePlan(Desired{Revision: testRev, Apps: []spec.App{manual}}, obs, Policy{})
	if len(pl.Steps) != 0 || len(pl.Warnings) != 2 || !strings.Contains(pl.Warnings[0], "imageUpdate: manual") {
		t.Errorf("manual: steps %q warnings %q", stepLines(pl), pl.Warnings)
	}

	// Up to date, a fingerprint in the spec, or images not observed:
	// nothing to do.
	for name, o := range map[string]Observed{
		"current":      {Instances: insts, Images: []Image{{Fingerprint: "abc123", Aliases: []string{"debian-docker"}}}},
		"not observed": {Instances: insts},
	} {
		if pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, o, Policy{}); len(pl.Steps) != 0 {
			t.Errorf("%s: %q", name, stepLines(pl))
		}
	}
}

func TestSystemOnlyApp(t *testing.T) {
	app := with(testApp("db", 2), func(a *spec.App) {
		a.Spec.Container = spec.Container{}
		a.Spec.System.Ports = []spec.Port{{Name: "pg", Port: 5432, Protocol: spec.ProtocolTCP}}
	})
	insts := fleet(app)
	for i := range insts {
		insts[i].Container = nil
	}
	if insts[0].Config[ownership.KeySystemOnly] != "true" {
		t.Fatalf("managed config of a system-only app lacks %s: %v", ownership.KeySystemOnly, insts[0].Config)
	}
	pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, Observed{Instances: insts}, Policy{})
	if len(pl.Steps) != 0 || !pl.Converged() {
		t.Fatalf("converged system-only app planned %q (unready %v)", stepLines(pl), pl.Unready)
	}
	insts[1].ClosedPorts = []string{"5432/tcp"}
	if av := ReplicaAvailability(&insts[1]); av != Unavailable {
		t.Errorf("closed port: %v", av)
	}
	insts[1].ClosedPorts = nil
	insts[1].Status = "Stopped"
	pl = MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, Observed{Instances: insts}, Policy{})
	if got := stepLines(pl); !slices.Equal(got, []string{"1 db-1 start (status: Stopped → Running)"}) {
		t.Errorf("stopped: %q", got)
	}

	// Adding a container to a system-only app builds its replicas anew.
	withCtr := with(app, func(a *spec.App) { a.Spec.Container = testApp("db", 1).Spec.Container })
	insts[1].Status = StatusRunning
	pl = MakePlan(Desired{Revision: testRev, Apps: []spec.App{withCtr}}, Observed{Instances: insts}, Policy{})
	if got := stepLines(pl); len(got) != 2 || !strings.Contains(got[0], "recreate (container: absent (system-only) → present") {
		t.Errorf("container added: %q", got)
	}
}

func TestProvisionDroppedWhilePending(t *testing.T) {
	old := withProvision(testApp("web", 1), 0)
	insts := provisionedFleet(old)
	insts[0].Config[ownership.KeyProvisionHash] = ownership.ProvisionPending
	pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{testApp("web", 1)}}, Observed{Instances: insts}, Policy{})
	if got := stepLines(pl); !slices.Equal(got, []string{"1 web-0 update-in-place (user.berth.provision-hash: pending → )"}) {
		t.Errorf("provision dropped while pending: %q", got)
	}
}
