// Command appimages builds berth's test app images without a Docker daemon
// and pushes them to a local registry over the Registry HTTP API v2.
//
// There is no Docker Hub here and no engine on the host, so the images are
// assembled by hand from busybox-static: one layer, a config, a schema2
// manifest. Timestamps are fixed, so every run produces the same digests
// and a second push only checks that the blobs are there.
//
//	berth/hello:1, berth/hello:2  busybox httpd on $PORT (8080); its page
//	                              says the version; healthcheck passes
//	berth/broken:1                runs, but its healthcheck always fails
//	berth/kv:1                    a key-value store keeping its keys under
//	                              /data (PUT/GET /kv/KEY, see testdata/kv),
//	                              built here with CGO off: a static binary
package main

import (
	"archive/tar"
	"bytes"
	"cmp"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// epoch is the fixed timestamp of every file and image: reproducible digests.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	mediaManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaConfig   = "application/vnd.docker.container.image.v1+json"
	mediaLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

type appImage struct {
	repo, tag string
	files     map[string]string // path -> content, added to the busybox base
	cmd       []string
	health    []string
	env       []string
	bins      map[string][]byte // path -> executable, added like files
	user      string            // "" runs as nobody
}

func images(kv []byte) []appImage {
	hello := func(v string) appImage {
		return appImage{
			repo: "berth/hello", tag: v,
			files: map[string]string{
				"www/index.html": "hello from berth/hello:" + v + "\n",
				"www/healthz":    "ok\n",
				"www/version":    v + "\n",
			},
			// $PORT lets a spec move the port; host networking means each
			// replica has the instance's network to itself.
			cmd:    []string{"/bin/sh", "-c", "exec /bin/httpd -f -p \"${PORT:-8080}\" -h /www"},
			health: []string{"CMD-SHELL", "/bin/wget -qO- \"http://127.0.0.1:${PORT:-8080}/healthz\""},
			env:    []string{"PATH=/bin", "BERTH_HELLO_VERSION=" + v},
		}
	}
	return []appImage{
		hello("1"),
		hello("2"),
		{
			repo: "berth/broken", tag: "1",
			files:  map[string]string{"www/index.html": "broken\n"},
			cmd:    []string{"/bin/sleep", "2147483647"},
			health: []string{"CMD", "/bin/false"},
			env:    []string{"PATH=/bin"},
		},
		{
			repo: "berth/kv", tag: "1",
			bins:   map[string][]byte{"bin/kv": kv},
			cmd:    []string{"/bin/kv"},
			health: []string{"CMD-SHELL", "/bin/wget -qO- \"http://127.0.0.1:${PORT:-8080}/healthz\""},
			env:    []string{"PATH=/bin", "DATA=/data"},
			// Root in the app container: /data is a folder of the system
			// container's volume, owned by its root.
			user: "0:0",
		},
	}
}

// buildKV builds testdata/kv (testdata: a program for the image, not
// a package of berth) as a static linux/amd64 binary. -trimpath and no
// build ID keep it, and so the image's digest, the same from run to run.
func buildKV() ([]byte, error) {
	dir, err := os.MkdirTemp("", "berth-kv-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "kv")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", out, "github.com/berth-gitops/berth/testenv/appimages/testdata/kv")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build kv: %w", err)
	}
	return os.ReadFile(out)
}

func main() {
	registry := flag.String("registry", "127.0.0.1:5000", "registry host:port (plain HTTP)")
	busybox := flag.String("busybox", "/bin/busybox", "a static busybox binary")
	flag.Parse()
	bb, err := os.ReadFile(*busybox)
	if err != nil {
		fail(err)
	}
	kv, err := buildKV()
	if err != nil {
		fail(err)
	}
	r := &registryClient{base: "http://" + *registry, http: &http.Client{Timeout: 60 * time.Second}}
	for _, img := range images(kv) {
		digest, err := r.push(img, bb)
		if err != nil {
			fail(fmt.Errorf("%s:%s: %w", img.repo, img.tag, err))
		}
		fmt.Printf("%s/%s:%s %s\n", *registry, img.repo, img.tag, digest)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "appimages:", err)
	os.Exit(1)
}

// layer returns the gzipped layer tar and the sha256 of the uncompressed tar
// (the diff ID the image config lists).
func layer(img appImage, busybox []byte) (gz []byte, diffID string, err error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: epoch})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	steps := []func() error{
		func() error { return dir("bin", 0o755) },
		func() error { return dir("etc", 0o755) },
		func() error { return dir("tmp", 0o1777) },
		func() error { return dir("www", 0o755) },
		func() error { return file("bin/busybox", 0o755, busybox) },
		func() error {
			return file("etc/passwd", 0o644, []byte("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"))
		},
		func() error { return file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")) },
	}
	for _, applet := range []string{"sh", "httpd", "wget", "sleep", "cat", "echo", "false", "true", "env", "id", "ls"} {
		steps = append(steps, func() error {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: epoch})
		})
	}
	for _, name := range slices.Sorted(maps.Keys(img.files)) {
		steps = append(steps, func() error { return file(name, 0o644, []byte(img.files[name])) })
	}
	for _, name := range slices.Sorted(maps.Keys(img.bins)) {
		steps = append(steps, func() error { return file(name, 0o755, img.bins[name]) })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	var out bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
	zw.ModTime = epoch
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return out.Bytes(), digestOf(raw.Bytes()), nil
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func config(img appImage, diffID string) ([]byte, error) {
	second := int64(time.Second)
	cfg := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config": map[string]any{
			// Not root: the app needs no privilege to serve on 8080.
			"User": cmp.Or(img.user, "65534:65534"),
			"Cmd":  img.cmd,
			"Env":  img.env,
			"Healthcheck": map[string]any{
				"Test": img.health, "Interval": second, "Timeout": 2 * second,
				"StartPeriod": 0, "Retries": 3,
			},
			"Labels": map[string]string{"org.opencontainers.image.title": img.repo, "org.opencontainers.image.version": img.tag},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history": []map[string]string{{"created": epoch.Format(time.RFC3339), "created_by": "berth testenv/appimages"}},
	}
	return json.Marshal(cfg)
}

type registryClient struct {
	base string
	http *http.Client
}

func (r *registryClient) push(img appImage, busybox []byte) (string, error) {
	gz, diffID, err := layer(img, busybox)
	if err != nil {
		return "", err
	}
	cfg, err := config(img, diffID)
	if err != nil {
		return "", err
	}
	for _, blob := range [][]byte{gz, cfg} {
		if err := r.putBlob(img.repo, blob); err != nil {
			return "", err
		}
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        map[string]any{"mediaType": mediaConfig, "size": len(cfg), "digest": digestOf(cfg)},
		"layers":        []map[string]any{{"mediaType": mediaLayer, "size": len(gz), "digest": digestOf(gz)}},
	})
	if err != nil {
		return "", err
	}
	req, _ := http.NewRequest(http.MethodPut, r.base+"/v2/"+img.repo+"/manifests/"+img.tag, bytes.NewReader(manifest))
	req.Header.Set("Content-Type", mediaManifest)
	if err := r.do(req, http.StatusCreated); err != nil {
		return "", fmt.Errorf("put manifest: %w", err)
	}
	return digestOf(manifest), nil
}

func (r *registryClient) putBlob(repo string, blob []byte) error {
	digest := digestOf(blob)
	head, _ := http.NewRequest(http.MethodHead, r.base+"/v2/"+repo+"/blobs/"+digest, nil)
	if r.do(head, http.StatusOK) == nil {
		return nil
	}
	start, _ := http.NewRequest(http.MethodPost, r.base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, err := r.http.Do(start)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("start upload: %s", resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return fmt.Errorf("upload location: %w", err)
	}
	base, _ := url.Parse(r.base)
	loc = base.ResolveReference(loc)
	q := loc.Query()
	q.Set("digest", digest)
	loc.RawQuery = q.Encode()
	put, _ := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(blob))
	put.Header.Set("Content-Type", "application/octet-stream")
	if err := r.do(put, http.StatusCreated); err != nil {
		return fmt.Errorf("upload blob %s: %w", digest, err)
	}
	return nil
}

func (r *registryClient) do(req *http.Request, want int) error {
	resp, err := r.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return errors.New(resp.Status + ": " + strings.TrimSpace(string(body)))
	}
	return nil
}
