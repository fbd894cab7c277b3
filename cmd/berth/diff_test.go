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
