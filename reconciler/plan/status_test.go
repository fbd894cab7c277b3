package plan_test

import (
	"encoding/json"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/spec"
)

// Status and pl use one definition of "ready" and one identity parser,
// so they cannot disagree about the same instance.
func TestStatusAgreesWithPlan(t *testing.T) {
	old := plantest.App("web", 3, 1, "reg/web:1")
	now := plantest.App("web", 3, 1, "reg/web:2")
	obs := plantest.Converged(old)
	// web-0 runs the new version but is still starting (an interrupted
	// rollout): not ready for the planner, not ready for the status.
	obs.Instances[0].Container.Labels[ownership.LabelContainerHash] = now.Spec.Container.Hash()
	obs.Instances[0].Container.Labels[ownership.LabelRevision] = "r2"
	obs.Instances[0].Container.Image = now.Spec.Container.Image
	obs.Instances[0].Container.Health = "starting"
	desired := plan.Desired{Revision: "r2", Apps: []spec.App{now}}
	pl := plan.MakePlan(desired, obs, plan.Policy{})
	st := plan.BuildStatus("", &desired, obs, &pl)
	if len(st.Apps) != 1 {
		t.Fatalf("apps = %+v", st.Apps)
	}
	a := st.Apps[0]
	if a.Ready != 2 || a.Replicas[0].Ready || a.Health != plan.HealthProgressing {
		t.Errorf("ready = %d, web-0 ready = %v, health %s; want 2, false, Progressing", a.Ready, a.Replicas[0].Ready, a.Health)
	}
	// A halted rollout is not Synced: the waiting replicas are drift.
	if a.Sync != plan.SyncOutOfSync || len(a.Drift) != 2 || !strings.Contains(a.Drift[0], "web-1 replace-container (container.image) waiting: web-0 unavailable") {
		t.Errorf("sync %s, drift %q", a.Sync, a.Drift)
	}
	// The replica's revision is the one its container runs.
	if r := a.Replicas[0]; r.Revision != "r2" || r.SystemRevision != "r1" {
		t.Errorf("web-0 revision %q (system %q), want r2 (system r1)", r.Revision, r.SystemRevision)
	}
}

func TestStatusReplicaDetails(t *testing.T) {
	a := plantest.App("web", 3, 1, "reg/web:1")
	obs := plantest.Converged(a)
	obs.Instances[0].Container.State = "exited"
	obs.Instances[0].Container.Health = ""
	obs.Instances[1].Container = nil
	obs.Instances[1].DockerError = "exit status 1"
	// A garbled slot is not a replica of the app (the planner agrees).
	obs.Instances[2].Config[ownership.KeySlot] = "02"
	desired := plan.Desired{Revision: "r1", Apps: []spec.App{a}}
	pl := plan.MakePlan(desired, obs, plan.Policy{})
	st := plan.BuildStatus("", &desired, obs, &pl)
	v := st.Apps[0]
	if len(v.Replicas) != 2 || v.Ready != 0 {
		t.Fatalf("replicas %+v", v.Replicas)
	}
	if e := v.Replicas[0].Error; e != "container exited" {
		t.Errorf("web-0 error %q", e)
	}
	if e := v.Replicas[1].Error; !strings.HasPrefix(e, "docker not answering") {
		t.Errorf("web-1 error %q", e)
	}
	if txt := st.Text(); strings.Contains(txt, "exited (") {
		t.Errorf("an exited container shows a health:\n%s", txt)
	}
}

// An app held for an invalid spec keeps its replicas: its desired count is
// what it has, never the -1 of "unknown".
func TestStatusHeldAppDesired(t *testing.T) {
	a := plantest.App("web", 2, 1, "reg/web:1")
	obs := plantest.Converged(a)
	desired := plan.Desired{Revision: "r2", HeldApps: []string{"web"}}
	pl := plan.MakePlan(desired, obs, plan.Policy{})
	st := plan.BuildStatus("", &desired, obs, &pl)
	if v := st.Apps[0]; v.Desired != 2 || v.Sync != plan.SyncHeld {
		t.Errorf("held app: desired %d, sync %s", v.Desired, v.Sync)
	}
}

// An owned instance whose keys do not name it is left alone by the planner
// and kept out of the status, with the parser's reason in the warnings.
func TestGarbledInstancesAreLeftAlone(t *testing.T) {
	a := plantest.App("web", 2, 1, "reg/web:1")
	obs := plantest.Converged(a)
	obs.Instances[0].Config[ownership.KeySlot] = "00"
	obs.Instances[1].Config[ownership.KeySlot] = "0"
	desired := plan.Desired{Revision: "r1", Apps: []spec.App{a}}
	p := plan.MakePlan(desired, obs, plan.Policy{})
	warn := strings.Join(p.Warnings, "\n")
	if !strings.Contains(warn, `instance web-0: user.berth.slot "00" is not a slot number (owned by berth); left alone`) ||
		!strings.Contains(warn, "instance web-1 is labelled as web-0 (owned by berth); left alone") {
		t.Errorf("warnings:\n%s", warn)
	}
	for _, s := range p.Steps {
		if s.Action == plan.Delete || s.Instance == "web-1" && s.Action != plan.Create {
			t.Errorf("a garbled instance was touched: %+v", s)
		}
	}
	if st := plan.BuildStatus("", &desired, obs, &p); len(st.Apps[0].Replicas) != 0 {
		t.Errorf("status counts garbled instances: %+v", st.Apps[0].Replicas)
	}
}

// A replica that runs its desired spec and is not ready, with no step that
// would fix it (here: a declared port nothing listens on), is not "No
// changes": the plan names it and is not converged.
func TestUnreadyReplicasAreNotConverged(t *testing.T) {
	a := plantest.App("web", 2, 1, "reg/web:1")
	obs := plantest.Converged(a)
	obs.Instances[1].ClosedPorts = []string{"9999/tcp"}
	p := plan.MakePlan(plan.Desired{Revision: "r1", Apps: []spec.App{a}}, obs, plan.Policy{})
	if !p.Empty() || p.Converged() || len(p.Unready) != 1 || p.Unready[0].Instance != "web-1" || p.Unready[0].Why != "port 9999/tcp closed" {
		t.Fatalf("unready: %+v\n%s", p.Unready, p.Text())
	}
	if s := p.Summary(); s != "Nothing to do now: 1 not ready." || !strings.Contains(p.Text(), "? web-1: port 9999/tcp closed") {
		t.Errorf("summary %q\n%s", s, p.Text())
	}
}

// Volumes attached to no instance are shown per app with their size, in
// the text and the JSON; a removed app's kept volumes show the app as
// Orphaned. Attached volumes and other owners' are not retained.
func TestStatusRetainedVolumes(t *testing.T) {
	a := plantest.App("kv", 1, 1, "reg/kv:1")
	obs := plantest.Converged(a)
	vol := func(app string, slot int, size string, owner string, attached ...string) plan.Volume {
		cfg := ownership.Volume{Owner: owner, App: app, Name: "data", Slot: slot}.Config()
		if size != "" {
			cfg["size"] = size
		}
		return plan.Volume{Name: ownership.VolumeName(app, "data", slot), Pool: "default", Location: "none", Config: cfg, AttachedTo: attached}
	}
	obs.Volumes = []plan.Volume{
		vol("kv", 2, "2GiB", plan.DefaultOwner),
		vol("kv", 0, "1GiB", plan.DefaultOwner, "kv-0"),
		vol("kv", 1, "512MiB", plan.DefaultOwner),
		vol("gone", 0, "", plan.DefaultOwner),
		vol("theirs", 0, "1GiB", "someone-else"),
	}
	desired := plan.Desired{Revision: "r1", Apps: []spec.App{a}}
	pl := plan.MakePlan(desired, obs, plan.Policy{})
	st := plan.BuildStatus("", &desired, obs, &pl)
	if len(st.Apps) != 2 || st.Apps[0].App != "gone" || st.Apps[1].App != "kv" {
		t.Fatalf("apps %+v", st.Apps)
	}
	if g := st.Apps[0]; g.Sync != plan.SyncOrphaned || g.Desired != 0 || len(g.RetainedVolumes) != 1 || g.RetainedVolumes[0].Bytes != 0 {
		t.Errorf("gone: %+v", g)
	}
	kv := st.Apps[1].RetainedVolumes
	if len(kv) != 2 || kv[0] != (plan.VolumeView{Name: "kv-data-1", Volume: "data", Slot: 1, Pool: "default", Size: "512MiB", Bytes: 512 << 20}) || kv[1].Name != "kv-data-2" || kv[1].Bytes != 2<<30 {
		t.Errorf("kv retained %+v", kv)
	}
	txt := st.Text()
	for _, want := range []string{
		"  retained volume gone-data-0 (data of slot 0), -, pool default\n",
		"  retained volume kv-data-1 (data of slot 1), 512MiB, pool default\n  retained volume kv-data-2 (data of slot 2), 2GiB, pool default\n",
	} {
		if !strings.Contains(txt, want) {
			t.Errorf("text lacks %q:\n%s", want, txt)
		}
	}
	if strings.Contains(txt, "theirs") || strings.Contains(txt, "kv-data-0") {
		t.Errorf("text shows a volume that is not retained:\n%s", txt)
	}
	b, err := json.Marshal(st.Apps[1])
	if err != nil || !strings.Contains(string(b), `"retainedVolumes":[{"name":"kv-data-1","volume":"data","slot":1,"pool":"default","size":"512MiB","bytes":536870912}`) {
		t.Errorf("json %s %v", b, err)
	}
}
