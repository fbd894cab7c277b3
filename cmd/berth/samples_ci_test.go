package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

// The CI samples (samples/ci) are valid YAML of the expected shape, their
// shell parses, and their scripts, run for real in a repository with the
// berth binary and a fake forge API, post the diff as one comment that the
// next push updates.

type ghWorkflow struct {
	Name        string            `yaml:"name"`
	On          map[string]any    `yaml:"on"`
	Permissions map[string]string `yaml:"permissions"`
	Env         map[string]string `yaml:"env"`
	Jobs        map[string]struct {
		RunsOn string `yaml:"runs-on"`
		Steps  []struct {
			Name string            `yaml:"name"`
			Uses string            `yaml:"uses"`
			With map[string]any    `yaml:"with"`
			If   string            `yaml:"if"`
			Run  string            `yaml:"run"`
			Env  map[string]string `yaml:"env"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

type glJob struct {
	Stage        string            `yaml:"stage"`
	Artifacts    map[string]any    `yaml:"artifacts"`
	Image        string            `yaml:"image"`
	Rules        []map[string]any  `yaml:"rules"`
	Variables    map[string]string `yaml:"variables"`
	BeforeScript []string          `yaml:"before_script"`
	Script       []string          `yaml:"script"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func bashSyntax(t *testing.T, what, script string) {
	t.Helper()
	cmd := exec.Command("bash", "-n")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: bash -n: %v\n%s", what, err, out)
	}
}

// ciRepo is a config repository with a base commit and a pull request's
// head commit, and a directory with berth and stubs first on PATH.
func ciRepo(t *testing.T) (r *repo, base, head, path string) {
	t.Helper()
	r = newRepo(t)
	r.write("apps/web.yaml", appYAML("web", 2, "reg/web:1"))
	base = r.commit("base")
	r.write("apps/web.yaml", appYAML("web", 3, "reg/web:2"))
	head = r.commit("web: 3 replicas of reg/web:2")
	bin := t.TempDir()
	if err := os.Symlink(berthCommand(t), filepath.Join(bin, "berth")); err != nil {
		t.Fatal(err)
	}
	return r, base, head, bin
}

// runScript runs a CI script as the runners do (bash -eo pipefail) in dir.
func runScript(t *testing.T, dir, script string, env ...string) {
	t.Helper()
	cmd := exec.Command("bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("script failed: %v\n%s\n--- script\n%s", err, out, script)
	}
}

// notesAPI is a fake comments API: GET lists, POST adds, PUT or PATCH on
// <list>/<id> (GitLab) or comments/<id> (GitHub) updates.
type notesAPI struct {
	// userPath, if set, answers GET with {"id": me}, the token's user
	// (GitLab's /user); notes posted are by me.
	userPath string
	me       int
	mu       sync.Mutex
	notes    []map[string]any
	writes   []string // "POST", "PUT 1", ...
	auth     []string
}

func (n *notesAPI) handler(listPath, itemPrefix, authHeader string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.auth = append(n.auth, r.Header.Get(authHeader))
		var in struct{ Body string }
		if r.Method != "GET" {
			b, _ := io.ReadAll(r.Body)
			if err := json.Unmarshal(b, &in); err != nil || in.Body == "" {
				http.Error(w, "want {body}", http.StatusBadRequest)
				return
			}
		}
		switch {
		case r.Method == "GET" && n.userPath != "" && r.URL.Path == n.userPath:
			_ = json.NewEncoder(w).Encode(map[string]int{"id": n.me})
		case r.Method == "GET" && r.URL.Path == listPath:
			_ = json.NewEncoder(w).Encode(n.notes)
		case r.Method == "POST" && r.URL.Path == listPath:
			n.notes = append(n.notes, map[string]any{"id": len(n.notes) + 1, "body": in.Body, "user": map[string]string{"login": "github-actions[bot]"}, "author": map[string]int{"id": n.me}})
			n.writes = append(n.writes, "POST")
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{}`))
		case (r.Method == "PUT" || r.Method == "PATCH") && strings.HasPrefix(r.URL.Path, itemPrefix):
			id := strings.TrimPrefix(r.URL.Path, itemPrefix)
			for _, note := range n.notes {
				if jsonInt(note["id"].(int)) == id {
					note["body"] = in.Body
				}
			}
			n.writes = append(n.writes, r.Method+" "+id)
			_, _ = w.Write([]byte(`{}`))
		default:
			http.NotFound(w, r)
		}
	})
}

func TestGitHubActionsSample(t *testing.T) {
	var wf ghWorkflow
	readYAML(t, filepath.Join("..", "..", "samples", "ci", ".github", "workflows", "berth-diff.yml"), &wf)
	job, ok := wf.Jobs["diff"]
	if !ok || wf.On["pull_request"] == nil || wf.Permissions["pull-requests"] != "write" || job.RunsOn == "" {
		t.Fatalf("workflow: %+v", wf)
	}
	steps := map[string]string{}
	for _, s := range job.Steps {
		if s.Uses != "" && !strings.HasPrefix(s.Uses, "actions/checkout@") {
			t.Errorf("step %q uses %s: only actions/checkout is allowed", s.Name, s.Uses)
		}
		if s.Run != "" {
			bashSyntax(t, s.Name, s.Run)
			steps[s.Name] = s.Run
		}
	}
	summarise, post := steps["Summarise the change"], steps["Post or update the comment"]
	if summarise == "" || post == "" {
		t.Fatalf("steps: %v", steps)
	}

	// Every path: a provision file may live anywhere in the repository.
	if pr, ok := wf.On["pull_request"].(map[string]any); !ok || pr["paths"] != nil || pr["paths-ignore"] != nil {
		t.Errorf("pull_request trigger %v: want every path", wf.On["pull_request"])
	}

	r, base, head, bin := ciRepo(t)
	// Someone else's comment with the marker is not the one to update.
	api := &notesAPI{notes: []map[string]any{{"id": 1, "body": "me too <!-- berth-diff -->", "user": map[string]string{"login": "mallory"}}}}
	srv := httptest.NewServer(api.handler("/repos/acme/apps/issues/7/comments", "/repos/acme/apps/issues/comments/", "Authorization"))
	defer srv.Close()
	// gh is not on this machine: a stub that does what `gh api` does with
	// the arguments the workflow uses, against the fake API.
	stub := `#!/bin/bash
set -e
[ "$1" = api ] || exit 64; shift
method=GET; input=; jqf=; path=
while [ $# -gt 0 ]; do
  case "$1" in
    --paginate) ;;
    --method) method=$2; shift ;;
    --input) input=$2; shift ;;
    --jq) jqf=$2; shift ;;
    *) path=$1 ;;
  esac
  shift
done
args=(-fsS -X "$method" -H "Authorization: token $GH_TOKEN" "$FAKE_API/$path")
[ -n "$input" ] && args+=(-H "Content-Type: application/json" --data-binary "@$input")
if [ -n "$jqf" ]; then curl "${args[@]}" | jq -r "$jqf"; else curl "${args[@]}"; fi
`
	if err := os.WriteFile(filepath.Join(bin, "gh"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	summary := filepath.Join(t.TempDir(), "summary.md")
	env := []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "BERTH_DIR=" + wf.Env["BERTH_DIR"], "BASE=" + base, "HEAD=" + head,
		"GITHUB_STEP_SUMMARY=" + summary, "GH_TOKEN=ghs_test", "REPO=acme/apps", "PR=7", "FAKE_API=" + srv.URL}
	for push := 1; push <= 2; push++ {
		runScript(t, r.dir, summarise, env...)
		runScript(t, r.dir, post, env...)
	}
	body, _ := os.ReadFile(filepath.Join(r.dir, "body.md"))
	if !strings.Contains(string(body), "### berth diff") || !strings.Contains(string(body), "`reg/web:1` → `reg/web:2`") {
		t.Errorf("body.md:\n%s", body)
	}
	if s, _ := os.ReadFile(summary); !strings.Contains(string(s), "### berth diff") {
		t.Errorf("step summary:\n%s", s)
	}
	if strings.Join(api.writes, ",") != "POST,PATCH 2" || len(api.notes) != 2 || api.notes[1]["body"] != string(body) || api.notes[0]["body"] != "me too <!-- berth-diff -->" {
		t.Errorf("comments: writes %v, notes %v", api.writes, api.notes)
	}
	if api.auth[0] != "token ghs_test" {
		t.Errorf("auth %v", api.auth)
	}
}

func TestGitLabCISample(t *testing.T) {
	var jobs map[string]glJob
	readYAML(t, filepath.Join("..", "..", "samples", "ci", ".gitlab-ci.yml"), &jobs)
	job, ok := jobs["berth-diff"]
	if !ok || len(job.Script) != 2 || len(job.Rules) == 0 || job.Image == "" {
		t.Fatalf("job: %+v", jobs)
	}
	for i, s := range append(append([]string{}, job.BeforeScript...), job.Script...) {
		bashSyntax(t, "script line "+jsonInt(i), s)
	}

	for _, rule := range job.Rules {
		if rule["changes"] != nil {
			t.Errorf("rule %v: want every path (a provision file may live anywhere)", rule)
		}
	}

	r, base, head, bin := ciRepo(t)
	// Another participant's note with the marker, newest first as GitLab
	// lists them with sort=desc, is not the one to update: the token's
	// user (GET /user) is 5.
	api := &notesAPI{userPath: "/api/v4/user", me: 5,
		notes: []map[string]any{{"id": 1, "body": "me too <!-- berth-diff -->", "author": map[string]int{"id": 99}}}}
	srv := httptest.NewServer(api.handler("/api/v4/projects/42/merge_requests/7/notes", "/api/v4/projects/42/merge_requests/7/notes/", "Private-Token"))
	defer srv.Close()
	env := []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "BERTH_DIR=" + job.Variables["BERTH_DIR"],
		"CI_MERGE_REQUEST_DIFF_BASE_SHA=" + base, "CI_COMMIT_SHA=" + head, "CI_API_V4_URL=" + srv.URL + "/api/v4",
		"CI_PROJECT_ID=42", "CI_MERGE_REQUEST_IID=7", "BERTH_GITLAB_TOKEN=glpat-test"}
	for push := 1; push <= 2; push++ {
		for _, s := range job.Script {
			runScript(t, r.dir, s, env...)
		}
	}
	body, _ := os.ReadFile(filepath.Join(r.dir, "body.md"))
	if !strings.Contains(string(body), "| `web` | changed | 2 → 3 | +`web-2` |") {
		t.Errorf("body.md:\n%s", body)
	}
	if strings.Join(api.writes, ",") != "POST,PUT 2" || len(api.notes) != 2 || api.notes[1]["body"] != string(body) ||
		api.notes[0]["body"] != "me too <!-- berth-diff -->" || api.auth[0] != "glpat-test" {
		t.Errorf("notes: writes %v, notes %v, auth %v", api.writes, api.notes, api.auth)
	}
}
