package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/cluster/props"
	"github.com/ctxos/ctxos/gitsync"
	"github.com/ctxos/ctxos/reconcile"
	"github.com/ctxos/ctxos/schema"
)

func init() { register(newStatusCmd) }

func newStatusCmd() *cobra.Command {
	var f *clientFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster as one agent sees it: members, load, the commit in force, problems",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			st, err := f.client().Status(cmd.Context())
			if err != nil {
				return err
			}
			if f.json() {
				return printJSON(cmd.OutOrStdout(), st)
			}
			printStatus(cmd.OutOrStdout(), st, time.Now())
			return nil
		},
	}
	f = addClientFlags(cmd)
	return cmd
}

func printStatus(w io.Writer, st cluster.StatusView, now time.Time) {
	fmt.Fprintf(w, "node %s\n", st.Node)
	var m schema.Manifest
	if len(st.Revision) > 0 && json.Unmarshal(st.Revision, &m) == nil && m.Commit != "" {
		fmt.Fprintf(w, "desired state: commit %s, generation %d", shortRev(m.Commit), m.Generation)
		if m.Subject != "" {
			fmt.Fprintf(w, ", %q", m.Subject)
		}
		if m.Author != "" {
			fmt.Fprintf(w, " by %s", m.Author)
		}
		if !m.Time.IsZero() {
			fmt.Fprintf(w, " at %s", m.Time.UTC().Format(time.RFC3339))
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintln(w, "desired state: none synced yet")
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tADDRESS\tLAST SEEN\tCPU\tMEMORY\tLABELS")
	for _, ms := range st.Members {
		var hw props.HW
		// Only the fields shown: the rest of props.Status (its time is
		// CBOR epoch seconds, a number in JSON) is not needed here.
		var sum struct {
			CPUPercent float64      `json:"cpuPercent"`
			Memory     props.Memory `json:"memory"`
		}
		hasHW := len(ms.HW) > 0 && json.Unmarshal(ms.HW, &hw) == nil
		hasSum := len(ms.Sum) > 0 && json.Unmarshal(ms.Sum, &sum) == nil
		seen := "-"
		if !ms.LastSeen.IsZero() {
			seen = ago(now.Sub(ms.LastSeen))
		}
		cpu, mem := "-", "-"
		if hasHW {
			cpu = fmt.Sprintf("%d threads", hw.CPU.Threads)
			mem = gib(hw.MemoryBytes)
		}
		if hasSum && ms.State == cluster.StateAlive {
			cpu = fmt.Sprintf("%.0f%% of %d", sum.CPUPercent, hw.CPU.Threads)
			mem = fmt.Sprintf("%s/%s", gib(sum.Memory.Used), gib(sum.Memory.Total))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ms.Name, ms.State, ms.Addr, seen, cpu, mem, labelString(ms.Labels))
	}
	tw.Flush()

	for _, e := range st.Sync {
		var ss gitsync.SyncStatus
		if json.Unmarshal(e.Value, &ss) != nil {
			continue
		}
		node := strings.TrimSuffix(strings.TrimPrefix(e.Path, "/run/"), "/gitsync")
		fmt.Fprintf(w, "\nsync on %s: %s, newest commit %s", node, ss.State, shortRev(ss.Commit))
		if ss.Subject != "" {
			fmt.Fprintf(w, " %q", ss.Subject)
		}
		if ss.Author != "" {
			fmt.Fprintf(w, " by %s", ss.Author)
		}
		if !ss.CommitTime.IsZero() {
			fmt.Fprintf(w, " at %s", ss.CommitTime.Format(time.RFC3339))
		}
		fmt.Fprintln(w)
		if ss.Error != "" {
			fmt.Fprintf(w, "  last error: %s\n", ss.Error)
		}
		for _, d := range ss.Diagnostics {
			fmt.Fprintf(w, "  %s\n", d)
		}
	}
	if len(st.Progress) > 0 {
		fmt.Fprintln(w, "\nprogress:")
		for _, e := range st.Progress {
			node := strings.TrimSuffix(strings.TrimPrefix(e.Path, "/run/"), "/progress")
			var p reconcile.Progress
			if json.Unmarshal(e.Value, &p) != nil {
				fmt.Fprintf(w, "  %s: %s\n", node, compactJSON(e.Value))
				continue
			}
			fmt.Fprintf(w, "  %s: %s, generation %d, %d of %d instances running, steps %d/%d done", node, p.State, p.Generation, p.Running, p.Desired, p.Steps.Done, p.Steps.Total)
			if p.Steps.Failed > 0 {
				fmt.Fprintf(w, ", %d failed", p.Steps.Failed)
			}
			if p.Steps.Waiting > 0 {
				fmt.Fprintf(w, ", %d waiting", p.Steps.Waiting)
			}
			fmt.Fprintln(w)
		}
	}
	if len(st.Scale) > 0 {
		fmt.Fprintln(w, "\nautoscaled:")
		for _, e := range st.Scale {
			name := strings.TrimPrefix(e.Path, "/lk/scale/")
			var s reconcile.Scale
			if json.Unmarshal(e.Value, &s) != nil {
				fmt.Fprintf(w, "  %s: %s\n", name, compactJSON(e.Value))
				continue
			}
			fmt.Fprintf(w, "  %s: %d instances, CPU %d%% of requested over %d reporting, decided by %s %s\n",
				name, s.Replicas, s.CPUPercent, s.Reporting, s.By, ago(now.Sub(s.At)))
		}
	}
	var problems []string
	for _, e := range st.Integrity {
		if strings.HasSuffix(e.Path, "/gitsync") {
			continue // shown with the sync state above
		}
		var p reconcile.Problem
		if json.Unmarshal(e.Value, &p) == nil && p.Reason != "" {
			problems = append(problems, fmt.Sprintf("  %s: %s %s: %s", e.Path, p.Kind, p.Name, p.Reason))
			continue
		}
		problems = append(problems, fmt.Sprintf("  %s: %s", e.Path, compactJSON(e.Value)))
	}
	if len(problems) > 0 {
		fmt.Fprintln(w, "\nproblems:")
		for _, p := range problems {
			fmt.Fprintln(w, p)
		}
	}
}

func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	}
	return fmt.Sprintf("%dh ago", int(d.Hours()))
}

func gib(b uint64) string { return fmt.Sprintf("%.1fGiB", float64(b)/(1<<30)) }

func labelString(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(l))
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
