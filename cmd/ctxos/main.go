// Command ctxos is the GitOps cluster operating system: one binary that is
// the agent on every node and the CLI that talks to it.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// exitError carries the process exit code a command wants; commands return it
// so that main decides how the process ends and tests see the code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// commands holds the constructors of the subcommands; each command's file
// registers itself in an init function so files do not collide.
var commands []func() *cobra.Command

func register(newCmd func() *cobra.Command) { commands = append(commands, newCmd) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "ctxos",
		Short:         "ctxos: a GitOps cluster operating system",
		Long:          "ctxos keeps every machine of a cluster converged on what a Git repository of CUE files says.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, c := range commands {
		root.AddCommand(c())
	}
	return root
}

// run executes the CLI with args and returns the exit code. Errors print once,
// to stderr, prefixed with the program name.
func run(args []string) int {
	// SIGINT and SIGTERM cancel the command's context: the agent leaves
	// the cluster gracefully, watches stop.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "ctxos:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "ctxos:", err)
	// Cobra's own errors (unknown flag, wrong argument count) are usage errors.
	return 2
}

func main() { os.Exit(run(os.Args[1:])) }
