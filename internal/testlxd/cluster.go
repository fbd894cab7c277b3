package testlxd

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// ClusterEnv is the 3-member cluster test environment as `testenv/testenv.sh
// cluster env` exports it.
type ClusterEnv struct {
	// URL is a member's API (https://127.0.0.2:8443); Cert, Key and
	// ServerCert are the trusted client's certificate and key and the
	// cluster's certificate.
	URL, Cert, Key, ServerCert string
	// Members are the member names, m1 first, and URLs their APIs in
	// the same order.
	Members []string
	URLs    []string
	// Testenv is the path of testenv.sh (for `cluster kill|start`).
	Testenv string
}

// ClusterRequired names the variable that makes the cluster environment
// required (BERTH_REQUIRE_CLUSTER, or CI), "" when none does.
func ClusterRequired() string {
	if v := os.Getenv("BERTH_REQUIRE_CLUSTER"); v != "" && v != "0" {
		return "BERTH_REQUIRE_CLUSTER=" + v
	}
	if v := os.Getenv("CI"); v != "" {
		return "CI=" + v
	}
	return ""
}

var announceCluster sync.Once

// Cluster returns the cluster environment from the variables `cluster env`
// exports, or skips tb (loudly) — or fails it when the cluster is
// required. Tests that need it are named TestCluster*: `make test` runs
// them apart, with that environment.
func Cluster(tb testing.TB) *ClusterEnv {
	tb.Helper()
	required := ClusterRequired()
	if testing.Short() && required == "" {
		tb.Skip("!!! SKIPPING: needs the LXD cluster, and -short runs unit tests only")
	}
	e := &ClusterEnv{
		URL: os.Getenv("BERTH_LXD"), Cert: os.Getenv("BERTH_LXD_CERT"), Key: os.Getenv("BERTH_LXD_KEY"),
		ServerCert: os.Getenv("BERTH_LXD_SERVER_CERT"), Testenv: os.Getenv("BERTH_CLUSTER_TESTENV"),
	}
	if m := os.Getenv("BERTH_CLUSTER_MEMBERS"); m != "" {
		e.Members = strings.Split(m, ",")
	}
	if u := os.Getenv("BERTH_CLUSTER_URLS"); u != "" {
		e.URLs = strings.Split(u, ",")
	}
	why := ""
	switch {
	case os.Getenv("BERTH_CLUSTER") == "" || os.Getenv("BERTH_CLUSTER") == "0":
		why = "BERTH_CLUSTER is not set"
	case !strings.HasPrefix(e.URL, "https://") || e.Cert == "" || e.Key == "" || e.ServerCert == "" || len(e.Members) < 3 || len(e.URLs) != len(e.Members) || e.Testenv == "":
		why = "BERTH_CLUSTER is set but BERTH_LXD (https), BERTH_LXD_CERT, BERTH_LXD_KEY, BERTH_LXD_SERVER_CERT, BERTH_CLUSTER_MEMBERS (3 members), BERTH_CLUSTER_URLS (one per member) or BERTH_CLUSTER_TESTENV is missing"
	}
	if why == "" {
		return e
	}
	SkipOrFailCluster(tb, why)
	return nil
}

// SkipOrFailCluster skips tb loudly because the cluster environment is not
// usable (why), or fails it when the cluster is required.
func SkipOrFailCluster(tb testing.TB, why string) {
	tb.Helper()
	if required := ClusterRequired(); required != "" {
		tb.Fatalf("the LXD cluster test environment is required (%s) but not usable: %s; start it with `make testenv-cluster` and export `testenv/testenv.sh cluster env`", required, why)
	}
	msg := fmt.Sprintf("!!! SKIPPING: the LXD cluster test environment is not usable: %s (`make test-cluster` runs these tests; BERTH_REQUIRE_CLUSTER=1 fails instead)", why)
	announceCluster.Do(func() { fmt.Fprintf(os.Stderr, "\n%s\n\n", msg) })
	tb.Skip(msg)
}
