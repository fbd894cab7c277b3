package spec

import (
	"fmt"
	"testing"
	"testing/fstest"
)

// BenchmarkLoad100Apps loads a tree the size of a busy config repo: ten
// files of ten documents each.
func BenchmarkLoad100Apps(b *testing.B) {
	fsys := fstest.MapFS{}
	for f := range 10 {
		var data []byte
		for i := range 10 {
			data = fmt.Appendf(data, `---
apiVersion: berth/v1
kind: App
metadata: {name: app-%d-%d}
spec:
  replicas: 3
  system:
    image: debian-docker
    limits: {cpu: "2", memory: 1GiB}
    config: {security.nesting: "true"}
    devices: {data: {type: disk, source: /srv/%d, path: /data}}
  container:
    image: registry.example:5000/team/app:1.0
    command: [/bin/app, --port, "8080"]
    env: {PORT: "8080", MODE: production}
    volumes: [{source: /srv/data, target: /data}]
    healthcheck: {test: [CMD, wget, -qO-, http://127.0.0.1:8080/], interval: 5s, retries: 3}
  update: {maxUnavailable: 1, healthTimeout: 2m}
`, f, i, i)
		}
		fsys[fmt.Sprintf("apps/f%d.yaml", f)] = &fstest.MapFile{Data: data}
	}
	for b.Loop() {
		r, err := Load(b.Context(), fsys, Options{})
		if err != nil || len(r.Diagnostics) != 0 || len(r.Apps) != 100 {
			b.Fatalf("load: %v %v %d", err, r.Diagnostics, len(r.Apps))
		}
	}
}
