package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func init() { register(newVFSCmd) }

func newVFSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vfs",
		Short: "Read the cluster's state namespace (VFS) through an agent",
	}
	cmd.AddCommand(newVFSLsCmd(), newVFSGetCmd(), newVFSWatchCmd())
	return cmd
}

func newVFSLsCmd() *cobra.Command {
	var f *clientFlags
	cmd := &cobra.Command{
		Use:   "ls [PREFIX]",
		Short: "List the entries under a prefix (default /)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			prefix := "/"
			if len(args) == 1 {
				prefix = args[0]
			}
			entries, err := f.client().List(cmd.Context(), prefix)
			if err != nil {
				return err
			}
			if f.json() {
				return printJSON(cmd.OutOrStdout(), entries)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PATH\tWRITER\tSIZE")
			for _, e := range entries {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", e.Path, e.Version.Node, len(e.Value))
			}
			return tw.Flush()
		},
	}
	f = addClientFlags(cmd)
	return cmd
}

func newVFSGetCmd() *cobra.Command {
	var f *clientFlags
	cmd := &cobra.Command{
		Use:   "get PATH",
		Short: "Print one entry's value",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			e, err := f.client().Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if f.json() {
				return printJSON(cmd.OutOrStdout(), e)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n", strings.TrimSpace(string(e.Value)))
			return nil
		},
	}
	f = addClientFlags(cmd)
	return cmd
}

func newVFSWatchCmd() *cobra.Command {
	var f *clientFlags
	cmd := &cobra.Command{
		Use:   "watch [PREFIX]",
		Short: "Print every change under a prefix as it happens",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.check(); err != nil {
				return err
			}
			prefix := "/"
			if len(args) == 1 {
				prefix = args[0]
			}
			events, err := f.client().Watch(cmd.Context(), prefix)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for ev := range events {
				switch {
				case f.json():
					if err := printJSON(out, ev); err != nil {
						return err
					}
				case ev.Resync:
					fmt.Fprintln(out, "resync: fell behind, list the prefix again")
				case ev.Entry.Deleted:
					fmt.Fprintf(out, "delete %s\n", ev.Entry.Path)
				default:
					fmt.Fprintf(out, "put %s %s\n", ev.Entry.Path, compactJSON(ev.Entry.Value))
				}
			}
			if err := cmd.Context().Err(); err != nil {
				return nil
			}
			return fmt.Errorf("watch %s: the agent closed the stream", prefix)
		},
	}
	f = addClientFlags(cmd)
	return cmd
}

func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	return buf.String()
}
