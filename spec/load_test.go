package spec

import (
	"errors"
	"io/fs"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// diagStrings renders diagnostics the way users see them, so the tests
// assert exact positions and messages in one comparison.
func diagStrings(ds Diagnostics) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	t.Errorf("%s differ\n got:\n\t%s\nwant:\n\t%s", what, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
}

func mustLoadBytes(t *testing.T, src string, opts Options) *Result {
	t.Helper()
	r, err := LoadBytes("app.yaml", []byte(src), opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLoadGoodTree(t *testing.T) {
	r, err := LoadDir(t.Context(), "testdata/good", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Diagnostics) != 0 {
		t.Fatalf("unexpected diagnostics:\n%v", r.Diagnostics)
	}
	if len(r.InvalidApps) != 0 || len(r.Unparsable) != 0 {
		t.Errorf("InvalidApps=%v Unparsable=%v, want none (hidden dirs are skipped)", r.InvalidApps, r.Unparsable)
	}
	var names []string
	for _, a := range r.Apps {
		names = append(names, a.Metadata.Name+"@"+a.Origin.String())
	}
	sameLines(t, "apps", names, []string{
		"cron@batch/workers.yml:14",
		"web@apps/web.yaml:2",
		"worker@batch/workers.yml:3",
	})

	web := r.Apps[1]
	want := App{
		APIVersion: "berth/v1",
		Kind:       "App",
		Metadata:   Metadata{Name: "web"},
		Spec: AppSpec{
			Replicas: 3,
			System: System{
				Image:    "debian-docker",
				Profiles: []string{"default", "docker"},
				Limits:   Limits{CPU: "0-1", Memory: "512MiB"},
				Config:   map[string]string{"security.nesting": "true", "boot.autostart": "false"},
				Devices: map[string]map[string]string{
					"data": {"type": "disk", "source": "/srv/web", "path": "/srv/web"},
				},
				CloudInit:   "#cloud-config\npackages: [puppet-agent]\n",
				ImageUpdate: ImageUpdateRolling,
			},
			Container: Container{
				Image:   "registry.example:5000/team/web:1.4.2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
				Command: []string{"/bin/web", "--port", "8080"},
				Env:     map[string]string{"PORT": "8080", "LOG_LEVEL": "info"},
				User:    "1000:1000",
				Volumes: []Volume{
					{Source: "/srv/web", Target: "/data"},
					{Source: "/etc/web", Target: "/etc/web", ReadOnly: true},
				},
				Healthcheck: &Healthcheck{
					Test:        []string{"CMD", "wget", "-qO-", "http://127.0.0.1:8080/healthz"},
					Interval:    Duration(5 * time.Second),
					Timeout:     Duration(2 * time.Second),
					StartPeriod: Duration(10 * time.Second),
					Retries:     3,
				},
			},
			Update: Update{MaxUnavailable: Count(2), HealthTimeout: Duration(5 * time.Minute), Snapshot: true},
		},
		Origin: Origin{File: "apps/web.yaml", Line: 2},
	}
	if !reflect.DeepEqual(web, want) {
		t.Errorf("web:\n got %+v\nwant %+v", web, want)
	}

	// cron takes its system from a merge key and keeps an explicit [].
	cron := r.Apps[0]
	if cron.Spec.System.Image != "debian-docker" || cron.Spec.System.Profiles == nil || len(cron.Spec.System.Profiles) != 0 {
		t.Errorf("cron system = %+v, want merged image and explicit empty profiles", cron.Spec.System)
	}
	worker := r.Apps[2]
	if worker.Spec.Replicas != 0 || worker.Spec.System.Limits != (Limits{CPU: "2", Memory: "50%"}) {
		t.Errorf("worker = %+v, want replicas 0 and limits from numbers", worker.Spec)
	}
}

// The bad tree has many problems in several files and documents; all of
// them must come out of one load, each at its exact place.
func TestLoadBadTree(t *testing.T) {
	r, err := LoadDir(t.Context(), "testdata/bad", Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		`a.yaml:1:13: apiVersion: must be "berth/v1", got "berth/v2"`,
		`a.yaml:2:7: kind: must be "App", got "Application"`,
		`a.yaml:4:9: metadata.name: "Web_1" is not a valid app name: use lowercase letters, digits and '-', start with a letter and end with a letter or digit`,
		`a.yaml:6:13: spec.replicas: must be between 0 and 1000, got -1`,
		`a.yaml:7:3: spec.replica: unknown field "replica" (did you mean "replicas"?); allowed: replicas, system, container, update, dependsOn`,
		`a.yaml:10:5: spec.system.image: duplicate key "image" (first at line 9)`,
		`a.yaml:11:19: spec.system.limits.cpu: CPU range "3-1" must go from low to high`,
		`a.yaml:11:34: spec.system.limits.memory: must be a size like "512MiB", "2GiB", "1GB" or "1024kB", a byte count, or a percentage like "50%", got "12XB"`,
		`a.yaml:14:25: spec.container.healthcheck.test: must start with CMD, CMD-SHELL or NONE, got "RUN"`,
		`a.yaml:14:45: spec.container.healthcheck.interval: expected a duration like "5s" or "2m", got integer 5`,
		`a.yaml:14:57: spec.container.healthcheck.timeout: "soon" is not a duration; write it like "5s", "2m" or "1h30m"`,
		`a.yaml:24:7: spec.system.config["user.berth.owner"]: keys under user.berth. are reserved for berth's own bookkeeping`,
		`a.yaml:25:7: spec.system.config["limits.memory"]: set this through spec.system.limits.memory, not through config`,
		`a.yaml:26:28: spec.system.config["security.privileged"]: privileged system containers are not allowed (berth --allow-privileged permits them)`,
		`a.yaml:27:16: spec.system.config["raw.lxc"]: expected a string, got integer 1; quote it: "1" (LXD config values are strings)`,
		`a.yaml:29:13: spec.system.devices.eth0: expected a mapping, got a list`,
		`a.yaml:30:19: spec.system.devices.gpu.type: device type "gpu" passes a host device into the instance, which breaks its isolation; not allowed (berth --allow-privileged permits it)`,
		`a.yaml:30:28: spec.system.devices.gpu.id: expected a string, got integer 0; quote it: "0" (LXD device values are strings)`,
		`a.yaml:33:11: spec.container.env.HTTP-PORT: "HTTP-PORT" is not a valid environment variable name: use letters, digits and '_', not starting with a digit`,
		`a.yaml:33:34: spec.container.env.PORT: expected a string, got integer 80; quote it: "80" (environment values are strings)`,
		`a.yaml:35:18: spec.container.volumes[0].source: must be an absolute path, got "data"`,
		`a.yaml:36:9: spec.container.volumes[1].source: required field is missing`,
		`a.yaml:37:28: spec.update.maxUnavailable: must be between 1 and 1000, got 0`,
		`a.yaml:37:46: spec.update.healthTimeout: duration must be more than 0, got "0s"`,
		`b.yml:4:9: metadata.name: duplicate app name "api" (first defined at a.yaml:19)`,
		`b.yml:9:1: a document must be a mapping (an App), got a list`,
		`b.yml:14:1: metadata.name: required field is missing`,
		`b.yml:15:7: spec: expected a mapping, got a list`,
		// yaml.v3 gives a line but no column for syntax errors; the [ is on line 10.
		`broken.yaml:10:1: invalid YAML: did not find expected ',' or ']'`,
		`nested/c.yaml:4:9: metadata.name: name is too long: instance name "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-10" has 64 characters, LXD allows 63`,
		`nested/c.yaml:8:29: spec.container.healthcheck.test: required field is missing`,
		`nested/c.yaml:9:22: spec.update.snapshot: expected a boolean (true or false), got string "yes"`,
		`nested/c.yaml:11:1: apiVersion: required field is missing`,
		`nested/c.yaml:11:1: kind: required field is missing`,
	})
	if len(r.Apps) != 0 {
		t.Errorf("Apps = %d, want none: every app in the bad tree is broken or held", len(r.Apps))
	}
	sameLines(t, "invalid apps", r.InvalidApps, []string{
		strings.Repeat("a", 61),
		"api",  // both copies: which one is "first" is an accident of file order
		"held", // valid, but in a file that does not parse
		"nohead",
	})
	sameLines(t, "unparsable", r.Unparsable, []string{"broken.yaml"})
	if len(r.Diagnostics) == 0 {
		t.Error("no diagnostics")
	}
	if got := strings.Count(r.Diagnostics.Error(), "\n"); got != len(r.Diagnostics)-1 {
		t.Errorf("Error() has %d newlines, want one per diagnostic", got)
	}
}

// minimal is the smallest valid app; cases below patch it.
const minimal = `apiVersion: berth/v1
kind: App
metadata:
  name: web
spec:
  system:
    image: debian
  container:
    image: nginx
`

// sys adds lines to minimal's system section (from line 8 on).
func sys(lines string) string {
	return strings.Replace(minimal, "    image: debian\n", "    image: debian\n"+lines, 1)
}

func TestLoadBytesRules(t *testing.T) {
	tests := []struct {
		name string
		src  string
		opts Options
		want []string
	}{
		{"minimal is valid", minimal, Options{}, nil},
		{"replicas as a word", minimal + "  replicas: three\n", Options{},
			[]string{`app.yaml:10:13: spec.replicas: expected an integer, got string "three"`}},
		{"replicas as a float", minimal + "  replicas: 1.5\n", Options{},
			[]string{`app.yaml:10:13: spec.replicas: expected an integer, got number 1.5`}},
		{"replicas out of range", minimal + "  replicas: 18446744073709551615\n", Options{},
			[]string{`app.yaml:10:13: spec.replicas: must be between 0 and 1000, got 18446744073709551615`}},
		{"replicas zero", minimal + "  replicas: 0\n", Options{}, nil},
		{"list where a map is expected", minimal + "  update: [1]\n", Options{},
			[]string{`app.yaml:10:11: spec.update: expected a mapping, got a list`}},
		{"unknown top-level field", "status: {}\n" + minimal, Options{},
			[]string{`app.yaml:1:1: status: unknown field "status"; allowed: apiVersion, kind, metadata, spec`}},
		{"misspelt field, other case", minimal + "  Replicas: 2\n", Options{},
			[]string{`app.yaml:10:3: spec.Replicas: unknown field "Replicas" (did you mean "replicas"?); allowed: replicas, system, container, update, dependsOn`}},
		{"duplicate top-level key", minimal + "kind: App\n", Options{},
			[]string{`app.yaml:10:1: kind: duplicate key "kind" (first at line 2)`}},
		{"null counts as absent", minimal + "  replicas: ~\n  update:\n", Options{}, nil},
		{"empty system image", strings.Replace(minimal, "image: debian", `image: ""`, 1), Options{},
			[]string{`app.yaml:7:12: spec.system.image: must be an LXD image alias or fingerprint (or remote:alias) without spaces, got ""`}},
		{"missing container image", strings.Replace(minimal, "    image: nginx\n", "    user: app\n", 1), Options{},
			[]string{`app.yaml:8:3: spec.container.image: required field is missing`}},
		{"name with trailing dash", strings.Replace(minimal, "name: web", "name: web-", 1), Options{},
			[]string{`app.yaml:4:9: metadata.name: "web-" is not a valid app name: use lowercase letters, digits and '-', start with a letter and end with a letter or digit`}},
		{"name starting with a digit", strings.Replace(minimal, "name: web", "name: 1web", 1), Options{},
			[]string{`app.yaml:4:9: metadata.name: "1web" is not a valid app name: use lowercase letters, digits and '-', start with a letter and end with a letter or digit`}},
		{"name as a number", strings.Replace(minimal, "name: web", "name: 12", 1), Options{},
			[]string{`app.yaml:4:9: metadata.name: expected a string, got integer 12; quote it: "12"`}},
		{"config string boolean", sys("    config: {security.nesting: \"true\"}\n"), Options{}, nil},
		{"memory plain bytes and IEC", sys("    limits: {memory: 1073741824}\n"), Options{}, nil},
		{"memory zero", sys("    limits: {memory: 0MiB}\n"), Options{},
			[]string{`app.yaml:8:22: spec.system.limits.memory: memory limit must be more than 0`}},
		{"memory percentage above 100", sys("    limits: {memory: 150%}\n"), Options{},
			[]string{`app.yaml:8:22: spec.system.limits.memory: memory percentage "150%" must be between 1% and 100%`}},
		{"cpu zero", sys("    limits: {cpu: 0}\n"), Options{},
			[]string{`app.yaml:8:19: spec.system.limits.cpu: CPU count must be between 1 and 4096, got "0"`}},
		{"cpu words", sys("    limits: {cpu: two}\n"), Options{},
			[]string{`app.yaml:8:19: spec.system.limits.cpu: must be a number of CPUs like "2" or a CPU set like "0-3" or "0,2", got "two"`}},
		{"cloud-init through config", sys("    cloudInit: x\n    config: {cloud-init.user-data: x}\n"), Options{},
			[]string{`app.yaml:9:14: spec.system.config["cloud-init.user-data"]: set this through spec.system.cloudInit, not through config`}},
		{"device without type", sys("    devices: {eth0: {nictype: bridged, parent: br0}}\n"), Options{},
			[]string{`app.yaml:8:15: spec.system.devices.eth0.type: required field is missing`}},
		{"profiles listed twice", sys("    profiles: [default, default]\n"), Options{},
			[]string{`app.yaml:8:25: spec.system.profiles[1]: profile "default" is listed twice`}},
		{"bad image reference", strings.Replace(minimal, "image: nginx", `image: "nginx:"`, 1), Options{},
			[]string{`app.yaml:9:12: spec.container.image: "nginx:" is not a valid image reference: want [registry[:port]/]repo[:tag][@sha256:<digest>]`}},
		{"uppercase image repository", strings.Replace(minimal, "image: nginx", `image: team/Web`, 1), Options{},
			[]string{`app.yaml:9:12: spec.container.image: image repository must be lowercase, got "team/Web"`}},
		{"image on an IPv6 registry", strings.Replace(minimal, "image: nginx", `image: "[::1]:5000/foo:1"`, 1), Options{}, nil},
		{"short digest", strings.Replace(minimal, "image: nginx", "image: nginx@sha256:abc", 1), Options{},
			[]string{`app.yaml:9:12: spec.container.image: image digest "sha256:abc" must be sha256:<64 lowercase hex digits>`}},
		{"healthcheck CMD-SHELL with two args", minimal + "    healthcheck: {test: [CMD-SHELL, a, b]}\n", Options{},
			[]string{`app.yaml:10:25: spec.container.healthcheck.test: CMD-SHELL takes exactly one shell command string, e.g. [CMD-SHELL, "curl -f http://127.0.0.1/"]`}},
		{"healthcheck as a string", minimal + "    healthcheck: {test: curl localhost}\n", Options{},
			[]string{`app.yaml:10:25: spec.container.healthcheck.test: expected a list, got string "curl localhost"`}},
		{"negative retries and startPeriod", minimal + "    healthcheck: {test: [NONE], retries: -1, startPeriod: -5s}\n", Options{},
			[]string{
				`app.yaml:10:42: spec.container.healthcheck.retries: must be between 0 and 100, got -1`,
				`app.yaml:10:59: spec.container.healthcheck.startPeriod: duration must be more than 0, got "-5s"`,
			}},
		{"relative volume target", minimal + "    volumes: [{source: /a, target: data}]\n", Options{},
			[]string{`app.yaml:10:36: spec.container.volumes[0].target: must be an absolute path, got "data"`}},
		{"volume as a string", minimal + "    volumes: [/a:/b]\n", Options{},
			[]string{`app.yaml:10:15: spec.container.volumes[0]: expected a mapping, got string "/a:/b"`}},
		{"env key with a dot", minimal + "    env: {a.b: c}\n", Options{},
			[]string{`app.yaml:10:11: spec.container.env["a.b"]: "a.b" is not a valid environment variable name: use letters, digits and '_', not starting with a digit`}},
		{"not a mapping document", "just a string\n", Options{},
			[]string{`app.yaml:1:1: a document must be a mapping (an App), got string "just a string"`}},
		{"mapping key that is a list", minimal + "  [a]: b\n", Options{},
			[]string{`app.yaml:10:3: spec: mapping keys must be strings, got a list`}},
		{"custom tag", minimal + "    user: !secret x\n", Options{},
			[]string{`app.yaml:10:11: spec.container.user: expected a string, got value "x" tagged !secret`}},
		{"alias to itself", "apiVersion: &a [*a]\n", Options{},
			[]string{
				`app.yaml:1:1: kind: required field is missing`,
				`app.yaml:1:1: metadata: required field is missing`,
				`app.yaml:1:1: spec: required field is missing`,
				`app.yaml:1:13: apiVersion: expected a string, got a list`,
			}},
		{"merge into itself", minimal + "    env: &e {<<: *e}\n", Options{},
			[]string{`app.yaml:10:18: spec.container.env: merge key includes the mapping it is in`}},
		{"merge cycle through a list", sys("    config: &c {<<: [{a: \"1\"}, *c, *c]}\n"), Options{},
			[]string{
				`app.yaml:8:32: spec.system.config: merge key includes the mapping it is in`,
				`app.yaml:8:36: spec.system.config: merge key includes the mapping it is in`,
			}},
		{"anchor reused with a problem", minimal + "    command: [&x 1, *x, *x]\n", Options{},
			[]string{
				`app.yaml:10:15: spec.container.command[0]: expected a string, got integer 1; quote it: "1"`,
				`app.yaml:10:15: spec.container.command[1]: expected a string, got integer 1; quote it: "1"`,
				`app.yaml:10:15: spec.container.command[2]: expected a string, got integer 1; quote it: "1"`,
			}},
		{"several documents, one bad", minimal + "---\n" + strings.Replace(minimal, "web", "api", 1) + "  replicas: -2\n---\n", Options{},
			[]string{`app.yaml:20:13: spec.replicas: must be between 0 and 1000, got -2`}},
		{"only comments", "# nothing here\n---\n# still nothing\n", Options{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustLoadBytes(t, tt.src, tt.opts)
			sameLines(t, "diagnostics", diagStrings(r.Diagnostics), tt.want)
		})
	}
}

func TestRequireDigest(t *testing.T) {
	const digest = "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		image string
		want  []string
	}{
		{"nginx:1.25", []string{`app.yaml:9:12: spec.container.image: image is not pinned to a digest: add @sha256:<digest> (berth runs with --require-digest)`}},
		{"nginx", []string{`app.yaml:9:12: spec.container.image: image is not pinned to a digest: add @sha256:<digest> (berth runs with --require-digest)`}},
		{"nginx" + digest, nil},
		{"127.0.0.1:5000/team/nginx:1.25" + digest, nil},
	}
	for _, tt := range tests {
		src := strings.Replace(minimal, "image: nginx", "image: "+tt.image, 1)
		r := mustLoadBytes(t, src, Options{RequireDigest: true})
		sameLines(t, tt.image, diagStrings(r.Diagnostics), tt.want)
		if r := mustLoadBytes(t, src, Options{}); len(r.Diagnostics) != 0 {
			t.Errorf("%s without RequireDigest: %v", tt.image, r.Diagnostics)
		}
	}
}

func TestAllowPrivileged(t *testing.T) {
	for _, v := range []string{`"true"`, `"1"`, `"yes"`, `"On"`} {
		src := sys("    config: {security.privileged: " + v + "}\n")
		r := mustLoadBytes(t, src, Options{})
		sameLines(t, v, diagStrings(r.Diagnostics), []string{
			`app.yaml:8:35: spec.system.config["security.privileged"]: privileged system containers are not allowed (berth --allow-privileged permits them)`,
		})
		if !slices.Equal(r.InvalidApps, []string{"web"}) {
			t.Errorf("InvalidApps = %v, want [web]", r.InvalidApps)
		}
		r = mustLoadBytes(t, src, Options{AllowPrivileged: true})
		if len(r.Diagnostics) != 0 || r.Apps[0].Spec.System.Config["security.privileged"] == "" {
			t.Errorf("%s with AllowPrivileged: %v", v, r.Diagnostics)
		}
	}
	if r := mustLoadBytes(t, sys("    config: {security.privileged: \"false\"}\n"), Options{}); len(r.Diagnostics) != 0 {
		t.Errorf("privileged false: %v", r.Diagnostics)
	}
}

func TestDefaults(t *testing.T) {
	r := mustLoadBytes(t, minimal, Options{})
	if len(r.Diagnostics) != 0 {
		t.Fatal(r.Diagnostics)
	}
	s := r.Apps[0].Spec
	if s.Replicas != 1 || !slices.Equal(s.System.Profiles, []string{"default"}) ||
		s.Update.MaxUnavailable != Count(1) || s.Update.HealthTimeout.D() != 2*time.Minute {
		t.Errorf("defaults not applied: %+v", s)
	}
	r = mustLoadBytes(t, sys("    profiles: []\n"), Options{})
	if p := r.Apps[0].Spec.System.Profiles; p == nil || len(p) != 0 {
		t.Errorf("explicit [] profiles = %#v, want empty and non-nil", p)
	}
}

// Hashes must not move when a spec is reformatted or when defaults are
// spelled out; otherwise a cosmetic commit would recreate every instance.
func TestHashStable(t *testing.T) {
	const terse = `apiVersion: berth/v1
kind: App
metadata: {name: web}
spec:
  system:
    image: debian
    config: {a.b: "1", c.d: "2"}
    devices: {eth0: {type: nic, parent: br0}}
  container:
    image: nginx
    env: {A: "1", B: "2"}
`
	const spelled = `kind: App
spec:
  update: {healthTimeout: 120s, maxUnavailable: 1}
  container:
    env: {B: "2", A: "1"}
    command: []
    image: nginx
  system:
    devices: {eth0: {parent: br0, type: nic}}
    config: {c.d: "2", a.b: "1"}
    profiles: [default]
    image: debian
  replicas: 1
metadata: {name: web}
apiVersion: berth/v1
`
	a := mustLoadBytes(t, terse, Options{})
	b := mustLoadBytes(t, spelled, Options{})
	if len(a.Diagnostics) != 0 || len(b.Diagnostics) != 0 {
		t.Fatalf("diagnostics: %v / %v", a.Diagnostics, b.Diagnostics)
	}
	sa, sb := a.Apps[0].Spec, b.Apps[0].Spec
	if sa.System.Hash() != sb.System.Hash() || sa.Container.Hash() != sb.Container.Hash() {
		t.Errorf("hashes differ: system %s/%s container %s/%s",
			sa.System.Hash(), sb.System.Hash(), sa.Container.Hash(), sb.Container.Hash())
	}
	if !reflect.DeepEqual(sa, sb) {
		t.Errorf("specs differ:\n%+v\n%+v", sa, sb)
	}
	// And a real change does move it.
	c := mustLoadBytes(t, strings.Replace(terse, "parent: br0", "parent: br1", 1), Options{})
	if c.Apps[0].Spec.System.Hash() == sa.System.Hash() {
		t.Error("system hash ignores a device change")
	}
	d := mustLoadBytes(t, terse+"    user: app\n", Options{})
	if d.Apps[0].Spec.Container.Hash() == sa.Container.Hash() {
		t.Error("container hash ignores a user change")
	}
}

func app(name string) string {
	return strings.Replace(minimal, "name: web", "name: "+name, 1)
}

func TestDuplicateNamesAcrossFiles(t *testing.T) {
	fsys := fstest.MapFS{
		"a/one.yaml":   {Data: []byte(app("web") + "---\n" + app("api"))},
		"b/two.yml":    {Data: []byte(app("db"))},
		"b/three.yaml": {Data: []byte("# moved\n" + app("web"))},
	}
	r, err := Load(t.Context(), fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		`b/three.yaml:5:9: metadata.name: duplicate app name "web" (first defined at a/one.yaml:4)`,
	})
	sameLines(t, "invalid", r.InvalidApps, []string{"web"})
	var names []string
	for _, a := range r.Apps {
		names = append(names, a.Metadata.Name)
	}
	sameLines(t, "apps", names, []string{"api", "db"})
}

func TestInvalidAndUnparsable(t *testing.T) {
	fsys := fstest.MapFS{
		"ok.yaml":      {Data: []byte(app("ok"))},
		"typo.yaml":    {Data: []byte(app("typo") + "  replicsa: 2\n")},
		"noname.yaml":  {Data: []byte(app("No_Good") + "  replicsa: 2\n")},
		"tabs.yaml":    {Data: []byte("a:\n\t- b\n")},
		"notes.txt":    {Data: []byte("not: [yaml")},
		".git/x.yaml":  {Data: []byte("not: [yaml")},
		"dir/.swp.yml": {Data: []byte("not: [yaml")},
	}
	r, err := Load(t.Context(), fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "invalid", r.InvalidApps, []string{"typo"})
	sameLines(t, "unparsable", r.Unparsable, []string{"tabs.yaml"})
	if len(r.Apps) != 1 || r.Apps[0].Metadata.Name != "ok" {
		t.Errorf("apps = %+v, want only ok", r.Apps)
	}
	if len(r.Diagnostics) != 4 {
		t.Errorf("want 4 diagnostics, got:\n%v", r.Diagnostics)
	}
}

func TestLoadErrorIsOnlyIO(t *testing.T) {
	if _, err := LoadDir(t.Context(), "testdata/does-not-exist", Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want ErrNotExist", err)
	}
	r, err := Load(t.Context(), fstest.MapFS{}, Options{})
	if err != nil || len(r.Diagnostics) != 0 || len(r.Apps) != 0 {
		t.Errorf("empty tree: %v %+v", err, r)
	}
}

// Anchors let a small file stand for a huge tree; expanding it must stay
// cheap and end in a diagnostic.
func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString(minimal)
	b.WriteString("    env:\n      <<: [")
	// Each level merges the previous one twice: 2^40 entries if expanded.
	b.WriteString("&l0 {A: \"1\"}")
	for i := 1; i <= 40; i++ {
		b.WriteString(", &l" + strconv.Itoa(i) + " {<<: [*l" + strconv.Itoa(i-1) + ", *l" + strconv.Itoa(i-1) + "]}")
	}
	b.WriteString("]\n")
	start := time.Now()
	r := mustLoadBytes(t, b.String(), Options{})
	if len(r.Diagnostics) == 0 {
		t.Error("alias bomb loaded without a diagnostic")
	}
	if len(r.Diagnostics) > 2 {
		t.Errorf("alias bomb gave %d diagnostics, want one or two:\n%v", len(r.Diagnostics), r.Diagnostics)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("alias bomb took %v", d)
	}
}

func TestDiagnosticString(t *testing.T) {
	tests := []struct {
		d    Diagnostic
		want string
	}{
		{Diagnostic{File: "a.yaml", Line: 3, Col: 5, Path: "spec.replicas", Message: "m"}, "a.yaml:3:5: spec.replicas: m"},
		{Diagnostic{File: "a.yaml", Line: 3, Message: "m"}, "a.yaml:3: m"},
		{Diagnostic{File: "a.yaml", Message: "m"}, "a.yaml: m"},
	}
	for _, tt := range tests {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

// YAML 1.1 (and yaml.v3) reads 0443 as octal 291 and 0080 as the float
// 80, while YAML 1.2 editors show 443 and 80: an integer with a leading
// zero is refused in every integer field, and in limits written as plain
// numbers, saying why and what to write.
func TestLeadingZeroIntegers(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"port read as octal", ports("[{name: https, port: 0443}]"),
			`app.yaml:10:33: spec.container.ports[0].port: 0443 has a leading zero, which YAML 1.1 reads as octal (291) and YAML 1.2 editors show as decimal (443); write 443`},
		{"port not octal", ports("[{name: http, port: 0080}]"),
			`app.yaml:10:32: spec.container.ports[0].port: 0080 has a leading zero, which YAML 1.1 reads as octal and YAML 1.2 editors show as decimal (80); write 80`},
		{"replicas", minimal + "  replicas: 010\n",
			`app.yaml:10:13: spec.replicas: 010 has a leading zero, which YAML 1.1 reads as octal (8) and YAML 1.2 editors show as decimal (10); write 10`},
		{"zero written twice", minimal + "  replicas: 00\n",
			`app.yaml:10:13: spec.replicas: 00 has a leading zero, which YAML 1.1 reads as octal (0) and YAML 1.2 editors show as decimal (0); write 0`},
		{"negative, underscored", minimal + "  replicas: -0_10\n",
			`app.yaml:10:13: spec.replicas: -0_10 has a leading zero, which YAML 1.1 reads as octal (-8) and YAML 1.2 editors show as decimal (-10); write -10`},
		{"tagged", minimal + "  update: {maxUnavailable: !!int 02}\n",
			`app.yaml:10:28: spec.update.maxUnavailable: 02 has a leading zero, which YAML 1.1 reads as octal (2) and YAML 1.2 editors show as decimal (2); write 2`},
		{"healthcheck retries", minimal + "    healthcheck: {test: [NONE], retries: 03}\n",
			`app.yaml:10:42: spec.container.healthcheck.retries: 03 has a leading zero, which YAML 1.1 reads as octal (3) and YAML 1.2 editors show as decimal (3); write 3`},
		{"cpu count", sys("    limits: {cpu: 010}\n"),
			`app.yaml:8:19: spec.system.limits.cpu: 010 has a leading zero, which YAML 1.1 reads as octal (8) and YAML 1.2 editors show as decimal (10); write 10`},
		{"memory bytes", sys("    limits: {memory: 01024}\n"),
			`app.yaml:8:22: spec.system.limits.memory: 01024 has a leading zero, which YAML 1.1 reads as octal (532) and YAML 1.2 editors show as decimal (1024); write 1024`},
	}
	for _, tt := range tests {
		r := mustLoadBytes(t, tt.src, Options{})
		sameLines(t, tt.name, diagStrings(r.Diagnostics), []string{tt.want})
	}
	// A zero alone, a quoted string, 0o and 0x forms are what they say.
	for _, src := range []string{
		minimal + "  replicas: 0\n",
		ports("[{name: https, port: 0x1bb}, {name: http, port: 0o120}]"),
		sys("    limits: {cpu: \"010\", memory: \"0512MiB\"}\n"),
		sys("    limits: {cpu: 0-3}\n"),
	} {
		if r := mustLoadBytes(t, src, Options{}); len(r.Diagnostics) != 0 {
			t.Errorf("%q: %v", src, r.Diagnostics)
		}
	}
}

// A NUL byte (a YAML "\0" escape) fits no C string: LXD config, the
// environment, execve's arguments, paths. It is refused where it is
// written, not when a replica is created.
func TestNULBytesRefused(t *testing.T) {
	const msg = `contains a NUL byte (\0, at byte 1), which no LXD value, environment variable, command argument or path can hold; remove it`
	tests := []struct{ name, src, want string }{
		{"provision.run", sys("    provision: {run: [/bin/sh, \"-\\0c\"]}\n"),
			`app.yaml:8:32: spec.system.provision.run[1]: ` + msg},
		{"env", minimal + "    env: {A: \"x\\0y\"}\n",
			`app.yaml:10:14: spec.container.env.A: ` + msg},
		{"command", minimal + "    command: [sh, \"a\\0\"]\n",
			`app.yaml:10:19: spec.container.command[1]: ` + msg},
		{"config", sys("    config: {user.note: \"a\\0\"}\n"),
			`app.yaml:8:25: spec.system.config["user.note"]: ` + msg},
		{"config key", sys("    config: {\"u\\0ser.note\": a}\n"),
			`app.yaml:8:14: spec.system.config["u\x00ser.note"]: key ` + msg},
		{"cloudInit", sys("    cloudInit: \"#\\0cloud-config\"\n"),
			`app.yaml:8:16: spec.system.cloudInit: ` + msg},
		{"volumes", minimal + "    volumes: [{source: \"/\\0a\", target: /b}]\n",
			`app.yaml:10:24: spec.container.volumes[0].source: ` + msg},
		{"device", sys("    devices: {d: {type: disk, source: \"/\\0\", path: /d}}\n"),
			`app.yaml:8:39: spec.system.devices.d.source: ` + msg},
	}
	for _, tt := range tests {
		r := mustLoadBytes(t, tt.src, Options{})
		sameLines(t, tt.name, diagStrings(r.Diagnostics), []string{tt.want})
		if len(r.Apps) != 0 {
			t.Errorf("%s: the app loads", tt.name)
		}
	}
}

// system.image is [remote:]alias, container.user has no empty part, and a
// duration has no '+': as the schema says (see schema_corpus_test.go).
func TestImageUserAndDurationForms(t *testing.T) {
	tests := []struct {
		name string
		src  string
		opts Options
		want []string
	}{
		{"system image with an empty remote", strings.Replace(minimal, "image: debian", `image: ":x"`, 1), Options{},
			[]string{`app.yaml:7:12: spec.system.image: ":x" has no remote name before ':': write remote:alias (an --image-remote name), or the alias alone for an image on the LXD server`}},
		{"system image with an empty alias", strings.Replace(minimal, "image: debian", `image: "x:"`, 1), Options{},
			[]string{`app.yaml:7:12: spec.system.image: "x:" has no image alias after ':': write remote:alias, like images:debian/12`}},
		{"system image with two remotes", strings.Replace(minimal, "image: debian", `image: a:b:c`, 1), Options{},
			[]string{`app.yaml:7:12: spec.system.image: "a:b:c" has more than one ':': write remote:alias, with one ':' between the --image-remote name and the alias`}},
		{"system image with a tab", strings.Replace(minimal, "image: debian", `image: "deb\tian"`, 1), Options{},
			[]string{`app.yaml:7:12: spec.system.image: must be an LXD image alias or fingerprint (or remote:alias) without spaces, got "deb\tian"`}},
		{"system image from a remote", strings.Replace(minimal, "image: debian", `image: images:debian/12/cloud`, 1), Options{}, nil},
		{"duration with a plus", minimal + "  update: {healthTimeout: +5s}\n", Options{},
			[]string{`app.yaml:10:27: spec.update.healthTimeout: duration "+5s" has a '+' sign; write it without one, like "5s"`}},
		{"user with an empty group", minimal + "    user: \"root:\"\n", Options{},
			[]string{`app.yaml:10:11: spec.container.user: user must be "uid", "uid:gid", "name" or "name:group", with no part empty and no spaces, got "root:"`}},
	}
	for _, tt := range tests {
		r := mustLoadBytes(t, tt.src, tt.opts)
		sameLines(t, tt.name, diagStrings(r.Diagnostics), tt.want)
	}
}
