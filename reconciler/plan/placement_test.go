package plan

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/spec"
)

func cluster(statuses ...string) []Member {
	var out []Member
	for i, s := range statuses {
		out = append(out, Member{Name: "m" + string(rune('1'+i)), Status: s, Groups: []string{"default"}})
	}
	return out
}

func targets(pl Plan) map[string]string {
	out := map[string]string{}
	for _, s := range pl.Steps {
		out[s.Instance] = s.Target
	}
	return out
}

func perMember(m map[string]string) map[string]int {
	out := map[string]int{}
	for _, t := range m {
		out[t]++
	}
	return out
}

func TestPlacementSpreadsAndIsDeterministic(t *testing.T) {
	app := testApp("web", 3)
	obs := Observed{Members: cluster("Online", "Online", "Online")}
	pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{})
	got := targets(pl)
	if n := perMember(got); len(n) != 3 || n["m1"] != 1 || n["m2"] != 1 || n["m3"] != 1 {
		t.Fatalf("3 replicas on 3 members: %v", got)
	}
	again := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{})
	if !slices.Equal(stepLines(pl), stepLines(again)) || pl.Text() != again.Text() {
		t.Error("the same input placed differently")
	}
	if !strings.Contains(pl.Text(), "  on m") {
		t.Errorf("the plan does not say where:\n%s", pl.Text())
	}

	// Placed replicas stay put; scaling to 5 balances the new ones.
	insts := fleet(app)
	for i := range insts {
		insts[i].Location = got[insts[i].Name]
	}
	obs.Instances = insts
	five := MakePlan(Desired{Revision: testRev, Apps: []spec.App{with(app, func(a *spec.App) { a.Spec.Replicas = 5 })}}, obs, Policy{})
	all := targets(five)
	for _, i := range insts {
		all[i.Name] = i.Location
	}
	n := perMember(all)
	if len(five.Steps) != 2 || max(n["m1"], n["m2"], n["m3"])-min(n["m1"], n["m2"], n["m3"]) > 1 {
		t.Errorf("scale to 5: steps %q, per member %v", stepLines(five), n)
	}

	// A recreate (new system image) stays on its member.
	img := MakePlan(Desired{Revision: testRev, Apps: []spec.App{with(app, func(a *spec.App) { a.Spec.System.Image = "other" })}}, obs, Policy{})
	for _, s := range img.Steps {
		if s.Action != Recreate || s.Target != got[s.Instance] {
			t.Errorf("recreate moved %s: %+v", s.Instance, s)
		}
	}
}

func TestPlacementMembersRestrictAndMove(t *testing.T) {
	app := testApp("web", 2)
	obs := Observed{Members: cluster("Online", "Online", "Online")}
	only := with(app, func(a *spec.App) { a.Spec.System.Placement = &spec.Placement{Members: []string{"m3"}} })
	pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{only}}, obs, Policy{})
	for _, s := range pl.Steps {
		if s.Target != "m3" {
			t.Errorf("members [m3]: %s on %q", s.Instance, s.Target)
		}
	}

	insts := fleet(app)
	insts[0].Location, insts[1].Location = "m1", "m3"
	obs.Instances = insts
	pl = MakePlan(Desired{Revision: testRev, Apps: []spec.App{only}}, obs, Policy{})
	if got := stepLines(pl); !slices.Equal(got, []string{"1 web-0 recreate (placement: m1 → m3)"}) || pl.Steps[0].Target != "m3" {
		t.Errorf("move off m1: %q", got)
	}

	grp := with(app, func(a *spec.App) { a.Spec.System.Placement = &spec.Placement{Group: "gpu"} })
	pl = MakePlan(Desired{Revision: testRev, Apps: []spec.App{grp}}, Observed{Members: cluster("Online")}, Policy{})
	if len(pl.Steps) != 0 || len(pl.Unplaceable) != 2 || pl.Converged() {
		t.Errorf("no member in group gpu: steps %q unplaceable %+v", stepLines(pl), pl.Unplaceable)
	}
}

// Replicas no member can take block the plan, with the reason: never
// "No changes." (issue 18 #5).
func TestPlacementNowhereBlocks(t *testing.T) {
	app := testApp("web", 2)
	onlyM9 := with(app, func(a *spec.App) { a.Spec.System.Placement = &spec.Placement{Members: []string{"m9"}} })
	gpu := with(app, func(a *spec.App) { a.Spec.System.Placement = &spec.Placement{Group: "gpu"} })
	placed := fleet(app)
	placed[0].Location, placed[1].Location = "m1", "m2"
	for _, c := range []struct {
		name    string
		app     spec.App
		members []Member
		insts   []Instance
		action  Action
		why     string
	}{
		{"a typo in members", onlyM9, cluster("Online", "Online"), nil, Create, "placement.members: m9 is not a cluster member"},
		{"every member offline", app, cluster("Offline", "Evacuated"), nil, Create, "allowed members not online: m1 offline, m2 evacuated"},
		{"no member in the group", gpu, cluster("Online"), nil, Create, "placement.group: no allowed member is in group gpu"},
		{"a move nowhere", onlyM9, cluster("Online", "Online"), placed, Recreate, "placement.members: m9 is not a cluster member"},
	} {
		t.Run(c.name, func(t *testing.T) {
			pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{c.app}}, Observed{Instances: c.insts, Members: c.members}, Policy{})
			if len(pl.Steps) != 0 || len(pl.Unplaceable) != 2 {
				t.Fatalf("steps %q, unplaceable %+v", stepLines(pl), pl.Unplaceable)
			}
			for i, u := range pl.Unplaceable {
				want := Unplaceable{App: "web", Instance: "web-" + string(rune('0'+i)), Action: c.action, Why: c.why}
				if u != want {
					t.Errorf("unplaceable[%d] = %+v, want %+v", i, u, want)
				}
			}
			if pl.Converged() || pl.Summary() != "Nothing to do now: 2 cannot be placed." {
				t.Errorf("Summary = %q", pl.Summary())
			}
			text := pl.Text()
			if !strings.Contains(text, "Cannot be placed") || !strings.Contains(text, "! web-1 ("+c.action.String()+"): "+c.why) {
				t.Errorf("text does not say why:\n%s", text)
			}
			b := pl.Blockers()
			if len(b) != 1 || b[0].Long != "2 replicas cannot be placed (web-0, web-1: "+c.why+")" {
				t.Errorf("blockers %+v", b)
			}
			st := BuildStatus(DefaultOwner, &Desired{Revision: testRev, Apps: []spec.App{c.app}}, Observed{Instances: c.insts, Members: c.members}, &pl)
			if st.Apps[0].Sync != SyncOutOfSync || !strings.Contains(strings.Join(st.Apps[0].Drift, "\n"), "web-0 "+c.action.String()+" cannot be placed: "+c.why) {
				t.Errorf("status: %s %q", st.Apps[0].Sync, st.Apps[0].Drift)
			}
		})
	}
}

func TestPlacementLostMember(t *testing.T) {
	app := testApp("web", 3)
	insts := fleet(app)
	for i := range insts {
		insts[i].Location = "m" + string(rune('1'+i))
	}
	insts[2].Status = "Error"
	obs := Observed{Instances: insts, Members: cluster("Online", "Online", "Offline")}
	pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{})
	if len(pl.Steps) != 0 || len(pl.Unready) != 1 || pl.Unready[0].Why != "unreachable (member m3 offline)" {
		t.Fatalf("lost member: steps %q unready %+v", stepLines(pl), pl.Unready)
	}
	st := BuildStatus("", &Desired{Revision: testRev, Apps: []spec.App{app}}, obs, &pl)
	if a := st.Apps[0]; a.Ready != 2 || a.Health != HealthDegraded || a.Replicas[2].Error != "unreachable (member m3 offline)" || a.Replicas[2].Member != "m3" {
		t.Errorf("status with m3 down: %+v", a)
	}
	// As LXD lists it: its keys are unknown while the member is away. Its
	// name stays taken: no create, no conflict, reported unreachable.
	insts[2].Config = nil
	pl = MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{})
	if len(pl.Steps) != 0 || len(pl.Conflicts) != 0 || len(pl.Unready) != 1 || !strings.HasPrefix(pl.Unready[0].Why, "unreachable (member m3 offline)") {
		t.Fatalf("lost member, keys unknown: steps %q conflicts %+v unready %+v", stepLines(pl), pl.Conflicts, pl.Unready)
	}
	st = BuildStatus("", &Desired{Revision: testRev, Apps: []spec.App{app}}, obs, &pl)
	if a := st.Apps[0]; a.Ready != 2 || len(a.Replicas) != 3 || a.Replicas[2].Error != "unreachable (member m3 offline)" {
		t.Errorf("status with m3 down, keys unknown: %+v", a)
	}
	// Scaling up while a member is down goes to the online ones, and
	// never reuses the unreachable replica's name.
	pl = MakePlan(Desired{Revision: testRev, Apps: []spec.App{with(app, func(a *spec.App) { a.Spec.Replicas = 4 })}}, obs, Policy{})
	if got := stepLines(pl); len(got) != 1 || !strings.Contains(got[0], "web-3 create") || pl.Steps[0].Target == "m3" {
		t.Errorf("scale up with m3 down: %q target %q", got, pl.Steps[0].Target)
	}
}

func TestPlacementStandInsForALostMember(t *testing.T) {
	app := with(testApp("web", 3), func(a *spec.App) {
		a.Spec.System.Placement = &spec.Placement{Spread: spec.SpreadMembers, ReplaceUnreachable: spec.Duration(5 * time.Minute)}
	})
	insts := fleet(app)
	for i := range insts {
		insts[i].Location = "m" + string(rune('1'+i))
	}
	insts[2].Status = "Error"
	keys := insts[2].Config
	insts[2].Config = nil // as LXD lists an instance on a lost member
	members := cluster("Online", "Online", "Offline")
	lost := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	members[2].Since = lost
	obs := Observed{Instances: insts, Members: members, At: lost.Add(2 * time.Minute)}
	if pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{}); len(pl.Steps) != 0 {
		t.Fatalf("before replaceUnreachable: %q", stepLines(pl))
	}
	obs.At = lost.Add(6 * time.Minute)
	pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{})
	if got := stepLines(pl); len(got) != 1 || !strings.HasPrefix(got[0], "1 web-3 create (placement.replaceUnreachable: web-2 unreachable (member m3 offline) since") || pl.Steps[0].Target == "m3" {
		t.Fatalf("stand-in: %q on %q", got, pl.Steps[0].Target)
	}
	// The stand-in is kept while the member is away...
	standIn := converged(app, 3)
	standIn.Location = pl.Steps[0].Target
	obs.Instances = append(obs.Instances, standIn)
	if pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{}); len(pl.Steps) != 0 {
		t.Errorf("with the stand-in running: %q", stepLines(pl))
	}
	// ...and scaled down once it is back: no duplicate name at any time.
	obs.Members = cluster("Online", "Online", "Online")
	obs.Instances[2].Status, obs.Instances[2].Config = StatusRunning, keys
	pl = MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{})
	if got := stepLines(pl); !slices.Equal(got, []string{"1 web-3 delete (replicas: 4 → 3)"}) {
		t.Errorf("member back: %q", got)
	}
}

// TestPlacementStandInsStayUntilTheyAreNotNeeded: a stand-in is kept while
// what it stands in for is lost, even when this process cannot tell for
// how long (a restarted daemon, a fresh CLI, members not listed), and
// while the replica back from its member is not ready yet.
func TestPlacementStandInsStayUntilTheyAreNotNeeded(t *testing.T) {
	app := with(testApp("web", 3), func(a *spec.App) {
		a.Spec.System.Placement = &spec.Placement{Spread: spec.SpreadMembers, ReplaceUnreachable: spec.Duration(5 * time.Minute)}
	})
	insts := append(fleet(app), converged(app, 3))
	for i := range insts {
		insts[i].Location = "m" + string(rune('1'+i%3))
	}
	insts[3].Location = "m1"
	keys := insts[2].Config
	insts[2].Status, insts[2].Config = "Error", nil
	now := time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC)
	members := cluster("Online", "Online", "Offline")
	members[2].Since = now // as a daemon that just started sees it
	obs := Observed{Instances: insts, Members: members, At: now}
	if pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{}); len(pl.Steps) != 0 {
		t.Errorf("timer reset: %q", stepLines(pl))
	}
	obs.Members = nil
	if pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{}); len(pl.Steps) != 0 || len(pl.Warnings) == 0 {
		t.Errorf("members unknown: %q %q", stepLines(pl), pl.Warnings)
	}
	// Back, but its container still starting: the stand-in stays.
	obs.Members = cluster("Online", "Online", "Online")
	obs.Instances[2].Status, obs.Instances[2].Config = StatusRunning, keys
	obs.Instances[2].Container.Health = "starting"
	if pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{}); len(pl.Steps) != 0 {
		t.Errorf("back, not ready: %q", stepLines(pl))
	}
	obs.Instances[2].Container.Health = "healthy"
	pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{})
	if got := stepLines(pl); !slices.Equal(got, []string{"1 web-3 delete (replicas: 4 → 3)"}) {
		t.Errorf("back and ready: %q", got)
	}
}

// TestStaleSeesMembersAndAliases: a plan made before a member was lost or
// an alias moved is stale when applied after.
func TestStaleSeesMembersAndAliases(t *testing.T) {
	app := testApp("web", 2)
	obs := Observed{Instances: fleet(app), Members: cluster("Online", "Online"),
		Images: []Image{{Fingerprint: "abc123", Aliases: []string{"debian-docker"}}}}
	pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{})
	if pl.Stale(obs) {
		t.Fatal("stale against its own observe")
	}
	lost := obs
	lost.Members = cluster("Online", "Offline")
	moved := obs
	moved.Images = []Image{{Fingerprint: "def456", Aliases: []string{"debian-docker"}}}
	for name, o := range map[string]Observed{"member lost": lost, "alias moved": moved} {
		if !pl.Stale(o) {
			t.Errorf("%s: the plan is not stale", name)
		}
	}
}

// A replica with volumes on a lost member gets no stand-in: its data is on
// that member, and a stand-in would start empty. The plan says what it
// waits for.
func TestPlacementNoStandInForAStatefulReplica(t *testing.T) {
	app := with(testApp("web", 3), func(a *spec.App) {
		a.Spec.System.Placement = &spec.Placement{Spread: spec.SpreadMembers, ReplaceUnreachable: spec.Duration(5 * time.Minute)}
		a.Spec.System.Volumes = []spec.SystemVolume{{Name: "data", Path: "/srv/data", Size: "1GiB"}}
	})
	insts := fleet(app)
	for i := range insts {
		insts[i].Location = "m" + string(rune('1'+i))
	}
	insts[2].Status, insts[2].Config = "Error", nil
	members := cluster("Online", "Online", "Offline")
	lost := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	members[2].Since = lost
	obs := Observed{Instances: insts, Members: members, At: lost.Add(time.Hour)}
	pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{app}}, obs, Policy{})
	for _, s := range pl.Steps {
		if s.Action == Create {
			t.Errorf("a stand-in for a stateful replica: %q", stepLines(pl))
		}
	}
	if !slices.ContainsFunc(pl.Warnings, func(w string) bool {
		return strings.Contains(w, "web-2: no stand-in, waiting for member m3 (holds volume web-data-2)")
	}) {
		t.Errorf("the plan does not say what web-2 waits for: %q", pl.Warnings)
	}
}

// A placement change never moves a replica with volumes to another member:
// the recreate would delete it and fail to attach its volumes there.
func TestPlacementKeepsAStatefulReplicaOnItsMember(t *testing.T) {
	app := with(testApp("web", 3), func(a *spec.App) {
		a.Spec.System.Volumes = []spec.SystemVolume{{Name: "data", Path: "/srv/data", Size: "1GiB"}}
	})
	insts := fleet(app)
	for i := range insts {
		insts[i].Location = "m" + string(rune('1'+i))
	}
	moved := with(app, func(a *spec.App) {
		a.Spec.System.Placement = &spec.Placement{Spread: spec.SpreadMembers, Members: []string{"m1", "m2"}}
	})
	pl := MakePlan(Desired{Revision: testRev, Apps: []spec.App{moved}}, Observed{Instances: insts, Members: cluster("Online", "Online", "Online")}, Policy{})
	for _, s := range pl.Steps {
		if s.Instance == "web-2" {
			t.Errorf("web-2 (volumes on m3) is moved: %q", stepLines(pl))
		}
	}
	if len(pl.Unplaceable) != 1 || !strings.Contains(pl.Unplaceable[0].Why, "stays on its member m3") {
		t.Errorf("unplaceable: %+v", pl.Unplaceable)
	}
}
