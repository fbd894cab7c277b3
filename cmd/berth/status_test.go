package main

import (
	"context"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spf13/cobra"
)

// TestStatusClonesOnce: status reads the desired state of a repository URL
// with one clone, not one to see whether it is a repository and another
// to read it.
func TestStatusClonesOnce(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", webSpec(2, "hello:1"))
	sha := r.commit("web")
	root := t.TempDir()
	r.git("clone", "-q", "--bare", r.dir, filepath.Join(root, "apps.git"))
	var clones atomic.Int32
	exe, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatal(err)
	}
	backend := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(exe)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, "/info/refs") {
			clones.Add(1)
		}
		backend.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)

	var rf repoFlags
	cmd := &cobra.Command{Use: "status"}
	rf.register(cmd)
	if err := cmd.ParseFlags([]string{"--repo", srv.URL + "/apps.git", "--dir", "apps"}); err != nil {
		t.Fatal(err)
	}
	cmd.SetContext(context.Background())
	d, err := statusDesired(cmd, &rf)
	if err != nil {
		t.Fatal(err)
	}
	if d == nil || d.Revision != sha || len(d.Apps) != 1 {
		t.Errorf("desired state of %s: %+v", sha, d)
	}
	if n := clones.Load(); n != 1 {
		t.Errorf("status cloned the repository %d times, want 1", n)
	}
}

// TestStatusWithoutRepository: outside a repository, status shows the
// live side only, unless --repo names one on purpose.
func TestStatusWithoutRepository(t *testing.T) {
	t.Chdir(t.TempDir())
	var rf repoFlags
	cmd := &cobra.Command{Use: "status"}
	rf.register(cmd)
	cmd.SetContext(context.Background())
	if d, err := statusDesired(cmd, &rf); d != nil || err != nil {
		t.Errorf("default --repo outside a repository: %+v, %v", d, err)
	}
	if err := cmd.ParseFlags([]string{"--repo", "."}); err != nil {
		t.Fatal(err)
	}
	if d, err := statusDesired(cmd, &rf); d != nil || err == nil {
		t.Errorf("--repo . outside a repository: %+v, %v; want an error", d, err)
	}
}
