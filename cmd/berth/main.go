// Command berth is a GitOps reconciler for LXD: it reads app specs from a
// Git repository, looks at what runs in LXD and Docker, plans, and converges.
package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/berth-gitops/berth/ownership"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/clock"
)

// version is set at build time (-ldflags -X main.version=...).
var version = "dev"

// Exit codes. plan and diff follow `terraform plan -detailed-exitcode`:
// 0 nothing to do, 2 changes, 1 error; plan adds 3 for a plan that cannot
// converge. No crash ever exits 2, which a CI gate would read as "changes".
const (
	exitOK      = 0
	exitError   = 1
	exitChanges = 2
	// exitBlocked: plan found something that keeps the live state from
	// converging (a conflict, a held app, pruning skipped), with or without
	// steps to take.
	exitBlocked = 3
	// exitCrash: berth panicked (a bug); the panic and its stack are on
	// stderr. It is EX_SOFTWARE of sysexits.h.
	exitCrash = 70
)

// exitCodeError carries a non-error exit code (2: changes present) or an
// error whose message was already printed, out of cobra's RunE.
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit %d", e.code)
}

// silentExit ends the command with code and prints nothing more.
func silentExit(code int) error { return &exitCodeError{code: code} }

func main() {
	crashWithoutExit2()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the CLI and returns the process exit code; tests call it
// directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return execute(ctx, newRootCmd(), args, stdout, stderr)
}

// execute runs root with args. A panic anywhere in the command (on this
// goroutine) is reported with its stack and ends with exitCrash.
func execute(ctx context.Context, root *cobra.Command, args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		if p := recover(); p != nil {
			code = reportCrash(stderr, p, debug.Stack())
		}
	}()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ec *exitCodeError
	if errors.As(err, &ec) {
		if ec.err != nil {
			fmt.Fprintln(stderr, "berth:", safeText(ec.err.Error()))
		}
		return ec.code
	}
	fmt.Fprintln(stderr, "berth:", safeText(err.Error()))
	return exitError
}

// globalOptions are the flags every command shares.
type globalOptions struct {
	// countRequests prints the LXD request counts when a command ends:
	// how the tests check that a no-op apply writes nothing.
	countRequests bool
	owner         string
	logLevel      string
	logFormat     string
	lxd           lxdOptions
	// ageKeyFiles open SOPS-encrypted secrets (--age-key-file).
	ageKeyFiles []string
	// clock is the one clock of the command: the engine, the loop, the
	// executor, the lease and the watch all decide by it.
	clock clock.Clock
}

// logger logs to stderr at the chosen level: text on a terminal, JSON
// otherwise, so a service's journal gets structured records.
func (g *globalOptions) logger(cmd *cobra.Command) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(g.logLevel)) // checked by logLevelFlag
	opts := &slog.HandlerOptions{Level: lvl}
	w := cmd.ErrOrStderr()
	if g.logFormat == "text" || g.logFormat != "json" && isTerminal(w) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// annotationLogLevel is a command's default log level when neither
// --log-level nor $BERTH_LOG_LEVEL is given.
const annotationLogLevel = "berth.log-level"

func newRootCmd() *cobra.Command {
	g := &globalOptions{clock: clock.Real}
	root := &cobra.Command{
		Use:   "berth",
		Short: "GitOps for LXD: Git holds the app specs, berth makes LXD match them",
		Long: `berth reads app specs (YAML) from a Git repository, looks at what really runs
in LXD and Docker, computes a plan and converges. Each app runs as N replicas;
a replica is one LXD system container housing exactly one Docker app
container on the instance's network. Rolling back is "git revert".`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.PersistentFlags().Var(newCheckedString(&g.owner, "berth", ownership.CheckOwner), "owner",
		"owner id written to user.berth.owner; instances of other owners are never touched")
	g.logLevel = "warn"
	root.PersistentFlags().Var(logLevelFlag{&g.logLevel}, "log-level",
		`log level: debug, info, warn, error; berth run defaults to info`)
	g.logFormat = "auto"
	root.PersistentFlags().Var(choiceFlag{&g.logFormat, []string{"auto", "text", "json"}}, "log-format",
		"log format: text, json, or auto (text on a terminal, JSON otherwise)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		// Flags check their values when set (checkedString): a bad
		// $BERTH_* value is refused here, before any work, naming it.
		if err := applyEnv(cmd); err != nil {
			return err
		}
		// A command may log more by default: a daemon that prints nothing
		// in normal operation cannot be watched.
		if lvl := cmd.Annotations[annotationLogLevel]; lvl != "" && !flagOrEnvSet(cmd, "log-level") {
			g.logLevel = lvl
		}
		return nil
	}
	g.lxd.register(root)
	registerAgeKeyFile(root, &g.ageKeyFiles)
	documentEnv(root)
	root.PersistentFlags().BoolVar(&g.countRequests, "count-requests", false, "print LXD request counts (total, writes, execs) to stderr at the end")
	_ = root.PersistentFlags().MarkHidden("count-requests")
	root.AddGroup(
		&cobra.Group{ID: "specs", Title: "Working with specs (no LXD needed):"},
		&cobra.Group{ID: "live", Title: "Planning and converging:"},
	)
	for _, c := range []*cobra.Command{newValidateCmd(), newDiffCmd(), newSchemaCmd(), newSecretsCmd(g)} {
		c.GroupID = "specs"
		root.AddCommand(c)
	}
	runCmd := newRunCmd(g)
	runCmd.Annotations = map[string]string{annotationLogLevel: "info"}
	for _, c := range []*cobra.Command{newPlanCmd(g), newApplyCmd(g), newStatusCmd(g), newObserveCmd(g), newVolumesCmd(g), newVolumeCmd(g), runCmd, newEndpointsCmd(), newRollbackCmd()} {
		c.GroupID = "live"
		root.AddCommand(c)
	}
	root.AddCommand(newVersionCmd(), newImageCmd(g))
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print berth's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "berth %s\n", version)
			return nil
		},
	}
}

// checkOutput validates an -o flag value.
func checkOutput(o string) error {
	switch o {
	case "text", "json":
		return nil
	}
	return fmt.Errorf("unknown output format %q (want text or json)", o)
}

// isTerminal tells whether w is a terminal (for prompts, colour-free
// progress bars and log format).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
