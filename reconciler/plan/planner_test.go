package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"github.com/berth-gitops/berth/ownership"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/spec"
)

type planCase struct {
	name     string
	apps     []spec.App
	held     []string
	blocked  string // Desired.PruneBlocked
	observed []Instance
	policy   Policy
	want     []string // stepLine of every step, in order
	check    func(t *testing.T, p Plan)
}

func (c planCase) desired() Desired {
	return Desired{Revision: testRev, Apps: c.apps, HeldApps: c.held, PruneBlocked: c.blocked}
}

func runCases(t *testing.T, cases []planCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := MakePlan(c.desired(), Observed{Instances: c.observed}, c.policy)
			if got := stepLines(p); !slices.Equal(got, c.want) {
				t.Errorf("steps:\n got: %s\nwant: %s\n\n%s", strings.Join(got, "\n      "), strings.Join(c.want, "\n      "), p.Text())
			}
			if c.check != nil {
				c.check(t, p)
			}
		})
	}
}

var (
	web = testApp("web", 3)
	api = testApp("api", 1)
)

func setStatus(insts []Instance, name, status string) []Instance {
	for i := range insts {
		if insts[i].Name == name {
			insts[i].Status = status
		}
	}
	return insts
}

func edit(insts []Instance, name string, f func(*Instance)) []Instance {
	for i := range insts {
		if insts[i].Name == name {
			f(&insts[i])
		}
	}
	return insts
}

func TestPlanReplicas(t *testing.T) {
	runCases(t, []planCase{
		{
			name:     "converged",
			apps:     []spec.App{web, api},
			observed: fleet(web, api),
			want:     []string{},
			check: func(t *testing.T, p Plan) {
				if !p.Empty() || p.Summary() != "No changes." {
					t.Errorf("want empty plan, got %s", p.Summary())
				}
			},
		},
		{
			name:     "new app",
			apps:     []spec.App{web},
			observed: nil,
			want: []string{
				"1 web-0 create (replicas: 0 → 3)",
				"1 web-1 create (replicas: 0 → 3)",
				"1 web-2 create (replicas: 0 → 3)",
			},
			check: func(t *testing.T, p Plan) {
				s := p.Steps[0]
				if s.SystemHash != web.Spec.System.Hash() || s.ContainerHash != web.Spec.Container.Hash() {
					t.Errorf("create hashes = %s/%s", s.SystemHash, s.ContainerHash)
				}
			},
		},
		{
			name:     "scale up",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 5 })},
			observed: fleet(web),
			want: []string{
				"1 web-3 create (replicas: 3 → 5)",
				"1 web-4 create (replicas: 3 → 5)",
			},
		},
		{
			name:     "missing replica in the middle",
			apps:     []spec.App{web},
			observed: slices.Delete(fleet(web), 1, 2),
			want:     []string{"1 web-1 create (replicas: 2 → 3)"},
		},
		{
			name:     "scale down deletes highest slots first",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 2 })},
			observed: fleet(with(web, func(a *spec.App) { a.Spec.Replicas = 5 })),
			policy:   Policy{AllowMassPrune: true}, // 3 of 5 is over the share
			want: []string{
				"1 web-4 delete (replicas: 5 → 2)",
				"1 web-3 delete (replicas: 5 → 2)",
				"1 web-2 delete (replicas: 5 → 2)",
			},
			check: func(t *testing.T, p Plan) {
				if p.Steps[0].SystemHash != "" || p.Steps[0].ContainerHash != "" {
					t.Errorf("delete carries hashes: %+v", p.Steps[0])
				}
			},
		},
		{
			name: "scale down comes after the other steps",
			apps: []spec.App{with(web, func(a *spec.App) {
				a.Spec.Replicas = 2
				a.Spec.Container.Image = "registry.example/web:2"
			})},
			observed: fleet(web),
			want: []string{
				"1 web-0 replace-container (container.image: registry.example/web:1 → registry.example/web:2)",
				"2 web-1 replace-container (container.image: registry.example/web:1 → registry.example/web:2)",
				"3 web-2 delete (replicas: 3 → 2)",
			},
		},
		{
			// Every app at replicas: 0 deletes the fleet as surely as
			// removing the apps: the same guard holds (issue 18).
			name:     "scale to zero of the whole fleet is guarded",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 0 }), with(api, func(a *spec.App) { a.Spec.Replicas = 0 })},
			observed: fleet(web, api),
			want:     []string{},
			check: func(t *testing.T, p Plan) {
				want := "pruning and scaling down would delete 4 of 4 owned instances (4 by scaling down), more than the 50% allowed (allow mass prune to do it)"
				if p.PruneBlocked != want || p.Converged() || p.Summary() != "Nothing to do now: pruning skipped." {
					t.Errorf("PruneBlocked = %q, summary %q", p.PruneBlocked, p.Summary())
				}
			},
		},
		{
			name:     "scale to zero with mass prune allowed",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 0 })},
			observed: fleet(web),
			policy:   Policy{AllowMassPrune: true},
			want: []string{
				"1 web-2 delete (replicas: 3 → 0)",
				"1 web-1 delete (replicas: 3 → 0)",
				"1 web-0 delete (replicas: 3 → 0)",
			},
			check: func(t *testing.T, p Plan) {
				if p.PruneBlocked != "" {
					t.Errorf("PruneBlocked %q", p.PruneBlocked)
				}
			},
		},
		{
			name:     "a guarded scale-down keeps the other steps",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 0 }), with(api, func(a *spec.App) { a.Spec.Container.Image = "registry.example/api:2" })},
			observed: fleet(web, api),
			want:     []string{"1 api-0 replace-container (container.image: registry.example/api:1 → registry.example/api:2)"},
			check: func(t *testing.T, p Plan) {
				if !strings.Contains(p.PruneBlocked, "3 of 4 owned instances (3 by scaling down)") {
					t.Errorf("PruneBlocked %q", p.PruneBlocked)
				}
			},
		},
		{
			name:     "scaling one app down among many is within the share",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 0 }), api, testApp("db", 2)},
			observed: fleet(web, api, testApp("db", 2)),
			want: []string{
				"1 web-2 delete (replicas: 3 → 0)",
				"1 web-1 delete (replicas: 3 → 0)",
				"1 web-0 delete (replicas: 3 → 0)",
			},
			check: func(t *testing.T, p Plan) {
				if p.PruneBlocked != "" {
					t.Errorf("PruneBlocked %q", p.PruneBlocked)
				}
			},
		},
		{
			name:     "a scale-down and a prune count together",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 1 })},
			observed: fleet(web, api),
			want:     []string{},
			check: func(t *testing.T, p Plan) {
				if !strings.Contains(p.PruneBlocked, "3 of 4 owned instances (2 by scaling down)") {
					t.Errorf("PruneBlocked %q", p.PruneBlocked)
				}
			},
		},
		{
			name:     "scale up and roll out: creates first, then one replacement at a time",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 4; a.Spec.Container.Env["PORT"] = "9090" })},
			observed: fleet(with(web, func(a *spec.App) { a.Spec.Replicas = 2 })),
			want: []string{
				"1 web-2 create (replicas: 2 → 4)",
				"1 web-3 create (replicas: 2 → 4)",
				"2 web-0 replace-container (container-hash: " + web.Spec.Container.Hash() + " → " + with(web, func(a *spec.App) { a.Spec.Container.Env["PORT"] = "9090" }).Spec.Container.Hash() + ")",
				"3 web-1 replace-container (container-hash: " + web.Spec.Container.Hash() + " → " + with(web, func(a *spec.App) { a.Spec.Container.Env["PORT"] = "9090" }).Spec.Container.Hash() + ")",
			},
		},
	})
}

func TestPlanSystem(t *testing.T) {
	newImage := with(web, func(a *spec.App) { a.Spec.System.Image = "debian-docker-13" })
	bigger := with(web, func(a *spec.App) { a.Spec.System.Limits.Memory = "1GiB" })
	noNesting := with(web, func(a *spec.App) { delete(a.Spec.System.Config, "security.nesting") })
	withDisk := with(web, func(a *spec.App) {
		a.Spec.System.Devices = map[string]map[string]string{"data": {"type": "disk", "source": "/srv/web", "path": "/data"}}
	})
	runCases(t, []planCase{
		{
			name:     "image change recreates one at a time",
			apps:     []spec.App{newImage},
			observed: fleet(web),
			want: []string{
				"1 web-0 recreate (system.image: debian-docker → debian-docker-13)",
				"2 web-1 recreate (system.image: debian-docker → debian-docker-13)",
				"3 web-2 recreate (system.image: debian-docker → debian-docker-13)",
			},
			check: func(t *testing.T, p Plan) {
				if h := p.Steps[0].SystemHash; h != newImage.Spec.System.Hash() {
					t.Errorf("SystemHash = %s", h)
				}
			},
		},
		{
			name:     "image change with maxUnavailable 2",
			apps:     []spec.App{with(newImage, func(a *spec.App) { a.Spec.Update.MaxUnavailable = spec.Count(2) })},
			observed: fleet(web),
			want: []string{
				"1 web-0 recreate (system.image: debian-docker → debian-docker-13)",
				"1 web-1 recreate (system.image: debian-docker → debian-docker-13)",
				"2 web-2 recreate (system.image: debian-docker → debian-docker-13)",
			},
		},
		{
			name:     "image change on a stopped replica fixes it first",
			apps:     []spec.App{newImage},
			observed: setStatus(fleet(web), "web-1", "Stopped"),
			want: []string{
				"1 web-1 recreate (system.image: debian-docker → debian-docker-13)",
				"2 web-0 recreate (system.image: debian-docker → debian-docker-13)",
				"3 web-2 recreate (system.image: debian-docker → debian-docker-13)",
			},
		},
		{
			name:     "limits change is patched in place, all at once",
			apps:     []spec.App{bigger},
			observed: fleet(web),
			want: []string{
				"1 web-0 update-in-place (system.limits.memory: 512MiB → 1GiB)",
				"1 web-1 update-in-place (system.limits.memory: 512MiB → 1GiB)",
				"1 web-2 update-in-place (system.limits.memory: 512MiB → 1GiB)",
			},
		},
		{
			name:     "config key dropped from the spec is deleted in place",
			apps:     []spec.App{with(noNesting, func(a *spec.App) { a.Spec.Replicas = 1 })},
			observed: fleet(with(web, func(a *spec.App) { a.Spec.Replicas = 1 })),
			want:     []string{"1 web-0 update-in-place (system.config.security.nesting: true → )"},
			check: func(t *testing.T, p Plan) {
				obs := converged(web, 0)
				if got := RemovedConfigKeys(obs.Config, noNesting); !slices.Equal(got, []string{"security.nesting"}) {
					t.Errorf("RemovedConfigKeys = %v", got)
				}
				if got := ManagedConfig(noNesting, "berth", testRev, 0)[ownership.KeyConfigKeys]; got != "limits.cpu,limits.memory" {
					t.Errorf("config-keys = %q", got)
				}
			},
		},
		{
			name: "drift of a managed key by hand is restored in place",
			apps: []spec.App{web},
			observed: edit(fleet(web), "web-1", func(i *Instance) {
				i.Config["limits.cpu"] = "4"
				delete(i.Config, "security.nesting")
				i.Config["boot.autostart"] = "true" // not berth's: never reported
			}),
			want: []string{"1 web-1 update-in-place (system.config.security.nesting:  → true; system.limits.cpu: 4 → 1)"},
		},
		{
			name:     "drift of cloud-init with the same system hash is restored, not recreated",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.System.CloudInit = "#cloud-config\nruncmd: [true]\n" })},
			observed: edit(fleet(with(web, func(a *spec.App) { a.Spec.System.CloudInit = "#cloud-config\nruncmd: [true]\n" })), "web-0", func(i *Instance) { delete(i.Config, "cloud-init.user-data") }),
			want:     []string{"1 web-0 update-in-place (system.cloudInit:  → #cloud-config\nruncmd: [true]\n)"},
		},
		{
			name:     "cloud-init change recreates",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.System.CloudInit = "#cloud-config\n"; a.Spec.Replicas = 1 })},
			observed: fleet(with(web, func(a *spec.App) { a.Spec.Replicas = 1 })),
			want:     []string{"1 web-0 recreate (system.cloudInit:  → #cloud-config\n)"},
		},
		{
			name:     "hand-edited image label is restored in place",
			apps:     []spec.App{web},
			observed: edit(fleet(web), "web-2", func(i *Instance) { i.Config[ownership.KeyImage] = "something" }),
			want:     []string{"1 web-2 update-in-place (user.berth.image: something → debian-docker)"},
		},
		{
			name:     "profile change recreates",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.System.Profiles = []string{"default", "docker"}; a.Spec.Replicas = 2 })},
			observed: fleet(with(web, func(a *spec.App) { a.Spec.Replicas = 2 })),
			want: []string{
				"1 web-0 recreate (system.profiles: default → default,docker)",
				"2 web-1 recreate (system.profiles: default → default,docker)",
			},
		},
		{
			name:     "device change recreates",
			apps:     []spec.App{with(withDisk, func(a *spec.App) { a.Spec.System.Devices["data"]["readonly"] = "true"; a.Spec.Replicas = 1 })},
			observed: fleet(with(withDisk, func(a *spec.App) { a.Spec.Replicas = 1 })),
			want:     []string{"1 web-0 recreate (system.devices.data: path=/data,source=/srv/web,type=disk → path=/data,readonly=true,source=/srv/web,type=disk)"},
		},
		{
			name:     "device added recreates",
			apps:     []spec.App{with(withDisk, func(a *spec.App) { a.Spec.Replicas = 1 })},
			observed: fleet(with(web, func(a *spec.App) { a.Spec.Replicas = 1 })),
			want:     []string{"1 web-0 recreate (system.devices.data:  → path=/data,source=/srv/web,type=disk)"},
		},
		{
			name: "recreate lists the in-place differences too",
			apps: []spec.App{with(newImage, func(a *spec.App) { a.Spec.Replicas = 1; a.Spec.System.Limits.CPU = "2" })},
			observed: fleet(with(web, func(a *spec.App) {
				a.Spec.Replicas = 1
			})),
			want: []string{"1 web-0 recreate (system.image: debian-docker → debian-docker-13; system.limits.cpu: 1 → 2)"},
		},
		{
			name:     "only the hash label differs",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 1 })},
			observed: edit(fleet(with(web, func(a *spec.App) { a.Spec.Replicas = 1 })), "web-0", func(i *Instance) { i.Config[ownership.KeySystemHash] = "0123456789abcdef" }),
			want:     []string{"1 web-0 update-in-place (user.berth.system-hash: 0123456789abcdef → " + web.Spec.System.Hash() + ")"},
		},
		{
			name: "volatile keys and revision changes are not drift",
			apps: []spec.App{web},
			observed: edit(fleet(web), "web-0", func(i *Instance) {
				i.Config["volatile.last_state.power"] = "RUNNING"
				i.Config["volatile.uuid"] = "other"
				i.Config[ownership.KeyRevision] = "2222222222222222222222222222222222222222"
			}),
			want: []string{},
		},
	})
}

func TestPlanRuntime(t *testing.T) {
	newCtr := with(web, func(a *spec.App) { a.Spec.Container.Image = "registry.example/web:2" })
	const replace = "replace-container (container.image: registry.example/web:1 → registry.example/web:2)"
	runCases(t, []planCase{
		{
			name:     "container image change, maxUnavailable 1",
			apps:     []spec.App{newCtr},
			observed: fleet(web),
			want:     []string{"1 web-0 " + replace, "2 web-1 " + replace, "3 web-2 " + replace},
			check: func(t *testing.T, p Plan) {
				if got := p.Summary(); got != "Plan: 3 container replacements." {
					t.Errorf("Summary = %q", got)
				}
			},
		},
		{
			name:     "container image change, maxUnavailable 2",
			apps:     []spec.App{with(newCtr, func(a *spec.App) { a.Spec.Update.MaxUnavailable = spec.Count(2) })},
			observed: fleet(web),
			want:     []string{"1 web-0 " + replace, "1 web-1 " + replace, "2 web-2 " + replace},
		},
		{
			name:     "maxUnavailable 0 still makes progress",
			apps:     []spec.App{with(newCtr, func(a *spec.App) { a.Spec.Update.MaxUnavailable = spec.Count(0); a.Spec.Replicas = 2 })},
			observed: fleet(with(web, func(a *spec.App) { a.Spec.Replicas = 2 })),
			want:     []string{"1 web-0 " + replace, "2 web-1 " + replace},
		},
		{
			name:     "container replacement on a replica already down goes first",
			apps:     []spec.App{newCtr},
			observed: edit(fleet(web), "web-2", func(i *Instance) { i.Container.State = "exited" }),
			want:     []string{"1 web-2 " + replace, "2 web-0 " + replace, "3 web-1 " + replace},
		},
		{
			name:     "stopped instance is started",
			apps:     []spec.App{web},
			observed: setStatus(fleet(web), "web-1", "Stopped"),
			want:     []string{"1 web-1 start (status: Stopped → Running)"},
			check: func(t *testing.T, p Plan) {
				if p.Steps[0].ContainerHash != web.Spec.Container.Hash() {
					t.Error("start must carry the container hash to ensure")
				}
			},
		},
		{
			name: "stopped instance with a limits change: update, then start",
			apps: []spec.App{with(web, func(a *spec.App) { a.Spec.System.Limits.CPU = "2"; a.Spec.Replicas = 1 })},
			observed: edit(fleet(with(web, func(a *spec.App) { a.Spec.Replicas = 1 })), "web-0", func(i *Instance) {
				i.Status = "Stopped"
				i.Container = nil
			}),
			want: []string{
				"1 web-0 update-in-place (system.limits.cpu: 1 → 2)",
				"1 web-0 start (status: Stopped → Running)",
			},
		},
		{
			name:     "missing container is created",
			apps:     []spec.App{web},
			observed: edit(fleet(web), "web-0", func(i *Instance) { i.Container = nil }),
			want:     []string{"1 web-0 create-container (container: absent → present)"},
		},
		{
			name:     "stopped container is started",
			apps:     []spec.App{web},
			observed: edit(fleet(web), "web-2", func(i *Instance) { i.Container.State = "exited" }),
			want:     []string{"1 web-2 start-container (container.state: exited → running)"},
		},
		{
			name:     "dead container is replaced",
			apps:     []spec.App{web},
			observed: edit(fleet(web), "web-2", func(i *Instance) { i.Container.State = "dead" }),
			want:     []string{"1 web-2 replace-container (container.state: dead → running)"},
		},
		{
			name:     "unhealthy or restarting container is not the planner's to fix",
			apps:     []spec.App{web},
			observed: edit(edit(fleet(web), "web-0", func(i *Instance) { i.Container.Health = "unhealthy" }), "web-1", func(i *Instance) { i.Container.State = "restarting"; i.Container.RestartCount = 7 }),
			want:     []string{},
		},
		{
			// A fleet that cannot be checked is not "no changes": the
			// repair is a planned, visible, disruptive step.
			name: "docker unreachable: a restart step within the budget",
			apps: []spec.App{newCtr},
			observed: edit(fleet(web), "web-1", func(i *Instance) {
				i.Container = nil
				i.DockerError = "dial-stdio: exit status 1"
			}),
			want: []string{"1 web-0 " + replace, "2 web-1 restart (docker: not answering: dial-stdio: exit status 1 → answering)", "3 web-2 " + replace},
			check: func(t *testing.T, p Plan) {
				if len(p.Warnings) != 0 {
					t.Errorf("Warnings = %q", p.Warnings)
				}
			},
		},
		{
			// LXD failing to run the tunnel says nothing about Docker:
			// no restart, nothing for the container, and the plan says
			// it waits for another look (issue 18: a hiccup restarted
			// the fleet).
			name: "docker state unknown: no restart, the plan waits",
			apps: []spec.App{newCtr},
			observed: edit(fleet(web), "web-1", func(i *Instance) {
				i.Container = nil
				i.DockerUnknown = "lxd: exec in web-1: connecting websockets: i/o timeout"
			}),
			want: []string{"1 web-0 " + replace, "2 web-2 " + replace},
			check: func(t *testing.T, p Plan) {
				if len(p.Unobserved) != 1 || p.Unobserved[0].Instance != "web-1" || !strings.Contains(p.Unobserved[0].Why, "docker state unknown") {
					t.Errorf("Unobserved = %+v", p.Unobserved)
				}
				if b := p.Blockers(); p.Converged() || len(b) != 1 || b[0].Short != "1 unobserved" {
					t.Errorf("converged %v, blockers %+v; want 1 unobserved", p.Converged(), b)
				}
			},
		},
		{
			name:     "every replica's docker unknown: no step at all",
			apps:     []spec.App{web},
			observed: unknownDocker(fleet(web)),
			want:     []string{},
			check: func(t *testing.T, p Plan) {
				if len(p.Unobserved) != 3 || p.Summary() != "Nothing to do now: 3 unobserved." {
					t.Errorf("Unobserved = %+v, summary %q", p.Unobserved, p.Summary())
				}
			},
		},
		{
			name:     "docker unreachable with nothing else to do is still a step",
			apps:     []spec.App{web},
			observed: edit(fleet(web), "web-2", func(i *Instance) { i.Container = nil; i.DockerError = "exit status 1" }),
			want:     []string{"1 web-2 restart (docker: not answering: exit status 1 → answering)"},
		},
		{
			// A "-next" container left by a killed rollout is drift.
			name:     "a leftover container is removed",
			apps:     []spec.App{web},
			observed: edit(fleet(web), "web-1", func(i *Instance) { i.StaleContainers = []string{"web-next"} }),
			want:     []string{"1 web-1 remove-leftovers (container.leftovers: web-next → )"},
		},
		{
			name:     "a leftover goes with the container step there is",
			apps:     []spec.App{newCtr},
			observed: edit(fleet(web), "web-0", func(i *Instance) { i.StaleContainers = []string{"web-next"} }),
			want: []string{"1 web-0 replace-container (container.image: registry.example/web:1 → registry.example/web:2; container.leftovers: web-next → )",
				"2 web-1 " + replace, "3 web-2 " + replace},
		},
		{
			// After a rollout interrupted (kill -9) just after web-0's new
			// container started, web-0 is "starting" with the new hash. It
			// is not available: the next replica waits for it.
			name: "a replica still starting uses up the budget",
			apps: []spec.App{newCtr},
			observed: edit(edit(fleet(web), "web-0", func(i *Instance) {
				i.Container.Labels[ownership.LabelContainerHash] = newCtr.Spec.Container.Hash()
				i.Container.Image = newCtr.Spec.Container.Image
			}), "web-0", func(i *Instance) { i.Container.Health = "starting" }),
			want: []string{},
			check: func(t *testing.T, p Plan) {
				if len(p.Waiting) != 2 || p.Waiting[0].Instance != "web-1" || !strings.Contains(p.Waiting[0].Why, "web-0 unavailable") {
					t.Errorf("want web-1 and web-2 waiting for web-0:\n%s", p.Text())
				}
				if p.Converged() || !strings.Contains(p.Summary(), "2 waiting") {
					t.Errorf("a plan with waiting steps is not converged: %s", p.Summary())
				}
			},
		},
		{
			name:     "foreign containers are reported, never touched",
			apps:     []spec.App{web},
			observed: edit(fleet(web), "web-0", func(i *Instance) { i.ForeignContainers = []string{"zeta", "alpha"} }),
			want:     []string{},
			check: func(t *testing.T, p Plan) {
				want := []string{"instance web-0: containers without berth labels left alone: alpha, zeta"}
				if !slices.Equal(p.Warnings, want) {
					t.Errorf("Warnings = %q", p.Warnings)
				}
			},
		},
	})
}

func TestPlanOwnership(t *testing.T) {
	foreign := func(name, owner string) Instance {
		i := Instance{Name: name, Status: StatusRunning, Config: map[string]string{"limits.cpu": "8"}, Profiles: []string{"default"}}
		if owner != "" {
			i.Config[ownership.KeyOwner] = owner
			i.Config[ownership.KeyApp] = "web"
			i.Config[ownership.KeySlot] = strings.TrimPrefix(name, "web-")
		}
		return i
	}
	runCases(t, []planCase{
		{
			name: "unowned and other-owner instances with clashing names",
			apps: []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 4 })},
			observed: append(fleet(with(web, func(a *spec.App) { a.Spec.Replicas = 2 })),
				foreign("web-2", ""), foreign("web-3", "team-b"), foreign("web-7", "team-b")),
			want: []string{},
			check: func(t *testing.T, p Plan) {
				want := []Conflict{
					{Instance: "web-2", App: "web", Owner: "", Message: "instance exists and is not managed by berth"},
					{Instance: "web-3", App: "web", Owner: "team-b", Message: "instance is owned by team-b"},
				}
				if !reflect.DeepEqual(p.Conflicts, want) {
					t.Errorf("Conflicts = %+v", p.Conflicts)
				}
			},
		},
		{
			name:     "another owner's policy sees berth's instances as foreign",
			apps:     []spec.App{api},
			observed: fleet(web),
			policy:   Policy{Owner: "team-b"},
			want:     []string{"1 api-0 create (replicas: 0 → 1)"},
		},
		{
			name: "garbled owned instances are reported and left alone",
			apps: []spec.App{web},
			observed: append(fleet(web),
				Instance{Name: "web-9", Status: StatusRunning, Config: map[string]string{ownership.KeyOwner: "berth", ownership.KeyApp: "web"}},
				Instance{Name: "old-x", Status: StatusRunning, Config: map[string]string{ownership.KeyOwner: "berth", ownership.KeyApp: "old", ownership.KeySlot: "x"}},
				Instance{Name: "mislabelled", Status: StatusRunning, Config: map[string]string{ownership.KeyOwner: "berth", ownership.KeyApp: "old", ownership.KeySlot: "1"}},
			),
			want: []string{},
			check: func(t *testing.T, p Plan) {
				if len(p.Warnings) != 3 {
					t.Errorf("Warnings = %q", p.Warnings)
				}
				// Left alone, but not "No changes.": they need a person.
				want := []Conflict{
					{Instance: "mislabelled", App: "old", Owner: "berth", Message: `instance is owned by berth but its keys say app "old" slot "1"`},
					{Instance: "old-x", App: "old", Owner: "berth", Message: `instance is owned by berth but its keys say app "old" slot "x"`},
					{Instance: "web-9", App: "web", Owner: "berth", Message: `instance is owned by berth but its keys say app "web" slot ""`},
				}
				if !reflect.DeepEqual(p.Conflicts, want) || p.Converged() {
					t.Errorf("Conflicts = %+v", p.Conflicts)
				}
			},
		},
		{
			// After a scale-down the garbled replica's slot is out of the
			// app's range: still a conflict, once (issue 18).
			name: "a garbled replica stays a conflict after a scale-down",
			apps: []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 1 })},
			observed: edit(edit(fleet(with(web, func(a *spec.App) { a.Spec.Replicas = 2 })), "web-1", func(i *Instance) { i.Config[ownership.KeySlot] = "5" }),
				"web-0", func(i *Instance) { i.Config[ownership.KeyApp] = "api" }),
			want: []string{},
			check: func(t *testing.T, p Plan) {
				var names []string
				for _, c := range p.Conflicts {
					names = append(names, c.Instance+" "+c.App)
				}
				if !slices.Equal(names, []string{"web-0 web", "web-1 web"}) || p.Converged() || p.Summary() != "Nothing to do now: 2 blocked by a conflict." {
					t.Errorf("Conflicts = %+v, summary %q", p.Conflicts, p.Summary())
				}
			},
		},
		{
			name:     "owned instance labelled for another slot holds the name",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 2 })},
			observed: edit(fleet(with(web, func(a *spec.App) { a.Spec.Replicas = 2 })), "web-1", func(i *Instance) { i.Config[ownership.KeySlot] = "5" }),
			want:     []string{},
			check: func(t *testing.T, p Plan) {
				if len(p.Conflicts) != 1 || p.Conflicts[0].Instance != "web-1" || p.Conflicts[0].Owner != "berth" {
					t.Errorf("Conflicts = %+v", p.Conflicts)
				}
			},
		},
		{
			name:     "held app: no steps, not pruned",
			apps:     []spec.App{api},
			held:     []string{"web"},
			observed: append(setStatus(fleet(web), "web-0", "Stopped"), fleet(api)...),
			want:     []string{},
			check: func(t *testing.T, p Plan) {
				if !slices.Equal(p.Held, []string{"web"}) || p.PruneBlocked != "" {
					t.Errorf("Held = %v, PruneBlocked = %q", p.Held, p.PruneBlocked)
				}
			},
		},
		{
			name:     "held app listed among the apps too is still held",
			apps:     []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 5 })},
			held:     []string{"web"},
			observed: fleet(web),
			want:     []string{},
		},
	})
}

func TestPlanPrune(t *testing.T) {
	db := testApp("db", 1)
	cache := testApp("cache", 2)
	runCases(t, []planCase{
		{
			name:     "app removed from Git is pruned",
			apps:     []spec.App{web, api},
			observed: fleet(web, api, cache),
			want: []string{
				"1 cache-1 delete (app: present → absent)",
				"1 cache-0 delete (app: present → absent)",
			},
		},
		{
			name:     "prune sorts with the other apps",
			apps:     []spec.App{with(api, func(a *spec.App) { a.Spec.Replicas = 2 }), web},
			observed: fleet(web, api, db),
			want: []string{
				"1 api-1 create (replicas: 1 → 2)",
				"1 db-0 delete (app: present → absent)",
			},
		},
		{
			name:     "zero-app revision prunes nothing",
			apps:     nil,
			observed: fleet(web, api),
			want:     []string{},
			check: func(t *testing.T, p Plan) {
				if !strings.Contains(p.PruneBlocked, "no apps") {
					t.Errorf("PruneBlocked = %q", p.PruneBlocked)
				}
			},
		},
		{
			name:     "zero-app revision with mass prune allowed",
			apps:     nil,
			observed: fleet(web, api),
			policy:   Policy{AllowMassPrune: true},
			want: []string{
				"1 api-0 delete (app: present → absent)",
				"1 web-2 delete (app: present → absent)",
				"1 web-1 delete (app: present → absent)",
				"1 web-0 delete (app: present → absent)",
			},
		},
		{
			name:     "zero apps but one held: not a mass prune",
			held:     []string{"api"},
			observed: fleet(web, api),
			want:     []string{},
			check: func(t *testing.T, p Plan) {
				// 3 of 4 owned is over the default half.
				if !strings.Contains(p.PruneBlocked, "3 of 4") {
					t.Errorf("PruneBlocked = %q", p.PruneBlocked)
				}
			},
		},
		{
			name:     "over the prune fraction",
			apps:     []spec.App{api},
			observed: fleet(web, api),
			want:     []string{},
			check: func(t *testing.T, p Plan) {
				want := "pruning would delete 3 of 4 owned instances, more than the 50% allowed (allow mass prune to do it)"
				if p.PruneBlocked != want {
					t.Errorf("PruneBlocked = %q", p.PruneBlocked)
				}
			},
		},
		{
			name:     "over the prune fraction with mass prune allowed",
			apps:     []spec.App{api},
			observed: fleet(web, api),
			policy:   Policy{AllowMassPrune: true},
			want: []string{
				"1 web-2 delete (app: present → absent)",
				"1 web-1 delete (app: present → absent)",
				"1 web-0 delete (app: present → absent)",
			},
		},
		{
			name:     "a larger prune fraction",
			apps:     []spec.App{api},
			observed: fleet(web, api),
			policy:   Policy{MaxPruneFraction: 0.75},
			want: []string{
				"1 web-2 delete (app: present → absent)",
				"1 web-1 delete (app: present → absent)",
				"1 web-0 delete (app: present → absent)",
			},
		},
		{
			name:     "exactly half may be pruned",
			apps:     []spec.App{with(api, func(a *spec.App) { a.Spec.Replicas = 3 })},
			observed: fleet(web, with(api, func(a *spec.App) { a.Spec.Replicas = 3 })),
			want: []string{
				"1 web-2 delete (app: present → absent)",
				"1 web-1 delete (app: present → absent)",
				"1 web-0 delete (app: present → absent)",
			},
		},
		{
			name:     "desired.PruneBlocked wins over everything, scale-down still runs",
			apps:     []spec.App{with(api, func(a *spec.App) { a.Spec.Replicas = 0 })},
			blocked:  "apps/web.yaml did not parse",
			observed: fleet(web, api),
			policy:   Policy{AllowMassPrune: true},
			want:     []string{"1 api-0 delete (replicas: 1 → 0)"},
			check: func(t *testing.T, p Plan) {
				if p.PruneBlocked != "apps/web.yaml did not parse" {
					t.Errorf("PruneBlocked = %q", p.PruneBlocked)
				}
			},
		},
		{
			name:     "other owners' instances are never pruned",
			apps:     []spec.App{api},
			observed: append(fleet(api), edit(fleet(web), "web-0", func(i *Instance) { i.Config[ownership.KeyOwner] = "team-b" })[:1]...),
			want:     []string{},
		},
	})
}

// purityInputs builds the same inputs afresh on every call.
func purityInputs() (Desired, Observed) {
	newCtr := with(web, func(a *spec.App) { a.Spec.Container.Image = "registry.example/web:2"; a.Spec.Replicas = 4 })
	apps := []spec.App{newCtr, with(api, func(a *spec.App) { a.Spec.System.Limits.Memory = "2GiB" })}
	insts := fleet(web, api, testApp("gone", 1))
	insts = setStatus(insts, "web-1", "Stopped")
	insts = edit(insts, "web-2", func(i *Instance) {
		i.ForeignContainers = []string{"b", "a"}
		i.Devices = map[string]map[string]string{"x": {"type": "none"}}
	})
	insts = append(insts, Instance{Name: "web-3", Config: map[string]string{"user.other": "1"}})
	return Desired{Revision: testRev, Apps: apps, HeldApps: []string{"zz", "held"}}, Observed{Instances: insts}
}

func TestPlanPurity(t *testing.T) {
	d, o := purityInputs()
	p1 := MakePlan(d, o, Policy{})
	d0, o0 := purityInputs()
	if !reflect.DeepEqual(d, d0) || !reflect.DeepEqual(o, o0) {
		t.Fatal("MakePlan modified its inputs")
	}
	j1, err := json.Marshal(p1)
	if err != nil {
		t.Fatal(err)
	}
	j2, _ := json.Marshal(MakePlan(d, o, Policy{}))
	if string(j1) != string(j2) {
		t.Fatalf("two calls differ:\n%s\n%s", j1, j2)
	}
	// Input order must not leak into the plan.
	slices.Reverse(o.Instances)
	slices.Reverse(d.Apps)
	slices.Reverse(d.HeldApps)
	j3, _ := json.Marshal(MakePlan(d, o, Policy{}))
	if string(j1) != string(j3) {
		t.Fatalf("input order changed the plan:\n%s\n%s", j1, j3)
	}
	if p1.Text() != MakePlan(d, o, Policy{}).Text() {
		t.Fatal("Text differs between calls")
	}
}

func TestFingerprint(t *testing.T) {
	base := func() Observed { return Observed{Instances: fleet(web, api)} }
	fp := func(o Observed) string {
		return MakePlan(Desired{Apps: []spec.App{web, api}}, o, Policy{}).ObservedFingerprint
	}
	want := fp(base())
	if !strings.HasPrefix(want, "sha256:") {
		t.Fatalf("fingerprint = %q", want)
	}

	same := map[string]func(*Observed){
		"volatile key":  func(o *Observed) { o.Instances[0].Config["volatile.uuid"] = "x" },
		"health":        func(o *Observed) { o.Instances[0].Container.Health = "unhealthy" },
		"restart count": func(o *Observed) { o.Instances[0].Container.RestartCount = 3 },
		"unrelated foreign": func(o *Observed) {
			o.Instances = append(o.Instances, Instance{Name: "db-0", Config: map[string]string{}})
		},
		"order": func(o *Observed) { slices.Reverse(o.Instances) },
	}
	for name, f := range same {
		o := base()
		f(&o)
		if got := fp(o); got != want {
			t.Errorf("%s changed the fingerprint", name)
		}
	}
	changed := map[string]func(*Observed){
		"status":       func(o *Observed) { o.Instances[0].Status = "Stopped" },
		"config":       func(o *Observed) { o.Instances[0].Config["limits.cpu"] = "9" },
		"container":    func(o *Observed) { o.Instances[0].Container.ID = "other" },
		"docker error": func(o *Observed) { o.Instances[0].DockerError = "x" },
		"clashing name": func(o *Observed) {
			o.Instances = append(o.Instances, Instance{Name: "web-3", Config: map[string]string{}})
		},
		"owned instance": func(o *Observed) { o.Instances = o.Instances[1:] },
	}
	for name, f := range changed {
		o := base()
		f(&o)
		if name == "clashing name" {
			got := MakePlan(Desired{Apps: []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 4 }), api}}, o, Policy{}).ObservedFingerprint
			ref := MakePlan(Desired{Apps: []spec.App{with(web, func(a *spec.App) { a.Spec.Replicas = 4 }), api}}, base(), Policy{}).ObservedFingerprint
			if got == ref {
				t.Errorf("%s did not change the fingerprint", name)
			}
			continue
		}
		if got := fp(o); got == want {
			t.Errorf("%s did not change the fingerprint", name)
		}
	}
}

func TestActionJSON(t *testing.T) {
	for _, a := range Actions {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		var back Action
		if err := json.Unmarshal(b, &back); err != nil || back != a {
			t.Errorf("%s: round trip gave %v, %v", b, back, err)
		}
	}
	if _, err := json.Marshal(Action(0)); err == nil {
		t.Error("zero action marshalled")
	}
	var a Action
	if err := json.Unmarshal([]byte(`"explode"`), &a); err == nil {
		t.Error("unknown action accepted")
	}
	if Action(42).String() != "Action(42)" {
		t.Error(Action(42).String())
	}
}

func TestPlanJSONRoundTrip(t *testing.T) {
	d, o := purityInputs()
	p := MakePlan(d, o, Policy{})
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var back Plan
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, back) {
		t.Errorf("round trip differs:\n%+v\n%+v", p, back)
	}
}

func TestSummary(t *testing.T) {
	p := Plan{Steps: []Step{
		{Action: Create}, {Action: Create}, {Action: UpdateInPlace}, {Action: Recreate},
		{Action: ReplaceContainer}, {Action: ReplaceContainer}, {Action: ReplaceContainer},
		{Action: CreateContainer}, {Action: StartContainer}, {Action: StartContainer}, {Action: Start}, {Action: Delete},
	}}
	want := "Plan: 2 to create, 1 to start, 1 to update in place, 1 to recreate, 3 container replacements, 1 container to create, 2 containers to start, 1 to delete."
	if got := p.Summary(); got != want {
		t.Errorf("Summary =\n%s\nwant\n%s", got, want)
	}
}

// Every action has its words in the summary: a missing one printed
// "Plan: %!(EXTRA int=1)." for a provision step (issue 18).
func TestSummaryCoversEveryAction(t *testing.T) {
	for _, a := range Actions {
		for _, n := range []int{1, 2} {
			p := Plan{Steps: slices.Repeat([]Step{{Action: a}}, n)}
			got := p.Summary()
			if strings.Contains(got, "%!") || !strings.Contains(got, strconv.Itoa(n)) {
				t.Errorf("%v ×%d: Summary = %q", a, n, got)
			}
		}
	}
	p := Plan{Steps: []Step{{Action: Provision}}}
	if got, want := p.Summary(), "Plan: 1 to provision."; got != want {
		t.Errorf("Summary = %q, want %q", got, want)
	}
}

func TestPlanStale(t *testing.T) {
	scaled := with(web, func(a *spec.App) { a.Spec.Replicas = 4 })
	obs := Observed{Instances: append(fleet(web), Instance{Name: "db-0", Config: map[string]string{"limits.cpu": "2"}})}
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{scaled}}, obs, Policy{})
	if p.Stale(obs) {
		t.Fatal("plan is stale against the state it was made from")
	}
	// Things the plan did not read do not make it stale.
	moved := Observed{Instances: slices.Clone(obs.Instances)}
	moved.Instances[3] = Instance{Name: "db-0", Config: map[string]string{"limits.cpu": "4"}}
	slices.Reverse(moved.Instances)
	if p.Stale(moved) {
		t.Error("an unrelated instance made the plan stale")
	}
	// An instance appearing on a name the plan creates does.
	clash := Observed{Instances: append(slices.Clone(obs.Instances), Instance{Name: "web-3", Status: "Stopped", Config: map[string]string{}})}
	if !p.Stale(clash) {
		t.Error("a hand-made instance on a Create target did not make the plan stale")
	}
	// So does a change to one of berth's instances.
	changed := Observed{Instances: fleet(web)}
	changed.Instances[0].Status = "Stopped"
	changed.Instances = append(changed.Instances, obs.Instances[3])
	if !p.Stale(changed) {
		t.Error("a stopped instance did not make the plan stale")
	}
}

func TestPlanRecreateOfReplicaWithoutContainer(t *testing.T) {
	newImage := with(web, func(a *spec.App) { a.Spec.System.Image = "debian-docker-13" })
	runCases(t, []planCase{{
		name:     "a replica without its container is down already: recreated first",
		apps:     []spec.App{newImage},
		observed: edit(fleet(web), "web-2", func(i *Instance) { i.Container = nil }),
		want: []string{
			"1 web-2 recreate (system.image: debian-docker → debian-docker-13)",
			"2 web-0 recreate (system.image: debian-docker → debian-docker-13)",
			"3 web-1 recreate (system.image: debian-docker → debian-docker-13)",
		},
	}, {
		name:     "docker unreachable counts as serving",
		apps:     []spec.App{newImage},
		observed: edit(fleet(web), "web-2", func(i *Instance) { i.Container = nil; i.DockerError = "timeout" }),
		want: []string{
			"1 web-0 recreate (system.image: debian-docker → debian-docker-13)",
			"2 web-1 recreate (system.image: debian-docker → debian-docker-13)",
			"3 web-2 recreate (system.image: debian-docker → debian-docker-13)",
		},
	}})
}

// unknownDocker marks every instance's Docker as unknown (LXD did not run
// the tunnel), as a cold observe under an LXD hiccup does.
func unknownDocker(insts []Instance) []Instance {
	for i := range insts {
		insts[i].Container = nil
		insts[i].DockerUnknown = "lxd: exec in " + insts[i].Name + ": connecting websockets: i/o timeout"
	}
	return insts
}

func TestText(t *testing.T) {
	ci := "#cloud-config\npackages: [puppet-agent]\n"
	p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{with(web, func(a *spec.App) { a.Spec.System.CloudInit = ci; a.Spec.Replicas = 1 })}},
		Observed{Instances: fleet(with(web, func(a *spec.App) { a.Spec.Replicas = 1 }))}, Policy{})
	want := `Revision 1111111111111111111111111111111111111111, owner berth

web:
  batch 1
    -/+ web-0  recreate  (system.cloudInit: (unset) → <2 lines, sha256:` + shortHash(ci) + `>)

Plan: 1 to recreate.
`
	if got := p.Text(); got != want {
		t.Errorf("Text:\n%s\nwant:\n%s", got, want)
	}
	if got := (Plan{}).Text(); got != "Revision -, owner -\n\nNo changes.\n" {
		t.Errorf("empty Text = %q", got)
	}
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:12]
}

func TestPlanDuplicateNames(t *testing.T) {
	a, b := converged(web, 0), converged(web, 0)
	b.Status = "Stopped"
	one := MakePlan(Desired{Apps: []spec.App{web}}, Observed{Instances: append(fleet(web)[1:], a, b)}, Policy{})
	two := MakePlan(Desired{Apps: []spec.App{web}}, Observed{Instances: append([]Instance{b, a}, fleet(web)[1:]...)}, Policy{})
	j1, _ := json.Marshal(one)
	j2, _ := json.Marshal(two)
	if string(j1) != string(j2) {
		t.Errorf("order of duplicates leaked into the plan:\n%s\n%s", j1, j2)
	}
	if len(one.Steps) != 0 || len(one.Conflicts) != 1 || one.Conflicts[0].Instance != "web-0" {
		t.Errorf("duplicates must be a conflict and untouched:\n%s", one.Text())
	}
}
