package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ctxos/ctxos/schema"
)

func init() { register(newInitCmd) }

func newInitCmd() *cobra.Command {
	var opts schema.InitOptions
	cmd := &cobra.Command{
		Use:   "init [DIR]",
		Short: "Scaffold a desired-state repository",
		Long: `Init creates a desired-state repository in DIR (default "."), which must be
empty or missing: cue.mod/module.cue, the schema vendored into cue.mod/pkg so
that the official cue vet works too, one sample CTX and a README.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			written, err := schema.Init(ctx, dir, opts)
			if err != nil {
				// A non-empty target, like an unwritable one, is a usage
				// problem, not invalid configuration.
				return &exitError{code: 2, err: err}
			}
			out := cmd.OutOrStdout()
			for _, f := range written {
				fmt.Fprintln(out, "created", f)
			}
			fmt.Fprintf(out, "next: ctxos vet %s\n", dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.Module, "module", "", `CUE module path for cue.mod/module.cue (default "example.com/" + the directory's name)`)
	cmd.Flags().StringVar(&opts.Name, "name", "hello", "name of the sample CTX")
	return cmd
}
