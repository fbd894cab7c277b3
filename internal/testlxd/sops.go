package testlxd

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// SOPS is the path of the sops CLI the test environment builds
// (testenv.sh up; $BERTH_SOPS overrides). Without it the test is skipped,
// loudly, or fails where the test environment is required (CI,
// BERTH_REQUIRE_LXD).
func SOPS(tb testing.TB) string {
	tb.Helper()
	p := os.Getenv("BERTH_SOPS")
	if p == "" {
		cache := os.Getenv("BERTH_TESTENV_CACHE")
		if cache == "" {
			cache = "/var/cache/berth-testenv"
		}
		p = filepath.Join(cache, "sops-v3.13.3", "sops")
	}
	if _, err := os.Stat(p); err != nil {
		SkipUnlessUsable(tb, errors.New("no sops CLI at "+p+" (testenv.sh up builds it)"))
	}
	return p
}
