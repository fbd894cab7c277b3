package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// A provision file that .gitignore excludes, or that was never added,
// passes validate on the work tree and then fails on every commit:
// validate warns, at the source field, and the specs stay valid. Read
// from a revision there is nothing to warn about: the file is missing.
func TestValidateWarnsOfProvisionFilesNotInGit(t *testing.T) {
	r := newRepo(t)
	r.write(".gitignore", "*.conf\n")
	r.write("specs/sys.yaml", `apiVersion: berth/v1
kind: App
metadata: {name: sys}
spec:
  system:
    image: berth/busybox
    provision:
      files:
        - {source: files/motd, path: /etc/motd}
        - {source: files/app.conf, path: /etc/app.conf}
        - {source: files/new, path: /etc/new}
`)
	r.write("files/motd", "hello\n")
	r.write("files/app.conf", "x=1\n")
	r.commit("provision")
	r.write("files/new", "new\n")
	wantWarnings := []string{
		`warning: specs/sys.yaml:10:20: spec.system.provision.files[1].source: provision file "files/app.conf" is ignored by Git (.gitignore:1: "*.conf"), so no commit holds it: plan, apply, the daemon and validate --rev will not find it; commit it with git add -f, or stop ignoring it`,
		`warning: specs/sys.yaml:11:20: spec.system.provision.files[2].source: provision file "files/new" is not tracked by Git, so no commit holds it yet: plan, apply, the daemon and validate --rev will not find it; git add and commit it`,
	}
	code, out, errOut := berth(t, "validate", "--dir", "specs", r.dir)
	if code != 0 || out != "ok: 1 app valid (sys)\n" {
		t.Errorf("exit %d\n%s%s", code, out, errOut)
	}
	want := strings.ReplaceAll(strings.Join(wantWarnings, "\n")+"\n", "specs/", filepath.ToSlash(r.dir)+"/specs/")
	if errOut != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", errOut, want)
	}
	// From the spec folder the file names are the folder's, as for problems.
	if _, _, errOut := berth(t, "validate", filepath.Join(r.dir, "specs")); strings.Count(errOut, "warning: ") != 2 || !strings.Contains(errOut, filepath.Join(r.dir, "specs", "sys.yaml")+":10:20:") {
		t.Errorf("from the spec folder: %s", errOut)
	}

	code, out, _ = berth(t, "validate", "-o", "json", "--dir", "specs", r.dir)
	var v struct {
		Valid    bool
		Warnings []diagnosticJSON
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != 0 || !v.Valid || len(v.Warnings) != 2 ||
		v.Warnings[0].Path != "spec.system.provision.files[1].source" || !strings.Contains(v.Warnings[0].Message, `is ignored by Git`) {
		t.Errorf("json: exit %d, %v\n%s", code, err, out)
	}

	// Committed (forced past .gitignore), they are in Git: no warning.
	r.git("add", "-f", "files/app.conf", "files/new")
	r.git("commit", "-q", "-m", "all")
	if code, out, errOut := berth(t, "validate", "--dir", "specs", r.dir); code != 0 || errOut != "" {
		t.Errorf("all committed: exit %d\n%s%s", code, out, errOut)
	}
}
