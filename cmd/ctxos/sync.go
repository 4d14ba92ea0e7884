package main

import (
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/ctxos/ctxos/gitsync"
)

func init() { register(newSyncCmd) }

func newSyncCmd() *cobra.Command {
	var f *clientFlags
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Make an agent that follows the repository sync now, and print the outcome",
		Long: `Make an agent that follows the repository (started with --repo) fetch and
publish now, instead of waiting for the next poll or webhook. Syncs asked for
while one runs collapse into one more. Exit 0 when the commit is in force, 1
when it was refused (invalid or unsigned: the last good one stays), 2 when
the agent could not be asked or the remote failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			var st gitsync.SyncStatus
			if err := f.client().Do(cmd.Context(), http.MethodPost, "/v1/sync", nil, &st); err != nil {
				return &exitError{code: 2, err: err}
			}
			if f.json() {
				if err := printJSON(cmd.OutOrStdout(), st); err != nil {
					return err
				}
			} else {
				printSyncStatus(cmd.OutOrStdout(), st)
			}
			if st.State == gitsync.StateInvalid {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	f = addClientFlags(cmd)
	return cmd
}

func printSyncStatus(w interface{ Write([]byte) (int, error) }, st gitsync.SyncStatus) {
	fmt.Fprintf(w, "sync %s: commit %.12s", st.State, st.Commit)
	if st.Subject != "" {
		fmt.Fprintf(w, " %q", st.Subject)
	}
	fmt.Fprintln(w)
	if st.InForce != "" {
		fmt.Fprintf(w, "in force: %.12s (generation %d)\n", st.InForce, st.Generation)
	}
	if st.Error != "" {
		fmt.Fprintf(w, "error: %s\n", st.Error)
	}
	for _, d := range st.Diagnostics {
		fmt.Fprintf(w, "  %s\n", d)
	}
}
