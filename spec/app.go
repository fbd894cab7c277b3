package spec

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/berth-gitops/berth/ownership"
)

// The fields of each type, in the order the schema and the docs list them:
// what the decoder accepts, which fields are required, and how each is read.
// They are data so that schema_test.go can compare them with the Go types
// in types.go and with schema.json field by field, and fail on a field that
// is only in one or two of the three.
var (
	appFields = fields[App]{
		required(enumField("apiVersion", []string{APIVersion}, func(a *App) *string { return &a.APIVersion })),
		required(enumField("kind", []string{KindApp}, func(a *App) *string { return &a.Kind })),
		{name: "metadata", required: true, decode: func(d *decoder, v *yaml.Node, a *App) {
			object(d, v, metadataFields, &a.Metadata)
		}},
		{name: "spec", required: true, decode: func(d *decoder, v *yaml.Node, a *App) {
			object(d, v, appSpecFields, &a.Spec)
		}},
	}
	metadataFields = fields[Metadata]{
		{name: "name", required: true, decode: func(d *decoder, v *yaml.Node, m *Metadata) {
			if s, ok := d.str(v, ""); ok {
				m.Name = s
				d.nameNode = d.resolve(v)
			}
		}},
	}
	appSpecFields = fields[AppSpec]{
		intField("replicas", 0, MaxReplicas, func(s *AppSpec) *int { return &s.Replicas }),
		{name: "system", required: true, decode: func(d *decoder, v *yaml.Node, s *AppSpec) {
			object(d, v, systemFields, &s.System)
		}},
		// Optional: an app without a container is a plain managed system.
		{name: "container", decode: func(d *decoder, v *yaml.Node, s *AppSpec) {
			d.hasContainer = true
			object(d, v, containerFields, &s.Container)
		}},
		{name: "update", decode: func(d *decoder, v *yaml.Node, s *AppSpec) {
			object(d, v, updateFields, &s.Update)
		}},
		{name: "dependsOn", decode: func(d *decoder, v *yaml.Node, s *AppSpec) { s.DependsOn = d.dependsOn(v) }},
	}
	dependencyFields = fields[Dependency]{
		{name: "app", required: true, decode: func(d *decoder, v *yaml.Node, dep *Dependency) {
			if s, ok := d.str(v, ""); ok {
				dep.App = s
				if msg := checkName(s, 0, false); msg != "" {
					d.errorf(d.resolve(v), "app %s", msg)
				}
			}
		}},
		{name: "minReady", isInt: true, min: 1, max: MaxReplicas, enum: []string{"all"},
			decode: func(d *decoder, v *yaml.Node, dep *Dependency) {
				if n := d.resolve(v); n != nil && n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" && n.Value == "all" {
					dep.MinReady = MinReadyAll
				} else if n != nil && n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
					d.errorf(n, `must be a number of replicas from 1 to %d or "all", got %q`, MaxReplicas, n.Value)
				} else if i, ok := d.integer(v, 1, MaxReplicas); ok {
					dep.MinReady = MinReady(i)
				}
			}},
		{name: "timeout", decode: func(d *decoder, v *yaml.Node, dep *Dependency) {
			if t := d.duration(v, MinDependencyTimeout); t > 0 {
				dep.Timeout = t
			}
		}},
	}
	systemFields = fields[System]{
		{name: "image", required: true, decode: func(d *decoder, v *yaml.Node, s *System) {
			if img, ok := d.keptStr(v, checkSystemImage); ok {
				s.Image = img
			}
		}},
		{name: "profiles", decode: func(d *decoder, v *yaml.Node, s *System) { s.Profiles = d.profiles(v) }},
		{name: "limits", decode: func(d *decoder, v *yaml.Node, s *System) { object(d, v, limitsFields, &s.Limits) }},
		{name: "config", decode: func(d *decoder, v *yaml.Node, s *System) { s.Config = d.config(v) }},
		{name: "devices", decode: func(d *decoder, v *yaml.Node, s *System) { s.Devices = d.devices(v) }},
		{name: "cloudInit", decode: func(d *decoder, v *yaml.Node, s *System) {
			if c, ok := d.str(v, ""); ok {
				s.CloudInit = c
			}
		}},
		{name: "ephemeral", decode: func(d *decoder, v *yaml.Node, s *System) { s.Ephemeral, _ = d.boolean(v) }},
		enumField("imageUpdate", []string{ImageUpdateRolling, ImageUpdateManual}, func(s *System) *string { return &s.ImageUpdate }),
		{name: "provision", decode: func(d *decoder, v *yaml.Node, s *System) { s.Provision = d.provision(v) }},
		{name: "ports", decode: func(d *decoder, v *yaml.Node, s *System) {
			// Allowed only without a container, which may come later in
			// the mapping: checked once the whole app is read. An empty
			// list is no list, and so is allowed.
			if r := d.resolve(v); r != nil && (r.Kind != yaml.SequenceNode || len(r.Content) > 0) {
				d.systemPorts = d.mark(d.path[len(d.path)-1].key)
			}
			s.Ports = d.ports(v)
		}},
		{name: "placement", decode: func(d *decoder, v *yaml.Node, s *System) {
			p := Placement{Spread: SpreadMembers}
			if object(d, v, placementFields, &p) {
				s.Placement = &p
			}
		}},
		{name: "volumes", decode: func(d *decoder, v *yaml.Node, s *System) { s.Volumes = d.systemVolumes(v) }},
	}
	placementFields = fields[Placement]{
		enumField("spread", []string{SpreadMembers}, func(p *Placement) *string { return &p.Spread }),
		{name: "members", decode: func(d *decoder, v *yaml.Node, p *Placement) { p.Members = d.memberNames(v) }},
		{name: "group", decode: func(d *decoder, v *yaml.Node, p *Placement) {
			if g, ok := d.str(v, ""); ok {
				p.Group = g
				if msg := checkMemberName(g); msg != "" {
					d.errorf(d.resolve(v), "cluster group %s", msg)
				}
			}
		}},
		{name: "replaceUnreachable", decode: func(d *decoder, v *yaml.Node, p *Placement) {
			p.ReplaceUnreachable = d.duration(v, MinReplaceUnreachable)
		}},
	}
	provisionFields = fields[Provision]{
		{name: "files", decode: func(d *decoder, v *yaml.Node, p *Provision) { p.Files = d.provisionFiles(v) }},
		{name: "run", decode: func(d *decoder, v *yaml.Node, p *Provision) { p.Run = d.provisionRun(v) }},
		{name: "timeout", decode: func(d *decoder, v *yaml.Node, p *Provision) {
			if t := d.duration(v, MinProvisionTimeout); t > 0 {
				p.Timeout = t
			}
		}},
		{name: "every", decode: func(d *decoder, v *yaml.Node, p *Provision) { p.Every = d.provisionEvery(v) }},
		{name: "restartContainer", decode: func(d *decoder, v *yaml.Node, p *Provision) {
			// Needs a container, which may come later in the app: checked
			// once the whole app is read.
			if b, ok := d.boolean(v); ok {
				p.RestartContainer = b
				if b {
					d.restartContainer = d.mark(d.resolve(v))
				}
			}
		}},
	}
	provisionFileFields = fields[ProvisionFile]{
		{name: "source", required: true, decode: func(d *decoder, v *yaml.Node, f *ProvisionFile) {
			if s, ok := d.str(v, ""); ok {
				f.Source = s
				d.provisionSource(v, f)
			}
		}},
		{name: "path", required: true, decode: func(d *decoder, v *yaml.Node, f *ProvisionFile) {
			if s, ok := d.keptStr(v, checkInstancePath); ok {
				f.Path = s
			}
		}},
		{name: "mode", decode: func(d *decoder, v *yaml.Node, f *ProvisionFile) {
			if m, ok := checkedStr(d, v, "write the mode as a quoted octal string", checkFileMode); ok {
				f.Mode = m
			}
		}},
		{name: "owner", decode: func(d *decoder, v *yaml.Node, f *ProvisionFile) {
			if o, ok := checkedStr(d, v, "", checkFileOwner); ok {
				f.Owner = o
			}
		}},
		// Read once the whole file is: source may come after it.
		{name: "secret", decode: func(d *decoder, v *yaml.Node, f *ProvisionFile) { f.Secret, _ = d.boolean(v) }},
	}
	limitsFields = fields[Limits]{
		{name: "cpu", decode: func(d *decoder, v *yaml.Node, l *Limits) { d.limit(v, checkCPU, &l.CPU) }},
		{name: "memory", decode: func(d *decoder, v *yaml.Node, l *Limits) { d.limit(v, checkMemory, &l.Memory) }},
	}
	containerFields = fields[Container]{
		{name: "image", required: true, decode: func(d *decoder, v *yaml.Node, c *Container) {
			if img, ok := d.str(v, ""); ok {
				c.Image = img
				if msg := checkImageRef(img, d.opts.RequireDigest); msg != "" {
					d.errorf(d.resolve(v), "%s", msg)
				}
			}
		}},
		{name: "command", decode: func(d *decoder, v *yaml.Node, c *Container) {
			if cmd, ok := d.stringList(v); ok && len(cmd) > 0 {
				c.Command = cmd
			}
		}},
		{name: "env", decode: func(d *decoder, v *yaml.Node, c *Container) { c.Env = d.env(v) }},
		{name: "user", decode: func(d *decoder, v *yaml.Node, c *Container) {
			if u, ok := d.keptStr(v, checkUser); ok {
				c.User = u
			}
		}},
		{name: "volumes", decode: func(d *decoder, v *yaml.Node, c *Container) { c.Volumes = d.volumes(v) }},
		{name: "healthcheck", decode: func(d *decoder, v *yaml.Node, c *Container) { c.Healthcheck = d.healthcheck(v) }},
		{name: "ports", decode: func(d *decoder, v *yaml.Node, c *Container) { c.Ports = d.ports(v) }},
		{name: "secretFiles", decode: func(d *decoder, v *yaml.Node, c *Container) { c.SecretFiles = d.secretFiles(v) }},
	}
	portFields = fields[Port]{
		{name: "name", required: true, decode: func(d *decoder, v *yaml.Node, p *Port) {
			if s, ok := d.keptStr(v, checkPortName); ok {
				p.Name = s
			}
		}},
		required(intField("port", 1, MaxPort, func(p *Port) *int { return &p.Port })),
		enumField("protocol", []string{ProtocolTCP, ProtocolUDP}, func(p *Port) *string { return &p.Protocol }),
	}
	volumeFields = fields[Volume]{
		{name: "source", required: true, decode: func(d *decoder, v *yaml.Node, vol *Volume) {
			if p, ok := d.absPath(v); ok {
				vol.Source = p
			}
		}},
		{name: "target", required: true, decode: func(d *decoder, v *yaml.Node, vol *Volume) {
			if p, ok := d.absPath(v); ok {
				vol.Target = p
				d.mount(v, p)
			}
		}},
		{name: "readOnly", decode: func(d *decoder, v *yaml.Node, vol *Volume) { vol.ReadOnly, _ = d.boolean(v) }},
	}
	healthcheckFields = fields[Healthcheck]{
		// Without a test berth could not tell when a replica is ready; an
		// image's own HEALTHCHECK is not visible from the spec.
		{name: "test", required: true, decode: func(d *decoder, v *yaml.Node, h *Healthcheck) { h.Test = d.healthTest(v) }},
		{name: "interval", decode: func(d *decoder, v *yaml.Node, h *Healthcheck) {
			h.Interval = d.duration(v, MinHealthcheckDuration)
		}},
		{name: "timeout", decode: func(d *decoder, v *yaml.Node, h *Healthcheck) {
			h.Timeout = d.duration(v, MinHealthcheckDuration)
		}},
		{name: "startPeriod", decode: func(d *decoder, v *yaml.Node, h *Healthcheck) {
			h.StartPeriod = d.duration(v, MinHealthcheckDuration)
		}},
		intField("retries", 0, MaxHealthcheckRetries, func(h *Healthcheck) *int { return &h.Retries }),
	}
	updateFields = fields[Update]{
		intOrPercentField("maxUnavailable", 1, MaxReplicas, func(u *Update) *IntOrPercent { return &u.MaxUnavailable }),
		{name: "healthTimeout", decode: func(d *decoder, v *yaml.Node, u *Update) {
			if t := d.duration(v, MinHealthTimeout); t > 0 {
				u.HealthTimeout = t
			}
		}},
		{name: "snapshot", decode: func(d *decoder, v *yaml.Node, u *Update) {
			// Impossible with system.ephemeral, which may come later in
			// the app: checked once the whole app is read.
			if b, ok := d.boolean(v); ok {
				u.Snapshot = b
				if b {
					d.snapshot = d.mark(d.resolve(v))
				}
			}
		}},
		{name: "drainDelay", decode: func(d *decoder, v *yaml.Node, u *Update) { u.DrainDelay = d.drainDelay(v) }},
	}
)

// healthTestKind is a word a healthcheck test may start with (the schema's
// enum) and the check of the number of arguments after it.
type healthTestKind struct {
	word string
	args func(n int) string
}

var healthTestKinds = []healthTestKind{
	{"CMD", func(n int) string {
		if n < 1 {
			return "CMD needs the command to run after it, e.g. [CMD, wget, -qO-, http://127.0.0.1/]"
		}
		return ""
	}},
	{"CMD-SHELL", func(n int) string {
		if n != 1 {
			return `CMD-SHELL takes exactly one shell command string, e.g. [CMD-SHELL, "curl -f http://127.0.0.1/"]`
		}
		return ""
	}},
	{"NONE", func(n int) string {
		if n != 0 {
			return "NONE takes no arguments"
		}
		return ""
	}},
}

// Defaults. They are filled in before decoding so that a field written out
// with its default value decodes to exactly the same App, and so hashes.
const (
	DefaultReplicas       = 1
	DefaultMaxUnavailable = 1
	DefaultHealthTimeout  = Duration(2 * time.Minute)
	// DefaultDependencyTimeout is how long an app waits for a dependency
	// that sets no timeout.
	DefaultDependencyTimeout = Duration(10 * time.Minute)
	DefaultMinReady          = MinReady(1)
	DefaultProfile           = "default"
	DefaultProtocol          = ProtocolTCP
	// DefaultProvisionTimeout bounds a provision that sets no timeout.
	DefaultProvisionTimeout = Duration(10 * time.Minute)
	DefaultFileMode         = "0644"
	DefaultFileOwner        = "0:0"
)

// MaxPort is the highest port number.
const MaxPort = 65535

// quoteLXD is the hint for non-string LXD values.
const quoteLXD = "LXD config values are strings"

// app decodes one document. It returns the name node when a name that
// could be an app's was read, so a broken app can still be held by name.
func (d *decoder) app(root *yaml.Node) (App, *yaml.Node) {
	app := App{Spec: AppSpec{
		Replicas: DefaultReplicas,
		System:   System{Profiles: []string{DefaultProfile}, ImageUpdate: ImageUpdateRolling},
		Update:   Update{MaxUnavailable: Count(DefaultMaxUnavailable), HealthTimeout: DefaultHealthTimeout},
	}}
	if r := d.resolve(root); r != nil && r.Kind != yaml.MappingNode {
		d.errorf(r, "a document must be a mapping (an App), got %s", describe(r))
		return app, nil
	}
	if !object(d, root, appFields, &app) {
		return app, nil
	}
	d.containerless()
	d.secretMounts()
	d.checkVolumes(&app)
	if app.Spec.System.Ephemeral && d.snapshot != nil {
		// The snapshot is a stop and a rename of the replica, and LXD
		// deletes an ephemeral instance as it stops.
		d.errorAt(d.snapshot, "snapshot cannot work with system.ephemeral: true: taking it stops the replica, and LXD deletes an ephemeral instance when it stops; set one of them to false")
	}
	nameNode := d.nameNode
	if nameNode != nil {
		// The length check needs replicas, so it runs after spec.
		d.push("metadata", nil)
		d.push("name", nil)
		hi := app.Spec.HighestSlot()
		if msg := checkName(app.Metadata.Name, hi, hi >= max(app.Spec.Replicas, 1)); msg != "" {
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

// limit reads a resource limit. Counts and byte sizes may be written as
// plain numbers.
func (d *decoder) limit(v *yaml.Node, check func(string) string, dst *string) {
	s, ok := d.numberOrString(v)
	if !ok {
		return
	}
	if msg := check(s); msg != "" {
		d.errorf(d.resolve(v), "%s", msg)
		return
	}
	*dst = s
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
	if msg := leadingZero(r); msg != "" {
		d.errorf(r, "%s", msg)
		return "", false
	}
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
		case strings.HasPrefix(e.key, ownership.KeyPrefix):
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
			if msg := isolationBreakingKey(e.key, v); msg != "" && !d.opts.AllowPrivileged {
				d.errorf(d.resolve(e.v), "%s", msg)
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
	// Where each key was read, to point at it once the whole device, its
	// type included, is known.
	at := map[string]*place{}
	for _, e := range entries {
		d.push(e.key, e.k)
		if v, ok := d.str(e.v, "LXD device values are strings"); ok {
			dev[e.key] = v
			at[e.key] = d.mark(d.resolve(e.v))
			if e.key == "type" && v == "" {
				d.errorf(d.resolve(e.v), "device type must not be empty")
			}
		}
		d.pop()
	}
	_, hasType := dev["type"]
	d.require(n, map[string]bool{"type": hasType}, "type")
	if !d.opts.AllowPrivileged {
		for _, p := range isolationBreakingDevice(dev) {
			d.errorAt(at[p.key], "%s", p.msg)
		}
	}
	return dev
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
	d.mounts = map[string]int{}
	for i, item := range items {
		d.pushIndex(i, item)
		d.volume = i
		var vol Volume
		object(d, item, volumeFields, &vol)
		out = append(out, vol)
		d.pop()
	}
	return out
}

// absPath reads an absolute path.
func (d *decoder) absPath(v *yaml.Node) (string, bool) {
	p, ok := d.str(v, "")
	if ok && !path.IsAbs(p) {
		d.errorf(d.resolve(v), "must be an absolute path, got %q", p)
	}
	return p, ok
}

// mount notes the target of volumes[d.volume], reporting one that an
// earlier volume already mounts.
func (d *decoder) mount(v *yaml.Node, target string) {
	if first, dup := d.mounts[path.Clean(target)]; dup {
		d.errorf(d.resolve(v), "target %q is already mounted by volumes[%d]", target, first)
	} else {
		d.mounts[path.Clean(target)] = d.volume
	}
}

// ports reads spec.container.ports or spec.system.ports: names unique in
// the app, numbers unique per protocol. An explicit empty list is nil,
// like no list.
func (d *decoder) ports(n *yaml.Node) []Port {
	items, _ := d.list(n)
	if len(items) > MaxPorts {
		d.errorf(d.resolve(n), "has %d ports; an app may declare at most %d", len(items), MaxPorts)
		return nil
	}
	var out []Port
	names := map[string]int{}
	numbers := map[string]int{}
	for i, item := range items {
		d.pushIndex(i, item)
		p := Port{Protocol: DefaultProtocol}
		if object(d, item, portFields, &p) {
			if first, dup := names[p.Name]; dup && p.Name != "" {
				d.push("name", nil)
				d.errorf(d.member(item, "name"), "port name %q is already used by ports[%d]", p.Name, first)
				d.pop()
			} else if p.Name != "" {
				names[p.Name] = i
			}
			if first, dup := numbers[p.String()]; dup && p.Port != 0 {
				d.push("port", nil)
				d.errorf(d.member(item, "port"), "port %s is already declared by ports[%d]", p, first)
				d.pop()
			} else if p.Port != 0 {
				numbers[p.String()] = i
			}
		}
		out = append(out, p)
		d.pop()
	}
	return out
}

// member is the value node of key in the mapping n as written (not
// merged), or n itself: where to point a problem of that field found
// after the whole mapping was read.
func (d *decoder) member(n *yaml.Node, key string) *yaml.Node {
	r := d.resolve(n)
	if r == nil {
		return n
	}
	if r.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(r.Content); i += 2 {
			if r.Content[i].Kind == yaml.ScalarNode && r.Content[i].Value == key {
				if v := d.resolve(r.Content[i+1]); v != nil {
					return v
				}
			}
		}
	}
	return r
}

// drainDelay reads spec.update.drainDelay: 0 (no wait) or a duration up
// to MaxDrainDelay.
func (d *decoder) drainDelay(n *yaml.Node) *Duration {
	r := d.resolve(n)
	if r == nil {
		return nil
	}
	if r.Kind != yaml.ScalarNode || r.ShortTag() != "!!str" {
		d.errorf(r, `expected a duration like "5s", or "0s" for no wait, got %s`, describe(r))
		return nil
	}
	if isZeroDuration(r.Value) {
		zero := Duration(0)
		return &zero
	}
	v, msg := parseDuration(r.Value, MinHealthcheckDuration, MaxDrainDelay)
	if msg != "" {
		if strings.HasPrefix(strings.TrimSpace(r.Value), "-") {
			// 0s is allowed here: say so, not "more than 0".
			msg = fmt.Sprintf("duration must be 0s (no wait) or more, got %q", r.Value)
		}
		d.errorf(r, "%s", msg)
		return nil
	}
	return &v
}

func (d *decoder) healthcheck(n *yaml.Node) *Healthcheck {
	var h Healthcheck
	if !object(d, n, healthcheckFields, &h) {
		return nil
	}
	return &h
}

func (d *decoder) healthTest(n *yaml.Node) []string {
	test, ok := d.stringList(n)
	if !ok {
		return test
	}
	at := d.resolve(n)
	words := make([]string, len(healthTestKinds))
	for i, k := range healthTestKinds {
		words[i] = k.word
	}
	want := strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
	if len(test) == 0 {
		d.errorf(at, "must start with %s", want)
		return test
	}
	i := slices.IndexFunc(healthTestKinds, func(k healthTestKind) bool { return k.word == test[0] })
	if i < 0 {
		d.errorf(at, "must start with %s, got %q", want, test[0])
		return test
	}
	if msg := healthTestKinds[i].args(len(test) - 1); msg != "" {
		d.errorf(at, "%s", msg)
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
