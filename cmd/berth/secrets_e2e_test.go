package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/berth-gitops/berth/internal/testlxd"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
)

// secretSealer encrypts secret files for the tests as a user does: with
// the test environment's sops CLI, to a fresh age key.
type secretSealer struct {
	sops      string
	keyFile   string
	recipient string
}

func newSecretSealer(t *testing.T) *secretSealer {
	t.Helper()
	s := &secretSealer{sops: testlxd.SOPS(t), keyFile: filepath.Join(t.TempDir(), "age.key")}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	s.recipient = id.Recipient().String()
	key := "# public key: " + s.recipient + "\n" + id.String() + "\n"
	if err := os.WriteFile(s.keyFile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// seal returns plainYAML encrypted to the sealer's recipient.
func (s *secretSealer) seal(t *testing.T, plainYAML string) string {
	t.Helper()
	cmd := exec.Command(s.sops, "--encrypt", "--age", s.recipient, "--input-type", "yaml", "--output-type", "yaml", "/dev/stdin")
	cmd.Env = append(os.Environ(), "SOPS_DISABLE_VERSION_CHECK=1")
	cmd.Stdin = strings.NewReader(plainYAML)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sops --encrypt: %v: %s", err, stderr.String())
	}
	return string(out)
}

func secretWebSpec() string {
	return `apiVersion: berth/v1
kind: App
metadata:
  name: web
spec:
  replicas: 2
  system:
    image: berth/debian-docker
    profiles: [default, berth-test]
    limits: {memory: 256MiB}
    provision:
      files:
        - {source: secrets/web.enc.yaml, path: /run/berth-secrets/provision/web.yaml, secret: true}
  container:
    image: 127.0.0.1:5000/berth/hello:1
    secretFiles:
      - {file: secrets/web.enc.yaml, key: db.password, target: /run/secrets/db_password, mode: "0440", owner: "65534:65534"}
  update:
    maxUnavailable: 1
    healthTimeout: 40s
`
}

// inInstance runs argv in instance name, stdin given, and returns its
// output and exit code.
func inInstance(t *testing.T, c *lxd.Client, name string, stdin string, argv ...string) (string, int) {
	t.Helper()
	res, err := c.ExecOutput(context.Background(), name, lxd.ExecRequest{Command: argv, Stdin: strings.NewReader(stdin)}, 1<<20)
	if err != nil {
		t.Fatalf("exec %v in %s: %v", argv, name, err)
	}
	return string(res.Output), res.ExitCode
}

// The secret reaches the app container as a read-only file on a tmpfs,
// with its mode and owner; its plaintext is nowhere else: not in berth's
// output at debug level, docker inspect, the instance's LXD config, nor
// the instance's disk. A changed secret rolls the replicas one at a time.
func TestEndToEndSecrets(t *testing.T) {
	requireLive(t)
	project, c := e2eProject(t)
	t.Cleanup(func() {
		// The owner's salt lives in the server config, not the project.
		_ = c.PatchServerConfig(context.Background(), map[string]any{ownership.SaltKey("e2e-sec", project): ""}, "")
	})
	sealer := newSecretSealer(t)
	random := make([]byte, 6)
	_, _ = rand.Read(random)
	secret := "e2e-s3cr3t-" + hex.EncodeToString(random)

	r := newRepo(t)
	r.write("apps/web.yaml", secretWebSpec())
	r.write("secrets/web.enc.yaml", sealer.seal(t, "db:\n  password: "+secret+"\n"))
	r.commit("web with a secret")
	berthCLI := func(args ...string) (int, string) {
		t.Helper()
		code, out, errOut := berth(t, append([]string{"--project", project, "--owner", "e2e-sec", "--log-level", "debug", "--age-key-file", sealer.keyFile}, args...)...)
		return code, out + errOut
	}
	var outputs []string
	code, out := berthCLI("apply", "--yes", "--repo", r.dir)
	outputs = append(outputs, out)
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	if !strings.Contains(strings.ToLower(out), "level=debug") && !strings.Contains(out, `"level":"DEBUG"`) {
		t.Errorf("apply logged nothing at debug level: the leak check would prove little\n%s", out)
	}

	checkReplica := func(name, want string) string {
		t.Helper()
		got, _ := inInstance(t, c, name, "", "docker", "exec", "web", "cat", "/run/secrets/db_password")
		if got != want {
			t.Errorf("%s: the app reads %q at its target, want the secret", name, got)
		}
		// The image's busybox has ls, not stat.
		st, _ := inInstance(t, c, name, "", "docker", "exec", "web", "ls", "-ln", "/run/secrets/db_password")
		if f := strings.Fields(st); len(f) < 4 || f[0] != "-r--r-----" || f[2] != "65534" || f[3] != "65534" {
			t.Errorf("%s: secret file %q, want mode 0440 and owner 65534:65534", name, st)
		}
		mounts, _ := inInstance(t, c, name, "", "docker", "exec", "web", "cat", "/proc/mounts")
		if !regexp.MustCompile(`(?m)^\S+ /run/secrets/db_password tmpfs ro[, ]`).MatchString(mounts) {
			t.Errorf("%s: the secret is not a read-only tmpfs file in the container:\n%s", name, mounts)
		}
		prov, _ := inInstance(t, c, name, "", "cat", "/run/berth-secrets/provision/web.yaml")
		if !strings.Contains(prov, want) {
			t.Errorf("%s: the secret provision file holds %q", name, prov)
		}
		id, _ := inInstance(t, c, name, "", "docker", "inspect", "-f", "{{.Id}}", "web")
		return strings.TrimSpace(id)
	}
	ids := map[string]string{}
	for _, n := range []string{"web-0", "web-1"} {
		ids[n] = checkReplica(n, secret)
	}

	t.Log("a changed secret rolls the replicas, one at a time")
	rotated := "e2e-r0tated-" + hex.EncodeToString(random)
	r.write("secrets/web.enc.yaml", sealer.seal(t, "db:\n  password: "+rotated+"\n"))
	r.commit("rotate the db password")
	code, out = berthCLI("plan", "--repo", r.dir)
	outputs = append(outputs, out)
	if code != 2 || !strings.Contains(out, "container.secretFiles[/run/secrets/db_password]: changed") {
		t.Errorf("plan of a changed secret: exit %d\n%s", code, out)
	}
	code, out = berthCLI("apply", "--yes", "--repo", r.dir)
	outputs = append(outputs, out)
	if code != 0 {
		t.Fatalf("apply of a changed secret: exit %d\n%s", code, out)
	}
	if n := maxConcurrent(out, "replace-container", "recreate"); n != 1 {
		t.Errorf("%d replicas were replaced at once, maxUnavailable is 1:\n%s", n, out)
	}
	for _, n := range []string{"web-0", "web-1"} {
		if id := checkReplica(n, rotated); id == ids[n] {
			t.Errorf("%s: the app container was not replaced by the new secret", n)
		}
	}

	t.Log("a key that opens nothing holds the app, naming the file and its recipients")
	other := newSecretSealer(t).keyFile
	code, errOut := func() (int, string) {
		code, o, e := berth(t, "--project", project, "--owner", "e2e-sec", "--age-key-file", other, "plan", "--repo", r.dir)
		return code, o + e
	}()
	outputs = append(outputs, errOut)
	if code != exitBlocked || !strings.Contains(errOut, `cannot decrypt "secrets/web.enc.yaml"`) || !strings.Contains(errOut, sealer.recipient) {
		t.Errorf("plan with a key that opens nothing: exit %d, want %d naming the file and %s\n%s", code, exitBlocked, sealer.recipient, errOut)
	}

	t.Log("a key rotation: add the new key, re-encrypt, remove the old; no replica restarts")
	checkRotation(t, r, sealer, project, checkReplica, rotated, &outputs)

	t.Log("the plaintext is in no output, no inspect, no LXD config, and not on the instance's disk")
	for _, plain := range []string{secret, rotated} {
		for i, o := range outputs {
			if strings.Contains(o, plain) {
				t.Errorf("berth output %d shows a secret:\n%s", i, o)
			}
		}
	}
	for _, n := range []string{"web-0", "web-1"} {
		insp, _ := inInstance(t, c, n, "", "docker", "inspect", "web")
		inst, _, err := c.GetInstance(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := json.Marshal(inst)
		// -f -: the patterns come from stdin, never a command line (and
		// /dev/stdin cannot be opened in an LXD exec).
		found, _ := inInstance(t, c, n, secret+"\n"+rotated+"\n", "sh", "-c",
			"grep -rlF -f - / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev --exclude-dir=run 2>/dev/null")
		// The same search finds it where it is: the grep works.
		onTmpfs, _ := inInstance(t, c, n, rotated+"\n", "sh", "-c", "grep -rlF -f - /run/berth-secrets 2>/dev/null")
		for _, plain := range []string{secret, rotated} {
			if strings.Contains(insp, plain) {
				t.Errorf("%s: docker inspect shows the secret", n)
			}
			if bytes.Contains(cfg, []byte(plain)) {
				t.Errorf("%s: the LXD instance config shows the secret", n)
			}
		}
		if strings.TrimSpace(found) != "" {
			t.Errorf("%s: the plaintext is on the instance's disk, in:\n%s", n, found)
		}
		if !strings.Contains(onTmpfs, "/run/berth-secrets/web/") {
			t.Errorf("%s: the search for the secret does not find it on berth's tmpfs either: %q", n, onTmpfs)
		}
	}
}

// checkRotation rotates the repository's secret file from sealer's key
// to a new one with `berth secrets rotate`, as a team does: the new key is
// added, berth runs with both, the old one is removed, berth runs with the
// new one alone. The value never changes, so no replica is touched: its
// app container stays the same.
func checkRotation(t *testing.T, r *repo, sealer *secretSealer, project string, checkReplica func(name, want string) string, value string, outputs *[]string) {
	t.Helper()
	next := newSecretSealer(t)
	file := filepath.Join(r.dir, "secrets", "web.enc.yaml")
	ids := map[string]string{}
	for _, n := range []string{"web-0", "web-1"} {
		ids[n] = checkReplica(n, value)
	}
	run := func(keys []string, args ...string) (int, string) {
		t.Helper()
		pre := []string{"--project", project, "--owner", "e2e-sec"}
		for _, k := range keys {
			pre = append(pre, "--age-key-file", k)
		}
		code, o, e := berth(t, append(pre, args...)...)
		*outputs = append(*outputs, o+e)
		return code, o + e
	}
	steps := []struct {
		rotate []string // berth secrets rotate ARGS, with the keys before
		keys   []string // the keys berth then runs with
	}{
		{[]string{"--add", next.recipient}, []string{sealer.keyFile, next.keyFile}},
		{[]string{"--remove", sealer.recipient}, []string{next.keyFile}},
	}
	for i, st := range steps {
		before := []string{sealer.keyFile, next.keyFile}
		if code, out := run(before, append(append([]string{"secrets", "rotate"}, st.rotate...), file)...); code != 0 {
			t.Fatalf("rotation step %d: secrets rotate %v: exit %d\n%s", i, st.rotate, code, out)
		}
		r.commit(fmt.Sprintf("rotate the age key, step %d", i+1))
		if code, out := run(st.keys, "plan", "--repo", r.dir); code != 0 {
			t.Errorf("rotation step %d: plan with keys %v: exit %d, want 0 (nothing to do)\n%s", i, st.keys, code, out)
		}
		if code, out := run(st.keys, "apply", "--yes", "--repo", r.dir); code != 0 {
			t.Errorf("rotation step %d: apply with keys %v: exit %d\n%s", i, st.keys, code, out)
		}
	}
	if code, out := run([]string{sealer.keyFile}, "plan", "--repo", r.dir); code != exitBlocked || !strings.Contains(out, next.recipient) {
		t.Errorf("the removed key still opens the file, or the error does not name the new recipient: exit %d\n%s", code, out)
	}
	for _, n := range []string{"web-0", "web-1"} {
		if id := checkReplica(n, value); id != ids[n] {
			t.Errorf("%s: the key rotation replaced the app container", n)
		}
	}
}
