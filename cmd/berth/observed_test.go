package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// plan --observed decodes strictly (issue 9 #9).
func TestReadObservedIsStrict(t *testing.T) {
	good := `{"instances":[{"name":"web-0","status":"Running","config":{"user.berth.owner":"berth"},"profiles":["default"],"container":null}]}`
	for name, tc := range map[string]struct{ in, want string }{
		"null":                    {`null`, "null, want an object"},
		"empty":                   {``, "empty"},
		"whitespace":              {" \n", "empty"},
		"list":                    {`[null]`, "want an object"},
		"string":                  {`"x"`, "want an object"},
		"no instances key":        {`{}`, `no "instances" key`},
		"instances null":          {`{"instances":null}`, "instances: null, want a list"},
		"instances object":        {`{"instances":{}}`, "instances: want a list"},
		"null instance":           {`{"instances":[null]}`, "instances[0]: null, want an object"},
		"trailing garbage":        {`{"instances":[]} x`, "data after"},
		"trailing comma":          {`{"instances":[]},`, "data after"},
		"second object":           {`{"instances":[]}{"instances":[]}`, "data after"},
		"truncated":               {`{"instances":[`, "unexpected EOF"},
		"upper-case key":          {`{"Instances":[]}`, `unknown key "Instances" (keys are case-sensitive: "instances")`},
		"upper-case nested key":   {`{"instances":[{"Name":"web-0"}]}`, `instances[0]: unknown key "Name" (keys are case-sensitive: "name")`},
		"unknown key":             {`{"instances":[],"extra":1}`, `unknown key "extra"`},
		"unknown nested key":      {`{"instances":[{"name":"a","cpu":1}]}`, `instances[0]: unknown key "cpu"`},
		"repeated key":            {`{"instances":[],"instances":[]}`, `key "instances" appears twice`},
		"repeated nested key":     {`{"instances":[{"name":"a","name":"b"}]}`, `key "name" appears twice`},
		"repeated map key":        {`{"instances":[{"name":"a","config":{"k":"1","k":"2"}}]}`, `key "k" appears twice`},
		"null config":             {`{"instances":[{"name":"a","config":null}]}`, "instances[0].config: null, want an object"},
		"null name":               {`{"instances":[{"name":null}]}`, "instances[0].name: null, want a string"},
		"null config value":       {`{"instances":[{"name":"a","config":{"k":null}}]}`, "instances[0].config.k: null, want a string"},
		"null profile":            {`{"instances":[{"name":"a","profiles":[null]}]}`, "instances[0].profiles[0]: null, want a string"},
		"null device":             {`{"instances":[{"name":"a","devices":{"eth0":null}}]}`, "instances[0].devices.eth0: null, want an object"},
		"null restart count":      {`{"instances":[{"name":"a","container":{"restartCount":null}}]}`, "restartCount: null, want a number"},
		"wrong type":              {`{"instances":[{"name":1}]}`, "cannot unmarshal number"},
		"fractional count":        {`{"instances":[{"name":"a","container":{"restartCount":1.5}}]}`, "cannot unmarshal"},
		"unnamed instance":        {`{"instances":[{"status":"Running"}]}`, "instances[0]: no name"},
		"duplicate instance":      {`{"instances":[{"name":"a"},{"name":"a"}]}`, `instances[1]: "a" is also instances[0]`},
		"duplicate member":        {`{"instances":[],"members":[{"name":"m1","status":"Online"},{"name":"m2"},{"name":"m1","status":"Offline"}]}`, `members[2]: "m1" is also members[0]`},
		"unnamed member":          {`{"instances":[],"members":[{"status":"Online"}]}`, "members[0]: no name"},
		"duplicate image":         {`{"instances":[],"images":[{"fingerprint":"ab"},{"fingerprint":"ab"}]}`, `images[1]: "ab" is also images[0]`},
		"image without a print":   {`{"instances":[],"images":[{"aliases":["x"]}]}`, "images[0]: no fingerprint"},
		"duplicate image alias":   {`{"instances":[],"images":[{"fingerprint":"ab","aliases":["x"]},{"fingerprint":"cd","aliases":["y","x"]}]}`, `images[1]: alias "x" is also an alias of images[0]`},
		"upper-case in container": {`{"instances":[{"name":"a","container":{"Labels":{}}}]}`, `unknown key "Labels"`},
	} {
		t.Run(name, func(t *testing.T) {
			var obs plan.Observed
			err := decodeObserved([]byte(tc.in), &obs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("decodeObserved(%q) = %v, want an error containing %q", tc.in, err, tc.want)
			}
		})
	}
	cluster := `{"instances":[],"members":[{"name":"m1","status":"Online"},{"name":"m2","status":"Offline"}],"images":[{"fingerprint":"ab","aliases":["x","x2"]},{"fingerprint":"cd"}]}`
	for _, in := range []string{good, `{"instances":[]}`, " {\"instances\": []}\n\n", cluster} {
		var obs plan.Observed
		if err := decodeObserved([]byte(in), &obs); err != nil {
			t.Errorf("decodeObserved(%q): %v", in, err)
		}
	}

	// What berth observe writes is read back, even for the zero value.
	for _, obs := range []plan.Observed{{}, {Instances: []plan.Instance{{Name: "web-0", Container: &plan.Container{Name: "web"}}}}} {
		b, _ := json.MarshalIndent(normalizeObserved(obs), "", "  ")
		var back plan.Observed
		if err := decodeObserved(b, &back); err != nil {
			t.Errorf("observe output %s not accepted: %v", b, err)
		}
	}

	// Through the command: a clear error, exit 1.
	r := newRepo(t)
	r.write("apps/web.yaml", appYAML("web", 1, "reg/web:1"))
	r.commit("web")
	p := filepath.Join(t.TempDir(), "observed.json")
	os.WriteFile(p, []byte(`{"Instances":[]}`), 0o644)
	if code, _, errOut := berth(t, "plan", "--repo", r.dir, "--observed", p); code != exitError || !strings.Contains(errOut, "not an observed-state snapshot") || !strings.Contains(errOut, "case-sensitive") {
		t.Errorf("plan --observed with an upper-case key: code %d %s", code, errOut)
	}
	// A member named twice: refused, not the last one winning (issue 18).
	os.WriteFile(p, []byte(`{"instances":[],"members":[{"name":"m1","status":"Offline"},{"name":"m1","status":"Online"}]}`), 0o644)
	if code, out, errOut := berth(t, "plan", "--repo", r.dir, "--observed", p); code != exitError || out != "" ||
		errOut != "berth: "+p+": not an observed-state snapshot: members[1]: \"m1\" is also members[0]\n" {
		t.Errorf("plan --observed with a member named twice: code %d %s%s", code, out, errOut)
	}
}

// A plan that cannot converge is not "No changes.": it says what blocks it
// and exits 3, with or without steps (issue 9 #8). diff keeps 0/2/1.
func TestPlanBlockedExits3(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", appYAML("web", 2, "reg/web:1"))
	sha := r.commit("web")
	res, err := spec.LoadDir(t.Context(), filepath.Join(r.dir, "apps"), spec.Options{})
	if err != nil || len(res.Diagnostics) > 0 {
		t.Fatal(err, res.Diagnostics)
	}
	write := func(obs plan.Observed) string {
		b, _ := json.Marshal(normalizeObserved(obs))
		p := filepath.Join(t.TempDir(), "observed.json")
		os.WriteFile(p, b, 0o644)
		return p
	}
	// web-1 is taken by an instance berth does not own.
	obs := converged(res.Apps, sha)
	obs.Instances[1].Config = map[string]string{"image.os": "debian"}
	obs.Instances[1].Container = nil
	conflict := write(obs)
	code, out, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", conflict)
	if code != exitBlocked || strings.Contains(out, "No changes.") || !strings.Contains(out, "Blocked: the live state cannot converge to this revision: 1 replica blocked by a conflict (web-1)") {
		t.Fatalf("conflict: code %d, want %d\n%s%s", code, exitBlocked, out, errOut)
	}
	if code, _, _ := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", conflict, "-o", "json"); code != exitBlocked {
		t.Errorf("conflict, -o json: code %d", code)
	}

	// A conflict and steps: still 3.
	obs.Instances = obs.Instances[1:] // web-0 missing
	if code, out, _ := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", write(obs)); code != exitBlocked || !strings.Contains(out, "Plan: 1 to create.") || !strings.Contains(out, "Blocked:") {
		t.Errorf("conflict and a create: code %d\n%s", code, out)
	}

	// An app held for an invalid spec, nothing else to do.
	done := write(converged(res.Apps, sha))
	r.write("apps/api.yaml", "apiVersion: berth/v1\nkind: App\nmetadata: {name: api}\nspec: {replicas: nope}\n")
	r.commit("api, broken")
	code, out, errOut = berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", done)
	if code != exitBlocked || strings.Contains(out, "No changes.") || !strings.Contains(out, "1 app held for an invalid spec (api)") {
		t.Errorf("held app: code %d\n%s%s", code, out, errOut)
	}

	// Converged: 0. diff is unchanged by all this: 0/2/1.
	r.git("rm", "-q", "apps/api.yaml")
	r.commit("no api")
	if code, out, _ := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", done); code != 0 || !strings.Contains(out, "No changes.") {
		t.Errorf("converged: code %d\n%s", code, out)
	}
	if code, _, _ := berth(t, "diff", "--repo", r.dir, "HEAD~2", "HEAD"); code != 0 {
		t.Errorf("diff: code %d", code)
	}
}
