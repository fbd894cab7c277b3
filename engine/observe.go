package engine

import (
	"context"
	"github.com/berth-gitops/berth/ownership"
	"sort"
	"strings"

	"github.com/docker/docker/api/types/container"
)

// Health values of Container.Health; "" means no healthcheck.
const (
	HealthStarting  = "starting"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// Container is one of berth's app containers as observed.
type Container struct {
	Name string // without Docker's leading "/"
	ID   string
	// Image is the reference the container was created from.
	Image string
	// State is Docker's: created, running, paused, restarting, removing,
	// exited, dead.
	State string
	// Health is "", starting, healthy or unhealthy.
	Health       string
	RestartCount int
	ExitCode     int
	// Labels are all the container's labels (berth.* and the image's).
	Labels map[string]string
}

// App, Hash and Revision read berth's labels.
func (c Container) App() string      { return c.Labels[ownership.LabelApp] }
func (c Container) Hash() string     { return c.Labels[ownership.LabelContainerHash] }
func (c Container) Revision() string { return c.Labels[ownership.LabelRevision] }

// Observation is what Docker in one instance runs.
type Observation struct {
	Instance string
	// APIVersion is the negotiated Docker API version.
	APIVersion string
	// Containers are berth's containers (with LabelApp), by name.
	Containers []Container
	// Foreign names the containers without berth's labels: reported so an
	// operator sees them, never changed.
	Foreign []string
}

// Container returns berth's container of app: the one named after the app
// and labelled for it, as Ensure names it.
func (o Observation) Container(app string) (Container, bool) {
	for _, c := range o.Containers {
		if c.App() == app && c.Name == app {
			return c, true
		}
	}
	return Container{}, false
}

// Stale names berth's other containers of app (a "<app>-next" left by an
// interrupted replacement): Ensure removes them.
func (o Observation) Stale(app string) []string {
	var out []string
	for _, c := range o.Containers {
		if c.App() == app && c.Name != app {
			out = append(out, c.Name)
		}
	}
	return out
}

// Observe lists the containers in instance: one ContainerList, plus one
// ContainerInspect per berth container that has been started (restart
// count and health state are not in the list). Foreign containers are
// never inspected.
func (m *Manager) Observe(ctx context.Context, instance string) (Observation, error) {
	cli, c, err := m.client(ctx, instance)
	if err != nil {
		return Observation{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return Observation{}, m.connErr(c, "list containers", err)
	}
	obs := Observation{Instance: instance, APIVersion: cli.ClientVersion()}
	for _, s := range list {
		if _, ok := s.Labels[ownership.LabelApp]; !ok {
			obs.Foreign = append(obs.Foreign, summaryName(s))
			continue
		}
		ct := Container{
			Name:   summaryName(s),
			ID:     s.ID,
			Image:  s.Image,
			State:  s.State,
			Health: healthFromStatus(s.Status),
			Labels: s.Labels,
		}
		if s.State != container.StateCreated {
			insp, err := cli.ContainerInspect(ctx, s.ID)
			switch {
			case err == nil:
				fillFromInspect(&ct, insp)
			case isNotFound(err):
				continue // removed between list and inspect
			default:
				return Observation{}, m.connErr(c, "inspect container "+ct.Name, err)
			}
		}
		obs.Containers = append(obs.Containers, ct)
	}
	sort.Slice(obs.Containers, func(i, j int) bool { return obs.Containers[i].Name < obs.Containers[j].Name })
	sort.Strings(obs.Foreign)
	return obs, nil
}

func fillFromInspect(ct *Container, insp container.InspectResponse) {
	ct.RestartCount = insp.RestartCount
	if insp.State != nil {
		ct.State = insp.State.Status
		ct.ExitCode = insp.State.ExitCode
		ct.Health = ""
		// Docker keeps the last health status of a container that has
		// exited ("exited (healthy)"); it only means something while the
		// container runs.
		if insp.State.Health != nil && (insp.State.Running || insp.State.Restarting) {
			ct.Health = insp.State.Health.Status
		}
	}
	if insp.Config != nil {
		ct.Image = insp.Config.Image
		ct.Labels = insp.Config.Labels
	}
}

func summaryName(s container.Summary) string {
	if len(s.Names) == 0 {
		return s.ID
	}
	// Names holds the name plus the aliases of legacy links ("/a/b");
	// the real name is the one with a single slash.
	for _, n := range s.Names {
		if strings.Count(n, "/") == 1 {
			return strings.TrimPrefix(n, "/")
		}
	}
	return strings.TrimPrefix(s.Names[0], "/")
}

// healthFromStatus reads the health suffix of the list's human status
// ("Up 5 seconds (health: starting)"), used when no inspect is done.
func healthFromStatus(status string) string {
	switch {
	case strings.Contains(status, "(health: starting)"):
		return HealthStarting
	case strings.Contains(status, "(unhealthy)"):
		return HealthUnhealthy
	case strings.Contains(status, "(healthy)"):
		return HealthHealthy
	}
	return ""
}
