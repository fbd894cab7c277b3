package spec

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// ports adds a ports list to minimal's container (line 10).
func ports(list string) string { return minimal + "    ports: " + list + "\n" }

func TestPortsRules(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"one port, protocol defaulted", ports("[{name: http, port: 8080}]"), nil},
		{"same number on tcp and udp", ports("[{name: dns, port: 53}, {name: dns-udp, port: 53, protocol: udp}]"), nil},
		{"empty list", ports("[]"), nil},
		{"names at the limits", ports("[{name: a, port: 1}, {name: abcdefghijklmno, port: 65535}, {name: h2c, port: 2}, {name: 1-a, port: 3}]"), nil},
		{"name with uppercase", ports("[{name: HTTP, port: 80}]"),
			[]string{`app.yaml:10:20: spec.container.ports[0].name: "HTTP" is not a valid port name: use at most 15 lowercase letters, digits and '-', at least one letter, no '-' at either end and no "--" (an IANA service name, as SRV records need)`}},
		{"name only digits", ports(`[{name: "8080", port: 80}]`),
			[]string{`app.yaml:10:20: spec.container.ports[0].name: "8080" is not a valid port name: use at most 15 lowercase letters, digits and '-', at least one letter, no '-' at either end and no "--" (an IANA service name, as SRV records need)`}},
		{"name with bad hyphens", ports("[{name: -a, port: 1}, {name: a-, port: 2}, {name: a--b, port: 3}]"),
			[]string{
				`app.yaml:10:20: spec.container.ports[0].name: "-a" is not a valid port name: use at most 15 lowercase letters, digits and '-', at least one letter, no '-' at either end and no "--" (an IANA service name, as SRV records need)`,
				`app.yaml:10:41: spec.container.ports[1].name: "a-" is not a valid port name: use at most 15 lowercase letters, digits and '-', at least one letter, no '-' at either end and no "--" (an IANA service name, as SRV records need)`,
				`app.yaml:10:62: spec.container.ports[2].name: "a--b" is not a valid port name: use at most 15 lowercase letters, digits and '-', at least one letter, no '-' at either end and no "--" (an IANA service name, as SRV records need)`,
			}},
		{"name too long", ports("[{name: abcdefghijklmnop, port: 1}]"),
			[]string{`app.yaml:10:20: spec.container.ports[0].name: "abcdefghijklmnop" is not a valid port name: use at most 15 lowercase letters, digits and '-', at least one letter, no '-' at either end and no "--" (an IANA service name, as SRV records need)`}},
		{"name missing", ports("[{port: 80}]"),
			[]string{`app.yaml:10:13: spec.container.ports[0].name: required field is missing`}},
		{"port missing", ports("[{name: http}]"),
			[]string{`app.yaml:10:13: spec.container.ports[0].port: required field is missing`}},
		{"port zero", ports("[{name: http, port: 0}]"),
			[]string{`app.yaml:10:32: spec.container.ports[0].port: must be between 1 and 65535, got 0`}},
		{"port too high", ports("[{name: http, port: 65536}]"),
			[]string{`app.yaml:10:32: spec.container.ports[0].port: must be between 1 and 65535, got 65536`}},
		{"port as a string", ports(`[{name: http, port: "80"}]`),
			[]string{`app.yaml:10:32: spec.container.ports[0].port: expected an integer, got string "80"`}},
		{"unknown protocol", ports("[{name: http, port: 80, protocol: sctp}]"),
			[]string{`app.yaml:10:46: spec.container.ports[0].protocol: must be "tcp" or "udp", got "sctp"`}},
		{"protocol in capitals", ports("[{name: http, port: 80, protocol: TCP}]"),
			[]string{`app.yaml:10:46: spec.container.ports[0].protocol: must be "tcp" or "udp", got "TCP"`}},
		{"unknown field", ports("[{name: http, port: 80, hostPort: 80}]"),
			[]string{`app.yaml:10:36: spec.container.ports[0].hostPort: unknown field "hostPort"; allowed: name, port, protocol`}},
		{"duplicate name", ports("[{name: http, port: 80}, {name: http, port: 81}]"),
			[]string{`app.yaml:10:44: spec.container.ports[1].name: port name "http" is already used by ports[0]`}},
		{"duplicate number, default and explicit tcp", ports("[{name: a, port: 80}, {name: b, port: 80, protocol: tcp}]"),
			[]string{`app.yaml:10:50: spec.container.ports[1].port: port 80/tcp is already declared by ports[0]`}},
		{"ports as a mapping", ports("{http: 80}"),
			[]string{`app.yaml:10:12: spec.container.ports: expected a list, got a mapping`}},
		{"a port as a number", ports("[8080]"),
			[]string{`app.yaml:10:13: spec.container.ports[0]: expected a mapping, got integer 8080`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustLoadBytes(t, tt.src, Options{})
			sameLines(t, "diagnostics", diagStrings(r.Diagnostics), tt.want)
		})
	}
}

func TestPortsLoaded(t *testing.T) {
	r := mustLoadBytes(t, ports("[{name: http, port: 8080}, {name: metrics, port: 9100, protocol: tcp}, {name: syslog, port: 514, protocol: udp}]"), Options{})
	if len(r.Apps) != 1 {
		t.Fatalf("does not load: %v", r.Diagnostics)
	}
	c := r.Apps[0].Spec.Container
	want := []Port{{"http", 8080, "tcp"}, {"metrics", 9100, "tcp"}, {"syslog", 514, "udp"}}
	if !reflect.DeepEqual(c.Ports, want) {
		t.Errorf("ports = %+v, want %+v", c.Ports, want)
	}
	if got := c.TCPPorts(); !reflect.DeepEqual(got, want[:2]) {
		t.Errorf("TCPPorts() = %+v", got)
	}
	if got := want[2].String(); got != "514/udp" {
		t.Errorf("String() = %q", got)
	}
	// An explicit empty list is no list: nothing in the JSON.
	r = mustLoadBytes(t, ports("[]"), Options{})
	if len(r.Apps) != 1 || r.Apps[0].Spec.Container.Ports != nil {
		t.Errorf("ports: [] loads as %#v", r.Apps[0].Spec.Container.Ports)
	}
}

func TestPortsBounded(t *testing.T) {
	list := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf("{name: p%d, port: %d}", i, i+1)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	if r := mustLoadBytes(t, ports(list(MaxPorts)), Options{}); len(r.Diagnostics) != 0 {
		t.Errorf("%d ports: %v", MaxPorts, r.Diagnostics)
	}
	r := mustLoadBytes(t, ports(list(MaxPorts+1)), Options{})
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics),
		[]string{`app.yaml:10:12: spec.container.ports: has 101 ports; an app may declare at most 100`})
}

// Ports change neither hash: a spec that gains, renames or drops ports
// replaces no container and recreates no instance. TestHashesPinned
// covers specs without ports.
func TestPortsNotHashed(t *testing.T) {
	base := mustLoadBytes(t, minimal, Options{})
	withPorts := mustLoadBytes(t, ports("[{name: http, port: 8080}, {name: dns, port: 53, protocol: udp}]"), Options{})
	if len(base.Apps) != 1 || len(withPorts.Apps) != 1 {
		t.Fatalf("does not load: %v %v", base.Diagnostics, withPorts.Diagnostics)
	}
	a, b := base.Apps[0].Spec, withPorts.Apps[0].Spec
	if a.Container.Hash() != b.Container.Hash() {
		t.Errorf("container hash changed with ports: %s -> %s", a.Container.Hash(), b.Container.Hash())
	}
	if a.System.Hash() != b.System.Hash() {
		t.Errorf("system hash changed with ports")
	}
	if len(b.Container.Ports) != 2 {
		t.Errorf("Hash cleared the caller's ports: %+v", b.Container.Ports)
	}
}

func TestDrainDelay(t *testing.T) {
	upd := func(v string) string { return minimal + "  update: {drainDelay: " + v + "}\n" }
	tests := []struct {
		name string
		src  string
		want *Duration
		diag []string
	}{
		{"unset", minimal, nil, nil},
		{"null is unset", upd("~"), nil, nil},
		{"zero", upd("0s"), new(Duration), nil},
		{"bare zero", upd(`"0"`), new(Duration), nil},
		{"six seconds", upd("6s"), durationPtr(6 * time.Second), nil},
		{"at the limit", upd("10m"), durationPtr(10 * time.Minute), nil},
		{"over the limit", upd("10m1s"), nil,
			[]string{`app.yaml:10:24: spec.update.drainDelay: duration "10m1s" is too long: at most 10m`}},
		{"negative", upd("-1s"), nil,
			[]string{`app.yaml:10:24: spec.update.drainDelay: duration must be 0s (no wait) or more, got "-1s"`}},
		{"a number", upd("5"), nil,
			[]string{`app.yaml:10:24: spec.update.drainDelay: expected a duration like "5s", or "0s" for no wait, got integer 5`}},
		{"not a duration", upd("soon"), nil,
			[]string{`app.yaml:10:24: spec.update.drainDelay: "soon" is not a duration; write it like "5s", "2m" or "1h30m"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustLoadBytes(t, tt.src, Options{})
			sameLines(t, "diagnostics", diagStrings(r.Diagnostics), tt.diag)
			if tt.diag != nil {
				return
			}
			if len(r.Apps) != 1 {
				t.Fatalf("does not load")
			}
			got := r.Apps[0].Spec.Update.DrainDelay
			if (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
				t.Errorf("drainDelay = %v, want %v", got, tt.want)
			}
		})
	}
}

func durationPtr(d time.Duration) *Duration {
	v := Duration(d)
	return &v
}

func TestCheckPortName(t *testing.T) {
	for _, s := range []string{"http", "a", "h2c", "1-a", "a-1", "x-y-z", "abcdefghijklmno", "8a", "web-ui"} {
		if msg := checkPortName(s); msg != "" {
			t.Errorf("%q: %s", s, msg)
		}
	}
	for _, s := range []string{"", "1", "8080", "-a", "a-", "a--b", "A", "a_b", "a.b", "abcdefghijklmnop", "1-2", "a b", "é"} {
		if checkPortName(s) == "" {
			t.Errorf("%q accepted", s)
		}
	}
}
