package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/source"
	"github.com/berth-gitops/berth/spec"
)

type specFlags struct {
	dir             string
	requireDigest   bool
	allowPrivileged bool
}

func (f *specFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.dir, "dir", "", "folder of the specs inside the repository or PATH")
	cmd.Flags().BoolVar(&f.requireDigest, "require-digest", false,
		"refuse container images that are not pinned to a digest (@sha256:...)")
	cmd.Flags().BoolVar(&f.allowPrivileged, "allow-privileged", false,
		`allow security.privileged: "true" in system config`)
}

func (f *specFlags) options() spec.Options {
	return spec.Options{RequireDigest: f.requireDigest, AllowPrivileged: f.allowPrivileged}
}

func newValidateCmd() *cobra.Command {
	var (
		sf     specFlags
		rev    string
		output string
	)
	cmd := &cobra.Command{
		Use:   "validate [PATH]",
		Short: "Check app specs and report every problem at once",
		Long: `Validate checks every *.yaml / *.yml file under PATH (default ".") and reports
all problems in one pass, one per line:

  FILE:LINE:COL: FIELD.PATH: message

PATH is a spec folder, a Git work tree, or a repository URL. Files are read from
disk, so uncommitted edits are checked; with --rev (or a URL) they are read from
that Git revision instead. Exit status: 0 valid, 1 invalid.`,
		Example: `  berth validate
  berth validate samples
  berth validate --dir apps --rev origin/main .
  berth validate --require-digest https://git.example.org/ops/apps.git`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			location := "."
			if len(args) == 1 {
				location = args[0]
			}
			l, err := loadForValidate(cmd, location, rev, sf)
			if err != nil {
				return err
			}
			if output == "json" {
				return writeValidationJSON(cmd.OutOrStdout(), l)
			}
			return writeValidationText(cmd, l)
		},
	}
	sf.register(cmd)
	cmd.Flags().StringVar(&rev, "rev", "", "read the specs from this Git revision instead of the files on disk")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// loadForValidate reads the specs at location: from disk (uncommitted
// edits included), or from a Git revision with --rev or for a URL.
func loadForValidate(cmd *cobra.Command, location, rev string, sf specFlags) (*loadedSpecs, error) {
	if rev == "" && !source.IsRemote(location) {
		opts := sf.options()
		// The work tree may hold provision files no commit has: they
		// pass here and fail in plan and the daemon, so say so.
		tracked, err := source.ReadTracked(repoRoot(location))
		switch {
		case err != nil:
			fmt.Fprintf(cmd.ErrOrStderr(), "warning: cannot tell which provision files Git tracks, so none is checked: %s\n", safeText(err.Error()))
		case tracked != nil:
			opts.NotInGit = tracked.NotInGit
		}
		return loadFromDisk(cmd.Context(), location, sf.dir, opts)
	}
	repo, err := source.Open(cmd.Context(), location)
	if err != nil {
		return nil, err
	}
	return loadFromGit(cmd.Context(), repo, rev, sf.dir, sf.options())
}

// writeValidationJSON reports the validation as one JSON object; invalid
// specs exit 1.
func writeValidationJSON(out io.Writer, l *loadedSpecs) error {
	diags := l.Diagnostics()
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(map[string]any{
		"valid":       len(diags) == 0,
		"revision":    l.Revision(),
		"apps":        appNames(l),
		"diagnostics": diagnosticsJSON(diags),
		"warnings":    diagnosticsJSON(l.warnings()),
	}); err != nil {
		return err
	}
	if len(diags) > 0 {
		return silentExit(exitError)
	}
	return nil
}

// writeValidationText reports each problem on a line of stdout and their
// count on stderr (exit 1), or the valid apps. Warnings, which leave the
// specs valid, go to stderr, so stdout stays one line per problem.
func writeValidationText(cmd *cobra.Command, l *loadedSpecs) error {
	out := cmd.OutOrStdout()
	for _, w := range l.warnings() {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+safeText(w.String()))
	}
	if diags := l.Diagnostics(); len(diags) > 0 {
		for _, d := range diags {
			fmt.Fprintln(out, safeText(d.String()))
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "%d problem%s found\n", len(diags), plural(len(diags)))
		return silentExit(exitError)
	}
	names := appNames(l)
	fmt.Fprintf(out, "ok: %d app%s valid", len(names), plural(len(names)))
	if len(names) > 0 {
		fmt.Fprintf(out, " (%s)", safeText(strings.Join(names, ", ")))
	}
	fmt.Fprintln(out)
	return nil
}

// warnings are the loader's warnings with user-facing file paths, made
// as Diagnostics makes the problems'.
func (l *loadedSpecs) warnings() spec.Diagnostics {
	w := loadedSpecs{Result: &spec.Result{Diagnostics: l.Result.Warnings}, prefix: l.prefix}
	return w.Diagnostics()
}

func appNames(l *loadedSpecs) []string {
	names := make([]string, 0, len(l.Result.Apps))
	for _, a := range l.Result.Apps {
		names = append(names, a.Metadata.Name)
	}
	return names
}

type diagnosticJSON struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

func diagnosticsJSON(ds spec.Diagnostics) []diagnosticJSON {
	out := make([]diagnosticJSON, 0, len(ds))
	for _, d := range ds {
		out = append(out, diagnosticJSON{File: d.File, Line: d.Line, Column: d.Col, Path: d.Path, Message: d.Message})
	}
	return out
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
