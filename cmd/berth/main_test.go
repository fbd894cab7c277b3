package main

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/berth-gitops/berth/ownership"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// berth runs the CLI in-process and returns its exit code and output.
func berth(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

type repo struct {
	t   testing.TB
	dir string
}

func newRepo(t testing.TB) *repo {
	t.Helper()
	r := &repo{t: t, dir: t.TempDir()}
	r.git("init", "-q", "-b", "main")
	return r
}

func (r *repo) git(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.org",
		"GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.org",
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (r *repo) write(name, content string) {
	r.t.Helper()
	p := filepath.Join(r.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r *repo) commit(msg string) string {
	r.git("add", "-A")
	r.git("commit", "-q", "-m", msg)
	return r.git("rev-parse", "HEAD")
}

func appYAML(name string, replicas int, image string) string {
	return strings.NewReplacer("NAME", name, "REPLICAS", itoa(replicas), "IMAGE", image).Replace(`apiVersion: berth/v1
kind: App
metadata:
  name: NAME
spec:
  replicas: REPLICAS
  system:
    image: berth/debian-docker
    limits: {memory: 512MiB}
  container:
    image: IMAGE
`)
}

func itoa(i int) string { return jsonInt(i) }

func jsonInt(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestValidateSamples(t *testing.T) {
	code, out, errOut := berth(t, "validate", "../../samples")
	if code != 0 || !strings.Contains(out, "ok: 2 apps valid (web, worker)") {
		t.Fatalf("code %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "apps"), 0o755)
	os.WriteFile(filepath.Join(dir, "apps", "a.yaml"), []byte(`apiVersion: berth/v1
kind: App
metadata:
  name: Bad_Name
spec:
  replicas: -1
  system:
    image: x
  container:
    image: reg/app:1
`), 0o644)
	os.WriteFile(filepath.Join(dir, "apps", "b.yaml"), []byte(`apiVersion: berth/v1
kind: App
metadata:
  name: ok
spec:
  sytem: {}
  container:
    image: reg/app:1
`), 0o644)
	code, out, errOut := berth(t, "validate", dir)
	if code != 1 {
		t.Fatalf("code = %d, want 1\n%s%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 {
		t.Fatalf("want at least 3 problems, got:\n%s", out)
	}
	for _, want := range []string{
		filepath.ToSlash(dir) + "/apps/a.yaml:4:9: metadata.name:",
		filepath.ToSlash(dir) + "/apps/a.yaml:6:13: spec.replicas:",
		filepath.ToSlash(dir) + "/apps/b.yaml:6:3: spec.sytem:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	code, out, _ = berth(t, "validate", "-o", "json", dir)
	var v struct {
		Valid       bool             `json:"valid"`
		Diagnostics []diagnosticJSON `json:"diagnostics"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != 1 || v.Valid || len(v.Diagnostics) != len(lines) {
		t.Fatalf("json: code %d err %v %+v", code, err, v)
	}
}

func TestValidateFromGitRevision(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", appYAML("web", 2, "reg/web:1"))
	r.commit("good")
	r.write("apps/web.yaml", "apiVersion: berth/v1\nkind: App\nmetadata: {name: web}\nspec: {replicas: nope}\n")
	// The work tree is broken, the committed revision is fine.
	if code, out, _ := berth(t, "validate", r.dir); code != 1 {
		t.Fatalf("work tree: code %d\n%s", code, out)
	}
	if code, out, errOut := berth(t, "validate", "--rev", "HEAD", r.dir); code != 0 {
		t.Fatalf("--rev HEAD: code %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := berth(t, "validate", "file://"+r.dir); code != 0 {
		t.Fatalf("URL: code %d\n%s%s", code, out, errOut)
	}
}

func TestValidateRequireDigest(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "web.yaml"), []byte(appYAML("web", 1, "reg/web:1")), 0o644)
	if code, _, _ := berth(t, "validate", dir); code != 0 {
		t.Fatalf("tag image without --require-digest: code %d", code)
	}
	code, out, _ := berth(t, "validate", "--require-digest", dir)
	if code != 1 || !strings.Contains(out, "web.yaml:11:12: spec.container.image:") {
		t.Fatalf("code %d\n%s", code, out)
	}
}

func TestDiffShowsScaleImageAndRemoval(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", appYAML("web", 3, "reg/web:1"))
	r.write("apps/worker.yaml", appYAML("worker", 1, "reg/worker:1"))
	from := r.commit("two apps")
	r.write("apps/web.yaml", appYAML("web", 5, "reg/web:2"))
	r.commit("scale web, new image")
	r.git("rm", "-q", "apps/worker.yaml")
	r.write("apps/api.yaml", appYAML("api", 2, "reg/api:1"))
	to := r.commit("drop worker, add api")

	code, out, errOut := berth(t, "diff", "--repo", r.dir, from, "HEAD")
	if code != 2 {
		t.Fatalf("code %d, want 2\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"+ api (new app, apps/api.yaml)",
		"    replicas: 2 (+api-0, +api-1)",
		"~ web (apps/web.yaml)",
		"    replicas: 3 → 5 (+web-3, +web-4)",
		"    container.image: reg/web:1 → reg/web:2",
		"- worker (removed, was in apps/worker.yaml)",
		"    replicas: 1 → 0 (-worker-0)",
		"1 app added, 1 changed, 1 removed.",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}

	code, out, _ = berth(t, "diff", "--repo", r.dir, "-o", "json", "HEAD~2", to)
	var d specDiff
	if err := json.Unmarshal([]byte(out), &d); err != nil || code != 2 {
		t.Fatalf("json: code %d, %v\n%s", code, err, out)
	}
	if len(d.Apps) != 3 || d.Apps[1].Name != "web" || d.Apps[1].Replicas.New != 5 ||
		strings.Join(d.Apps[1].InstancesAdded, ",") != "web-3,web-4" || d.To.SHA != to {
		t.Errorf("json diff = %+v", d)
	}

	// Scale down lists the highest slots first.
	r.write("apps/web.yaml", appYAML("web", 2, "reg/web:2"))
	r.commit("scale down")
	_, out, _ = berth(t, "diff", "--repo", r.dir, "HEAD~1", "HEAD")
	if !strings.Contains(out, "replicas: 5 → 2 (-web-4, -web-3, -web-2)") {
		t.Errorf("scale down:\n%s", out)
	}

	if code, out, _ := berth(t, "diff", "--repo", r.dir, "HEAD", "HEAD"); code != 0 || !strings.Contains(out, "No changes") {
		t.Errorf("same revision: code %d\n%s", code, out)
	}
}

func TestDiffRefusesInvalidRevision(t *testing.T) {
	r := newRepo(t)
	r.write("web.yaml", appYAML("web", 1, "reg/web:1"))
	r.commit("good")
	r.write("web.yaml", "apiVersion: berth/v1\nkind: App\nmetadata: {name: web}\nspec: {replicas: nope}\n")
	r.commit("bad")
	code, _, errOut := berth(t, "diff", "--repo", r.dir, "HEAD~1", "HEAD")
	if code != 1 || !strings.Contains(errOut, "web.yaml:4:") || !strings.Contains(errOut, "has invalid specs") {
		t.Fatalf("code %d\n%s", code, errOut)
	}
	if code, _, errOut := berth(t, "diff", "--repo", r.dir, "HEAD~1", "nope"); code != 1 || !strings.Contains(errOut, "revision not found") {
		t.Fatalf("unknown revision: code %d\n%s", code, errOut)
	}
}

// converged builds the observed state of apps as berth would have left it.
func converged(apps []spec.App, revision string) plan.Observed {
	var obs plan.Observed
	for _, a := range apps {
		for slot := 0; slot < a.Spec.Replicas; slot++ {
			name := ownership.InstanceName(a.Metadata.Name, slot)
			obs.Instances = append(obs.Instances, plan.Instance{
				Name: name, Status: "Running",
				Config:   plan.ManagedConfig(a, "berth", revision, slot),
				Profiles: a.Spec.System.Profiles,
				Devices:  a.Spec.System.Devices,
				Container: &plan.Container{Name: a.Metadata.Name, State: "running", Health: "healthy",
					Image: a.Spec.Container.Image,
					Labels: map[string]string{
						"berth.app": a.Metadata.Name, "berth.slot": jsonInt(slot),
						"berth.container-hash": a.Spec.Container.Hash(), "berth.revision": revision,
					}},
			})
		}
	}
	return obs
}

func TestPlanObserved(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", appYAML("web", 2, "reg/web:1"))
	sha := r.commit("web")
	res, err := spec.LoadDir(t.Context(), filepath.Join(r.dir, "apps"), spec.Options{})
	if err != nil || len(res.Diagnostics) > 0 {
		t.Fatal(err, res.Diagnostics)
	}
	write := func(obs plan.Observed) string {
		b, _ := json.Marshal(normalizeObserved(obs)) // as berth observe writes it
		p := filepath.Join(t.TempDir(), "observed.json")
		os.WriteFile(p, b, 0o644)
		return p
	}
	empty := write(plan.Observed{})
	code, out, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", empty)
	if code != 2 || !strings.Contains(out, "web-1  create") || !strings.Contains(out, "Plan: 2 to create.") {
		t.Fatalf("code %d\n%s%s", code, out, errOut)
	}
	// Deterministic: the same inputs print the same bytes.
	_, again, _ := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", empty)
	if again != out {
		t.Errorf("plan output differs between runs")
	}
	code, out, _ = berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", empty, "-o", "json")
	var p plan.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil || code != 2 || len(p.Steps) != 2 || p.Revision != sha {
		t.Fatalf("json: code %d err %v\n%s", code, err, out)
	}
	done := write(converged(res.Apps, sha))
	if code, out, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", done); code != 0 || !strings.Contains(out, "No changes") {
		t.Fatalf("converged: code %d\n%s%s", code, out, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"instancez": []}`), 0o644)
	if code, _, errOut := berth(t, "plan", "--repo", r.dir, "--observed", bad); code != 1 || !strings.Contains(errOut, "not an observed-state snapshot") {
		t.Fatalf("bad snapshot: code %d %s", code, errOut)
	}
}

func TestSchemaAndVersion(t *testing.T) {
	code, out, _ := berth(t, "schema")
	var v map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v["properties"] == nil {
		t.Fatalf("schema: code %d\n%.200s", code, out)
	}
	if code, out, _ := berth(t, "version"); code != 0 || !strings.HasPrefix(out, "berth ") {
		t.Fatalf("version: %d %q", code, out)
	}
	if code, _, errOut := berth(t, "validate", "-o", "yaml"); code != 1 || !strings.Contains(errOut, "unknown output format") {
		t.Fatalf("bad -o: %d %q", code, errOut)
	}
}

func TestRollbackCommands(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", appYAML("web", 2, "reg/web:1"))
	r.commit("web: 2")
	r.write("apps/web.yaml", appYAML("web", 2, "reg/web:2"))
	r.commit("web: image 2")
	r.write("apps/web.yaml", appYAML("web", 4, "reg/web:2"))
	r.commit("web: 4 replicas")
	author := []string{"--author-name", "Ops", "--author-email", "ops@example.org"}

	// A commit whose file changed since does not revert cleanly (reverts
	// are whole-file): a clear error, and nothing written.
	head := r.git("rev-parse", "HEAD")
	code, _, errOut := berth(t, append([]string{"rollback", "--repo", r.dir, "HEAD~1"}, author...)...)
	if code != 1 || !strings.Contains(errOut, "does not apply cleanly") || r.git("rev-parse", "HEAD") != head {
		t.Fatalf("rollback HEAD~1 over a later change: %d %s", code, errOut)
	}
	// Reverting the last commit: the scale goes back, the image stays.
	code, out, errOut := berth(t, append([]string{"rollback", "--repo", r.dir, "HEAD"}, author...)...)
	if code != 0 || !strings.Contains(out, "reverted") {
		t.Fatalf("rollback HEAD: %d\n%s%s", code, out, errOut)
	}
	b, _ := os.ReadFile(filepath.Join(r.dir, "apps/web.yaml"))
	if string(b) != appYAML("web", 2, "reg/web:2") {
		t.Errorf("after revert:\n%s", b)
	}
	if st := r.git("status", "--porcelain"); st != "" {
		t.Errorf("work tree not clean: %q", st)
	}
	// Roll the whole tree back to the first commit.
	if code, out, errOut := berth(t, append([]string{"rollback", "--repo", r.dir, "--to", "HEAD~3"}, author...)...); code != 0 {
		t.Fatalf("rollback --to: %d\n%s%s", code, out, errOut)
	}
	b, _ = os.ReadFile(filepath.Join(r.dir, "apps/web.yaml"))
	if string(b) != appYAML("web", 2, "reg/web:1") {
		t.Errorf("after --to:\n%s", b)
	}
	// The diff a reviewer sees is the rollback.
	if code, out, _ := berth(t, "diff", "--repo", r.dir, "HEAD~1", "HEAD"); code != 2 || !strings.Contains(out, "container.image: reg/web:2 → reg/web:1") {
		t.Errorf("diff of the rollback: %d\n%s", code, out)
	}
	if code, _, errOut := berth(t, "rollback", "--repo", r.dir); code != 1 || !strings.Contains(errOut, "either --to") {
		t.Errorf("no commits: %d %s", code, errOut)
	}
}

func TestStatusFromServer(t *testing.T) {
	st := reconciler.LoopStatus{
		Status: plan.Status{Revision: "0123456789abcdef", Owner: "berth", Apps: []plan.AppStatusView{
			{App: "web", Desired: 2, Ready: 1, Sync: plan.SyncSynced, Health: plan.HealthDegraded},
		}},
		Phase: "Idle", LastResult: "error",
		LastGood: map[string]string{"web": "aaaaaaaaaaaaaaaa", "api": "bbbbbbbbbbbbbbbb"},
		Failures: map[string]reconciler.AppFailure{
			"web": {Revision: "0123456789abcdef", Count: 2, Reason: "web-0: unhealthy"},
			"api": {Revision: "0123456789abcdef", Count: 1, Reason: "api-0: exited"},
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/status" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(st)
	}))
	defer srv.Close()
	code, out, errOut := berth(t, "status", "--server", srv.URL)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"Daemon: Idle",
		"  api: revision 0123456789ab held until",
		"  web: revision 0123456789ab held until",
		"  api: last good revision bbbbbbbbbbbb",
		"web                  1/2     Synced     Degraded",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Index(out, "  api: revision") > strings.Index(out, "  web: revision") {
		t.Errorf("failures not sorted:\n%s", out)
	}
	if code, out, _ := berth(t, "status", "--server", srv.URL, "-o", "json"); code != 0 || !strings.Contains(out, `"lastGood"`) {
		t.Errorf("json: %d %s", code, out)
	}
	if code, _, errOut := berth(t, "status", "--server", srv.URL+"/nope"); code != 1 || !strings.Contains(errOut, "404") {
		t.Errorf("bad server: %d %s", code, errOut)
	}
	if code, _, errOut := berth(t, "--log-format", "xml", "version"); code != 1 || !strings.Contains(errOut, "--log-format") {
		t.Errorf("bad --log-format: %d %s", code, errOut)
	}
}
