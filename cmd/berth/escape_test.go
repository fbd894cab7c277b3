package main

import (
	"encoding/json"
	"fmt"
	"github.com/berth-gitops/berth/ownership"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/internal/textesc"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

func TestSafeText(t *testing.T) {
	for in, want := range map[string]string{
		"plain: web-0 → reg/web:2 ✓ é": "plain: web-0 → reg/web:2 ✓ é",
		`C:\path\x1b`:                  `C:\path\x1b`, // backslashes are left alone
		"tab\tshown":                   `tab\tshown`,  // a tab in a value is visible
		"\x1b[1A\x1b[2K":               `\x1b[1A\x1b[2K`,
		"line\nforged":                 `line\nforged`,
		"cr\roverwrite":                `cr\roverwrite`,
		"bell\a del\x7f nul\x00":       `bell\a del\x7f nul\x00`,
		"c1 \u009b2J nel\u0085":        `c1 \u009b2J nel\u0085`,
		"bidi \u202eevil\u202c \u2066": `bidi \u202eevil\u202c \u2066`,
		"lrm\u200e ls\u2028 ps\u2029":  `lrm\u200e ls\u2028 ps\u2029`,
		"bad utf8 \xff\xc3":            `bad utf8 \xff\xc3`,
		"replacement char \ufffd":      "replacement char \ufffd",
	} {
		if got := safeText(in); got != want {
			t.Errorf("safeText(%q) = %q, want %q", in, got, want)
		}
	}
	// A rendering keeps its layout: newlines and the tabs of a Go stack
	// trace (crash.go prints one).
	if got := safeLines("a\x1b[2K\nb\u202e\n\tmain.go:1\n"); got != "a\\x1b[2K\nb\\u202e\n\tmain.go:1\n" {
		t.Errorf("safeLines = %q", got)
	}
}

// The CLI and spec's diagnostics escape with one escaper: the same value
// reads the same in `validate` (a diagnostic) and in `diff` (issue 18).
func TestOneEscaperForCLIAndDiagnostics(t *testing.T) {
	for _, in := range []string{"tab\there", "bell\a\x1b[2J", "nel\u0085 bidi\u202e", "bad\xff", "plain ✓"} {
		d := spec.Diagnostic{File: "web.yaml", Message: in}
		if got, want := d.String(), "web.yaml: "+safeText(in); got != want {
			t.Errorf("diagnostic %q, CLI %q: the two escape differently", got, want)
		}
	}
	if got := spec.EscapeText("a\tb"); got != `a\tb` {
		t.Errorf("spec.EscapeText(tab) = %q, want a visible \\t", got)
	}
	// diff shows a tab in a value, which would read as spaces.
	old := loadApps(t, map[string]string{"web.yaml": specWithNote("web", "a b")})
	new := loadApps(t, map[string]string{"web.yaml": specWithNote("web", "a\tb")})
	var out strings.Builder
	diffSpecs(fromCommit, toCommit, old, new).writeText(&out)
	if !strings.Contains(out.String(), `container.env.NOTE: a b → a\tb`) {
		t.Errorf("diff does not show the tab:\n%s", out.String())
	}
}

// A value that differs only by an invisible character (zero-width, BOM,
// Unicode tags) shows the difference in text and Markdown (issue 18).
func TestDiffShowsInvisibleCharacters(t *testing.T) {
	for _, tt := range []struct{ value, shown string }{
		{"safe\u200b", `safe\u200b`},
		{"safe\u2060\ufeff", `safe\u2060\ufeff`},
		{"safe\U000e0041", `safe\U000e0041`},
	} {
		old := loadApps(t, map[string]string{"web.yaml": specWithNote("web", "safe")})
		new := loadApps(t, map[string]string{"web.yaml": specWithNote("web", tt.value)})
		d := diffSpecs(fromCommit, toCommit, old, new)
		var out strings.Builder
		d.writeText(&out)
		if !strings.Contains(out.String(), "container.env.NOTE: safe → "+tt.shown+"\n") {
			t.Errorf("diff of %q:\n%s", tt.value, out.String())
		}
		md := d.markdown(1, 1)
		if !strings.Contains(md, "`safe` → `"+tt.shown+"`") {
			t.Errorf("diff -o markdown of %q:\n%s", tt.value, md)
		}
		checkMarkdown(t, md, nil)
	}
}

// assertSafe fails when text output could drive a terminal: a raw control
// character other than newline and tab, C1, a bidi control, or a line
// that the hostile value forged.
func assertSafe(t *testing.T, what, out string) {
	t.Helper()
	if needsEscape(strings.NewReplacer("\n", "", "\t", "").Replace(out)) {
		t.Errorf("%s: raw control characters reach the terminal:\n%q", what, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "FORGED") {
			t.Errorf("%s: a value forged the line %q", what, l)
		}
	}
}

// hostile erases the line above, reverses the text, sends a C1 CSI and
// forges a line; hostileLine does all but the last (multi-line values are
// summarised, never printed).
const (
	hostile     = hostileLine + "\nFORGED line"
	hostileLine = "\x1b[1A\x1b[2K\u202e\u009b2J"
)

// yamlQuote writes s as a YAML double-quoted scalar whose control
// characters are YAML escapes ("\e[1A" reads as ESC [ 1 A), as a hostile
// spec would: the file's bytes are clean, the value is not.
func yamlQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case textesc.MustEscape(r) && r > 0xffff:
			fmt.Fprintf(&b, `\U%08x`, r)
		case textesc.MustEscape(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// specWithNote is a valid app whose system config and container env carry
// note.
func specWithNote(name, note string) string {
	return strings.NewReplacer("NAME", name, "VALUE", yamlQuote(note)).Replace(`apiVersion: berth/v1
kind: App
metadata:
  name: NAME
spec:
  replicas: 1
  system:
    image: berth/debian-docker
    limits: {memory: 512MiB}
    config: {user.note: VALUE}
  container:
    image: reg/NAME:1
    env: {NOTE: VALUE}
`)
}

// diff, validate and rollback print hostile spec values, file names and
// commit subjects escaped; JSON keeps them exact (issue 9 #7).
func TestTextOutputEscapesHostileSpecValuesAndFileNames(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", specWithNote("web", "fine"))
	r.commit("web")
	r.write("apps/web.yaml", specWithNote("web", hostileLine))
	r.commit("hostile\x1b[2K\nFORGED subject")

	code, out, errOut := berth(t, "diff", "--repo", r.dir, "HEAD~1", "HEAD")
	if code != exitChanges {
		t.Fatalf("diff: code %d\n%s%s", code, out, errOut)
	}
	assertSafe(t, "diff", out)
	if !strings.Contains(out, `container.env.NOTE: fine → \x1b[1A\x1b[2K\u202e\u009b2J`) {
		t.Errorf("diff does not show the escaped value:\n%s", out)
	}
	// JSON is exact.
	_, out, _ = berth(t, "diff", "--repo", r.dir, "-o", "json", "HEAD~1", "HEAD")
	var d specDiff
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Apps) != 1 || len(d.Apps[0].Fields) != 2 || d.Apps[0].Fields[0].New != hostileLine {
		t.Errorf("JSON is not exact:\n%s", out)
	}
	// A multi-line value is counted, not printed.
	r.write("apps/web.yaml", specWithNote("web", hostile))
	r.commit("multi-line")
	_, out, _ = berth(t, "diff", "--repo", r.dir, "HEAD~1", "HEAD")
	assertSafe(t, "diff of a multi-line value", out)

	// rollback prints commit subjects.
	r.git("reset", "-q", "--hard", "HEAD~1")
	code, out, errOut = berth(t, "rollback", "--repo", r.dir, "--author-name", "Ops", "--author-email", "ops@example.org", "HEAD")
	if code != 0 || !strings.Contains(out, `reverted `) || !strings.Contains(out, ` hostile\x1b[2K`) {
		t.Errorf("rollback: code %d\n%s%s", code, out, errOut)
	}
	assertSafe(t, "rollback", out)

	// File names that would clear the screen and forge a line, on disk and
	// committed, and a hostile value quoted in a diagnostic.
	evil := "apps/evil\x1b[2J\nFORGED.yaml"
	r.write(evil, "apiVersion: berth/v1\nkind: App\nmetadata: {name: \"x\\e[2J\\nFORGED\"}\nspec: {replicas: \"\\e[2K\"}\n")
	code, out, errOut = berth(t, "validate", r.dir)
	if code != exitError || !strings.Contains(out, `evil\x1b[2J\nFORGED.yaml:`) {
		t.Errorf("validate: code %d\n%s%s", code, out, errOut)
	}
	assertSafe(t, "validate stdout", out)
	assertSafe(t, "validate stderr", errOut)
	r.commit("broken")
	for _, args := range [][]string{{"validate", "--rev", "HEAD", r.dir}, {"diff", "--repo", r.dir, "HEAD~1", "HEAD"}} {
		code, out, errOut := berth(t, args...)
		if code != exitError {
			t.Errorf("%v: code %d\n%s%s", args, code, out, errOut)
		}
		assertSafe(t, strings.Join(args[:1], " "), out+errOut)
	}

	// An error message quoting a hostile argument.
	code, _, errOut = berth(t, "validate", "/nonexistent/\x1b[2J\nFORGED")
	if code != exitError {
		t.Errorf("validate of a missing path: code %d", code)
	}
	assertSafe(t, "error", errOut)
}

// plan prints hostile live values (LXD config, another owner's name, a
// Docker error) escaped; JSON keeps them exact.
func TestPlanEscapesHostileLiveValues(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", strings.Replace(specWithNote("web", "fine"), "replicas: 1", "replicas: 3", 1))
	sha := r.commit("web")
	res, err := spec.LoadDir(t.Context(), filepath.Join(r.dir, "apps"), spec.Options{})
	if err != nil || len(res.Diagnostics) > 0 {
		t.Fatal(err, res.Diagnostics)
	}
	obs := converged(res.Apps, sha)
	obs.Instances[0].Config["user.note"] = hostileLine
	// web-1 belongs to another owner with a hostile name.
	obs.Instances[1].Config[ownership.KeyOwner] = "them\x1b[2J\nFORGED owner"
	obs.Instances[2].DockerError = "dial\x1b[31m\nFORGED docker"
	p := filepath.Join(t.TempDir(), "observed.json")
	b, _ := json.Marshal(normalizeObserved(obs))
	os.WriteFile(p, b, 0o644)

	code, out, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", p)
	if code != exitBlocked {
		t.Errorf("plan: code %d, want %d (a conflict)\n%s%s", code, exitBlocked, out, errOut)
	}
	assertSafe(t, "plan", out)
	for _, want := range []string{`user.note: \x1b[1A\x1b[2K\u202e\u009b2J → fine`, `them\x1b[2J\nFORGED owner`} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	_, out, _ = berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", p, "-o", "json")
	var pl plan.Plan
	if err := json.Unmarshal([]byte(out), &pl); err != nil {
		t.Fatal(err)
	}
	if len(pl.Conflicts) != 1 || pl.Conflicts[0].Owner != "them\x1b[2J\nFORGED owner" {
		t.Errorf("JSON is not exact: %+v", pl.Conflicts)
	}

	// planText leaves the plan it prints unchanged (apply executes it).
	before, _ := json.Marshal(pl)
	_ = planText(pl)
	if after, _ := json.Marshal(pl); string(after) != string(before) {
		t.Errorf("planText changed the plan")
	}
}

// status --server prints what a daemon says escaped (the daemon's view
// comes from LXD, Docker and Git).
func TestStatusEscapesHostileValues(t *testing.T) {
	st := reconciler.LoopStatus{
		Status: plan.Status{Revision: "0123456789abcdef", Owner: "berth", Apps: []plan.AppStatusView{
			{App: "web", Desired: 1, Sync: plan.SyncSynced, Health: plan.HealthDegraded, LastError: hostile,
				Replicas: []plan.ReplicaView{{Instance: "web-0", Status: "Running", Container: "exited\x1b[2K", Error: hostile}}},
		}},
		Phase: "Idle\x1b[2J", LastResult: "error", LastRun: time.Now(), LastError: hostile, SourceWarning: hostile,
		LeaseHolder: "host\nFORGED holder",
		Failures:    map[string]reconciler.AppFailure{"web\x1b[2K": {Revision: "0123456789abcdef", Count: 1, Reason: hostile}},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(st)
	}))
	defer srv.Close()
	code, out, errOut := berth(t, "status", "--server", srv.URL)
	if code != 0 {
		t.Fatalf("code %d: %s", code, errOut)
	}
	assertSafe(t, "status", out)
	if !strings.Contains(out, `host\nFORGED holder`) || !strings.Contains(out, `web\x1b[2K: revision`) {
		t.Errorf("status:\n%s", out)
	}
}
