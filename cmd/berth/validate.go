package main

import (
	"encoding/json"
	"fmt"
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
			var (
				l   *loadedSpecs
				err error
			)
			if rev != "" || source.IsRemote(location) {
				repo, oerr := source.Open(cmd.Context(), location)
				if oerr != nil {
					return oerr
				}
				l, err = loadFromGit(cmd.Context(), repo, rev, sf.dir, sf.options())
			} else {
				l, err = loadFromDisk(cmd.Context(), location, sf.dir, sf.options())
			}
			if err != nil {
				return err
			}
			diags := l.Diagnostics()
			out := cmd.OutOrStdout()
			if output == "json" {
				names := make([]string, 0, len(l.Result.Apps))
				for _, a := range l.Result.Apps {
					names = append(names, a.Metadata.Name)
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(map[string]any{
					"valid":       len(diags) == 0,
					"revision":    l.Revision(),
					"apps":        names,
					"diagnostics": diagnosticsJSON(diags),
				}); err != nil {
					return err
				}
			} else {
				for _, d := range diags {
					fmt.Fprintln(out, safeText(d.String()))
				}
			}
			if len(diags) > 0 {
				if output == "text" {
					fmt.Fprintf(cmd.ErrOrStderr(), "%d problem%s found\n", len(diags), plural(len(diags)))
				}
				return silentExit(exitError)
			}
			if output == "text" {
				names := make([]string, 0, len(l.Result.Apps))
				for _, a := range l.Result.Apps {
					names = append(names, a.Metadata.Name)
				}
				fmt.Fprintf(out, "ok: %d app%s valid", len(names), plural(len(names)))
				if len(names) > 0 {
					fmt.Fprintf(out, " (%s)", safeText(strings.Join(names, ", ")))
				}
				fmt.Fprintln(out)
			}
			return nil
		},
	}
	sf.register(cmd)
	cmd.Flags().StringVar(&rev, "rev", "", "read the specs from this Git revision instead of the files on disk")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
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
