package testlxd

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that records what a helper decided instead of
// ending the test.
type recorder struct {
	testing.TB
	skipped, failed, logged string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Skip(args ...any)                  { r.skipped = fmt.Sprint(args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }
func (r *recorder) Logf(format string, args ...any)   { r.logged = fmt.Sprintf(format, args...) }

func TestRequired(t *testing.T) {
	for _, c := range []struct {
		require, ci string
		want        bool
	}{
		{"", "", false},
		{"0", "", false},
		{"1", "", true},
		{"yes", "", true},
		{"", "true", true},
		{"0", "true", true},
	} {
		t.Setenv("BERTH_REQUIRE_LXD", c.require)
		t.Setenv("CI", c.ci)
		if got := Required(); got != c.want {
			t.Errorf("BERTH_REQUIRE_LXD=%q CI=%q: Required() = %v, want %v", c.require, c.ci, got, c.want)
		}
	}
}

// TestRequiredNeverSkips: when LXD is required, neither -short nor a
// missing LXD skips; the missing LXD fails, naming the variable.
func TestRequiredNeverSkips(t *testing.T) {
	r := &recorder{TB: t}
	short(r, true, "BERTH_REQUIRE_LXD=1")
	if r.skipped != "" || r.failed != "" || !strings.Contains(r.logged, "-short ignored") {
		t.Errorf("-short when required: %+v", r)
	}
	r = &recorder{TB: t}
	skipUnlessUsable(r, errors.New("no socket"), "BERTH_REQUIRE_LXD=1")
	if r.skipped != "" || !strings.Contains(r.failed, "required (BERTH_REQUIRE_LXD=1) but not usable: no socket") {
		t.Errorf("missing LXD when required: %+v", r)
	}
}

// TestNotRequiredSkipsLoudly: without the variables, -short and a missing
// LXD skip with "!!! SKIPPING"; a usable LXD and a run without -short go on.
func TestNotRequiredSkipsLoudly(t *testing.T) {
	r := &recorder{TB: t}
	short(r, true, "")
	if r.failed != "" || !strings.HasPrefix(r.skipped, "!!! SKIPPING") {
		t.Errorf("-short: %+v", r)
	}
	r = &recorder{TB: t}
	skipUnlessUsable(r, errors.New("no socket"), "")
	if r.failed != "" || !strings.HasPrefix(r.skipped, "!!! SKIPPING") || !strings.Contains(r.skipped, "no socket") {
		t.Errorf("missing LXD: %+v", r)
	}
	for _, required := range []string{"", "CI=true"} {
		r = &recorder{TB: t}
		short(r, false, required)
		skipUnlessUsable(r, nil, required)
		if *r != (recorder{TB: t}) {
			t.Errorf("usable LXD, no -short, required %q: %+v", required, r)
		}
	}
}
