package spec

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadBytes feeds arbitrary bytes to the loader: whatever is in a Git
// repository, berth must answer with diagnostics, never a panic or a hang.
func FuzzLoadBytes(f *testing.F) {
	_ = filepath.WalkDir("testdata", func(p string, de fs.DirEntry, err error) error {
		if err == nil && !de.IsDir() && isYAMLFile(p) {
			if data, err := os.ReadFile(p); err == nil {
				f.Add(data)
			}
		}
		return nil
	})
	for _, seed := range []string{
		minimal,
		minimal + "---\n" + minimal,
		"apiVersion: &a [*a]\n",
		"a: &a {<<: [*a, *a]}\n",
		"spec: {system: {config: {<<: &c {x: y}, k: *c}}}\n",
		"? [a, b]\n: c\n",
		"metadata: {name: !!binary aGVsbG8=}\n",
		"spec: {replicas: 0o17, update: {maxUnavailable: 0x10}}\n",
		"spec: {replicas: 8, update: {maxUnavailable: 25%}}\n",
		"\xef\xbb\xbfapiVersion: berth/v1\n",
		"%YAML 1.1\n---\nkind: App\n",
		"- - - -\n",
		"spec: {replicas: 18446744073709551616, system: {limits: {memory: 18446744073709551615EiB, cpu: 99999999999999999999}}}\n",
		"spec: {container: {healthcheck: {test: [NONE], interval: 9999999999h, retries: .nan}}}\n",
		"x: &m {a: b}\n---\ny: {<<: [*m, *m]}\n---\nz: *nope\n",
		"spec: {system: {image: x, ports: [{name: a, port: 1}], provision: {files: [{source: a, path: /a}], run: [x], every: 1m}}}\n",
		"apiVersion: berth/v1\nkind: App\nmetadata: {name: a}\nspec: {system: {image: x, provision: {run: [x], restartContainer: true}}}\n",
		"a: [1, 2\n",
		"\x00\xff\x1b[2J\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := LoadBytes("f.yaml", data, Options{})
		if err != nil {
			t.Fatalf("LoadBytes returned an error for in-memory data: %v", err)
		}
		for _, d := range r.Diagnostics {
			if d.File != "f.yaml" || d.Line < 0 || d.Col < 0 || d.Message == "" {
				t.Fatalf("malformed diagnostic %#v", d)
			}
		}
		if len(r.Unparsable) > 0 && len(r.Diagnostics) == 0 {
			t.Fatal("unparsable file without a diagnostic")
		}
		for _, a := range r.Apps {
			if msg := checkName(a.Metadata.Name, a.Spec.HighestSlot(), false); msg != "" {
				t.Fatalf("valid app with a bad name: %s", msg)
			}
			u, hc := a.Spec.Update, a.Spec.Container.Healthcheck
			if a.Spec.Replicas < 0 || a.Spec.Replicas > MaxReplicas || !maxUnavailableInBounds(u.MaxUnavailable) ||
				u.HealthTimeout.D() < MinHealthTimeout || u.HealthTimeout.D() > MaxDuration ||
				hc != nil && (hc.Retries < 0 || hc.Retries > MaxHealthcheckRetries || hc.Interval.D() > MaxDuration ||
					hc.Timeout.D() > MaxDuration || hc.StartPeriod.D() > MaxDuration) {
				t.Fatalf("valid app outside its bounds: %+v", a.Spec)
			}
			for k := range a.Spec.System.LXDConfig() {
				if strings.HasPrefix(k, "user.berth.") {
					t.Fatalf("valid app sets reserved key %s", k)
				}
			}
			if p := a.Spec.System.Provision; p != nil && (len(p.Files) > 0 || p.Timeout.D() < MinProvisionTimeout || p.Timeout.D() > MaxDuration ||
				p.Every != 0 && (p.Every.D() < MinProvisionEvery || p.Every.D() > MaxDuration)) {
				// LoadBytes has no repository, so no provision file loads.
				t.Fatalf("valid provision outside its bounds: %+v", p)
			}
			if a.Spec.HasContainer() && len(a.Spec.System.Ports) > 0 {
				t.Fatalf("valid app with a container and system ports: %+v", a.Spec)
			}
			_ = a.Spec.System.Hash()
			_ = a.Spec.Container.Hash()
			_ = a.Spec.System.Provision.Hash()
		}
	})
}

// maxUnavailableInBounds: a number from 1 to MaxReplicas or a percentage
// from 1% to 100%, never both.
func maxUnavailableInBounds(v IntOrPercent) bool {
	if v.Percent != 0 {
		return v.N == 0 && v.Percent >= 1 && v.Percent <= 100
	}
	return v.N >= 1 && v.N <= MaxReplicas
}
