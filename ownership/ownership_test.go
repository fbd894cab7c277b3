package ownership

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestInstanceRoundTrip(t *testing.T) {
	want := Instance{Owner: "berth", App: "web", Slot: 12, SystemHash: "abc", Image: "berth/debian-docker", ConfigKeys: "limits.cpu", Revision: "f00"}
	cfg := want.Config()
	got, err := ParseInstance("web-12", cfg)
	if err != nil || got != want {
		t.Fatalf("ParseInstance(Config()) = %+v, %v; want %+v", got, err, want)
	}
	keys := slices.Collect(maps.Keys(cfg))
	slices.Sort(keys)
	pairs := want.Pairs()
	for i, kv := range pairs {
		if kv[0] != keys[i] {
			t.Errorf("Pairs not sorted by key: %v", pairs)
		}
	}
	// Empty values and a negative slot are left out.
	if got := (Instance{Owner: "o", App: "a", Slot: -1}).Config(); len(got) != 2 {
		t.Errorf("Config() = %v", got)
	}
}

func TestParseInstanceRefusesWhatIsNotAReplica(t *testing.T) {
	for _, c := range []struct {
		name, app, slot, want string
	}{
		{"web-0", "", "0", "do not name a replica"},
		{"web-0", "web", "", "do not name a replica"},
		{"web-01", "web", "01", "not a slot number"},
		{"web-1", "web", "+1", "not a slot number"},
		{"web--1", "web", "-1", "not a slot number"},
		{"web-9", "web", "x", "not a slot number"},
		{"api-0", "web", "0", "labelled as web-0"},
		{"web-1", "web", "0", "labelled as web-0"},
	} {
		_, err := ParseInstance(c.name, map[string]string{KeyApp: c.app, KeySlot: c.slot})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s (app %q slot %q): err %v, want %q", c.name, c.app, c.slot, err, c.want)
		}
	}
}

func TestContainerRoundTrip(t *testing.T) {
	for _, want := range []Container{
		{App: "web", Slot: 3, Hash: "h", Revision: "r"},
		{App: "web", Slot: 3, Hash: "h", Revision: "r", Secrets: map[string]string{"/run/secrets/a b": "t1", "/run/secrets/c": "t2"}},
	} {
		got, ok := ParseContainer(want.Labels())
		if !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseContainer(Labels()) = %+v, %v, want %+v", got, ok, want)
		}
	}
	if l := (Container{App: "web"}).Labels(); l[LabelSecrets] != "" {
		t.Errorf("a container without secrets has label %s=%q", LabelSecrets, l[LabelSecrets])
	}
	if got := SecretTags(map[string]string{LabelSecrets: "{garbled"}); got != nil {
		t.Errorf("SecretTags of a garbled label = %v, want nil", got)
	}
	if _, ok := ParseContainer(map[string]string{"other": "x"}); ok {
		t.Error("a container without berth.app is foreign")
	}
}

func TestStaleKeys(t *testing.T) {
	observed := map[string]string{KeyOwner: "o", KeyApp: "a", KeyConfigKeys: "x", LeaseKey("o", ""): "h 1", "user.note": "n"}
	set := map[string]string{KeyApp: "a"}
	if got := Stale(observed, set); !slices.Equal(got, []string{KeyConfigKeys}) {
		t.Errorf("Stale = %v", got)
	}
}

func TestLeaseKey(t *testing.T) {
	if k := LeaseKey("berth", ""); k != "user.berth.lease.berth" {
		t.Error(k)
	}
	if k := LeaseKey("berth", "default"); k != "user.berth.lease.berth" {
		t.Error(k)
	}
	if k := LeaseKey("berth", "p1"); k != "user.berth.lease.berth@p1" {
		t.Error(k)
	}
}

func TestCheckOwner(t *testing.T) {
	for _, good := range []string{"berth", "team-a", "e2e", "a"} {
		if err := CheckOwner(good); err != nil {
			t.Errorf("%q: %v", good, err)
		}
	}
	for _, bad := range []string{"", "a b", "x@p", "a.b", "-a", "a-", "A", "a\x1b[2Kb", strings.Repeat("a", 64)} {
		if err := CheckOwner(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
