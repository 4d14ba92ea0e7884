package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctxos/ctxos/schema"
)

func init() { register(newVetCmd) }

func newVetCmd() *cobra.Command {
	var (
		format  string
		timeout time.Duration
		hash    bool
	)
	cmd := &cobra.Command{
		Use:   "vet [DIR]",
		Short: "Check a desired-state repository against the schema",
		Long: `Vet loads the CUE files under ctx/, mid/, ztb/ and sys/ of DIR (default "."),
unifies them with the schema built into ctxos and prints every problem as
file:line:col: path: message, file relative to DIR. With --hash it also
exports the snapshot and prints its hash, the one the cluster shows for
the commit; without, it only checks, which takes less time and memory.

Exit status: 0 valid, 1 invalid, 2 usage or I/O error (including a timeout).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			if format != "text" && format != "json" && format != "github" {
				return &exitError{code: 2, err: fmt.Errorf("vet: --format %q: want text, json or github", format)}
			}
			if timeout <= 0 {
				return &exitError{code: 2, err: fmt.Errorf("vet: --timeout %s: want a positive duration", timeout)}
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			res, diags, err := vet(ctx, dir, hash)
			if errors.Is(err, schema.ErrTimeout) {
				return &exitError{code: 2, err: fmt.Errorf("vet %s: CUE evaluation did not finish within --timeout %s", dir, timeout)}
			}
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("vet: %w", err)}
			}
			out := cmd.OutOrStdout()
			if err := printVet(out, format, dir, res, diags); err != nil {
				return &exitError{code: 2, err: err}
			}
			if res == nil {
				return &exitError{code: 1, err: fmt.Errorf("vet %s: %d %s", dir, len(diags), plural(len(diags), "problem"))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output format: text, json or github (workflow command annotations)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up when CUE evaluation takes longer")
	cmd.Flags().BoolVar(&hash, "hash", false, "also export the snapshot and print its hash")
	return cmd
}

// vetResult is what vet tells of a valid directory; nil when invalid.
type vetResult struct {
	ctx, mid int
	hash     string // with --hash only
}

// vet checks dir, exporting the snapshot only when its hash is wanted:
// schema.Vet finds the same problems as schema.Load without it.
func vet(ctx context.Context, dir string, hash bool) (*vetResult, []schema.Diagnostic, error) {
	if !hash {
		sum, diags, err := schema.Vet(ctx, dir)
		if sum == nil {
			return nil, diags, err
		}
		return &vetResult{ctx: sum.Ctx, mid: sum.Mid}, diags, err
	}
	snap, diags, err := schema.Load(ctx, dir)
	if snap == nil {
		return nil, diags, err
	}
	r := &vetResult{hash: snap.Hash}
	for _, e := range snap.Entries {
		switch {
		case strings.HasPrefix(e.Path, "/ctx/"):
			r.ctx++
		case strings.HasPrefix(e.Path, "/mid/"):
			r.mid++
		}
	}
	return r, diags, err
}

// vetReport is the --format json output.
type vetReport struct {
	Valid       bool                `json:"valid"`
	Hash        string              `json:"hash,omitempty"`
	Ctx         int                 `json:"ctx"`
	Mid         int                 `json:"mid"`
	Diagnostics []schema.Diagnostic `json:"diagnostics"`
}

func printVet(w io.Writer, format, dir string, res *vetResult, diags []schema.Diagnostic) error {
	switch format {
	case "json":
		r := vetReport{Valid: res != nil, Diagnostics: diags}
		if r.Diagnostics == nil {
			r.Diagnostics = []schema.Diagnostic{}
		}
		if res != nil {
			r.Hash, r.Ctx, r.Mid = res.hash, res.ctx, res.mid
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case "github":
		for _, d := range diags {
			// GitHub resolves file against the checkout, which is where
			// vet runs from, so here file is DIR/file rather than file.
			file := filepath.ToSlash(filepath.Join(dir, d.File))
			props := "file=" + githubProperty(file)
			if d.Line > 0 {
				props += fmt.Sprintf(",line=%d,col=%d", d.Line, d.Column)
			}
			msg := d.Message
			if d.Path != "" {
				msg = d.Path + ": " + msg
			}
			if _, err := fmt.Fprintf(w, "::error %s::%s\n", props, githubData(msg)); err != nil {
				return err
			}
		}
	default:
		for _, d := range diags {
			if _, err := fmt.Fprintln(w, d.String()); err != nil {
				return err
			}
		}
	}
	if res == nil {
		return nil
	}
	line := fmt.Sprintf("ok: %d ctx, %d mid", res.ctx, res.mid)
	if res.hash != "" {
		line += " (" + res.hash + ")"
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

// githubData escapes a workflow command's message.
func githubData(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace(s)
}

// githubProperty escapes a workflow command's property value.
func githubProperty(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C").Replace(s)
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
