// Package testlxd decides, for tests that need the LXD test environment
// (testenv/testenv.sh), whether its absence skips the test or fails it. It
// has one rule for every package:
//
//   - LXD is required when CI is set (to anything) or BERTH_REQUIRE_LXD is
//     set to anything but "" or "0". A required test never skips: a missing
//     or unusable environment fails it, and -short does not skip it.
//   - Otherwise -short skips it, and so does a missing environment, loudly
//     ("!!! SKIPPING ...").
//
// Only tests import this package; it is not compiled into berth.
package testlxd

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

// Required reports whether tests must have LXD: CI set, or
// BERTH_REQUIRE_LXD set to anything but "" or "0".
func Required() bool { return why(os.Getenv) != "" }

// why names the variable that makes LXD required, "" when none does.
func why(getenv func(string) string) string {
	if v := getenv("BERTH_REQUIRE_LXD"); v != "" && v != "0" {
		return "BERTH_REQUIRE_LXD=" + v
	}
	if v := getenv("CI"); v != "" {
		return "CI=" + v
	}
	return ""
}

// Short skips tb under -short unless LXD is required, in which case the
// test runs anyway: call it first in a test that needs LXD.
func Short(tb testing.TB) {
	tb.Helper()
	short(tb, testing.Short(), why(os.Getenv))
}

func short(tb testing.TB, isShort bool, required string) {
	tb.Helper()
	switch {
	case !isShort:
	case required != "":
		tb.Logf("-short ignored: LXD tests are required (%s)", required)
	default:
		tb.Skip("!!! SKIPPING: needs LXD, and -short runs unit tests only (BERTH_REQUIRE_LXD=1 runs it anyway)")
	}
}

// SkipUnlessUsable does nothing when err is nil. Otherwise err says why the
// LXD test environment cannot be used: the test fails when LXD is
// required, and is skipped loudly (also on stderr, once per process)
// when it is not.
func SkipUnlessUsable(tb testing.TB, err error) {
	tb.Helper()
	skipUnlessUsable(tb, err, why(os.Getenv))
}

var announce sync.Once

func skipUnlessUsable(tb testing.TB, err error, required string) {
	tb.Helper()
	if err == nil {
		return
	}
	if required != "" {
		tb.Fatalf("the LXD test environment is required (%s) but not usable: %v; start it with `make testenv` (testenv/testenv.sh up)", required, err)
		return
	}
	msg := fmt.Sprintf("!!! SKIPPING: the LXD test environment is not usable: %v (start it with `make testenv`; BERTH_REQUIRE_LXD=1 fails instead)", err)
	announce.Do(func() { fmt.Fprintf(os.Stderr, "\n%s\n\n", msg) })
	tb.Skip(msg)
}
