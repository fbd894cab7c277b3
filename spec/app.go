package spec

import (
	"path"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Field names per type, in the order the schema and the docs list them.
// schema_test.go checks them against the struct tags in types.go.
var (
	appFields         = []string{"apiVersion", "kind", "metadata", "spec"}
	metadataFields    = []string{"name"}
	appSpecFields     = []string{"replicas", "system", "container", "update"}
	systemFields      = []string{"image", "profiles", "limits", "config", "devices", "cloudInit"}
	limitsFields      = []string{"cpu", "memory"}
	containerFields   = []string{"image", "command", "env", "user", "volumes", "healthcheck"}
	volumeFields      = []string{"source", "target", "readOnly"}
	healthcheckFields = []string{"test", "interval", "timeout", "startPeriod", "retries"}
	updateFields      = []string{"maxUnavailable", "healthTimeout", "snapshot"}
)

// Defaults. They are filled in before decoding so that a field written out
// with its default value decodes to exactly the same App, and so hashes.
const (
	DefaultReplicas       = 1
	DefaultMaxUnavailable = 1
	DefaultHealthTimeout  = Duration(2 * time.Minute)
	DefaultProfile        = "default"
)

// quoteLXD is the hint for non-string LXD values.
const quoteLXD = "LXD config values are strings"

// app decodes one document. It returns the name node when a name that
// could be an app's was read, so a broken app can still be held by name.
func (d *decoder) app(root *yaml.Node) (App, *yaml.Node) {
	app := App{Spec: AppSpec{
		Replicas: DefaultReplicas,
		System:   System{Profiles: []string{DefaultProfile}},
		Update:   Update{MaxUnavailable: DefaultMaxUnavailable, HealthTimeout: DefaultHealthTimeout},
	}}
	var nameNode *yaml.Node
	if r := d.resolve(root); r != nil && r.Kind != yaml.MappingNode {
		d.errorf(r, "a document must be a mapping (an App), got %s", describe(r))
		return app, nil
	}
	present, ok := d.object(root, appFields, func(f string, v *yaml.Node) {
		switch f {
		case "apiVersion":
			if s, ok := d.str(v, ""); ok {
				app.APIVersion = s
				if s != APIVersion {
					d.errorf(v, "must be %q, got %q", APIVersion, s)
				}
			}
		case "kind":
			if s, ok := d.str(v, ""); ok {
				app.Kind = s
				if s != KindApp {
					d.errorf(v, "must be %q, got %q", KindApp, s)
				}
			}
		case "metadata":
			nameNode = d.metadata(v, &app.Metadata)
		case "spec":
			d.appSpec(v, &app.Spec)
		}
	})
	if !ok {
		return app, nil
	}
	d.require(root, present, "apiVersion", "kind", "metadata", "spec")
	if nameNode != nil {
		// The length check needs replicas, so it runs after spec.
		d.push("metadata", nil)
		d.push("name", nil)
		if msg := checkName(app.Metadata.Name, max(app.Spec.Replicas, 1)-1); msg != "" {
			d.errorf(nameNode, "%s", msg)
		}
		d.pop()
		d.pop()
		if !nameRE.MatchString(app.Metadata.Name) {
			nameNode = nil
		}
	}
	return app, nameNode
}

func (d *decoder) metadata(n *yaml.Node, m *Metadata) *yaml.Node {
	var nameNode *yaml.Node
	present, ok := d.object(n, metadataFields, func(f string, v *yaml.Node) {
		if s, ok := d.str(v, ""); ok {
			m.Name = s
			nameNode = d.resolve(v)
		}
	})
	if ok {
		d.require(n, present, "name")
	}
	return nameNode
}

func (d *decoder) appSpec(n *yaml.Node, s *AppSpec) {
	present, ok := d.object(n, appSpecFields, func(f string, v *yaml.Node) {
		switch f {
		case "replicas":
			if r, ok := d.integer(v, 0, MaxReplicas); ok {
				s.Replicas = r
			}
		case "system":
			d.system(v, &s.System)
		case "container":
			d.container(v, &s.Container)
		case "update":
			d.update(v, &s.Update)
		}
	})
	if ok {
		d.require(n, present, "system", "container")
	}
}

func (d *decoder) system(n *yaml.Node, s *System) {
	present, ok := d.object(n, systemFields, func(f string, v *yaml.Node) {
		switch f {
		case "image":
			if img, ok := d.str(v, ""); ok {
				s.Image = img
				if strings.TrimSpace(img) == "" || strings.ContainsAny(img, " \t\n") {
					d.errorf(d.resolve(v), "must be an LXD image alias or fingerprint (or remote:alias) without spaces, got %q", img)
				}
			}
		case "profiles":
			s.Profiles = d.profiles(v)
		case "limits":
			d.limits(v, &s.Limits)
		case "config":
			s.Config = d.config(v)
		case "devices":
			s.Devices = d.devices(v)
		case "cloudInit":
			if c, ok := d.str(v, ""); ok {
				s.CloudInit = c
			}
		}
	})
	if ok {
		d.require(n, present, "image")
	}
}

func (d *decoder) profiles(n *yaml.Node) []string {
	list, ok := d.stringList(n)
	if !ok {
		return list
	}
	items, _ := d.list(n)
	seen := map[string]bool{}
	for i, p := range list {
		d.pushIndex(i, items[i])
		switch {
		case p == "" || strings.Contains(p, "/"):
			d.errorf(d.resolve(items[i]), "%q is not a valid profile name", p)
		case seen[p]:
			d.errorf(d.resolve(items[i]), "profile %q is listed twice", p)
		}
		seen[p] = true
		d.pop()
	}
	return list
}

func (d *decoder) limits(n *yaml.Node, l *Limits) {
	d.object(n, limitsFields, func(f string, v *yaml.Node) {
		// Counts and byte sizes may be written as plain numbers.
		s, ok := d.numberOrString(v)
		if !ok {
			return
		}
		check := checkCPU
		dst := &l.CPU
		if f == "memory" {
			check, dst = checkMemory, &l.Memory
		}
		if msg := check(s); msg != "" {
			d.errorf(d.resolve(v), "%s", msg)
			return
		}
		*dst = s
	})
}

var decimalRE = regexp.MustCompile(`^[0-9]+$`)

func (d *decoder) numberOrString(n *yaml.Node) (string, bool) {
	r := d.resolve(n)
	if r == nil {
		return "", false
	}
	// A plain decimal number, even one too large for 64 bits (which YAML
	// tags as a float or a string), is checked as the text it is, so that
	// the limit says "too large" rather than "not a string".
	if r.Kind == yaml.ScalarNode && r.Style == 0 && decimalRE.MatchString(r.Value) {
		return r.Value, true
	}
	return d.str(n, "")
}

// Config keys berth derives itself, with the spec field to use instead.
var derivedKeys = map[string]string{
	KeyLimitsCPU:     "spec.system.limits.cpu",
	KeyLimitsMemory:  "spec.system.limits.memory",
	KeyCloudInitUser: "spec.system.cloudInit",
}

func (d *decoder) config(n *yaml.Node) map[string]string {
	entries, _ := d.mapping(n)
	out := map[string]string{}
	for _, e := range entries {
		d.push(e.key, e.k)
		switch {
		case strings.HasPrefix(e.key, "user.berth."):
			d.errorf(e.k, "keys under user.berth. are reserved for berth's own bookkeeping")
		case derivedKeys[e.key] != "":
			d.errorf(e.k, "set this through %s, not through config", derivedKeys[e.key])
		case e.key == "":
			d.errorf(e.k, "config keys must not be empty")
		default:
			v, ok := d.str(e.v, quoteLXD)
			if !ok {
				break
			}
			if e.key == "security.privileged" && isTrue(v) && !d.opts.AllowPrivileged {
				d.errorf(d.resolve(e.v), "privileged system containers are not allowed (berth --allow-privileged permits them)")
				break
			}
			out[e.key] = v
		}
		d.pop()
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (d *decoder) devices(n *yaml.Node) map[string]map[string]string {
	entries, _ := d.mapping(n)
	out := map[string]map[string]string{}
	for _, e := range entries {
		d.push(e.key, e.k)
		if e.key == "" {
			d.errorf(e.k, "device names must not be empty")
		} else if dev := d.device(e.v); dev != nil {
			out[e.key] = dev
		}
		d.pop()
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (d *decoder) device(n *yaml.Node) map[string]string {
	entries, ok := d.mapping(n)
	if !ok && entries == nil {
		return nil
	}
	dev := map[string]string{}
	for _, e := range entries {
		d.push(e.key, e.k)
		if v, ok := d.str(e.v, "LXD device values are strings"); ok {
			dev[e.key] = v
			if e.key == "type" && v == "" {
				d.errorf(d.resolve(e.v), "device type must not be empty")
			}
		}
		d.pop()
	}
	_, hasType := dev["type"]
	d.require(n, map[string]bool{"type": hasType}, "type")
	return dev
}

func (d *decoder) container(n *yaml.Node, c *Container) {
	present, ok := d.object(n, containerFields, func(f string, v *yaml.Node) {
		switch f {
		case "image":
			if img, ok := d.str(v, ""); ok {
				c.Image = img
				if msg := checkImageRef(img, d.opts.RequireDigest); msg != "" {
					d.errorf(d.resolve(v), "%s", msg)
				}
			}
		case "command":
			if cmd, ok := d.stringList(v); ok && len(cmd) > 0 {
				c.Command = cmd
			}
		case "env":
			c.Env = d.env(v)
		case "user":
			if u, ok := d.str(v, ""); ok {
				c.User = u
				if u == "" || strings.ContainsAny(u, " \t\n") || strings.Count(u, ":") > 1 {
					d.errorf(d.resolve(v), `user must be "uid", "uid:gid", "name" or "name:group", got %q`, u)
				}
			}
		case "volumes":
			c.Volumes = d.volumes(v)
		case "healthcheck":
			c.Healthcheck = d.healthcheck(v)
		}
	})
	if ok {
		d.require(n, present, "image")
	}
}

func (d *decoder) env(n *yaml.Node) map[string]string {
	entries, _ := d.mapping(n)
	out := map[string]string{}
	for _, e := range entries {
		d.push(e.key, e.k)
		if msg := checkEnvName(e.key); msg != "" {
			d.errorf(e.k, "%s", msg)
		} else if v, ok := d.str(e.v, "environment values are strings"); ok {
			out[e.key] = v
		}
		d.pop()
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (d *decoder) volumes(n *yaml.Node) []Volume {
	items, _ := d.list(n)
	var out []Volume
	targets := map[string]int{}
	for i, item := range items {
		d.pushIndex(i, item)
		var vol Volume
		present, ok := d.object(item, volumeFields, func(f string, v *yaml.Node) {
			if f == "readOnly" {
				vol.ReadOnly, _ = d.boolean(v)
				return
			}
			p, ok := d.str(v, "")
			if !ok {
				return
			}
			if !path.IsAbs(p) {
				d.errorf(d.resolve(v), "must be an absolute path, got %q", p)
			}
			if f == "source" {
				vol.Source = p
				return
			}
			vol.Target = p
			if first, dup := targets[path.Clean(p)]; dup {
				d.errorf(d.resolve(v), "target %q is already mounted by volumes[%d]", p, first)
			} else {
				targets[path.Clean(p)] = i
			}
		})
		if ok {
			d.require(item, present, "source", "target")
		}
		out = append(out, vol)
		d.pop()
	}
	return out
}

func (d *decoder) healthcheck(n *yaml.Node) *Healthcheck {
	var h Healthcheck
	present, ok := d.object(n, healthcheckFields, func(f string, v *yaml.Node) {
		switch f {
		case "test":
			h.Test = d.healthTest(v)
		case "interval":
			h.Interval = d.duration(v, MinHealthcheckDuration)
		case "timeout":
			h.Timeout = d.duration(v, MinHealthcheckDuration)
		case "startPeriod":
			h.StartPeriod = d.duration(v, MinHealthcheckDuration)
		case "retries":
			if r, ok := d.integer(v, 0, MaxHealthcheckRetries); ok {
				h.Retries = r
			}
		}
	})
	if !ok {
		return nil
	}
	// Without a test berth could not tell when a replica is ready; an
	// image's own HEALTHCHECK is not visible from the spec.
	d.require(n, present, "test")
	return &h
}

func (d *decoder) healthTest(n *yaml.Node) []string {
	test, ok := d.stringList(n)
	if !ok {
		return test
	}
	at := d.resolve(n)
	if len(test) == 0 {
		d.errorf(at, "must start with CMD, CMD-SHELL or NONE")
		return test
	}
	switch test[0] {
	case "CMD":
		if len(test) < 2 {
			d.errorf(at, "CMD needs the command to run after it, e.g. [CMD, wget, -qO-, http://127.0.0.1/]")
		}
	case "CMD-SHELL":
		if len(test) != 2 {
			d.errorf(at, `CMD-SHELL takes exactly one shell command string, e.g. [CMD-SHELL, "curl -f http://127.0.0.1/"]`)
		}
	case "NONE":
		if len(test) != 1 {
			d.errorf(at, "NONE takes no arguments")
		}
	default:
		d.errorf(at, "must start with CMD, CMD-SHELL or NONE, got %q", test[0])
	}
	return test
}

// duration reads a duration between lo and MaxDuration.
func (d *decoder) duration(n *yaml.Node, lo time.Duration) Duration {
	r := d.resolve(n)
	if r == nil {
		return 0
	}
	if r.Kind != yaml.ScalarNode || r.ShortTag() != "!!str" {
		d.errorf(r, `expected a duration like "5s" or "2m", got %s`, describe(r))
		return 0
	}
	v, msg := parseDuration(r.Value, lo, MaxDuration)
	if msg != "" {
		d.errorf(r, "%s", msg)
	}
	return v
}

func (d *decoder) update(n *yaml.Node, u *Update) {
	d.object(n, updateFields, func(f string, v *yaml.Node) {
		switch f {
		case "maxUnavailable":
			if m, ok := d.integer(v, 1, MaxReplicas); ok {
				u.MaxUnavailable = m
			}
		case "healthTimeout":
			if t := d.duration(v, MinHealthTimeout); t > 0 {
				u.HealthTimeout = t
			}
		case "snapshot":
			u.Snapshot, _ = d.boolean(v)
		}
	})
}
