package spec

import (
	"encoding/json"
	"testing"
)

// update.maxUnavailable takes a percentage of the replicas, as in
// Kubernetes: what loads, and what the user reads when it does not.
func TestMaxUnavailablePercentage(t *testing.T) {
	tests := []struct {
		value string
		want  IntOrPercent
		msg   string // the one diagnostic, without its position
	}{
		{"25%", IntOrPercent{Percent: 25}, ""},
		{`"25%"`, IntOrPercent{Percent: 25}, ""},
		{"1%", IntOrPercent{Percent: 1}, ""},
		{"100%", IntOrPercent{Percent: 100}, ""},
		{"3", IntOrPercent{N: 3}, ""},
		{"0%", IntOrPercent{}, "spec.update.maxUnavailable: a percentage must be between 1% and 100%, got 0%"},
		{"101%", IntOrPercent{}, "spec.update.maxUnavailable: a percentage must be between 1% and 100%, got 101%"},
		{"99999999999999999999%", IntOrPercent{}, "spec.update.maxUnavailable: a percentage must be between 1% and 100%, got 99999999999999999999%"},
		{"025%", IntOrPercent{}, "spec.update.maxUnavailable: 025% has a leading zero; write 25%"},
		{"25%x", IntOrPercent{}, `spec.update.maxUnavailable: must be a number of replicas or a percentage of them from 1% to 100% (like "25%"), got "25%x"`},
		{"x25%", IntOrPercent{}, `spec.update.maxUnavailable: must be a number of replicas or a percentage of them from 1% to 100% (like "25%"), got "x25%"`},
		{"25 %", IntOrPercent{}, `spec.update.maxUnavailable: must be a number of replicas or a percentage of them from 1% to 100% (like "25%"), got "25 %"`},
		{`" 25%"`, IntOrPercent{}, `spec.update.maxUnavailable: must be a number of replicas or a percentage of them from 1% to 100% (like "25%"), got " 25%"`},
		{"2.5%", IntOrPercent{}, `spec.update.maxUnavailable: must be a number of replicas or a percentage of them from 1% to 100% (like "25%"), got "2.5%"`},
		{`"2"`, IntOrPercent{}, `spec.update.maxUnavailable: must be a number of replicas or a percentage of them from 1% to 100% (like "25%"), got "2"`},
		{"0", IntOrPercent{}, "spec.update.maxUnavailable: must be between 1 and 1000, got 0"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			r := mustLoadBytes(t, minimal+"  update: {maxUnavailable: "+tt.value+"}\n", Options{})
			if tt.msg == "" {
				if len(r.Diagnostics) > 0 || len(r.Apps) != 1 {
					t.Fatalf("want it loaded, got %v", r.Diagnostics)
				}
				if got := r.Apps[0].Spec.Update.MaxUnavailable; got != tt.want {
					t.Errorf("got %+v, want %+v", got, tt.want)
				}
				return
			}
			if len(r.Diagnostics) != 1 {
				t.Fatalf("want one diagnostic, got:\n%v", r.Diagnostics)
			}
			if d := r.Diagnostics[0]; d.Path+": "+d.Message != tt.msg {
				t.Errorf("got  %s: %s\nwant %s", d.Path, d.Message, tt.msg)
			}
		})
	}
}

// A percentage rounds down, but never below one replica: a rollout must
// progress.
func TestIntOrPercentOf(t *testing.T) {
	for _, tt := range []struct {
		v        IntOrPercent
		replicas int
		want     int
	}{
		{IntOrPercent{Percent: 25}, 8, 2},
		{IntOrPercent{Percent: 25}, 7, 1},
		{IntOrPercent{Percent: 25}, 3, 1},
		{IntOrPercent{Percent: 25}, 0, 1},
		{IntOrPercent{Percent: 10}, 1000, 100},
		{IntOrPercent{Percent: 100}, 5, 5},
		{IntOrPercent{Percent: 1}, 1000, 10},
		{Count(3), 8, 3},
		{Count(0), 8, 1},
	} {
		if got := tt.v.Of(tt.replicas); got != tt.want {
			t.Errorf("%s of %d: got %d, want %d", tt.v, tt.replicas, got, tt.want)
		}
	}
}

// The JSON form is the spec's: 2 or "25%", and it reads back.
func TestIntOrPercentJSON(t *testing.T) {
	for _, tt := range []struct {
		v    IntOrPercent
		want string
	}{{Count(2), `2`}, {IntOrPercent{Percent: 25}, `"25%"`}} {
		b, err := json.Marshal(tt.v)
		if err != nil || string(b) != tt.want {
			t.Errorf("%+v: got %s, %v; want %s", tt.v, b, err, tt.want)
		}
		var back IntOrPercent
		if err := json.Unmarshal(b, &back); err != nil || back != tt.v {
			t.Errorf("%s: read back %+v, %v", b, back, err)
		}
	}
	for _, bad := range []string{`"25"`, `"0%"`, `true`, `"25%x"`} {
		var v IntOrPercent
		if err := json.Unmarshal([]byte(bad), &v); err == nil {
			t.Errorf("%s: read as %+v, want an error", bad, v)
		}
	}
}

// The rollout policy is in no hash: moving maxUnavailable from 1 to "25%"
// recreates or replaces nothing.
func TestMaxUnavailableChangesNoHash(t *testing.T) {
	const provision = "    provision: {run: [/bin/true]}\n"
	one := loadWithFiles(t, sys(provision)+"  update: {maxUnavailable: 1}\n", corpusFiles, Options{})
	pct := loadWithFiles(t, sys(provision)+"  update: {maxUnavailable: 25%}\n", corpusFiles, Options{})
	ctr1 := mustLoadBytes(t, minimal+"  update: {maxUnavailable: 1}\n", Options{})
	ctr2 := mustLoadBytes(t, minimal+"  update: {maxUnavailable: 25%}\n", Options{})
	for _, r := range []*Result{one, pct, ctr1, ctr2} {
		if len(r.Diagnostics) > 0 || len(r.Apps) != 1 {
			t.Fatalf("does not load: %v", r.Diagnostics)
		}
	}
	a, b := one.Apps[0].Spec, pct.Apps[0].Spec
	if a.System.Hash() != b.System.Hash() || a.System.Provision.Hash() != b.System.Provision.Hash() {
		t.Error("maxUnavailable changes the system or provision hash")
	}
	if c, d := ctr1.Apps[0].Spec, ctr2.Apps[0].Spec; c.System.Hash() != d.System.Hash() || c.Container.Hash() != d.Container.Hash() {
		t.Error("maxUnavailable changes the system or container hash")
	}
}
