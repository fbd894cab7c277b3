package live

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path"
	"strconv"
	"strings"
	"sync"
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
// command in it (see provisionScript), all within p.Timeout
// (spec.DefaultProvisionTimeout when unset). It refuses an instance that
// is not owned by s.Owner. A failure in the instance is a
// *ProvisionError with the tail of the command's output; a failure to
// reach LXD is returned as it is (it may clear).
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
	fail := func(reason, output string) error {
		return &ProvisionError{Instance: name, Location: inst.Location, Reason: reason, Output: output}
	}
	if inst.Config[ownership.KeyProvisionedAt] == "" {
		if err := s.waitFirstBoot(pctx, name); err != nil {
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case pctx.Err() != nil:
				return fail(fmt.Sprintf("timed out after %s waiting for the instance's first boot (cloud-init)", timeout), "")
			}
			return s.blameLXD(ctx, firstBootError(where, err))
		}
	}
	if fe := s.pushFiles(ctx, pctx, name, p.Files); fe != nil {
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case pctx.Err() != nil:
			return fail(fmt.Sprintf("timed out after %s copying %s", timeout, spec.EscapeText(fe.file.Path)), "")
		case fe.inInstance:
			return fail(fmt.Sprintf("file %s: %v", spec.EscapeText(fe.file.Path), fe.err), fe.output)
		}
		return s.blameLXD(ctx, fmt.Errorf("provision of %s: copy %s to %s: %w", where, spec.EscapeText(fe.file.Source), spec.EscapeText(fe.file.Path), fe.err))
	}
	if len(p.Run) == 0 {
		s.Logger.Info("provisioned", "instance", name, "files", len(p.Files), "took", clk.Since(start).Round(time.Millisecond))
		return nil
	}
	run := s.runProvision(ctx, pctx, name, p.Run)
	cmd := commandText(p.Run)
	tail := outputTail(run.res.Output, run.res.Truncated)
	var oe *lxd.OperationError
	switch {
	case run.held:
		// The command is done; a process it left behind kept its output
		// open, which keeps LXD's exec from ending.
		return fail(fmt.Sprintf("%s exited with code %d, but a process it left in the background kept its output open (%s); "+
			"start a daemon with its output redirected (CMD </dev/null >/var/log/CMD.log 2>&1 &) or through the init system",
			cmd, run.exit, run.stopped), tail)
	case ctx.Err() == nil && pctx.Err() != nil:
		return fail(fmt.Sprintf("timed out after %s running %s (%s)", timeout, cmd, run.stopped), tail)
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(run.err, &oe):
		// LXD fails the operation instead of reporting exit codes 126
		// and 127 ("Command not executable", "Command not found"),
		// whether the shell or the command itself exited so; the output
		// says which.
		return fail(fmt.Sprintf("%s failed: %s", cmd, spec.EscapeText(oe.Err)), tail)
	case run.err != nil:
		return s.blameLXD(ctx, fmt.Errorf("provision of %s: running %s: %w", where, cmd, run.err))
	case run.res.ExitCode != 0:
		return fail(fmt.Sprintf("%s exited with code %d%s", cmd, run.res.ExitCode, triesNote(run.res.Attempts)), tail)
	}
	s.Logger.Info("provisioned", "instance", name, "files", len(p.Files), "command", cmd, "took", clk.Since(start).Round(time.Millisecond), "exec attempts", run.res.Attempts)
	return nil
}

// triesNote says, for a failed command, that LXD started it only on a
// later try: the earlier ones it confirmed it never ran, which is worth
// knowing when the command fails as if it had run before.
func triesNote(attempts int) string {
	if attempts <= 1 {
		return ""
	}
	return fmt.Sprintf(" (on try %d: LXD did not start the earlier ones)", attempts)
}

// provisionFuncs are the shell functions of provisionScript and
// provisionStop. The pid file holds "PID START BOOT TRY STATE [CODE]":
// the provision's process group (its first process's pid), that
// process's start time and init's, both from /proc/PID/stat, the try
// (one per run of a provision, the same for LXD's retries of its exec),
// "running", or "done" and the command's exit code once it has exited. A group is killed only when it is the one recorded:
// init's start time tells a later boot of the instance (whose pids start
// over, and whose session leaders could have the same numbers), and a
// leader that still runs must have the recorded start time. While any
// process of the group lives, the kernel does not give its number to
// another process, so a group without its leader is still the same one.
const provisionFuncs = `f=/run/berth/provision.pid
starttime() {
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
	s=${s##*) }
	set -- $s
	echo "${20}"
}
stopgroup() {
	[ -f "$f" ] || return 0
	read -r p ps boot _ state _ <"$f"
	case $p in "" | *[!0-9]*) rm -f "$f"; return 0 ;; esac
	[ "$state" = done ] && [ "$1" != all ] && return 0
	rm -f "$f"
	[ "$(starttime 1)" = "$boot" ] || return 0
	[ ! -e "/proc/$p" ] || [ "$(starttime "$p")" = "$ps" ] || return 0
	if kill -0 -"$p" 2>/dev/null; then
		echo "berth: stopping the processes of an earlier provision (process group $p)"
		kill -9 -"$p"
	elif [ -e "/proc/$p" ]; then
		kill -9 "$p"
	fi
	i=0
	while { kill -0 -"$p" || kill -0 "$p"; } 2>/dev/null && [ "$i" -lt 50 ]; do
		sleep 0.1 2>/dev/null || sleep 1
		i=$((i + 1))
	done
}
rejoin() {
	[ -f "$f" ] || return 1
	read -r p ps boot t state code <"$f"
	[ "$t" = "$1" ] && [ "$(starttime 1)" = "$boot" ] || return 1
	echo "berth: an earlier try of this provision started the command although LXD reported it had not; waiting for that one instead of running it again"
	while [ "$state" != done ] && [ -e "/proc/$p" ] && [ "$(starttime "$p")" = "$ps" ]; do
		sleep 0.2 2>/dev/null || sleep 1
		read -r p ps boot t state code <"$f"
	done
	read -r p ps boot t state code <"$f"
	if [ "$state" != done ]; then
		echo "berth: that try ended without an exit code (killed?)"
		code=1
	fi
	echo "berth-provision-exit $code" >&3
	exit "$code"
}
`

// provisionScript runs a provision's command ("$@"), through /bin/sh:
//   - It first stops what is left of an earlier attempt that did not
//     finish (berth killed, LXD restarted, a timeout whose cleanup failed):
//     a stuck apt or dpkg would block every later attempt.
//   - The command runs in a session of its own (setsid, when the image
//     has it; LXD runs an exec in a process group outside the
//     instance's), recorded in the pid file, so that a timeout kills it
//     and every process it started, not only the command.
//   - Its stderr is merged into its stdout in the instance: LXD carries
//     the two on streams whose order against each other is lost, and
//     merged, the error a script prints last is last.
//   - When the command exits, the script writes "berth-provision-exit
//     CODE" on its own stderr, which the command never has. LXD ends the
//     exec only once every copy of its stdout is closed, so this is how
//     berth tells a command that exited and left a process holding its
//     output from one still running.
//   - The session's shell records the try and, once the command exits,
//     its exit code. When LXD reports that an exec never ran and berth
//     tries it again, but it did run (seen on a cluster member, for a
//     command that starts a daemon), the new try finds its own try in the
//     pid file: it waits for that command and reports its exit code,
//     instead of running the command a second time.
//
// Its arguments are provisionFuncs, for the inner shell too, and the try.
const provisionScript = `funcs=$1
try=$2
shift 2
eval "$funcs"
exec 3>&2 2>&1
rejoin "$try"
stopgroup earlier
mkdir -p /run/berth 2>/dev/null
run='echo "$$ $(starttime $$) $(starttime 1) '"$try"' running" >"$f" 2>/dev/null
"$@"
c=$?
echo "$$ $(starttime $$) $(starttime 1) '"$try"' done $c" >"$f" 2>/dev/null
exit $c'
if command -v setsid >/dev/null 2>&1; then
	setsid /bin/sh -c "$(printf '%s\n' "$funcs" "$run")" berth-provision "$@" 3>&-
else
	/bin/sh -c "$(printf '%s\n' "$funcs" "$run")" berth-provision "$@" 3>&-
fi
code=$?
echo "berth-provision-exit $code" >&3
exit "$code"
`

// provisionStop stops the processes of the last provision, finished or
// not: after a timeout, or once its command exited but left a process
// that holds its output.
const provisionStop = provisionFuncs + `stopgroup all
`

// provisionGrace is how long a provision whose command has exited may
// take to end LXD's exec: its last output is in flight. Longer, and a
// process it left behind holds the output open.
const provisionGrace = 3 * time.Second

// provisionStopTimeout bounds the exec that stops a provision's
// processes.
const provisionStopTimeout = 30 * time.Second

// provisionRun is how a provision's command ended.
type provisionRun struct {
	res lxd.ExecResult
	err error
	// held: the command exited with exit, but LXD's exec went on past
	// provisionGrace, because a process it left holds its output.
	held bool
	exit int
	// stopped says what became of the provision's processes when it did
	// not end by itself.
	stopped string
}

// runProvision runs argv in the instance through provisionScript, within
// pctx. When it did not end by itself (a timeout, a process holding its
// output, ctx cancelled) its processes are stopped.
func (s *System) runProvision(ctx, pctx context.Context, name string, argv []string) provisionRun {
	clk := clock.Or(s.Clock)
	exited := &exitMarker{seen: make(chan struct{})}
	req := lxd.ExecRequest{
		Command: append([]string{"/bin/sh", "-c", provisionScript, "berth-provision", provisionFuncs, newTry()}, argv...),
		Stderr:  exited,
	}
	ectx, cancelExec := context.WithCancel(pctx)
	defer cancelExec()
	done := make(chan provisionRun, 1)
	go func() {
		res, err := s.LXD.ExecOutput(ectx, name, req, provisionKeep)
		done <- provisionRun{res: res, err: err}
	}()
	var run provisionRun
	select {
	case run = <-done:
	case <-exited.seen:
		t := clk.NewTimer(provisionGrace)
		select {
		case run = <-done:
		case <-t.C():
			cancelExec()
			run = <-done
		}
		t.Stop()
	}
	if run.err == nil || ectx.Err() == nil || errors.As(run.err, new(*lxd.OperationError)) {
		// It ended by itself, or LXD failed: a broken connection leaves
		// the provision to run on, and the next attempt stops it.
		return run
	}
	if code, ok := exited.code(); ok && ctx.Err() == nil {
		// Ended by the timeout or the grace, but the command had exited.
		run.held, run.exit = true, code
	}
	// LXD kills the exec's own process when its websockets close; the
	// session it started lives on.
	run.stopped = s.stopProvision(ctx, name)
	return run
}

// newTry names one run of a provision, for provisionScript: the same for
// every exec attempt of that run, another for the next run.
func newTry() string { return fmt.Sprintf("%016x", rand.Uint64()) }

// stopProvision kills the last provision's processes in the instance, and
// says so for messages.
func (s *System) stopProvision(ctx context.Context, name string) string {
	sctx, cancel := clock.WithTimeout(context.WithoutCancel(ctx), clock.Or(s.Clock), provisionStopTimeout)
	defer cancel()
	res, err := s.LXD.ExecOutput(sctx, name, lxd.ExecRequest{Command: []string{"/bin/sh", "-c", provisionStop}}, 4<<10)
	if err == nil && res.ExitCode != 0 {
		err = fmt.Errorf("exit code %d: %s", res.ExitCode, outputTail(res.Output, res.Truncated))
	}
	if err != nil {
		s.Logger.Warn("could not stop the processes of a provision", "instance", name, "err", err)
		return fmt.Sprintf("its processes may still run: stopping them failed: %v", err)
	}
	return "it and the processes it started were stopped"
}

// exitMarker watches provisionScript's stderr for the line it writes once
// the command has exited.
type exitMarker struct {
	mu   sync.Mutex
	buf  []byte
	exit int
	ok   bool
	seen chan struct{} // closed once the line came
}

const exitMarkerPrefix = "berth-provision-exit "

func (m *exitMarker) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ok {
		return len(p), nil
	}
	// The script writes nothing else there; a bound keeps a stray writer
	// from growing it.
	m.buf = append(m.buf, p...)
	if len(m.buf) > 256 {
		m.buf = m.buf[len(m.buf)-256:]
	}
	if i := bytes.LastIndex(m.buf, []byte(exitMarkerPrefix)); i >= 0 {
		if line, _, ok := bytes.Cut(m.buf[i+len(exitMarkerPrefix):], []byte("\n")); ok {
			if code, err := strconv.Atoi(string(line)); err == nil {
				m.exit, m.ok = code, true
				close(m.seen)
			}
		}
	}
	return len(p), nil
}

// code is the command's exit code, once the line came.
func (m *exitMarker) code() (int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.exit, m.ok
}

// fileError is a provision file that could not be written.
type fileError struct {
	file spec.ProvisionFile
	err  error
	// inInstance: the instance refused it (a bad mode, the path a
	// directory, the rename failing), rather than LXD failing.
	inInstance bool
	output     string
}

func (e *fileError) Error() string { return e.file.Path + ": " + e.err.Error() }

// pushFiles writes the provision's files, each whole or not at all: LXD's
// file API writes in place, so a push that fails half way (a full pool)
// would leave a file that is neither the old one nor the new. Each is
// pushed to a temporary name in its directory, with its owner and mode,
// then all are renamed into place by one exec (LXD's file API has no
// rename), which is atomic within a directory. When a push fails, the
// temporary files are deleted and no destination was touched.
func (s *System) pushFiles(ctx, pctx context.Context, name string, files []spec.ProvisionFile) *fileError {
	if len(files) == 0 {
		return nil
	}
	var pushed []string
	cleanup := func() {
		dctx, cancel := clock.WithTimeout(context.WithoutCancel(ctx), clock.Or(s.Clock), provisionStopTimeout)
		defer cancel()
		for _, tmp := range pushed {
			_ = s.LXD.DeleteFile(dctx, name, tmp)
		}
	}
	// Argument pairs for provisionRename: temporary name, destination.
	args := []string{"/bin/sh", "-c", provisionRename, "berth-provision-files"}
	for _, f := range files {
		if f.Secret {
			// Written whole, straight onto its tmpfs: never pushed to a
			// temporary name on a disk.
			if err := s.pushSecretFile(pctx, name, f); err != nil {
				cleanup()
				var we *SecretWriteError
				return &fileError{file: f, err: err, inInstance: errors.As(err, &we)}
			}
			continue
		}
		opts, err := fileOptions(f)
		if err != nil {
			cleanup()
			return &fileError{file: f, err: err, inInstance: true}
		}
		tmp := tempPath(f.Path)
		if err := s.LXD.PushFile(pctx, name, tmp, f.Content, opts); err != nil {
			pushed = append(pushed, tmp) // a partial one may be there
			cleanup()
			return &fileError{file: f, err: err}
		}
		pushed = append(pushed, tmp)
		args = append(args, tmp, f.Path)
	}
	res, err := s.LXD.ExecOutput(pctx, name, lxd.ExecRequest{Command: args}, 4<<10)
	if err == nil && res.ExitCode == 0 {
		return nil
	}
	cleanup()
	fe := &fileError{file: files[0], err: err}
	var oe *lxd.OperationError
	switch {
	case errors.As(err, &oe):
		fe.err, fe.inInstance = fmt.Errorf("could not move it into place: %s", spec.EscapeText(oe.Err)), true
		fe.output = outputTail(res.Output, res.Truncated)
	case err == nil:
		// The script names the destination it failed on, and why.
		line, _, _ := bytes.Cut(res.Output, []byte("\n"))
		dst, why, _ := bytes.Cut(line, []byte("\t"))
		fe.err, fe.inInstance = fmt.Errorf("could not move it into place: %s", spec.EscapeText(string(why))), true
		for _, f := range files {
			if f.Path == string(dst) {
				fe.file = f
			}
		}
	}
	return fe
}

// provisionRename renames each pair of arguments, temporary name then
// destination, refusing a destination that is a directory (mv would move
// the file into it). A failure prints "DESTINATION<tab>why".
const provisionRename = `while [ "$#" -ge 2 ]; do
	if [ -d "$2" ] && [ ! -L "$2" ]; then
		printf '%s\tis a directory\n' "$2"
		exit 1
	fi
	if ! out=$(mv -f "$1" "$2" 2>&1); then
		printf '%s\t%s\n' "$2" "$out"
		exit 1
	fi
	shift 2
done
`

// tempPath is where a provision file is pushed before it is renamed to p:
// in the same directory (a rename within it is atomic), hidden, short
// whatever p's name, and the same for every attempt, so a leftover of an
// attempt that died is overwritten rather than piled up.
func tempPath(p string) string {
	sum := sha256.Sum256([]byte(p))
	return path.Join(path.Dir(p), ".berth-new-"+hex.EncodeToString(sum[:6]))
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
