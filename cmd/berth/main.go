// Command berth is a GitOps reconciler for LXD: it reads app specs from a
// Git repository, looks at what runs in LXD and Docker, plans, and converges.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time (-ldflags -X main.version=...).
var version = "dev"

// Exit codes shared by plan and diff, like `terraform plan -detailed-exitcode`:
// 0 nothing to do, 2 changes, 1 error.
const (
	exitOK      = 0
	exitError   = 1
	exitChanges = 2
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the CLI and returns the process exit code; tests call it
// directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
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
			fmt.Fprintln(stderr, "berth:", ec.err)
		}
		return ec.code
	}
	fmt.Fprintln(stderr, "berth:", err)
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
}

// logger logs to stderr at the chosen level: text on a terminal, JSON
// otherwise, so a service's journal gets structured records.
func (g *globalOptions) logger(cmd *cobra.Command) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		lvl = slog.LevelWarn
	}
	opts := &slog.HandlerOptions{Level: lvl}
	w := cmd.ErrOrStderr()
	if g.logFormat == "text" || g.logFormat != "json" && isTerminal(w) {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func newRootCmd() *cobra.Command {
	g := &globalOptions{}
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
	root.PersistentFlags().StringVar(&g.owner, "owner", "berth",
		"owner id written to user.berth.owner; instances of other owners are never touched")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "auto", "log format: text, json, or auto (text on a terminal, JSON otherwise)")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		switch g.logFormat {
		case "auto", "text", "json":
			return nil
		}
		return fmt.Errorf("--log-format %q: want auto, text or json", g.logFormat)
	}
	g.lxd.register(root)
	root.PersistentFlags().BoolVar(&g.countRequests, "count-requests", false, "print LXD request counts (total, writes, execs) to stderr at the end")
	_ = root.PersistentFlags().MarkHidden("count-requests")
	root.AddGroup(
		&cobra.Group{ID: "specs", Title: "Working with specs (no LXD needed):"},
		&cobra.Group{ID: "live", Title: "Planning and converging:"},
	)
	for _, c := range []*cobra.Command{newValidateCmd(), newDiffCmd(), newSchemaCmd()} {
		c.GroupID = "specs"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newPlanCmd(g), newApplyCmd(g), newStatusCmd(g), newObserveCmd(g), newRunCmd(g), newRollbackCmd()} {
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
