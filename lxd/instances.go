package lxd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// InstancePut is the writable part of an instance (shared/api/instance.go).
type InstancePut struct {
	Architecture string                       `json:"architecture"`
	Config       map[string]string            `json:"config"`
	Devices      map[string]map[string]string `json:"devices"`
	Ephemeral    bool                         `json:"ephemeral"`
	Profiles     []string                     `json:"profiles"`
	Stateful     bool                         `json:"stateful"`
	Description  string                       `json:"description"`
}

// Instance is an LXD instance. State and Snapshots are filled by
// ListInstances (recursion=2) and by GetInstance when the server supports
// the "instance_get_full" extension.
type Instance struct {
	InstancePut
	Name            string                       `json:"name"`
	Status          string                       `json:"status"`      // "Running", "Stopped", ...
	StatusCode      int                          `json:"status_code"` // 103 Running, 102 Stopped
	Type            string                       `json:"type"`        // "container" or "virtual-machine"
	ExpandedConfig  map[string]string            `json:"expanded_config"`
	ExpandedDevices map[string]map[string]string `json:"expanded_devices"`
	Location        string                       `json:"location"` // cluster member
	Project         string                       `json:"project"`
	CreatedAt       time.Time                    `json:"created_at"`
	LastUsedAt      time.Time                    `json:"last_used_at"`
	State           *InstanceState               `json:"state,omitempty"`
	Snapshots       []Snapshot                   `json:"snapshots,omitempty"`
}

// Writable returns a copy of the writable fields, for UpdateInstance.
func (i *Instance) Writable() InstancePut {
	p := i.InstancePut
	p.Config = cloneMap(i.Config)
	p.Devices = make(map[string]map[string]string, len(i.Devices))
	for k, v := range i.Devices {
		p.Devices[k] = cloneMap(v)
	}
	p.Profiles = slices.Clone(i.Profiles)
	return p
}

// Running reports whether the instance is running.
func (i *Instance) Running() bool { return i.StatusCode == StatusRunning }

// Privileged reports the instance's effective security.privileged: its
// expanded config, so a profile that makes it privileged counts.
func (i *Instance) Privileged() bool { return IsTrue(i.ExpandedConfig["security.privileged"]) }

// IsTrue reads a boolean config value as LXD does (shared.IsTrue): "1",
// "true", "yes" and "on", in any case.
func IsTrue(v string) bool {
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// InstanceState is the live state of an instance (shared/api/instance_state.go).
type InstanceState struct {
	Status     string                           `json:"status"`
	StatusCode int                              `json:"status_code"`
	Pid        int64                            `json:"pid"`
	Processes  int64                            `json:"processes"`
	CPU        struct{ Usage int64 }            `json:"cpu"`
	Memory     InstanceStateMemory              `json:"memory"`
	Disk       map[string]struct{ Usage int64 } `json:"disk"`
	Network    map[string]InstanceNetwork       `json:"network"`
}

// GlobalIPv4 returns the instance's IPv4 addresses of global scope:
// eth0's first, then those of the other interfaces in name order, each
// interface's in LXD's order. It is nil when the state is unknown (nil)
// or the instance has no such address (no NIC, or DHCP not answered yet).
func (s *InstanceState) GlobalIPv4() []string {
	if s == nil {
		return nil
	}
	names := make([]string, 0, len(s.Network))
	for name := range s.Network {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		switch {
		case a == b:
			return 0
		case a == "eth0":
			return -1
		case b == "eth0":
			return 1
		}
		return strings.Compare(a, b)
	})
	var out []string
	for _, name := range names {
		for _, a := range s.Network[name].Addresses {
			if a.Family == "inet" && a.Scope == "global" && a.Address != "" {
				out = append(out, a.Address)
			}
		}
	}
	return out
}

// HasNIC reports whether the instance has a network interface other than
// the loopback one, so that a missing address means "not yet" rather
// than "never".
func (s *InstanceState) HasNIC() bool {
	if s == nil {
		return false
	}
	for name, n := range s.Network {
		if name != "lo" && n.Type != "loopback" {
			return true
		}
	}
	return false
}

// InstanceStateMemory is memory usage in bytes.
type InstanceStateMemory struct {
	Usage         int64 `json:"usage"`
	UsagePeak     int64 `json:"usage_peak"`
	SwapUsage     int64 `json:"swap_usage"`
	SwapUsagePeak int64 `json:"swap_usage_peak"`
}

// InstanceNetwork is one network interface inside the instance.
type InstanceNetwork struct {
	Addresses []InstanceAddress `json:"addresses"`
	Hwaddr    string            `json:"hwaddr"`
	HostName  string            `json:"host_name"`
	Mtu       int               `json:"mtu"`
	State     string            `json:"state"`
	Type      string            `json:"type"`
}

// InstanceAddress is one address of an interface.
type InstanceAddress struct {
	Family  string `json:"family"` // "inet" or "inet6"
	Address string `json:"address"`
	Netmask string `json:"netmask"`
	Scope   string `json:"scope"` // "global", "link", "local"
}

// ImageSource names the image a new instance is created from: an alias or a
// fingerprint (a unique prefix is accepted) on the server itself, or, with
// Server set, on a remote image server (pulled with mode "pull").
type ImageSource struct {
	Alias       string
	Fingerprint string
	Server      string // e.g. "https://images.example.org"; "" = local
	Protocol    string // "simplestreams" or "lxd"; default "simplestreams" when Server is set
	Secret      string // for private images on an LXD remote
	Certificate string // PEM of the remote server, to pin it
}

var fingerprintRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ParseImageRef splits a spec image reference "[remote:]name" into the
// remote name ("" for the local server) and a source. A name of exactly 64
// lower-case hex digits is a fingerprint, anything else an alias. The caller
// resolves the remote name to Server/Protocol.
func ParseImageRef(ref string) (remote string, src ImageSource) {
	name := ref
	if i := strings.Index(ref, ":"); i >= 0 {
		remote, name = ref[:i], ref[i+1:]
	}
	if fingerprintRE.MatchString(name) {
		return remote, ImageSource{Fingerprint: name}
	}
	return remote, ImageSource{Alias: name}
}

// InstancesPost creates an instance.
type InstancesPost struct {
	Name   string
	Type   string // "container" (default) or "virtual-machine"
	Source ImageSource
	// Profiles: nil leaves the field out (LXD then applies the image's
	// profiles or "default"); an empty non-nil slice means no profile.
	Profiles    []string
	Config      map[string]string
	Devices     map[string]map[string]string
	Ephemeral   bool
	Description string
	// Target is the cluster member to create the instance on; "" means
	// Config.Target, and with neither LXD chooses.
	Target string
}

type instanceSourceJSON struct {
	Type        string `json:"type"`
	Alias       string `json:"alias,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Server      string `json:"server,omitempty"`
	Protocol    string `json:"protocol,omitempty"`
	Mode        string `json:"mode,omitempty"`
	Secret      string `json:"secret,omitempty"`
	Certificate string `json:"certificate,omitempty"`
}

type instancesPostJSON struct {
	Name        string                       `json:"name"`
	Type        string                       `json:"type"`
	Source      instanceSourceJSON           `json:"source"`
	Profiles    any                          `json:"profiles,omitempty"` // nil = omitted, []string{} = "[]"
	Config      map[string]string            `json:"config,omitempty"`
	Devices     map[string]map[string]string `json:"devices,omitempty"`
	Ephemeral   bool                         `json:"ephemeral"`
	Description string                       `json:"description,omitempty"`
}

// ListInstances lists all instances of the project with their state in one
// request (GET /1.0/instances?recursion=2). filter maps LXD filter fields
// (JSON field paths such as "config.user.berth.owner" or "status") to the
// exact value wanted; all entries must match.
//
// LXD compares string fields as case-insensitive regular expressions
// (lxd/filter/match.go) and splits the filter on white space, so each value
// is sent as an escaped, anchored regular expression, and config.* entries
// are re-checked exactly on the result.
func (c *Client) ListInstances(ctx context.Context, filter map[string]string) ([]Instance, error) {
	q := url.Values{"recursion": {"2"}}
	if len(filter) > 0 {
		f, err := encodeFilter(filter)
		if err != nil {
			return nil, err
		}
		q.Set("filter", f)
	}
	var all []Instance
	if _, err := c.query(ctx, request{method: "GET", path: "/1.0/instances", query: q, project: true}, &all); err != nil {
		return nil, err
	}
	out := all[:0]
	for _, inst := range all {
		if matchFilter(&inst, filter) {
			out = append(out, inst)
		}
	}
	if out == nil {
		out = []Instance{}
	}
	return out, nil
}

// ListInstanceRecords lists every instance of the project without its
// runtime state (recursion=1): names, config, status and location, in one
// request. On a cluster it answers for instances on an offline member too
// (as LXD's database knows them: status Error, their location, and no
// config), which a config filter would drop.
func (c *Client) ListInstanceRecords(ctx context.Context) ([]Instance, error) {
	var all []Instance
	if _, err := c.query(ctx, request{method: "GET", path: "/1.0/instances", query: url.Values{"recursion": {"1"}}, project: true}, &all); err != nil {
		return nil, err
	}
	if all == nil {
		all = []Instance{}
	}
	return all, nil
}

// encodeFilter builds "f1 eq ^v1$ and f2 eq ^v2$" with fields sorted, so the
// same filter always gives the same URL.
func encodeFilter(filter map[string]string) (string, error) {
	keys := make([]string, 0, len(filter))
	for k := range filter {
		if k == "" || strings.ContainsFunc(k, isFilterSpace) || strings.Contains(k, `"`) {
			return "", fmt.Errorf("lxd: filter field %q cannot be expressed in an LXD filter", k)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+" eq "+filterValue(filter[k]))
	}
	return strings.Join(parts, " and "), nil
}

func isFilterSpace(r rune) bool {
	// strings.Fields splits on unicode.IsSpace.
	return r == ' ' || r == '\t' || r == '\n' || r == '\v' || r == '\f' || r == '\r' || r == 0x85 || r == 0xA0 || r > 0x7f
}

// filterValue turns v into an anchored regular expression matching exactly
// v (case-insensitively, which LXD forces), with no white space or quote
// characters that LXD's filter tokenizer would act on.
func filterValue(v string) string {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range regexp.QuoteMeta(v) {
		if r == '"' || isFilterSpace(r) {
			fmt.Fprintf(&b, `\x{%x}`, r)
			continue
		}
		b.WriteRune(r)
	}
	b.WriteString("$")
	return b.String()
}

// matchFilter re-checks the filter exactly for the fields it knows.
func matchFilter(inst *Instance, filter map[string]string) bool {
	for k, v := range filter {
		var got string
		switch {
		case strings.HasPrefix(k, "config."):
			var ok bool
			got, ok = inst.Config[strings.TrimPrefix(k, "config.")]
			if !ok && v != "" {
				return false
			}
		case strings.HasPrefix(k, "expanded_config."):
			got = inst.ExpandedConfig[strings.TrimPrefix(k, "expanded_config.")]
		case k == "name":
			got = inst.Name
		case k == "status":
			got = inst.Status
		case k == "type":
			got = inst.Type
		case k == "location":
			got = inst.Location
		default:
			continue // trust the server
		}
		if got != v {
			return false
		}
	}
	return true
}

func instancePath(name string) string { return "/1.0/instances/" + pathEscape(name) }

// GetInstance returns the instance and its ETag. With the
// "instance_get_full" extension it asks for recursion=1, which adds State
// and Snapshots at no extra cost (the ETag is the same).
func (c *Client) GetInstance(ctx context.Context, name string) (*Instance, string, error) {
	if name == "" {
		return nil, "", errEmptyName
	}
	var q url.Values
	if c.HasExtension("instance_get_full") {
		q = url.Values{"recursion": {"1"}}
	}
	var inst Instance
	etag, err := c.query(ctx, request{method: "GET", path: instancePath(name), query: q, project: true}, &inst)
	if err != nil {
		return nil, "", err
	}
	return &inst, etag, nil
}

// GetInstanceState returns the live state of an instance (GET
// /1.0/instances/<name>/state): status, processes and its network
// interfaces with their addresses. It is lighter than GetInstance and
// works without the "instance_get_full" extension.
func (c *Client) GetInstanceState(ctx context.Context, name string) (*InstanceState, error) {
	if name == "" {
		return nil, errEmptyName
	}
	var st InstanceState
	if _, err := c.query(ctx, request{method: "GET", path: instancePath(name) + "/state", project: true}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// CreateInstance creates (but does not start) an instance and waits for it.
// LXD 5.0 has no start-on-create in the API, so starting is a separate
// StartInstance. A duplicate name fails the operation with "already exists",
// which matches ErrConflict.
func (c *Client) CreateInstance(ctx context.Context, p InstancesPost) error {
	if p.Name == "" {
		return errEmptyName
	}
	body := instancesPostJSON{
		Name:        p.Name,
		Type:        p.Type,
		Config:      p.Config,
		Devices:     p.Devices,
		Ephemeral:   p.Ephemeral,
		Description: p.Description,
		Source: instanceSourceJSON{
			Type:        "image",
			Alias:       p.Source.Alias,
			Fingerprint: p.Source.Fingerprint,
			Server:      p.Source.Server,
			Protocol:    p.Source.Protocol,
			Secret:      p.Source.Secret,
			Certificate: p.Source.Certificate,
		},
	}
	if body.Type == "" {
		body.Type = "container"
	}
	if p.Profiles != nil {
		body.Profiles = p.Profiles
	}
	if p.Source.Alias == "" && p.Source.Fingerprint == "" {
		return fmt.Errorf("lxd: create %s: image source needs an alias or a fingerprint", p.Name)
	}
	if p.Source.Server != "" {
		body.Source.Mode = "pull"
		if body.Source.Protocol == "" {
			body.Source.Protocol = "simplestreams"
		}
	}
	var q url.Values
	if t := cmp.Or(p.Target, c.target); t != "" {
		q = url.Values{"target": {t}}
	}
	_, err := c.run(ctx, request{method: "POST", path: "/1.0/instances", query: q, project: true, body: body})
	if errors.Is(err, ErrOperationGone) {
		// LXD removes the record of a create that failed: one that is
		// there was made.
		if _, _, gerr := c.GetInstance(ctx, p.Name); gerr == nil {
			return nil
		}
	}
	return err
}

// UpdateInstance replaces the instance's writable fields (PUT, async) with
// If-Match: etag. Start from GetInstance and Writable(): a PUT replaces the
// whole config, and LXD refuses one that drops volatile.idmap.* keys
// ("Volatile idmap keys can't be deleted by the user"), so every volatile.*
// key read must be written back. It is also the only way to remove a device.
func (c *Client) UpdateInstance(ctx context.Context, name string, put InstancePut, etag string) error {
	if name == "" {
		return errEmptyName
	}
	_, err := c.run(ctx, request{method: "PUT", path: instancePath(name), project: true, body: put, etag: etag})
	return err
}

// InstancePatch is a partial update (PATCH, sync). Config keys left out are
// kept, and a key set to "" is deleted (LXD never stores empty values).
// Devices are merged by name, so a patch cannot remove a device. Profiles,
// when non-nil, replace the list.
type InstancePatch struct {
	Config      map[string]string            `json:"config,omitempty"`
	Devices     map[string]map[string]string `json:"devices,omitempty"`
	Profiles    []string                     `json:"profiles,omitempty"`
	Description *string                      `json:"description,omitempty"`
}

// PatchInstance applies a partial update with If-Match: etag ("" = no
// check). A stale ETag gives ErrPreconditionFailed.
func (c *Client) PatchInstance(ctx context.Context, name string, patch InstancePatch, etag string) error {
	if name == "" {
		return errEmptyName
	}
	_, err := c.run(ctx, request{method: "PATCH", path: instancePath(name), project: true, body: patch, etag: etag})
	return err
}

// InstanceStatePut is a state change (shared/api/instance_state.go).
type InstanceStatePut struct {
	Action   string `json:"action"` // start, stop, restart, freeze, unfreeze
	Timeout  int    `json:"timeout"`
	Force    bool   `json:"force"`
	Stateful bool   `json:"stateful"`
}

// SetInstanceState changes the state and waits for it. Note LXD's timeout:
// left out or -1 waits forever for a clean shutdown, 0 kills at once.
func (c *Client) SetInstanceState(ctx context.Context, name string, st InstanceStatePut) error {
	if name == "" {
		return errEmptyName
	}
	_, err := c.run(ctx, request{method: "PUT", path: instancePath(name) + "/state", project: true, body: st})
	return err
}

// LXD reports these only in the failed operation (HTTP 202 then 200).
func isAlreadyRunning(err error) bool {
	var oe *OperationError
	var se *StatusError
	switch {
	case errors.As(err, &oe):
		return strings.Contains(oe.Err, "already running")
	case errors.As(err, &se):
		return strings.Contains(se.Message, "already running")
	}
	return false
}

func isAlreadyStopped(err error) bool {
	var oe *OperationError
	var se *StatusError
	msg := ""
	switch {
	case errors.As(err, &oe):
		msg = oe.Err
	case errors.As(err, &se):
		msg = se.Message
	}
	return strings.Contains(msg, "already stopped") || strings.Contains(msg, "not running")
}

// StartInstance starts the instance. It is idempotent: an instance that is
// already running is not an error.
//
// At most maxStarts starts run at once per client: LXD sets up each
// instance's devices in a hook that must call back within 30 s, and 20
// starts at once on a loaded 2-core host missed it, every one ("Failed to
// run: lxd forkstart …: exit status 1"). A start that fails so is tried
// once more after startRetryPause; a start that fails for a reason of the
// instance's own fails the same way again, and that error is returned.
func (c *Client) StartInstance(ctx context.Context, name string) error {
	err := c.startOnce(ctx, name)
	if err == nil || !forkstartFailed(err) || ctx.Err() != nil {
		return err
	}
	t := time.NewTimer(startRetryPause)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return err
	}
	if err2 := c.startOnce(ctx, name); err2 != nil {
		return fmt.Errorf("%w (tried twice; the first: %v)", err2, err)
	}
	return nil
}

// maxStarts bounds the starts one client runs at once.
const maxStarts = 4

// startRetryPause is the pause before a failed start is tried again (a
// variable only so that unit tests need not wait).
var startRetryPause = 2 * time.Second

func (c *Client) startOnce(ctx context.Context, name string) error {
	select {
	case c.starts <- struct{}{}:
		defer func() { <-c.starts }()
	case <-ctx.Done():
		return fmt.Errorf("lxd: start %s: %w", name, ctx.Err())
	}
	err := c.SetInstanceState(ctx, name, InstanceStatePut{Action: "start", Timeout: -1})
	if err != nil && isAlreadyRunning(err) {
		return nil
	}
	if errors.Is(err, ErrOperationGone) {
		if st, serr := c.GetInstanceState(ctx, name); serr == nil && st.StatusCode == StatusRunning {
			return nil
		}
	}
	return err
}

// forkstartFailed reports a start that LXD's forkstart helper failed: how
// every failure inside liblxc's start (a hook, a device) is reported.
func forkstartFailed(err error) bool {
	var oe *OperationError
	return errors.As(err, &oe) && strings.Contains(oe.Err, "forkstart") && strings.Contains(oe.Err, "exit status")
}

// StopInstance stops the instance cleanly, giving it timeout to shut down
// (at least one second; LXD would read 0 as "kill now" and a missing value as
// "wait forever"), then forces it if that failed or timed out. It is
// idempotent: an instance that is already stopped is not an error.
func (c *Client) StopInstance(ctx context.Context, name string, timeout time.Duration) error {
	secs := max(int((timeout+time.Second-1)/time.Second), 1)
	err := c.SetInstanceState(ctx, name, InstanceStatePut{Action: "stop", Timeout: secs})
	if err == nil || isAlreadyStopped(err) {
		return nil
	}
	if ctx.Err() != nil || errors.Is(err, ErrNotFound) {
		return err
	}
	ferr := c.SetInstanceState(ctx, name, InstanceStatePut{Action: "stop", Timeout: -1, Force: true})
	if ferr == nil || isAlreadyStopped(ferr) {
		return nil
	}
	return fmt.Errorf("%w (after clean stop failed: %v)", ferr, err)
}

// RestartInstance restarts the instance, cleanly within timeout, else by
// force.
func (c *Client) RestartInstance(ctx context.Context, name string, timeout time.Duration) error {
	secs := max(int((timeout+time.Second-1)/time.Second), 1)
	err := c.SetInstanceState(ctx, name, InstanceStatePut{Action: "restart", Timeout: secs})
	if err == nil || ctx.Err() != nil || errors.Is(err, ErrNotFound) {
		return err
	}
	return c.SetInstanceState(ctx, name, InstanceStatePut{Action: "restart", Timeout: -1, Force: true})
}

// DeleteInstance deletes the instance. LXD refuses to delete a running
// instance (400 "Instance is running"), so a running instance is first
// stopped by force: deletion destroys it anyway, a clean shutdown buys
// nothing. Stop it yourself first for a graceful shutdown.
func (c *Client) DeleteInstance(ctx context.Context, name string) error {
	if name == "" {
		return errEmptyName
	}
	_, err := c.run(ctx, request{method: "DELETE", path: instancePath(name), project: true})
	var se *StatusError
	if errors.As(err, &se) && se.Code == 400 && strings.Contains(se.Message, "running") {
		if err := c.SetInstanceState(ctx, name, InstanceStatePut{Action: "stop", Timeout: -1, Force: true}); err != nil && !isAlreadyStopped(err) {
			return err
		}
		_, err = c.run(ctx, request{method: "DELETE", path: instancePath(name), project: true})
	}
	if errors.Is(err, ErrOperationGone) {
		if _, _, gerr := c.GetInstance(ctx, name); errors.Is(gerr, ErrNotFound) {
			return nil
		}
	}
	return err
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
