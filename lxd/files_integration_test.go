package lxd

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// execOut runs a command in the instance and returns its combined output,
// failing the test unless it exits 0.
func execOut(t *testing.T, c *Client, name string, cmd ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.ExecOutput(ctx, name, ExecRequest{Command: cmd}, 64<<10)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("%q in %s: exit %d, %v: %s", cmd, name, res.ExitCode, err, res.Output)
	}
	return string(res.Output)
}

// TestIntegrationFilesAndExecOutput: files pushed into a busybox instance
// are there with their content, owner and mode as the instance sees them
// (stat inside it), in directories created on the way; a second push with
// another owner and mode takes; a script can run them; a failing command's
// output tail and exit code come back; a command that outlives ctx is
// killed.
func TestIntegrationFilesAndExecOutput(t *testing.T) {
	c := realLXD(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	name := "berth-it-files-" + randSuffix()
	launch(t, c, name, nil)

	script := "#!/bin/sh\necho provisioned > /srv/berth-it/done\necho to stderr >&2\n"
	if err := c.PushFile(ctx, name, "/srv/berth-it/bin/setup.sh", []byte(script), FileOptions{Mode: 0o750}); err != nil {
		t.Fatal(err)
	}
	if err := c.PushFile(ctx, name, "/srv/berth-it/app.conf", []byte("a=1\n"), FileOptions{UID: 1000, GID: 1001, Mode: 0o640}); err != nil {
		t.Fatal(err)
	}
	want := "750 0 0 " + strconv.Itoa(len(script)) + " /srv/berth-it/bin/setup.sh\n" +
		"640 1000 1001 4 /srv/berth-it/app.conf\n"
	if got := execOut(t, c, name, "stat", "-c", "%a %u %g %s %n", "/srv/berth-it/bin/setup.sh", "/srv/berth-it/app.conf"); got != want {
		t.Errorf("stat after the first push:\n%s\nwant\n%s", got, want)
	}
	if got := execOut(t, c, name, "stat", "-c", "%F %a %u %g", "/srv/berth-it", "/srv/berth-it/bin"); got != "directory 755 0 0\ndirectory 755 0 0\n" {
		t.Errorf("parent directories:\n%s", got)
	}

	// Again, with new content, owner and mode: all three take.
	if err := c.PushFile(ctx, name, "/srv/berth-it/app.conf", []byte("a=2\n"), FileOptions{UID: 0, GID: 0, Mode: 0o600}); err != nil {
		t.Fatal(err)
	}
	if got := execOut(t, c, name, "sh", "-c", "stat -c '%a %u %g' /srv/berth-it/app.conf; cat /srv/berth-it/app.conf"); got != "600 0 0\na=2\n" {
		t.Errorf("after the second push: %q", got)
	}
	if got, err := c.PullFile(ctx, name, "/srv/berth-it/app.conf", 1<<20); err != nil || string(got) != "a=2\n" {
		t.Errorf("PullFile = %q, %v", got, err)
	}

	res, err := c.ExecOutput(ctx, name, ExecRequest{Command: []string{"/srv/berth-it/bin/setup.sh"}}, 1024)
	if err != nil || res.ExitCode != 0 || string(res.Output) != "to stderr\n" || res.Truncated {
		t.Errorf("setup.sh: %+v %v", res, err)
	}
	if got := execOut(t, c, name, "cat", "/srv/berth-it/done"); got != "provisioned\n" {
		t.Errorf("the script's file: %q", got)
	}

	// A failing command: exit code and the tail of its output. stderr is
	// merged into stdout in the instance: across LXD's two streams the
	// order is not kept.
	res, err = c.ExecOutput(ctx, name, ExecRequest{Command: []string{"sh", "-c", "exec 2>&1; for i in $(seq 1 500); do echo line $i; done; echo boom >&2; exit 3"}}, 64)
	if err != nil || res.ExitCode != 3 || !res.Truncated || !bytes.HasSuffix(res.Output, []byte("line 499\nline 500\nboom\n")) || len(res.Output) != 64 {
		t.Errorf("failing command: %v exit %d truncated %v output %q", err, res.ExitCode, res.Truncated, res.Output)
	}

	// A command that cannot start fails the operation.
	_, err = c.ExecOutput(ctx, name, ExecRequest{Command: []string{"/no/such/command"}}, 64)
	var oe *OperationError
	if !errors.As(err, &oe) {
		t.Errorf("missing command: %v", err)
	}

	// Past ctx's end: the error says so and LXD kills the command.
	tctx, tcancel := context.WithTimeout(ctx, 2*time.Second)
	defer tcancel()
	res, err = c.ExecOutput(tctx, name, ExecRequest{Command: []string{"sh", "-c", "echo started; exec sleep 300"}}, 64)
	if !errors.Is(err, context.DeadlineExceeded) || res.ExitCode != -1 || string(res.Output) != "started\n" {
		t.Errorf("timed out command: %v exit %d output %q", err, res.ExitCode, res.Output)
	}
	// LXD kills it once the control socket is gone; give it a moment.
	var ps string
	for range 50 {
		ps = execOut(t, c, name, "ps")
		if !strings.Contains(ps, "sleep 300") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(ps, "sleep 300") {
		t.Errorf("the timed out command still runs:\n%s", ps)
	}
}

// TestIntegrationImagesAndEphemeral: one images request lists the test
// image under its alias with the alias's fingerprint and a date; an
// ephemeral instance says so and is gone once stopped.
func TestIntegrationImagesAndEphemeral(t *testing.T) {
	c := realLXD(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	alias, _, err := c.GetImageAlias(ctx, testImage)
	if err != nil {
		t.Fatal(err)
	}
	before := c.RequestCounts()["GET"]
	images, err := c.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := c.RequestCounts()["GET"] - before; n != 1 {
		t.Errorf("ListImages made %d requests", n)
	}
	var found *Image
	for i := range images {
		for _, a := range images[i].Aliases {
			if a.Name == testImage {
				found = &images[i]
			}
		}
	}
	switch {
	case found == nil:
		t.Fatalf("no image with alias %s in %d images", testImage, len(images))
	case found.Fingerprint != alias.Target || !fingerprintRE.MatchString(found.Fingerprint):
		t.Errorf("image %s, alias points to %s", found.Fingerprint, alias.Target)
	case found.UploadedAt.IsZero() || found.UploadedAt.After(time.Now()):
		t.Errorf("uploaded at %s", found.UploadedAt)
	}

	name := "berth-it-eph-" + randSuffix()
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		_ = c.DeleteInstance(ctx, name)
	})
	if err := c.CreateInstance(ctx, InstancesPost{Name: name, Source: ImageSource{Alias: testImage}, Profiles: []string{"default"}, Ephemeral: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.StartInstance(ctx, name); err != nil {
		t.Fatal(err)
	}
	inst, _, err := c.GetInstance(ctx, name)
	if err != nil || !inst.Ephemeral || !inst.Running() || inst.Config["volatile.base_image"] != alias.Target {
		t.Fatalf("ephemeral instance: %v %+v", err, inst)
	}
	if err := c.StopInstance(ctx, name, time.Second); err != nil {
		t.Fatal(err)
	}
	// LXD deletes it as the stop finishes; allow it a moment.
	for range 100 {
		if _, _, err = c.GetInstance(ctx, name); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("stopped ephemeral instance: %v, want it gone", err)
	}
}
