package spec

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const placementApp = `apiVersion: berth/v1
kind: App
metadata: {name: web}
spec:
  system:
    image: berth/busybox
    placement: %s
`

func TestPlacementDecodes(t *testing.T) {
	r := mustLoadBytes(t, strings.Replace(placementApp, "%s", "{members: [m1, m3], group: fast, replaceUnreachable: 5m}", 1), Options{})
	if len(r.Apps) != 1 {
		t.Fatalf("%v", r.Diagnostics)
	}
	p := r.Apps[0].Spec.System.Placement
	if p == nil || p.Spread != SpreadMembers || !slices.Equal(p.Members, []string{"m1", "m3"}) || p.Group != "fast" || p.ReplaceUnreachable.D() != 5*time.Minute {
		t.Errorf("placement %+v", p)
	}
	// Where replicas go is not what they are: no recreate.
	plain := mustLoadBytes(t, strings.Replace(placementApp, "    placement: %s\n", "", 1), Options{})
	if plain.Apps[0].Spec.System.Hash() != r.Apps[0].Spec.System.Hash() {
		t.Error("placement changes the system hash")
	}
}

func TestPlacementRules(t *testing.T) {
	for value, want := range map[string]string{
		"{spread: racks}":           "spec.system.placement.spread",
		"{members: [m1, m1]}":       `cluster member "m1" is listed twice`,
		"{members: [\"a/b\"]}":      `cluster member name "a/b" is not valid`,
		"{members: [\"\"]}":         "cluster member name must not be empty",
		"{group: \"\"}":             "cluster group name must not be empty",
		"{replaceUnreachable: 10s}": "spec.system.placement.replaceUnreachable",
		"{membrs: [m1]}":            "membrs",
	} {
		r := mustLoadBytes(t, strings.Replace(placementApp, "%s", value, 1), Options{})
		if len(r.Apps) != 0 || !strings.Contains(r.Diagnostics.Error(), want) {
			t.Errorf("%s: want a problem with %q, got %v", value, want, r.Diagnostics)
		}
	}
}

// A stand-in for a lost replica takes a slot after the spec's replicas, so
// with replaceUnreachable the name must fit "<name>-<2*replicas-1>": a
// 61-character app with 10 replicas fits without it (…-9) but its
// stand-ins would be …-10 to …-19, over LXD's 63 characters.
func TestStandInSlotsBoundTheName(t *testing.T) {
	app := func(name string, replicas int, placement string) string {
		return fmt.Sprintf("apiVersion: berth/v1\nkind: App\nmetadata: {name: %s}\nspec:\n  replicas: %d\n  system:\n    image: berth/busybox\n%s", name, replicas, placement)
	}
	long := strings.Repeat("a", 61)
	const ru = "    placement: {replaceUnreachable: 5m}\n"
	if r := mustLoadBytes(t, app(long, 10, ""), Options{}); len(r.Diagnostics) != 0 {
		t.Fatalf("without stand-ins: %v", r.Diagnostics)
	}
	r := mustLoadBytes(t, app(long, 10, ru), Options{})
	sameLines(t, "stand-ins", diagStrings(r.Diagnostics), []string{
		`app.yaml:3:18: metadata.name: name is too long: instance name "` + long + `-19" has 64 characters, LXD allows 63 (with placement.replaceUnreachable, a stand-in for a lost replica takes a slot after the replicas, up to 19)`,
	})
	// 5 replicas and their stand-ins end at …-9.
	if r := mustLoadBytes(t, app(long, 5, ru), Options{}); len(r.Diagnostics) != 0 {
		t.Errorf("5 replicas with stand-ins: %v", r.Diagnostics)
	}
	for _, tt := range []struct {
		replicas int
		ru       bool
		want     int
	}{{0, false, 0}, {1, false, 0}, {10, false, 9}, {0, true, 1}, {1, true, 1}, {10, true, 19}, {MaxReplicas, true, 2*MaxReplicas - 1}} {
		s := AppSpec{Replicas: tt.replicas}
		if tt.ru {
			s.System.Placement = &Placement{ReplaceUnreachable: Duration(time.Minute)}
		}
		if got := s.HighestSlot(); got != tt.want {
			t.Errorf("replicas %d, replaceUnreachable %v: HighestSlot %d, want %d", tt.replicas, tt.ru, got, tt.want)
		}
	}
}
