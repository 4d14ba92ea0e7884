package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ctxos/ctxos/cluster"
)

// defaultAPI is where the CLI finds the local agent when neither --api nor
// CTXOS_API says otherwise.
const defaultAPI = "127.0.0.1:7480"

// clientFlags are the flags of every command that talks to an agent.
type clientFlags struct {
	api    string
	output string
}

func addClientFlags(cmd *cobra.Command) *clientFlags {
	f := &clientFlags{}
	cmd.Flags().StringVar(&f.api, "api", "", "agent API address (default $CTXOS_API or "+defaultAPI+")")
	cmd.Flags().StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	return f
}

func (f *clientFlags) client() *cluster.Client {
	return cluster.NewClient(apiAddr(f.api))
}

func apiAddr(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("CTXOS_API"); env != "" {
		return env
	}
	return defaultAPI
}

// check validates -o; a bad value is a usage error.
func (f *clientFlags) check() error {
	if f.output != "text" && f.output != "json" {
		return &exitError{code: 2, err: fmt.Errorf("unknown output format %q (want text or json)", f.output)}
	}
	return nil
}

func (f *clientFlags) json() bool { return f.output == "json" }

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
