package plan

import (
	"fmt"
	"github.com/berth-gitops/berth/ownership"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/berth-gitops/berth/spec"
)

const testRev = "1111111111111111111111111111111111111111"

// testApp is a defaulted app as spec.Load would return it.
func testApp(name string, replicas int) spec.App {
	return spec.App{
		APIVersion: spec.APIVersion,
		Kind:       spec.KindApp,
		Metadata:   spec.Metadata{Name: name},
		Spec: spec.AppSpec{
			Replicas: replicas,
			System: spec.System{
				Image:    "debian-docker",
				Profiles: []string{"default"},
				Limits:   spec.Limits{CPU: "1", Memory: "512MiB"},
				Config:   map[string]string{"security.nesting": "true"},
			},
			Container: spec.Container{
				Image: "registry.example/" + name + ":1",
				Env:   map[string]string{"PORT": "8080"},
			},
			Update: spec.Update{MaxUnavailable: spec.Count(1), HealthTimeout: spec.Duration(2 * time.Minute)},
		},
	}
}

// converged is the instance berth would have made for app in slot, as the
// observer reports it: running, with LXD's own volatile keys, and a
// healthy app container.
func converged(app spec.App, slot int) Instance {
	cfg := ManagedConfig(app, DefaultOwner, "0000000000000000000000000000000000000000", slot)
	cfg["volatile.base_image"] = "abc123"
	cfg["volatile.uuid"] = fmt.Sprintf("uuid-%s-%d", app.Metadata.Name, slot)
	cfg["image.os"] = "Debian"
	inst := Instance{
		Name:      ownership.InstanceName(app.Metadata.Name, slot),
		Status:    StatusRunning,
		Config:    cfg,
		Profiles:  append([]string(nil), app.Spec.System.Profiles...),
		BaseImage: "abc123",
		Container: &Container{
			Name:  "app",
			ID:    fmt.Sprintf("%064d", slot),
			Image: app.Spec.Container.Image,
			State: "running",
			Labels: map[string]string{
				ownership.LabelApp:           app.Metadata.Name,
				ownership.LabelSlot:          strconv.Itoa(slot),
				ownership.LabelContainerHash: app.Spec.Container.Hash(),
				ownership.LabelRevision:      "0000000000000000000000000000000000000000",
			},
		},
	}
	if len(app.Spec.System.Devices) > 0 {
		inst.Devices = map[string]map[string]string{}
		for n, d := range app.Spec.System.Devices {
			inst.Devices[n] = maps.Clone(d)
		}
	}
	return inst
}

// fleet is every replica of apps, converged.
func fleet(apps ...spec.App) []Instance {
	var out []Instance
	for _, a := range apps {
		for slot := range a.Spec.Replicas {
			out = append(out, converged(a, slot))
		}
	}
	return out
}

// stepLine is a compact, comparable form of a step.
func stepLine(s Step) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s %s", s.Batch, s.Instance, s.Action)
	if len(s.Reasons) > 0 {
		rs := make([]string, len(s.Reasons))
		for i, r := range s.Reasons {
			rs[i] = fmt.Sprintf("%s: %s → %s", r.Field, r.Old, r.New)
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(rs, "; "))
	}
	return b.String()
}

func stepLines(p Plan) []string {
	out := make([]string, len(p.Steps))
	for i, s := range p.Steps {
		out[i] = stepLine(s)
	}
	return out
}

// with returns a copy of app changed by f (maps and slices deep-copied
// first, so f cannot reach the original).
func with(app spec.App, f func(*spec.App)) spec.App {
	app.Spec.System.Profiles = append([]string(nil), app.Spec.System.Profiles...)
	app.Spec.System.Config = maps.Clone(app.Spec.System.Config)
	if app.Spec.System.Devices != nil {
		d := map[string]map[string]string{}
		for n, v := range app.Spec.System.Devices {
			d[n] = maps.Clone(v)
		}
		app.Spec.System.Devices = d
	}
	app.Spec.Container.Env = maps.Clone(app.Spec.Container.Env)
	f(&app)
	return app
}
