package discovery

import (
	"net"
	"strconv"
	"time"
)

// Endpoints is the body of GET /api/v1/endpoints:
//
//	{
//	  "revision": "<sha>",              // the desired revision of the view
//	  "observedAt": "<RFC 3339 time>",  // when the view was taken
//	  "zone": "berth.internal",
//	  "apps": [                         // sorted by name; an app with no replica has "replicas": []
//	    {"app": "web", "replicas": [    // sorted by slot
//	      {"instance": "web-0", "slot": 0, "address": "10.213.87.20",
//	       "ports": [{"name": "http", "port": 8080, "protocol": "tcp"}],
//	       "ready": true, "revision": "<sha>", "member": ""},
//	      {"instance": "web-1", "slot": 1, "address": "", "ports": [...],
//	       "ready": false, "reason": "instance stopped", "revision": "<sha>", "member": ""}
//	    ]}
//	  ]
//	}
//
// "ready" is exactly "answered in <app>.<zone>"; "reason" says why not.
// "address" is "" for a replica with no IPv4 address; "member" is "" on a
// single host.
type Endpoints struct {
	Revision   string    `json:"revision"`
	ObservedAt time.Time `json:"observedAt"`
	Zone       string    `json:"zone"`
	Apps       []App     `json:"apps"`
}

// Endpoints returns the snapshot as the endpoints body.
func (s *Snapshot) Endpoints() Endpoints {
	zone := s.zone
	if len(zone) > 0 {
		zone = zone[:len(zone)-1]
	}
	return Endpoints{Revision: s.Revision, ObservedAt: s.At.UTC(), Zone: zone, Apps: s.Apps}
}

// TargetGroup is one entry of Prometheus' HTTP service discovery
// (http_sd_configs): the body of GET /api/v1/sd/prometheus is a JSON list
// of them, one per replica with an address and declared port:
//
//	[{"targets": ["10.213.87.20:8080"],
//	  "labels": {"__meta_berth_app": "web", "__meta_berth_instance": "web-0",
//	             "__meta_berth_port": "8080", "__meta_berth_port_name": "http",
//	             "__meta_berth_protocol": "tcp", "__meta_berth_ready": "true",
//	             "__meta_berth_revision": "<sha>", "__meta_berth_member": ""}}]
//
// Replicas that are not ready are listed too, with __meta_berth_ready
// "false": relabel on it to scrape only serving replicas. The list is []
// (not null) when empty.
type TargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// Labels of a TargetGroup.
const (
	LabelApp      = "__meta_berth_app"
	LabelInstance = "__meta_berth_instance"
	LabelPort     = "__meta_berth_port"
	LabelPortName = "__meta_berth_port_name"
	LabelProtocol = "__meta_berth_protocol"
	LabelReady    = "__meta_berth_ready"
	LabelRevision = "__meta_berth_revision"
	LabelMember   = "__meta_berth_member"
)

// PrometheusTargets returns the snapshot as Prometheus target groups.
func (s *Snapshot) PrometheusTargets() []TargetGroup {
	out := []TargetGroup{}
	for _, a := range s.Apps {
		for _, r := range a.Replicas {
			if r.Address == "" {
				continue
			}
			for _, p := range r.Ports {
				port := strconv.Itoa(p.Port)
				out = append(out, TargetGroup{
					Targets: []string{net.JoinHostPort(r.Address, port)},
					Labels: map[string]string{
						LabelApp: a.Name, LabelInstance: r.Instance,
						LabelPort: port, LabelPortName: p.Name, LabelProtocol: p.Protocol,
						LabelReady: strconv.FormatBool(r.Ready), LabelRevision: r.Revision, LabelMember: r.Member,
					},
				})
			}
		}
	}
	return out
}
