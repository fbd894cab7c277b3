package spec

import "testing"

// TestHashesPinned pins the hashes of a few fixed specs to literal values.
//
// Do not update these strings to make the test pass. The system hash and the
// container hash are stored on every instance and every app container berth
// manages (user.berth.* keys, Docker labels); when the hash of an unchanged
// spec changes, the next berth version sees every instance of every user as
// out of date and recreates all of them on upgrade. Golden files updated
// with -update would bless such a change silently; this test does not.
//
// A change here is only acceptable together with a migration that keeps
// existing instances (or a deliberate, announced recreation), and a note in
// the changelog. Adding an optional field is safe only if its zero value is
// left out of the canonical JSON (omitempty), which this test checks for the
// specs below.
func TestHashesPinned(t *testing.T) {
	tests := []struct {
		name              string
		src               string
		system, container string
	}{
		{
			// Only the required fields: every default comes from the loader.
			// The hashes are those of the canonical JSON
			// {"image":"ubuntu/24.04","profiles":["default"],"limits":{}} and
			// {"image":"nginx:1.27"}.
			name: "minimal",
			src: `apiVersion: berth/v1
kind: App
metadata: {name: web}
spec:
  system: {image: ubuntu/24.04}
  container: {image: nginx:1.27}
`,
			system:    "47534af753a56c6d",
			container: "425f67ea157483d7",
		},
		{
			// Every field of System and Container written out.
			name: "full",
			src: `apiVersion: berth/v1
kind: App
metadata: {name: shop}
spec:
  replicas: 3
  system:
    image: images:debian/12
    profiles: [default, docker]
    limits: {cpu: "2", memory: 1GiB}
    config:
      security.nesting: "true"
      boot.autostart: "true"
    devices:
      data: {type: disk, source: /srv/shop, path: /data}
      eth1: {type: nic, network: br0}
    cloudInit: |
      #cloud-config
      packages: [curl]
  container:
    image: registry.example:5000/team/shop:1.2@sha256:` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `
    command: [/bin/shop, --port, "8080"]
    env: {PORT: "8080", MODE: prod}
    user: "1000:1000"
    volumes:
      - {source: /data, target: /var/lib/shop}
      - {source: /etc/shop, target: /etc/shop, readOnly: true}
    healthcheck:
      test: [CMD, wget, -qO-, http://127.0.0.1:8080/healthz]
      interval: 5s
      timeout: 2s
      startPeriod: 30s
      retries: 3
  update: {maxUnavailable: 2, healthTimeout: 5m, snapshot: true}
`,
			system:    "ce75f921d3940291",
			container: "299f9487f9e50de4",
		},
		{
			// Explicit empty profiles and a NONE healthcheck, which must not
			// hash like the defaults.
			name: "no profiles, no health test",
			src: `apiVersion: berth/v1
kind: App
metadata: {name: batch}
spec:
  replicas: 0
  system: {image: ubuntu/24.04, profiles: []}
  container:
    image: busybox
    healthcheck: {test: [NONE]}
`,
			system:    "99e2aa28463d8998",
			container: "40aa07ba32b11698",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := LoadBytes("app.yaml", []byte(tt.src), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Diagnostics) != 0 || len(r.Apps) != 1 {
				t.Fatalf("spec does not load: %v", r.Diagnostics)
			}
			s := r.Apps[0].Spec
			if got := s.System.Hash(); got != tt.system {
				t.Errorf("System.Hash() = %q, pinned %q: every instance would be recreated on upgrade", got, tt.system)
			}
			if got := s.Container.Hash(); got != tt.container {
				t.Errorf("Container.Hash() = %q, pinned %q: every app container would be recreated on upgrade", got, tt.container)
			}
		})
	}
}
