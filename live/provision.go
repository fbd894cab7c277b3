package live

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/spec"
)

// How much of a provision command's output a failure reports: the last
// lines, which is where a script or playbook says what went wrong.
const (
	// ProvisionTailLines is the most lines of output a ProvisionError
	// carries.
	ProvisionTailLines = 20
	// ProvisionTailBytes bounds those lines, escaped, in bytes.
	ProvisionTailBytes = 2 << 10
	// provisionKeep is the output kept while the command runs: the tail
	// is cut from it, and escaping can only lengthen lines.
	provisionKeep = 16 << 10
)

// ProvisionError is a provision that failed in the instance: its command
// exited non-zero or could not be started, a file could not be written as
// asked, or it did not finish within its timeout. It is not permanent:
// config management often fails for a while (a package mirror down, a
// network not up yet, a periodic run hitting a blip), so the app is held
// and retried after the rollout backoff, or at once on a new commit.
type ProvisionError struct {
	Instance string
	// Location is the cluster member the instance is on, "" when not
	// known or not clustered: a frozen or overloaded member is often why
	// a provision timed out.
	Location string
	// Reason says what failed: "[/srv/setup.sh] exited with code 2",
	// "timed out after 10m0s running [...]".
	Reason string
	// Output is the last lines of the command's combined output
	// (ProvisionTailLines, ProvisionTailBytes), control characters
	// escaped; "" when there was none.
	Output string
}

func (e *ProvisionError) Error() string {
	msg := "provision of " + e.Instance + onMember(e.Location) + ": " + e.Reason
	if e.Output != "" {
		msg += "; last output:\n" + e.Output
	}
	return msg
}

// onMember is " on member NAME" for an instance LXD places on a cluster
// member, "" on a single host (where LXD says "none").
func onMember(location string) string {
	if location == "" || location == "none" {
		return ""
	}
	return " on member " + spec.EscapeText(location)
}

// Permanent is false: see ProvisionError.
func (e *ProvisionError) Permanent() bool { return false }

// Provision copies p's files into the running instance, then runs p's
// command in it (through /bin/sh, which merges its stderr into its
// stdout), all within p.Timeout (spec.DefaultProvisionTimeout when
// unset). It refuses an instance that is not owned by s.Owner. A failure
// in the instance is a *ProvisionError with the tail of the command's
// output; a failure to reach LXD is returned as it is (it may clear).
func (s *System) Provision(ctx context.Context, name string, p *spec.Provision) error {
	if p == nil {
		return nil
	}
	inst, _, err := s.LXD.GetInstance(ctx, name)
	if err != nil {
		return err
	}
	// The plan was made a while ago: re-check that the instance is ours.
	if inst.Config[ownership.KeyOwner] != s.Owner {
		return fmt.Errorf("%s is not owned by %q any more; not provisioning it", name, s.Owner)
	}
	where := name + onMember(inst.Location)
	if !inst.Running() {
		return fmt.Errorf("provision of %s: the instance is %s, not running", where, inst.Status)
	}
	clk := clock.Or(s.Clock)
	timeout := p.Timeout.D()
	if timeout <= 0 {
		timeout = spec.DefaultProvisionTimeout.D()
	}
	start := clk.Now()
	pctx, cancel := clock.WithTimeout(ctx, clk, timeout)
	defer cancel()
	// timedOut tells our timeout from the caller giving up, which is not
	// the provision's fault.
	timedOut := func() bool { return ctx.Err() == nil && pctx.Err() != nil }

	for _, f := range p.Files {
		opts, err := fileOptions(f)
		if err != nil {
			return &ProvisionError{Instance: name, Location: inst.Location, Reason: fmt.Sprintf("file %s: %v", spec.EscapeText(f.Path), err)}
		}
		if err := s.LXD.PushFile(pctx, name, f.Path, f.Content, opts); err != nil {
			if timedOut() {
				return &ProvisionError{Instance: name, Location: inst.Location, Reason: fmt.Sprintf("timed out after %s copying %s", timeout, spec.EscapeText(f.Path))}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return s.blameLXD(ctx, fmt.Errorf("provision of %s: copy %s to %s: %w", where, spec.EscapeText(f.Source), spec.EscapeText(f.Path), err))
		}
	}
	if len(p.Run) == 0 {
		s.Logger.Info("provisioned", "instance", name, "files", len(p.Files), "took", clk.Since(start).Round(time.Millisecond))
		return nil
	}
	// LXD carries stdout and stderr on two streams whose order against
	// each other is lost; merged in the instance, the error a script
	// prints last is last. exec keeps the command the process LXD kills
	// on a timeout.
	argv := append([]string{"/bin/sh", "-c", `exec "$@" 2>&1`, "berth-provision"}, p.Run...)
	res, err := s.LXD.ExecOutput(pctx, name, lxd.ExecRequest{Command: argv}, provisionKeep)
	cmd := commandText(p.Run)
	tail := outputTail(res.Output, res.Truncated)
	var oe *lxd.OperationError
	switch {
	case timedOut():
		return &ProvisionError{Instance: name, Location: inst.Location, Reason: fmt.Sprintf("timed out after %s running %s", timeout, cmd), Output: tail}
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &oe):
		// LXD fails the operation instead of reporting exit codes 126
		// and 127 ("Command not executable", "Command not found"),
		// whether the shell or the command itself exited so; the output
		// says which.
		return &ProvisionError{Instance: name, Location: inst.Location, Reason: fmt.Sprintf("%s failed: %s", cmd, spec.EscapeText(oe.Err)), Output: tail}
	case err != nil:
		return s.blameLXD(ctx, fmt.Errorf("provision of %s: running %s: %w", where, cmd, err))
	case res.ExitCode != 0:
		return &ProvisionError{Instance: name, Location: inst.Location, Reason: fmt.Sprintf("%s exited with code %d", cmd, res.ExitCode), Output: tail}
	}
	s.Logger.Info("provisioned", "instance", name, "files", len(p.Files), "command", cmd, "took", clk.Since(start).Round(time.Millisecond))
	return nil
}

// fileOptions reads a provision file's mode ("0644", the default) and
// owner ("uid:gid", default "0:0"). Only permission bits can be set
// through LXD's file API: a setuid, setgid or sticky bit is refused
// rather than silently dropped.
func fileOptions(f spec.ProvisionFile) (lxd.FileOptions, error) {
	opts := lxd.FileOptions{Mode: 0o644}
	if f.Mode != "" {
		m, err := strconv.ParseUint(f.Mode, 8, 32)
		if err != nil || m > 0o777 {
			return opts, fmt.Errorf("mode %q: want octal permission bits, 0000 to 0777", spec.EscapeText(f.Mode))
		}
		opts.Mode = fs.FileMode(m)
	}
	if f.Owner != "" {
		u, g, ok := strings.Cut(f.Owner, ":")
		uid, uerr := strconv.ParseUint(u, 10, 32)
		gid, gerr := strconv.ParseUint(g, 10, 32)
		if !ok || uerr != nil || gerr != nil {
			return opts, fmt.Errorf("owner %q: want numeric uid:gid", spec.EscapeText(f.Owner))
		}
		opts.UID, opts.GID = int(uid), int(gid)
	}
	return opts, nil
}

// commandText is the command as the spec wrote it, for messages:
// ["/srv/setup.sh" "--check"] -> [/srv/setup.sh --check].
func commandText(argv []string) string {
	text := "[" + strings.Join(argv, " ") + "]"
	if len(text) > 200 {
		text = strings.ToValidUTF8(text[:197], "") + "...]"
	}
	return spec.EscapeText(text)
}

// outputTail is the last ProvisionTailLines lines of out, at most
// ProvisionTailBytes, each line escaped so that control characters in
// the output cannot mess up a terminal or a log. A carriage return keeps
// what a terminal would show: the text after it. When out was truncated,
// its first, partial line is dropped.
func outputTail(out []byte, truncated bool) string {
	s := string(out)
	if truncated {
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:]
		}
	}
	s = strings.TrimRight(s, "\n")
	if strings.TrimSpace(s) == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > ProvisionTailLines {
		lines = lines[len(lines)-ProvisionTailLines:]
	}
	for i, l := range lines {
		l = strings.TrimSuffix(l, "\r")
		if j := strings.LastIndexByte(l, '\r'); j >= 0 {
			l = l[j+1:]
		}
		lines[i] = spec.EscapeText(l)
	}
	// Drop whole lines from the front while too long; a last line that
	// alone is too long keeps its end.
	size := len(lines) - 1
	for _, l := range lines {
		size += len(l)
	}
	for len(lines) > 1 && size > ProvisionTailBytes {
		size -= len(lines[0]) + 1
		lines = lines[1:]
	}
	if size > ProvisionTailBytes {
		l := lines[0]
		cut := len(l) - (ProvisionTailBytes - len("..."))
		for cut < len(l) && !utf8.RuneStart(l[cut]) {
			cut++
		}
		lines[0] = "..." + l[cut:]
	}
	return strings.Join(lines, "\n")
}
