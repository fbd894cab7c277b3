package main

import (
	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/spec"
)

func newSchemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of app specs (for editors)",
		Long: `Schema prints a JSON Schema of the App document. Save it and point
yaml-language-server at it to get completion and checks as you type:

  berth schema > .berth-schema.json
  # first line of each spec file:
  # yaml-language-server: $schema=../.berth-schema.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(spec.Schema())
			return err
		},
	}
}
