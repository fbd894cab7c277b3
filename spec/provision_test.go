package spec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// loadWithFiles loads src as specs/app.yaml of a repository that also
// holds files: the spec root is specs/, Options.Files the repository root.
func loadWithFiles(t *testing.T, src string, files fstest.MapFS, opts Options) *Result {
	t.Helper()
	repo := fstest.MapFS{"specs/app.yaml": {Data: []byte(src)}}
	for name, f := range files {
		repo[name] = f
	}
	if opts.Files == nil {
		opts.Files = repo
	}
	specs, err := fs.Sub(repo, "specs")
	if err != nil {
		t.Fatal(err)
	}
	r, err := Load(t.Context(), specs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// systemOnly is the smallest system-only app; lines added by plain() start
// at line 8, inside spec.system.
const systemOnly = `apiVersion: berth/v1
kind: App
metadata:
  name: web
spec:
  system:
    image: debian
`

func plain(lines string) string { return systemOnly + lines }

// repoFiles is a repository with a few files, symlinks and odd entries.
func repoFiles() fstest.MapFS {
	return fstest.MapFS{
		"etc/motd":             {Data: []byte("hello\n")},
		"etc/app.conf":         {Data: []byte("port=8080\n")},
		"scripts/provision.sh": {Data: []byte("#!/bin/sh\necho ok\n"), Mode: 0o755},
		"scripts/linked.sh":    {Data: []byte("provision.sh"), Mode: fs.ModeSymlink},
		"linked-dir":           {Data: []byte("etc"), Mode: fs.ModeSymlink},
		"secret":               {Data: []byte("../../etc/shadow"), Mode: fs.ModeSymlink},
		"fifo":                 {Mode: fs.ModeNamedPipe},
		".config/tool.yml":     {Data: []byte("a: b\n")},
		"ansible/site.yml":     {Data: []byte("- hosts: localhost\n")},
	}
}

func TestProvisionLoaded(t *testing.T) {
	src := plain(`    provision:
      files:
        - {source: etc/motd, path: /etc/motd}
        - {source: scripts/provision.sh, path: /usr/local/bin/provision, mode: "755", owner: "0001000:100"}
        - {source: .config/tool.yml, path: /root/.config/tool.yml, mode: "0750", owner: "65535:65535"}
      run: [/usr/local/bin/provision, --verbose]
      timeout: 2m
      every: 24h
    ports: [{name: ssh, port: 22}]
    ephemeral: true
    imageUpdate: manual
`)
	r := loadWithFiles(t, src, repoFiles(), Options{})
	if len(r.Diagnostics) != 0 || len(r.Apps) != 1 {
		t.Fatalf("does not load: %v", r.Diagnostics)
	}
	s := r.Apps[0].Spec
	if s.HasContainer() {
		t.Error("HasContainer() is true for an app without spec.container")
	}
	if !s.System.Ephemeral || s.System.ImageUpdate != ImageUpdateManual {
		t.Errorf("ephemeral %v, imageUpdate %q", s.System.Ephemeral, s.System.ImageUpdate)
	}
	wantPorts := []Port{{"ssh", 22, "tcp"}}
	if !reflect.DeepEqual(s.AppPorts(), wantPorts) || !reflect.DeepEqual(DeclaredPorts(r.Apps), map[string][]Port{"web": wantPorts}) {
		t.Errorf("AppPorts() = %v, DeclaredPorts = %v", s.AppPorts(), DeclaredPorts(r.Apps))
	}
	p := s.System.Provision
	if p == nil {
		t.Fatal("no provision")
	}
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	want := &Provision{
		Files: []ProvisionFile{
			{Source: "etc/motd", Path: "/etc/motd", Mode: "0644", Owner: "0:0", Digest: sum("hello\n"), Content: []byte("hello\n")},
			{Source: "scripts/provision.sh", Path: "/usr/local/bin/provision", Mode: "0755", Owner: "1000:100",
				Digest: sum("#!/bin/sh\necho ok\n"), Content: []byte("#!/bin/sh\necho ok\n")},
			{Source: ".config/tool.yml", Path: "/root/.config/tool.yml", Mode: "0750", Owner: "65535:65535", Digest: sum("a: b\n"), Content: []byte("a: b\n")},
		},
		Run:     []string{"/usr/local/bin/provision", "--verbose"},
		Timeout: Duration(2 * time.Minute),
		Every:   Duration(24 * time.Hour),
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("provision:\n got %+v\nwant %+v", p, want)
	}
}

// Spelled-out defaults decode to the same App, so they hash alike; and a
// provision hashes what it puts in the instance, not where it comes from.
func TestProvisionDefaultsAndHash(t *testing.T) {
	terse := plain("    provision: {files: [{source: etc/motd, path: /etc/motd}], run: [/bin/true]}\n")
	spelled := plain(`    imageUpdate: rolling
    ephemeral: false
    provision:
      files: [{source: etc/motd, path: /etc/motd, mode: "0644", owner: "0:0"}]
      run: [/bin/true]
      timeout: 10m
      every: 0s
      restartContainer: false
`)
	a := loadWithFiles(t, terse, repoFiles(), Options{})
	b := loadWithFiles(t, spelled, repoFiles(), Options{})
	if len(a.Apps) != 1 || len(b.Apps) != 1 {
		t.Fatalf("do not load: %v / %v", a.Diagnostics, b.Diagnostics)
	}
	sa, sb := a.Apps[0].Spec, b.Apps[0].Spec
	if !reflect.DeepEqual(sa, sb) {
		t.Errorf("specs differ:\n%+v\n%+v", sa, sb)
	}
	if sa.System.ImageUpdate != ImageUpdateRolling || sa.System.Provision.Timeout != DefaultProvisionTimeout {
		t.Errorf("defaults not applied: %+v", sa.System)
	}
	// Neither the provision nor the image update policy moves the system
	// hash: a change re-provisions in place, never recreates.
	bare := mustLoadBytes(t, systemOnly, Options{})
	if got, want := sa.System.Hash(), bare.Apps[0].Spec.System.Hash(); got != want {
		t.Errorf("system hash %s with a provision, %s without", got, want)
	}
	h := sa.System.Provision.Hash()
	files := repoFiles()
	files["other/motd"] = files["etc/motd"]
	moved := loadWithFiles(t, strings.Replace(terse, "source: etc/motd", "source: other/motd", 1), files, Options{})
	if got := moved.Apps[0].Spec.System.Provision.Hash(); got != h {
		t.Errorf("moving the source in the repo changed the provision hash: %s -> %s", h, got)
	}
	files["etc/motd"] = &fstest.MapFile{Data: []byte("changed\n")}
	changed := loadWithFiles(t, terse, files, Options{})
	if got := changed.Apps[0].Spec.System.Provision.Hash(); got == h {
		t.Error("changing a file's content did not change the provision hash")
	}
	// Pinned, as the system and container hashes are (TestHashesPinned):
	// it is stored on every provisioned instance.
	if h != "faa09edeea0354c9" {
		t.Errorf("Provision.Hash() = %q: a change re-provisions every instance on upgrade", h)
	}
}

// Every problem of a provision is reported at once, at its place.
func TestProvisionRules(t *testing.T) {
	prov := func(lines string) string { return plain("    provision:\n" + lines) }
	file := func(f string) string { return prov("      files: [" + f + "]\n") }
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"run only", prov("      run: [/bin/sh, -c, 'echo hi']\n"), nil},
		{"files only", file("{source: etc/motd, path: /etc/motd}"), nil},
		{"a playbook named .yml", file("{source: ansible/site.yml, path: /srv/site.yml}"), nil},
		{"empty provision", plain("    provision: {}\n"),
			[]string{`app.yaml:8:5: spec.system.provision: a provision needs files to copy, a command to run, or both`}},
		{"empty lists", prov("      files: []\n      run: []\n"),
			[]string{`app.yaml:8:5: spec.system.provision: a provision needs files to copy, a command to run, or both`}},
		{"provision as a list", plain("    provision: [/bin/true]\n"),
			[]string{`app.yaml:8:16: spec.system.provision: expected a mapping, got a list`}},
		{"run as a string", prov("      run: /srv/provision.sh\n"),
			[]string{`app.yaml:9:12: spec.system.provision.run: expected a list, got string "/srv/provision.sh"`}},
		{"run with an empty argument", prov("      run: [/bin/sh, \"\"]\n"),
			[]string{`app.yaml:9:22: spec.system.provision.run[1]: must not be empty: run is a command and its arguments, like [/bin/sh, /srv/provision.sh]`}},
		{"timeout too short", prov("      run: [x]\n      timeout: 500ms\n"),
			[]string{`app.yaml:10:16: spec.system.provision.timeout: duration "500ms" is too short: at least 1s`}},
		{"timeout too long", prov("      run: [x]\n      timeout: 25h\n"),
			[]string{`app.yaml:10:16: spec.system.provision.timeout: duration "25h" is too long: at most 24h`}},
		{"every too often", prov("      run: [x]\n      every: 30s\n"),
			[]string{`app.yaml:10:14: spec.system.provision.every: duration "30s" is too short: at least 1m`}},
		{"every negative", prov("      run: [x]\n      every: -1h\n"),
			[]string{`app.yaml:10:14: spec.system.provision.every: duration must be 0s (never) or more, got "-1h"`}},
		{"every as a number", prov("      run: [x]\n      every: 3600\n"),
			[]string{`app.yaml:10:14: spec.system.provision.every: expected a duration like "24h", or "0s" for never, got integer 3600`}},
		{"restartContainer without a container", prov("      run: [x]\n      restartContainer: true\n"),
			[]string{`app.yaml:10:25: spec.system.provision.restartContainer: restartContainer needs an app container, and this app has none (no spec.container)`}},
		{"restartContainer false without a container", prov("      run: [x]\n      restartContainer: false\n"), nil},
		{"unknown field", prov("      run: [x]\n      command: [y]\n"),
			[]string{`app.yaml:10:7: spec.system.provision.command: unknown field "command"; allowed: files, run, timeout, every, restartContainer`}},
		{"file without source and path", file("{mode: \"0644\"}"),
			[]string{
				`app.yaml:9:15: spec.system.provision.files[0].source: required field is missing`,
				`app.yaml:9:15: spec.system.provision.files[0].path: required field is missing`,
			}},
		{"digest is not an input", file("{source: etc/motd, path: /etc/motd, digest: abc}"),
			[]string{`app.yaml:9:51: spec.system.provision.files[0].digest: unknown field "digest"; allowed: source, path, mode, owner, secret`}},
		{"mode unquoted", file("{source: etc/motd, path: /etc/motd, mode: 0644}"),
			[]string{`app.yaml:9:57: spec.system.provision.files[0].mode: expected a string, got integer 0644; quote it: "0644" (write the mode as a quoted octal string)`}},
		{"mode not octal", file("{source: etc/motd, path: /etc/motd, mode: \"0648\"}"),
			[]string{`app.yaml:9:57: spec.system.provision.files[0].mode: mode must be an octal permission string like "0644" or "0755" (at most "0777"), got "0648"`}},
		{"mode too long", file("{source: etc/motd, path: /etc/motd, mode: \"10644\"}"),
			[]string{`app.yaml:9:57: spec.system.provision.files[0].mode: mode must be an octal permission string like "0644" or "0755" (at most "0777"), got "10644"`}},
		{"mode symbolic", file("{source: etc/motd, path: /etc/motd, mode: u+rw}"),
			[]string{`app.yaml:9:57: spec.system.provision.files[0].mode: mode must be an octal permission string like "0644" or "0755" (at most "0777"), got "u+rw"`}},
		{"owner by name", file("{source: etc/motd, path: /etc/motd, owner: root}"),
			[]string{`app.yaml:9:58: spec.system.provision.files[0].owner: owner must be numeric "uid:gid" like "0:0" or "1000:1000", got "root"`}},
		{"owner out of range", file("{source: etc/motd, path: /etc/motd, owner: \"4294967295:0\"}"),
			[]string{`app.yaml:9:58: spec.system.provision.files[0].owner: owner "4294967295:0" is outside an unprivileged container's default id map: uid and gid must be from 0 to 65535`}},
		// LXD cannot write a file owned by an id its container does not
		// map, and the default map has 65536 ids.
		{"uid outside the id map", file("{source: etc/motd, path: /etc/motd, owner: \"65536:0\"}"),
			[]string{`app.yaml:9:58: spec.system.provision.files[0].owner: owner "65536:0" is outside an unprivileged container's default id map: uid and gid must be from 0 to 65535`}},
		{"gid outside the id map", file("{source: etc/motd, path: /etc/motd, owner: \"1000:100000\"}"),
			[]string{`app.yaml:9:58: spec.system.provision.files[0].owner: owner "1000:100000" is outside an unprivileged container's default id map: uid and gid must be from 0 to 65535`}},
		{"owner at the top of the id map", file("{source: etc/motd, path: /etc/motd, owner: \"65535:065535\"}"), nil},
		// LXD's file API sets permission bits only.
		{"setuid mode", file("{source: etc/motd, path: /etc/motd, mode: \"4755\"}"),
			[]string{`app.yaml:9:57: spec.system.provision.files[0].mode: mode "4755" has setuid, setgid or sticky bits, which cannot be set through LXD's file API: use at most "0777" here and set them in the provision's command (chmod 4755 ...)`}},
		{"setgid mode", file("{source: etc/motd, path: /etc/motd, mode: \"2750\"}"),
			[]string{`app.yaml:9:57: spec.system.provision.files[0].mode: mode "2750" has setuid, setgid or sticky bits, which cannot be set through LXD's file API: use at most "0777" here and set them in the provision's command (chmod 2750 ...)`}},
		{"sticky mode", file("{source: etc/motd, path: /etc/motd, mode: \"1777\"}"),
			[]string{`app.yaml:9:57: spec.system.provision.files[0].mode: mode "1777" has setuid, setgid or sticky bits, which cannot be set through LXD's file API: use at most "0777" here and set them in the provision's command (chmod 1777 ...)`}},
		{"mode at the top", file("{source: etc/motd, path: /etc/motd, mode: \"0777\"}, {source: etc/motd, path: /x, mode: \"000\"}"), nil},
		{"relative path", file("{source: etc/motd, path: etc/motd}"),
			[]string{`app.yaml:9:40: spec.system.provision.files[0].path: must be an absolute path in the instance, got "etc/motd"`}},
		{"root path", file("{source: etc/motd, path: /}"),
			[]string{`app.yaml:9:40: spec.system.provision.files[0].path: must be a file's path, not "/"`}},
		{"unclean path", file("{source: etc/motd, path: /etc/../etc/motd/}"),
			[]string{`app.yaml:9:40: spec.system.provision.files[0].path: must be a clean path (no "//", "." or ".." parts, no trailing "/"): "/etc/../etc/motd/", maybe "/etc/motd"`}},
		{"same path twice", file("{source: etc/motd, path: /etc/motd}, {source: etc/app.conf, path: /etc/motd}"),
			[]string{`app.yaml:9:81: spec.system.provision.files[1].path: path "/etc/motd" is already written by files[0]`}},
		{"absolute source", file("{source: /etc/shadow, path: /x}"),
			[]string{`app.yaml:9:24: spec.system.provision.files[0].source: must be relative to the repository root, not absolute: "/etc/shadow"`}},
		{"source leaving the repository", file("{source: ../etc/shadow, path: /x}"),
			[]string{`app.yaml:9:24: spec.system.provision.files[0].source: must not have ".." parts: provision files are read from inside the repository, got "../etc/shadow"`}},
		{"source with a dot part", file("{source: ./etc/motd, path: /x}"),
			[]string{`app.yaml:9:24: spec.system.provision.files[0].source: must not have "." parts: provision files are read from inside the repository, got "./etc/motd"`}},
		{"source with an empty part", file("{source: etc//motd, path: /x}"),
			[]string{`app.yaml:9:24: spec.system.provision.files[0].source: must not have empty parts ("//" or a trailing "/"): "etc//motd"`}},
		{"source in .git", file("{source: .git/config, path: /x}"),
			[]string{`app.yaml:9:24: spec.system.provision.files[0].source: must not be in a .git folder, which is Git's, not the repository's content: ".git/config"`}},
		{"empty source", file("{source: \"\", path: /x}"),
			[]string{`app.yaml:9:24: spec.system.provision.files[0].source: must be the path of a file in the repository, relative to its root`}},
		{"missing source", file("{source: etc/nothing, path: /x}"),
			[]string{`app.yaml:9:24: spec.system.provision.files[0].source: no file "etc/nothing" in the repository at this revision`}},
		{"source under a file", file("{source: etc/motd/x, path: /x}"),
			[]string{`app.yaml:9:24: spec.system.provision.files[0].source: no file "etc/motd/x" in the repository at this revision: "etc/motd" is not a folder`}},
		{"source is a folder", file("{source: etc, path: /x}"),
			[]string{`app.yaml:9:24: spec.system.provision.files[0].source: "etc" is a folder; only regular files are copied by a provision`}},
		{"source is a symlink", file("{source: scripts/linked.sh, path: /x}"),
			[]string{`app.yaml:9:24: spec.system.provision.files[0].source: "scripts/linked.sh" is a symbolic link; berth never follows symlinks in provision files: put the file or folder itself there`}},
		{"source through a linked folder", file("{source: linked-dir/motd, path: /x}"),
			[]string{`app.yaml:9:24: spec.system.provision.files[0].source: "linked-dir" is a symbolic link; berth never follows symlinks in provision files: put the file or folder itself there`}},
		{"source is a FIFO", file("{source: fifo, path: /x}"),
			[]string{`app.yaml:9:24: spec.system.provision.files[0].source: "fifo" is a named pipe (FIFO); only regular files are copied by a provision`}},
		{"source as a number", file("{source: 12, path: /x}"),
			[]string{`app.yaml:9:24: spec.system.provision.files[0].source: expected a string, got integer 12; quote it: "12"`}},
		{"several problems at once", file("{source: /a, path: b, mode: \"9\", owner: x}") + "      run: [\"\"]\n      every: 1s\n",
			[]string{
				`app.yaml:9:24: spec.system.provision.files[0].source: must be relative to the repository root, not absolute: "/a"`,
				`app.yaml:9:34: spec.system.provision.files[0].path: must be an absolute path in the instance, got "b"`,
				`app.yaml:9:43: spec.system.provision.files[0].mode: mode must be an octal permission string like "0644" or "0755" (at most "0777"), got "9"`,
				`app.yaml:9:55: spec.system.provision.files[0].owner: owner must be numeric "uid:gid" like "0:0" or "1000:1000", got "x"`,
				`app.yaml:10:13: spec.system.provision.run[0]: must not be empty: run is a command and its arguments, like [/bin/sh, /srv/provision.sh]`,
				`app.yaml:11:14: spec.system.provision.every: duration "1s" is too short: at least 1m`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := loadWithFiles(t, tt.src, repoFiles(), Options{})
			sameLines(t, "diagnostics", diagStrings(r.Diagnostics), tt.want)
			if len(tt.want) > 0 && !slices.Equal(r.InvalidApps, []string{"web"}) {
				t.Errorf("InvalidApps = %v, want [web]: an app with a bad provision is held", r.InvalidApps)
			}
		})
	}
}

// system.ports and restartContainer depend on spec.container, written
// before or after them.
func TestSystemOnlyApps(t *testing.T) {
	const container = "  container: {image: nginx}\n"
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"system-only app", systemOnly, nil},
		{"system-only app with ports", plain("    ports: [{name: ssh, port: 22}]\n"), nil},
		{"ports and a container after them", plain("    ports: [{name: ssh, port: 22}]\n") + container,
			[]string{`app.yaml:8:5: spec.system.ports: system.ports is for an app without a container; this app has one, so declare its ports in spec.container.ports`}},
		{"ports and a container before them", strings.Replace(systemOnly, "  system:\n", container+"  system:\n", 1) + "    ports: [{name: ssh, port: 22}]\n",
			[]string{`app.yaml:9:5: spec.system.ports: system.ports is for an app without a container; this app has one, so declare its ports in spec.container.ports`}},
		{"empty system ports and a container", plain("    ports: []\n") + container, nil},
		{"system ports follow the port rules", plain("    ports: [{name: ssh, port: 22}, {name: ssh, port: 0}]\n"),
			[]string{
				`app.yaml:8:43: spec.system.ports[1].name: port name "ssh" is already used by ports[0]`,
				`app.yaml:8:54: spec.system.ports[1].port: must be between 1 and 65535, got 0`,
			}},
		{"restartContainer with a container", plain("    provision: {run: [x], restartContainer: true}\n") + container, nil},
		{"null container is none", plain("    provision: {run: [x], restartContainer: true}\n") + "  container: ~\n",
			[]string{`app.yaml:8:45: spec.system.provision.restartContainer: restartContainer needs an app container, and this app has none (no spec.container)`}},
		{"container without an image", systemOnly + "  container: {user: app}\n",
			[]string{`app.yaml:8:3: spec.container.image: required field is missing`}},
		{"ephemeral not a boolean", plain("    ephemeral: \"yes\"\n"),
			[]string{`app.yaml:8:16: spec.system.ephemeral: expected a boolean (true or false), got string "yes"`}},
		// An update snapshot stops the replica, which deletes an ephemeral
		// one; the problem is on snapshot, before or after ephemeral.
		{"ephemeral with update snapshots", plain("    ephemeral: true\n") + "  update: {snapshot: true}\n",
			[]string{`app.yaml:9:22: spec.update.snapshot: snapshot cannot work with system.ephemeral: true: taking it stops the replica, and LXD deletes an ephemeral instance when it stops; set one of them to false`}},
		{"update snapshots before ephemeral", strings.Replace(systemOnly, "  system:\n", "  update:\n    snapshot: true\n  system:\n", 1) + "    ephemeral: true\n",
			[]string{`app.yaml:7:15: spec.update.snapshot: snapshot cannot work with system.ephemeral: true: taking it stops the replica, and LXD deletes an ephemeral instance when it stops; set one of them to false`}},
		{"ephemeral without update snapshots", plain("    ephemeral: true\n") + "  update: {snapshot: false}\n", nil},
		{"update snapshots without ephemeral", plain("    ephemeral: false\n") + "  update: {snapshot: true}\n", nil},
		{"unknown imageUpdate", plain("    imageUpdate: auto\n"),
			[]string{`app.yaml:8:18: spec.system.imageUpdate: must be "rolling" or "manual", got "auto"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustLoadBytes(t, tt.src, Options{})
			sameLines(t, "diagnostics", diagStrings(r.Diagnostics), tt.want)
		})
	}
	r := mustLoadBytes(t, plain("    ports: [{name: ssh, port: 22}]\n"), Options{})
	if len(r.Apps) != 1 || r.Apps[0].Spec.HasContainer() || len(r.Apps[0].Spec.AppPorts()) != 1 {
		t.Fatalf("system-only app: %+v %v", r.Apps, r.Diagnostics)
	}
	// A system-only app's container hash is that of the empty container;
	// its ports do not move the system hash.
	if got, want := r.Apps[0].Spec.System.Hash(), mustLoadBytes(t, systemOnly, Options{}).Apps[0].Spec.System.Hash(); got != want {
		t.Errorf("system ports moved the system hash: %s vs %s", got, want)
	}
}

// The keys and devices that break a container's isolation are refused
// unless AllowPrivileged, each with a message naming --allow-privileged.
func TestIsolationBreakingKeys(t *testing.T) {
	tests := []struct {
		lines, want string
	}{
		{`    config: {raw.lxc: "lxc.apparmor.profile=unconfined"}` + "\n",
			`app.yaml:8:23: spec.system.config["raw.lxc"]: raw.lxc passes raw LXC settings past LXD's checks and can undo the container's isolation; not allowed (berth --allow-privileged permits it)`},
		{`    config: {raw.lxc: ""}` + "\n",
			`app.yaml:8:23: spec.system.config["raw.lxc"]: raw.lxc passes raw LXC settings past LXD's checks and can undo the container's isolation; not allowed (berth --allow-privileged permits it)`},
		{`    config: {raw.idmap: "both 1000 1000"}` + "\n",
			`app.yaml:8:25: spec.system.config["raw.idmap"]: raw.idmap maps host users and groups into the container, so its root may own host files; not allowed (berth --allow-privileged permits it)`},
		{`    config: {security.idmap.isolated: "false"}` + "\n",
			`app.yaml:8:39: spec.system.config["security.idmap.isolated"]: security.idmap.isolated: "false" shares the uid/gid map with other containers instead of giving this one its own; not allowed (berth --allow-privileged permits it)`},
		{`    config: {security.idmap.isolated: "Off"}` + "\n",
			`app.yaml:8:39: spec.system.config["security.idmap.isolated"]: security.idmap.isolated: "false" shares the uid/gid map with other containers instead of giving this one its own; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {tty: {type: unix-char, source: /dev/ttyS0}}` + "\n",
			`app.yaml:8:27: spec.system.devices.tty.type: device type "unix-char" passes a host device into the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {disk: {type: unix-block, source: /dev/sda}}` + "\n",
			`app.yaml:8:28: spec.system.devices.disk.type: device type "unix-block" passes a host device into the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {usb: {type: unix-hotplug, vendorid: "1234"}}` + "\n",
			`app.yaml:8:27: spec.system.devices.usb.type: device type "unix-hotplug" passes a host device into the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},

		// Every raw key, whatever its value.
		{`    config: {raw.apparmor: "mount,"}` + "\n",
			`app.yaml:8:28: spec.system.config["raw.apparmor"]: raw.apparmor passes raw settings past LXD's checks (to LXC, AppArmor, seccomp or QEMU) and can undo the container's isolation; not allowed (berth --allow-privileged permits it)`},
		{`    config: {raw.seccomp: ""}` + "\n",
			`app.yaml:8:27: spec.system.config["raw.seccomp"]: raw.seccomp passes raw settings past LXD's checks (to LXC, AppArmor, seccomp or QEMU) and can undo the container's isolation; not allowed (berth --allow-privileged permits it)`},
		{`    config: {raw.qemu: "-device x"}` + "\n",
			`app.yaml:8:24: spec.system.config["raw.qemu"]: raw.qemu passes raw settings past LXD's checks (to LXC, AppArmor, seccomp or QEMU) and can undo the container's isolation; not allowed (berth --allow-privileged permits it)`},
		{`    config: {raw.qemu.conf: "[device]"}` + "\n",
			`app.yaml:8:29: spec.system.config["raw.qemu.conf"]: raw.qemu.conf passes raw settings past LXD's checks (to LXC, AppArmor, seccomp or QEMU) and can undo the container's isolation; not allowed (berth --allow-privileged permits it)`},
		{`    config: {linux.kernel_modules: "ip_tables,overlay"}` + "\n",
			`app.yaml:8:36: spec.system.config["linux.kernel_modules"]: linux.kernel_modules loads modules into the host's kernel when the instance starts; not allowed (berth --allow-privileged permits it)`},
		{`    config: {security.syscalls.intercept.mount: "true"}` + "\n",
			`app.yaml:8:49: spec.system.config["security.syscalls.intercept.mount"]: security.syscalls.intercept.mount: "true" has LXD mount file systems for the container as root on the host; not allowed (berth --allow-privileged permits it)`},
		{`    config: {security.syscalls.intercept.mount.shift: "yes"}` + "\n",
			`app.yaml:8:55: spec.system.config["security.syscalls.intercept.mount.shift"]: security.syscalls.intercept.mount.shift: "yes" has LXD mount file systems for the container as root on the host; not allowed (berth --allow-privileged permits it)`},
		{`    config: {security.syscalls.intercept.mount.allowed: "ext4,xfs"}` + "\n",
			`app.yaml:8:57: spec.system.config["security.syscalls.intercept.mount.allowed"]: security.syscalls.intercept.mount.allowed: "ext4,xfs" has the host's kernel mount those file systems for the container, from devices and images the container controls; not allowed (berth --allow-privileged permits it)`},
		{`    config: {security.syscalls.intercept.bpf: "true"}` + "\n",
			`app.yaml:8:47: spec.system.config["security.syscalls.intercept.bpf"]: security.syscalls.intercept.bpf: "true" has LXD load BPF programs for the container as root on the host; not allowed (berth --allow-privileged permits it)`},
		{`    config: {security.syscalls.intercept.bpf.devices: "1"}` + "\n",
			`app.yaml:8:55: spec.system.config["security.syscalls.intercept.bpf.devices"]: security.syscalls.intercept.bpf.devices: "1" has LXD load BPF programs for the container as root on the host; not allowed (berth --allow-privileged permits it)`},

		// Devices that hand the host's hardware over.
		{`    devices: {gpu: {type: gpu}}` + "\n",
			`app.yaml:8:27: spec.system.devices.gpu.type: device type "gpu" passes a host device into the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {key: {type: usb, vendorid: "1050"}}` + "\n",
			`app.yaml:8:27: spec.system.devices.key.type: device type "usb" passes a host device into the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {card: {type: pci, address: "0000:01:00.0"}}` + "\n",
			`app.yaml:8:28: spec.system.devices.card.type: device type "pci" passes a host device into the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {ib0: {type: infiniband, nictype: physical, parent: ib0}}` + "\n",
			`app.yaml:8:27: spec.system.devices.ib0.type: device type "infiniband" passes a host device into the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		// The type may come after the key it gives a meaning to.
		{`    devices: {eth1: {nictype: physical, parent: enp5s0, type: nic}}` + "\n",
			`app.yaml:8:31: spec.system.devices.eth1.nictype: nictype "physical" hands a host network device to the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {eth1: {type: nic, nictype: sriov, parent: enp5s0}}` + "\n",
			`app.yaml:8:42: spec.system.devices.eth1.nictype: nictype "sriov" hands a host network device to the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},

		// A proxy to a socket file, LXD's own for one.
		{`    devices: {lxd: {type: proxy, bind: instance, listen: "unix:/run/lxd.sock", connect: "unix:/var/lib/lxd/unix.socket"}}` + "\n",
			`app.yaml:8:89: spec.system.devices.lxd.connect: a proxy that connects to a unix socket ("unix:/var/lib/lxd/unix.socket") can reach sockets like LXD's own, which give root on the host; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {s: {connect: "UNIX:@lxd", type: proxy, listen: "tcp:127.0.0.1:1"}}` + "\n",
			`app.yaml:8:28: spec.system.devices.s.connect: a proxy that connects to a unix socket ("UNIX:@lxd") can reach sockets like LXD's own, which give root on the host; not allowed (berth --allow-privileged permits it)`},

		// Disks that share the host's own files, or shift them.
		{`    devices: {data: {type: disk, source: /srv/data, path: /data, shift: "true"}}` + "\n",
			`app.yaml:8:73: spec.system.devices.data.shift: shift: "true" maps the container's root to the host's on this disk, so the files it writes there are owned by root on the host; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {host: {type: disk, source: /, path: /host}}` + "\n",
			`app.yaml:8:42: spec.system.devices.host.source: source "/" shares the host's root file system "/" with the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {host: {type: disk, source: /srv/.., path: /host}}` + "\n",
			`app.yaml:8:42: spec.system.devices.host.source: source "/srv/.." shares the host's root file system "/" with the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {lxd: {type: disk, source: /var/lib/lxd, path: /lxd}}` + "\n",
			`app.yaml:8:41: spec.system.devices.lxd.source: source "/var/lib/lxd" shares the host's "/var/lib/lxd" with the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {lxd: {type: disk, source: /var/snap/lxd/common/lxd/unix.socket, path: /lxd.sock}}` + "\n",
			`app.yaml:8:41: spec.system.devices.lxd.source: source "/var/snap/lxd/common/lxd/unix.socket" shares the host's "/var/snap/lxd" with the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {docker: {type: disk, source: /var/run/docker.sock, path: /var/run/docker.sock}}` + "\n",
			`app.yaml:8:44: spec.system.devices.docker.source: source "/var/run/docker.sock" shares the host's "/var/run" with the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {p: {type: disk, source: //proc/1, path: /p}}` + "\n",
			`app.yaml:8:39: spec.system.devices.p.source: source "//proc/1" shares the host's "/proc" with the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {s: {type: disk, source: /srv/../sys/kernel, path: /s}}` + "\n",
			`app.yaml:8:39: spec.system.devices.s.source: source "/srv/../sys/kernel" shares the host's "/sys" with the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {d: {type: disk, source: /dev/sdb, path: /mnt}}` + "\n",
			`app.yaml:8:39: spec.system.devices.d.source: source "/dev/sdb" shares the host's "/dev" with the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {r: {type: disk, source: /run/, path: /r}}` + "\n",
			`app.yaml:8:39: spec.system.devices.r.source: source "/run/" shares the host's "/run" with the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {e: {type: disk, source: /etc/ssh, path: /e}}` + "\n",
			`app.yaml:8:39: spec.system.devices.e.source: source "/etc/ssh" shares the host's "/etc" with the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {r: {type: disk, source: /root, path: /r}}` + "\n",
			`app.yaml:8:39: spec.system.devices.r.source: source "/root" shares the host's "/root" with the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {b: {type: disk, source: /boot, path: /b}}` + "\n",
			`app.yaml:8:39: spec.system.devices.b.source: source "/boot" shares the host's "/boot" with the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`},
	}
	for _, tt := range tests {
		src := sys(tt.lines)
		r := mustLoadBytes(t, src, Options{})
		sameLines(t, tt.lines, diagStrings(r.Diagnostics), []string{tt.want})
		if !slices.Equal(r.InvalidApps, []string{"web"}) {
			t.Errorf("%s: InvalidApps = %v, want [web]", tt.lines, r.InvalidApps)
		}
		if r := mustLoadBytes(t, src, Options{AllowPrivileged: true}); len(r.Diagnostics) != 0 || len(r.Apps) != 1 {
			t.Errorf("%s with AllowPrivileged: %v", tt.lines, r.Diagnostics)
		}
	}
	// Each problem of a device is its own, at its own key.
	r := mustLoadBytes(t, sys(`    devices: {etc: {type: disk, source: /etc, path: /host-etc, shift: "on"}}`+"\n"), Options{})
	sameLines(t, "two problems", diagStrings(r.Diagnostics), []string{
		`app.yaml:8:41: spec.system.devices.etc.source: source "/etc" shares the host's "/etc" with the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`,
		`app.yaml:8:71: spec.system.devices.etc.shift: shift: "on" maps the container's root to the host's on this disk, so the files it writes there are owned by root on the host; not allowed (berth --allow-privileged permits it)`,
	})
	// What keeps the isolation is fine.
	for _, lines := range []string{
		`    config: {security.idmap.isolated: "true", security.nesting: "true", security.privileged: "false"}` + "\n",
		// The test profile's intercepts; mounts redirected to FUSE run in
		// the container; false and empty values turn nothing on.
		`    config: {security.syscalls.intercept.mknod: "true", security.syscalls.intercept.setxattr: "true", security.syscalls.intercept.mount.fuse: "ext4=fuse2fs"}` + "\n",
		`    config: {security.syscalls.intercept.mount: "false", security.syscalls.intercept.mount.shift: "false", security.syscalls.intercept.mount.allowed: "", security.syscalls.intercept.bpf: "false", security.syscalls.intercept.bpf.devices: "no"}` + "\n",
		`    config: {linux.sysctl.net.ipv4.ip_forward: "1", user.raw.note: x, rawish: x}` + "\n",
		`    devices: {data: {type: disk, source: /srv, path: /srv}, vol: {type: disk, pool: default, source: data, path: /data}}` + "\n",
		// Clean path checks: a name that only starts like a system folder
		// is not under it.
		`    devices: {a: {type: disk, source: /etcetera, path: /a}, b: {type: disk, source: /srv/etc, path: /b}, c: {type: disk, source: /devices, path: /c}, d: {type: disk, source: /var/lib/lxd-backup, path: /d}}` + "\n",
		`    devices: {data: {type: disk, source: /srv, path: /srv, shift: "false"}, root: {type: disk, pool: default, path: /}}` + "\n",
		`    devices: {eth0: {type: nic, nictype: bridged, parent: berthbr0}, eth1: {type: nic, network: br0}, eth2: {type: nic, nictype: macvlan, parent: eth0}}` + "\n",
		// A registry on the host's loopback, as the test profile has.
		`    devices: {registry: {type: proxy, bind: instance, listen: "tcp:127.0.0.1:5000", connect: "tcp:127.0.0.1:5000"}, dns: {type: proxy, listen: "udp:0.0.0.0:53", connect: "udp:127.0.0.1:53"}}` + "\n",
		// The same keys in devices of other types mean nothing of the sort.
		`    devices: {x: {type: proxy, listen: "tcp:0.0.0.0:80", connect: "tcp:127.0.0.1:80", source: /etc, shift: "true", nictype: physical}}` + "\n",
	} {
		if r := mustLoadBytes(t, sys(lines), Options{}); len(r.Diagnostics) != 0 {
			t.Errorf("%s: %v", lines, r.Diagnostics)
		}
	}
}

// LoadBytes has no repository: provision files cannot be read, and say so.
func TestProvisionFilesWithoutRepository(t *testing.T) {
	r := mustLoadBytes(t, plain("    provision: {files: [{source: etc/motd, path: /etc/motd}]}\n"), Options{})
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		`app.yaml:8:34: spec.system.provision.files[0].source: cannot read "etc/motd": provision files are read from the repository, and none was given (load the spec tree from a repository or a folder, not a single file)`,
	})
	// A provision that only runs a command needs no repository.
	if r := mustLoadBytes(t, plain("    provision: {run: [/bin/true]}\n"), Options{}); len(r.Diagnostics) != 0 {
		t.Errorf("run only: %v", r.Diagnostics)
	}
}

// Provision files are bounded: their number per provision, each file's
// size (whatever Stat says), and all of a tree's together.
func TestProvisionLimits(t *testing.T) {
	files := repoFiles()
	big := make([]byte, MaxProvisionFileSize+1)
	files["big"] = &fstest.MapFile{Data: big}
	files["max"] = &fstest.MapFile{Data: big[:MaxProvisionFileSize]}
	list := func(n int, f string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(f, i)
		}
		return strings.Join(parts, ", ")
	}
	r := loadWithFiles(t, plain("    provision: {files: ["+list(MaxProvisionFiles, "{source: etc/motd, path: /f%d}")+"]}\n"), files, Options{})
	if len(r.Diagnostics) != 0 {
		t.Errorf("%d files: %v", MaxProvisionFiles, r.Diagnostics)
	}
	r = loadWithFiles(t, plain("    provision: {files: ["+list(MaxProvisionFiles+1, "{source: etc/motd, path: /f%d}")+"]}\n"), files, Options{})
	sameLines(t, "too many files", diagStrings(r.Diagnostics), []string{
		`app.yaml:8:24: spec.system.provision.files: has 101 files; a provision may copy at most 100`,
	})
	r = loadWithFiles(t, plain("    provision: {files: [{source: big, path: /big}, {source: max, path: /max}]}\n"), files, Options{})
	sameLines(t, "too large", diagStrings(r.Diagnostics), []string{
		`app.yaml:8:34: spec.system.provision.files[0].source: "big" is too large: 4194305 bytes, a provision file may have at most 4 MiB`,
	})
	// Stat lies: the read stops at the limit all the same.
	r = loadWithFiles(t, plain("    provision: {files: [{source: big.yaml, path: /big}]}\n"), nil, Options{Files: endlessFS{}})
	sameLines(t, "endless", diagStrings(r.Diagnostics), []string{
		`app.yaml:8:34: spec.system.provision.files[0].source: "big.yaml" is too large: a provision file may have at most 4 MiB`,
	})

	// The tree's budget counts each file once, however many apps use it.
	var docs []string
	budget := MaxProvisionTreeSize / MaxProvisionFileSize
	for i := range budget + 1 {
		files[fmt.Sprintf("f%d", i)] = &fstest.MapFile{Data: big[:MaxProvisionFileSize]}
		doc := strings.Replace(plain(fmt.Sprintf("    provision: {files: [{source: f%d, path: /f}, {source: f0, path: /g}]}\n", i)), "name: web", fmt.Sprintf("name: app%d", i), 1)
		docs = append(docs, doc)
	}
	r = loadWithFiles(t, strings.Join(docs, "---\n"), files, Options{})
	sameLines(t, "budget", diagStrings(r.Diagnostics), []string{
		fmt.Sprintf(`app.yaml:%d:34: spec.system.provision.files[0].source: "f%d" not read: the provision files of the spec tree together are over their 32 MiB budget`, 9*budget+8, budget),
	})
	if len(r.Apps) != budget {
		t.Errorf("%d apps loaded, want %d", len(r.Apps), budget)
	}
}

// Each provision file is read once per load, however many times it is
// used: through anchors, or by several apps.
func TestProvisionFilesReadOnce(t *testing.T) {
	files := repoFiles()
	src := plain("    provision: &p {files: [{source: etc/motd, path: /etc/motd}, {source: etc/motd, path: /etc/motd2}]}\n") +
		"---\n" + strings.Replace(plain("    provision: *p\n"), "name: web", "name: api", 1)
	cfs := &countingFS{FS: files}
	r := loadWithFiles(t, src, nil, Options{Files: cfs})
	if len(r.Diagnostics) != 0 || len(r.Apps) != 2 {
		t.Fatalf("does not load: %v", r.Diagnostics)
	}
	opened := 0
	for _, name := range cfs.opened {
		if name == "etc/motd" {
			opened++
		}
	}
	if opened != 1 {
		t.Errorf("etc/motd opened %d times, want once (opened: %v)", opened, cfs.opened)
	}
	if a, b := r.Apps[0].Spec.System.Provision.Hash(), r.Apps[1].Spec.System.Provision.Hash(); a != b {
		t.Errorf("same provision, hashes %s and %s", a, b)
	}
}

// Cancelling the load while a provision file is read stops it.
func TestProvisionHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cfs := &countingFS{FS: repoFiles(), onOpen: func(name string) {
		if name == "etc/motd" {
			cancel()
		}
	}}
	repo := fstest.MapFS{"app.yaml": {Data: []byte(plain("    provision: {files: [{source: etc/motd, path: /etc/motd}]}\n") +
		"---\n" + strings.Replace(plain("    provision: {files: [{source: etc/app.conf, path: /x}]}\n"), "name: web", "name: api", 1))}}
	if _, err := Load(ctx, repo, Options{Files: cfs}); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if slices.Contains(cfs.opened, "etc/app.conf") {
		t.Errorf("opened %v after the context ended", cfs.opened)
	}
}

// On disk, as in Git, a symlink anywhere on a provision file's path is
// refused and never followed: its target's content never reaches the App.
func TestProvisionSymlinksOnDisk(t *testing.T) {
	top := t.TempDir()
	repo := filepath.Join(top, "repo")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(repo, "specs"), 0o755))
	must(os.MkdirAll(filepath.Join(repo, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(top, "secret"), []byte("SECRET\n"), 0o644))
	must(os.WriteFile(filepath.Join(repo, "etc", "motd"), []byte("hello\n"), 0o644))
	must(os.Symlink(filepath.Join(top, "secret"), filepath.Join(repo, "etc", "secret")))
	must(os.Symlink("motd", filepath.Join(repo, "etc", "motd-link")))
	must(os.Symlink(top, filepath.Join(repo, "outside")))
	must(os.WriteFile(filepath.Join(repo, "specs", "app.yaml"), []byte(plain(`    provision:
      files:
        - {source: etc/motd, path: /a}
        - {source: etc/secret, path: /b}
        - {source: etc/motd-link, path: /c}
        - {source: outside/secret, path: /d}
`)), 0o644))
	r, err := LoadDir(t.Context(), filepath.Join(repo, "specs"), Options{Files: os.DirFS(repo)})
	if err != nil {
		t.Fatal(err)
	}
	const link = " is a symbolic link; berth never follows symlinks in provision files: put the file or folder itself there"
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		`app.yaml:11:20: spec.system.provision.files[1].source: "etc/secret"` + link,
		`app.yaml:12:20: spec.system.provision.files[2].source: "etc/motd-link"` + link,
		`app.yaml:13:20: spec.system.provision.files[3].source: "outside"` + link,
	})
	if strings.Contains(r.Diagnostics.Error(), "SECRET") || strings.Contains(r.Diagnostics.Error(), top) {
		t.Errorf("a link's target reached the diagnostics:\n%v", r.Diagnostics)
	}
}

// schema.json says what the loader does about the new fields: bounds,
// patterns and system.ports being container.ports for system-only apps.
func TestProvisionSchemaAgrees(t *testing.T) {
	root := loadSchema(t)
	node := func(path ...string) map[string]any {
		n := root
		for _, p := range path {
			if p == "[]" {
				n, _ = n["items"].(map[string]any)
			} else {
				n, _ = n["properties"].(map[string]any)[p].(map[string]any)
			}
			if n == nil {
				t.Fatalf("schema has no %v", path)
			}
		}
		return n
	}
	sysPorts, ctrPorts := node("spec", "system", "ports"), node("spec", "container", "ports")
	if !reflect.DeepEqual(sysPorts["items"], ctrPorts["items"]) || sysPorts["maxItems"] != ctrPorts["maxItems"] {
		t.Error("system.ports and container.ports differ in schema.json: they follow the same rules")
	}
	if got, _ := node("spec", "system", "provision", "files")["maxItems"].(float64); got != MaxProvisionFiles {
		t.Errorf("provision.files: schema maxItems %v, loader %d", got, MaxProvisionFiles)
	}
	for _, tt := range []struct {
		field, want string
	}{
		{"timeout", "at least " + ShortDuration(MinProvisionTimeout)},
		{"every", "at least " + ShortDuration(MinProvisionEvery) + ", at most " + ShortDuration(MaxDuration)},
	} {
		if d, _ := node("spec", "system", "provision", tt.field)["description"].(string); !strings.Contains(d, tt.want) {
			t.Errorf("provision.%s: description %q does not say %q", tt.field, d, tt.want)
		}
	}
	if d, _ := node("spec", "system", "provision", "files", "[]", "source")["description"].(string); !strings.Contains(d, fmt.Sprintf("at most %d MiB", MaxProvisionFileSize>>20)) {
		t.Errorf("provision.files[].source: description %q does not give the size limit", d)
	}
	// Modes and owners are strings, so their bounds are in the
	// descriptions (and the patterns, checked below).
	for _, tt := range []struct{ field, want string }{
		{"mode", fmt.Sprintf("at most %04o", maxFileMode)},
		{"owner", fmt.Sprintf("from 0 to %d", MaxID)},
	} {
		if d, _ := node("spec", "system", "provision", "files", "[]", tt.field)["description"].(string); !strings.Contains(d, tt.want) {
			t.Errorf("provision.files[].%s: description %q does not say %q", tt.field, d, tt.want)
		}
	}

	pattern := func(path ...string) *regexp.Regexp {
		re, err := regexp.Compile(node(path...)["pattern"].(string))
		if err != nil {
			t.Fatal(err)
		}
		return re
	}
	file := func(f string) []string { return []string{"spec", "system", "provision", "files", "[]", f} }
	ok := func(_ string, msg string) bool { return msg == "" }
	checks := []struct {
		what   string
		re     *regexp.Regexp
		loads  func(string) bool
		values []string
	}{
		{"mode", pattern(file("mode")...), func(s string) bool { return ok(checkFileMode(s)) },
			[]string{"0644", "644", "0755", "0777", "777", "000", "4755", "2750", "1777", "7777", "0", "64", "10644", "00644", "0648", "u+rw", ""}},
		{"owner", pattern(file("owner")...), func(s string) bool { return ok(checkFileOwner(s)) },
			[]string{"0:0", "1000:1000", "0001000:100", "65535:65535", "065535:0", "9999:59999", "64999:65529",
				"65536:0", "0:65536", "0:65540", "0:65600", "0:66000", "70000:0", "99999:0", "100000:0", "4294967294:0",
				"root", "0", "0:", ":0", "-1:0", "1000:100:1"}},
		{"path", pattern(file("path")...), func(s string) bool { return checkInstancePath(s) == "" },
			[]string{"/etc/motd", "/a", "/.x", "/..x", "/a/b.c", "/", "etc/motd", "/etc/", "//etc", "/etc/./x", "/etc/../x", "/etc/.."}},
		{"source", pattern(file("source")...), func(s string) bool { return checkRepoPath(s) == "" },
			[]string{"etc/motd", ".config/x", "a/..b", "x", "/etc", "../x", "a/../b", "./a", "a//b", "a/", "", "."}},
		{"every", pattern("spec", "system", "provision", "every"), func(s string) bool {
			if isZeroDuration(s) {
				return true
			}
			_, msg := parseDuration(s, MinProvisionEvery, MaxDuration)
			return msg == ""
		}, []string{"0", "0s", "1m", "24h", "1h30m", "-1h", "soon", "5"}},
	}
	for _, c := range checks {
		for _, v := range c.values {
			if got, want := c.re.MatchString(v), c.loads(v); got != want {
				t.Errorf("%s %q: schema %v, loader %v", c.what, v, got, want)
			}
		}
	}
}

// A disk of a folder above a system folder shares that folder too: /var
// holds /var/lib/lxd. Siblings and names that only start alike are fine.
func TestDiskSourceAboveSystemFolder(t *testing.T) {
	tests := []struct{ lines, want string }{
		{`    devices: {v: {type: disk, source: /var, path: /v}}` + "\n",
			`app.yaml:8:39: spec.system.devices.v.source: source "/var" holds the host's "/var/lib/lxd", which it shares with the instance and so breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {v: {type: disk, source: /var/lib, path: /v}}` + "\n",
			`app.yaml:8:39: spec.system.devices.v.source: source "/var/lib" holds the host's "/var/lib/lxd", which it shares with the instance and so breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {v: {type: disk, source: /var/snap/, path: /v}}` + "\n",
			`app.yaml:8:39: spec.system.devices.v.source: source "/var/snap/" holds the host's "/var/snap/lxd", which it shares with the instance and so breaks its isolation; not allowed (berth --allow-privileged permits it)`},
		{`    devices: {v: {type: disk, source: /srv/../var/lib, path: /v}}` + "\n",
			`app.yaml:8:39: spec.system.devices.v.source: source "/srv/../var/lib" holds the host's "/var/lib/lxd", which it shares with the instance and so breaks its isolation; not allowed (berth --allow-privileged permits it)`},
	}
	for _, tt := range tests {
		src := sys(tt.lines)
		sameLines(t, tt.lines, diagStrings(mustLoadBytes(t, src, Options{}).Diagnostics), []string{tt.want})
		if r := mustLoadBytes(t, src, Options{AllowPrivileged: true}); len(r.Diagnostics) != 0 {
			t.Errorf("%s with AllowPrivileged: %v", tt.lines, r.Diagnostics)
		}
	}
	if r := mustLoadBytes(t, sys(`    devices: {a: {type: disk, source: /var/lib/docker-data, path: /a}, b: {type: disk, source: /var/li, path: /b}, c: {type: disk, source: /srv, path: /c}, d: {type: disk, source: /var/snap/other, path: /d}}`+"\n"), Options{}); len(r.Diagnostics) != 0 {
		t.Errorf("siblings: %v", r.Diagnostics)
	}
}
