package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/gitsync"
	"github.com/ctxos/ctxos/reconcile"
)

func init() { register(newUpCmd) }

func newUpCmd() *cobra.Command {
	var (
		c    agentConfig
		keep bool
	)
	cmd := &cobra.Command{
		Use:   "up [PATH|URL]",
		Short: "Run a one-node cluster on this machine from a directory or repository, printing progress until converged",
		Long: `Run a one-node ctxos cluster on this machine: the agent, the VFS, the
reconciler and the process driver (and containerd when its socket is there),
following PATH (default ".") or a Git URL.

A directory that is the root of a Git repository is followed as a repository
(commits on its current branch; uncommitted edits are not seen). Any other
directory runs in dev mode: its files are watched and every save is synced.

Progress (steps done of total, per resource, failures with their reason) is
printed until the desired state is converged, then the API address.

Ctrl-C stops the workloads this cluster started and then the node, as
"docker compose up" does; with --keep they go on running and the next
"ctxos up" on the same data dir adopts them instead of starting them again.
A second Ctrl-C exits at once.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := "."
			if len(args) == 1 {
				target = args[0]
			}
			git, err := upSource(target)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			c.git = git
			if c.dataDir == "" {
				c.dataDir = defaultDataDir()
			}
			return runUp(cmd.Context(), cmd.OutOrStdout(), c, keep)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.name, "name", "local", "node name")
	f.StringVar(&c.dataDir, "data-dir", "", "state directory (default: $XDG_STATE_HOME/ctxos, ~/.local/state/ctxos, or ./.ctxos)")
	f.StringVar(&c.api, "api", defaultAPI, "address of the node HTTP API")
	f.BoolVar(&keep, "keep", false, "leave the workloads running when up stops")
	f.StringVar(&c.logLevel, "log-level", "info", "level of the agent log written to DATA-DIR/agent.log")
	return cmd
}

// upSource turns up's argument into the agent's Git configuration.
func upSource(target string) (gitConfig, error) {
	g := gitConfig{repo: target, interval: 30 * time.Second, depth: 1}
	if strings.Contains(target, "://") || (strings.Contains(target, "@") && strings.Contains(target, ":")) {
		return g, nil
	}
	info, err := os.Stat(target)
	if err != nil {
		return g, fmt.Errorf("desired state %s: %w", target, err)
	}
	if !info.IsDir() {
		return g, fmt.Errorf("desired state %s: not a directory", target)
	}
	abs, err := filepath.Abs(target)
	if err != nil {
		return g, err
	}
	g.repo = abs
	if _, err := os.Stat(filepath.Join(abs, ".git")); errors.Is(err, fs.ErrNotExist) {
		g.dev = true
		g.interval = 0 // the file watch triggers syncs
	}
	return g, nil
}

// defaultDataDir is the user's state directory, or ./.ctxos without one.
func defaultDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "ctxos")
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".local", "state", "ctxos")
	}
	return ".ctxos"
}

func runUp(ctx context.Context, out io.Writer, c agentConfig, keep bool) error {
	c.bind = "127.0.0.1:0"
	c.profile = "local"
	c.statusEvery = 5 * time.Second
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("data dir: %w", err)}
	}
	logPath := filepath.Join(c.dataDir, "agent.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	defer logFile.Close()
	c.logOutput = logFile

	// The agent lives until up decides to stop it: the first Ctrl-C starts
	// an orderly stop, a second one (ctx of the command) ends the process.
	agentCtx, stopAgent := context.WithCancel(context.Background())
	defer stopAgent()
	a, err := startAgent(agentCtx, c)
	if err != nil {
		return err
	}
	mode := "repository"
	if c.git.dev {
		mode = "dev mode: every save is synced"
	}
	fmt.Fprintf(out, "ctxos up: node %s, desired state from %s (%s)\n", c.name, c.git.repo, mode)
	fmt.Fprintf(out, "  data %s, log %s\n", c.dataDir, logPath)

	watchProgress(ctx, out, a)

	fmt.Fprintln(out, "\nstopping...")
	done := make(chan error, 1)
	go func() {
		if !keep {
			if n, err := a.stopWorkloads(context.Background()); err != nil {
				fmt.Fprintf(out, "  stopping workloads: %v\n", err)
			} else {
				fmt.Fprintf(out, "  stopped %d workload(s)\n", n)
			}
		} else {
			fmt.Fprintln(out, "  --keep: workloads left running; the next ctxos up adopts them")
		}
		stopAgent()
		done <- a.stop()
	}()
	second := make(chan os.Signal, 1)
	notifyInterrupt(second)
	select {
	case err := <-done:
		return err
	case <-second:
		return &exitError{code: 130, err: errors.New("interrupted again: exiting without waiting")}
	}
}

// watchProgress prints the node's progress, read from the VFS as `ctxos
// status` reads it, whenever it changes, until ctx ends. Once converged it
// prints where the API is and how to stop.
func watchProgress(ctx context.Context, out io.Writer, a *agent) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lastLine, lastSync string
	printedErrors := map[string]string{}
	converged := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if a.syncer != nil {
			st := a.syncer.Status()
			line := st.State
			if st.State == gitsync.StateInvalid || st.State == gitsync.StateFailing {
				line += ": " + st.Error
			}
			if line != lastSync && st.State != gitsync.StateSyncing {
				lastSync = line
				switch st.State {
				case gitsync.StateSynced:
					fmt.Fprintf(out, "synced %s (generation %d)\n", shortRev(st.InForce), st.Generation)
				case gitsync.StateInvalid:
					kept := "nothing is in force yet"
					if st.InForce != "" {
						kept = "the last good state (" + shortRev(st.InForce) + ") stays in force"
					}
					fmt.Fprintf(out, "refused %s, %s: %s\n", shortRev(st.Commit), kept, st.Error)
					for _, d := range st.Diagnostics {
						fmt.Fprintf(out, "  %s\n", d)
					}
				case gitsync.StateFailing:
					fmt.Fprintf(out, "sync failing (retrying): %s\n", st.Error)
				}
			}
		}
		e, ok := a.node.Store().Get("/run/" + a.cfg.name + "/progress")
		if !ok {
			continue
		}
		var p reconcile.Progress
		if vfs.Decode(e.Value, &p) != nil {
			continue
		}
		line := fmt.Sprintf("[%d/%d steps] %s: %d of %d instances running", p.Steps.Done, p.Steps.Total, p.State, p.Running, p.Desired)
		if p.Steps.Failed > 0 {
			line += fmt.Sprintf(", %d failed", p.Steps.Failed)
		}
		if p.Steps.Waiting > 0 {
			line += fmt.Sprintf(", %d waiting", p.Steps.Waiting)
		}
		if p.Message != "" && !p.Converged {
			line += " (" + p.Message + ")"
		}
		if line != lastLine {
			lastLine = line
			fmt.Fprintln(out, line)
		}
		for key, msg := range p.Errors {
			if printedErrors[key] != msg {
				printedErrors[key] = msg
				fmt.Fprintf(out, "  %s: %s\n", key, msg)
			}
		}
		if p.Converged && !converged {
			converged = true
			fmt.Fprintf(out, "\nconverged on %s: %d instance(s) running.\n", shortRev(p.Commit), p.Running)
			fmt.Fprintf(out, "dashboard %s/\n", a.apiURL)
			fmt.Fprintf(out, "API %s (try: ctxos status, ctxos vfs ls /run, ctxos history)\n", a.apiURL)
			fmt.Fprintln(out, "Ctrl-C stops the workloads and the node; edits to the desired state keep being applied.")
		}
		if !p.Converged {
			converged = false
		}
	}
}

func shortRev(c string) string {
	if len(c) > 12 && !strings.HasPrefix(c, "worktree:") {
		return c[:12]
	}
	return c
}
