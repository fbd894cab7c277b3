package main

import (
	"strings"
	"testing"
)

// Two specs that differ never diff as "No changes": a dotted key does not
// flatten like a nested one, and a value set to "" is not none (issue 18,
// hidden collisions). Both changes reach LXD or Docker.
func TestDiffShowsChangesThatFlattenAlike(t *testing.T) {
	for _, tt := range []struct {
		name, old, new string
		want           []string // lines of the text diff
		recreates      bool
	}{{
		name: "device keys x.type, x.network become device data.x",
		old:  "    devices:\n      data: {type: nic, network: lxdbr0, x.type: nic, x.network: lxdbr0}\n",
		new:  "    devices:\n      data: {type: nic, network: lxdbr0}\n      data.x: {type: nic, network: lxdbr0}\n",
		want: []string{
			`system.devices.data["x.network"]: lxdbr0 → (unset)`,
			`system.devices.data["x.type"]: nic → (unset)`,
			`system.devices["data.x"].network: (unset) → lxdbr0`,
			`system.devices["data.x"].type: (unset) → nic`,
		},
		recreates: true,
	}, {
		name: "a config key set to empty",
		old:  "",
		new:  "    config: {user.note: \"\"}\n",
		want: []string{`system.config["user.note"]: (unset) → ""`},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRepo(t)
			r.write("apps/web.yaml", sysApp("web", tt.old))
			r.commit("old")
			r.write("apps/web.yaml", sysApp("web", tt.new))
			r.commit("new")
			code, out, errOut := berth(t, "diff", "--repo", r.dir, "HEAD~1", "HEAD")
			if code != exitChanges {
				t.Fatalf("diff: exit %d, want %d (changes)\n%s%s", code, exitChanges, out, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, "    "+w+"\n") {
					t.Errorf("diff lacks %q:\n%s", w, out)
				}
			}
			_, md, _ := berth(t, "diff", "--repo", r.dir, "-o", "markdown", "HEAD~1", "HEAD")
			if strings.Contains(md, "No changes") || !strings.Contains(md, "1 changed") || strings.Contains(md, "**Recreated") != tt.recreates {
				t.Errorf("diff -o markdown:\n%s", md)
			}
		})
	}
}

// changeLines are the "path: old → new" lines of a text diff.
func changeLines(t *testing.T, out string) map[string][2]string {
	t.Helper()
	lines := map[string][2]string{}
	for _, l := range strings.Split(out, "\n") {
		path, rest, ok := strings.Cut(strings.TrimSpace(l), ": ")
		old, new, ok2 := strings.Cut(rest, " → ")
		if ok && ok2 && !strings.HasPrefix(path, "replicas") {
			lines[path] = [2]string{old, new}
		}
	}
	return lines
}

// A changed value never prints as unchanged (issue 18): a long image
// whose end changed, a provision file whose content changed (its digest
// sits deep in a long value), a cloud-init of as many lines.
func TestDiffNeverShowsAChangeAsNone(t *testing.T) {
	image := func(tag string) string {
		return "registry.example.org/platform/team-payments/backend/payments-service:2024.06.01-" + tag
	}
	r := newRepo(t)
	app := func(tag, cloudInit string) string {
		return sysApp("web", "    cloudInit: |\n      #cloud-config\n      "+cloudInit+"\n"+
			"    provision:\n      files: [{source: files/setup.sh, path: /usr/local/sbin/setup, mode: \"0755\"}]\n      run: [/usr/local/sbin/setup]\n") +
			"  container:\n    image: " + image(tag) + "\n"
	}
	r.write("apps/web.yaml", app("1", "hostname: a"))
	r.write("files/setup.sh", "#!/bin/sh\necho one\n")
	r.commit("one")
	r.write("apps/web.yaml", app("2", "hostname: b"))
	r.write("files/setup.sh", "#!/bin/sh\necho two\n")
	r.commit("two")
	code, out, errOut := berth(t, "diff", "--repo", r.dir, "HEAD~1", "HEAD")
	if code != exitChanges {
		t.Fatalf("diff: exit %d\n%s%s", code, out, errOut)
	}
	lines := changeLines(t, out)
	for _, path := range []string{"container.image", "system.cloudInit", "system.provision.files"} {
		side, ok := lines[path]
		if !ok || side[0] == side[1] {
			t.Errorf("%s reads unchanged (or is missing): %q\n%s", path, side, out)
		}
	}
	if side := lines["container.image"]; !strings.HasSuffix(side[0], "-1") || !strings.HasSuffix(side[1], "-2") || !strings.HasPrefix(side[0], "…") {
		t.Errorf("the image change is not shown where it differs: %q", side)
	}
	if side := lines["system.cloudInit"]; !strings.HasPrefix(side[0], "<2 lines, sha256:") {
		t.Errorf("cloudInit is not shown by size and hash: %q", side)
	}
	_, md, _ := berth(t, "diff", "--repo", r.dir, "-o", "markdown", "HEAD~1", "HEAD")
	for _, want := range []string{"-1` → `", "-2`", "`<2 lines, sha256:"} {
		if !strings.Contains(md, want) {
			t.Errorf("diff -o markdown lacks %q:\n%s", want, md)
		}
	}
	checkMarkdown(t, md, nil)
}

func TestShownPair(t *testing.T) {
	long := strings.Repeat("x", 100)
	for _, tt := range []struct {
		old, new         string
		oldSet, newSet   bool
		wantOld, wantNew string
	}{
		{"a", "b", true, true, "a", "b"},
		{"", "b", false, true, "(unset)", "b"},
		{"", "", false, true, "(unset)", `""`},
		// The difference is past the width: the common start is elided.
		{long + "-1", long + "-2", true, true, "…" + strings.Repeat("x", 19) + "-1", "…" + strings.Repeat("x", 19) + "-2"},
		{long + "-1" + long, long + "-2" + long, true, true, "…" + strings.Repeat("x", 19) + "-1" + strings.Repeat("x", 59) + "…", "…" + strings.Repeat("x", 19) + "-2" + strings.Repeat("x", 59) + "…"},
		{"a\nb\n", "a\nc\n", true, true, "<2 lines, sha256:", "<2 lines, sha256:"},
		// Escaped alike: a literal backslash sequence and the character.
		{`a\x1b`, "a\x1b", true, true, `a\x1b (sha256:`, `a\x1b (sha256:`},
		{"(unset)", "", true, false, "(unset) (sha256:", "(unset)"},
	} {
		o, n := shownPair(tt.old, tt.new, tt.oldSet, tt.newSet, 80)
		if o == n || !strings.HasPrefix(o, tt.wantOld) || !strings.HasPrefix(n, tt.wantNew) {
			t.Errorf("shownPair(%q, %q) = %q, %q; want %q…, %q…", tt.old, tt.new, o, n, tt.wantOld, tt.wantNew)
		}
	}
}

// Markdown warns of a re-provision only when the provision hash changes:
// renaming a provision file's source in the repo changes nothing in the
// instance (issue 18, a false re-provision warning).
func TestDiffWarnsOfReprovisionOnlyWhenItsHashChanges(t *testing.T) {
	app := func(source string) string {
		return sysApp("web", "    provision:\n      files: [{source: "+source+", path: /usr/local/sbin/setup, mode: \"0755\"}]\n      run: [/usr/local/sbin/setup]\n")
	}
	r := newRepo(t)
	r.write("apps/web.yaml", app("files/setup.sh"))
	r.write("files/setup.sh", "#!/bin/sh\necho one\n")
	r.commit("one")
	r.git("mv", "files/setup.sh", "files/setup-web.sh")
	r.write("apps/web.yaml", app("files/setup-web.sh"))
	r.commit("rename the source")
	r.write("files/setup-web.sh", "#!/bin/sh\necho two\n")
	r.commit("change the content")
	for _, tt := range []struct {
		from, to    string
		reprovision bool
	}{
		{"HEAD~2", "HEAD~1", false}, // renamed: same content, same hash
		{"HEAD~1", "HEAD", true},    // content changed
		{"HEAD~2", "HEAD", true},
	} {
		code, md, errOut := berth(t, "diff", "--repo", r.dir, "-o", "markdown", tt.from, tt.to)
		if code != exitChanges {
			t.Fatalf("diff %s %s: exit %d\n%s%s", tt.from, tt.to, code, md, errOut)
		}
		if got := strings.Contains(md, "Re-provisioned in place"); got != tt.reprovision {
			t.Errorf("diff %s %s: re-provision warned %v, want %v:\n%s", tt.from, tt.to, got, tt.reprovision, md)
		}
		if !strings.Contains(md, "`system.provision.files`:") {
			t.Errorf("diff %s %s: the files change is not listed:\n%s", tt.from, tt.to, md)
		}
	}
}
