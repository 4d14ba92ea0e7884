package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version and commit are set at build time with
// -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

func init() { register(newVersionCmd) }

func buildInfo() (ver, rev, cueVersion string) {
	ver, rev, cueVersion = version, commit, "unknown"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ver, rev, cueVersion
	}
	for _, dep := range info.Deps {
		if dep.Path == "cuelang.org/go" {
			cueVersion = dep.Version
		}
	}
	if rev == "" {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				rev = s.Value
			}
		}
	}
	if rev == "" {
		rev = "unknown"
	}
	return ver, rev, cueVersion
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and embedded CUE version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ver, rev, cueVer := buildInfo()
			fmt.Fprintf(cmd.OutOrStdout(), "ctxos %s\ncommit %s\ncue %s\n", ver, rev, cueVer)
			return nil
		},
	}
}
