package spec

import (
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
