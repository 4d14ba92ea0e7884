package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/cluster/vfs"
)

// TestContainerdOOMShowsInStatus runs a container that outgrows its memory
// limit under an in-process agent: the OOM kill is recorded in /itg and
// `ctxos status` shows it.
func TestContainerdOOMShowsInStatus(t *testing.T) {
	d := startTestContainerd(t)
	archive := d.archive
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "ctx"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The shell doubles a string until the 16 MiB limit kills it.
	cue := fmt.Sprintf(`ctx: hog: {
	image: %q
	command: "/bin/sh"
	args: ["-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"]
	resources: memory: "16Mi"
}
`, "oci-archive:"+archive)
	if err := os.WriteFile(filepath.Join(dir, "ctx", "hog.cue"), []byte(cue), 0o644); err != nil {
		t.Fatal(err)
	}
	agentLog := &syncBuffer{}
	cfg := agentConfig{name: "local", dataDir: filepath.Join(t.TempDir(), "data"), api: "127.0.0.1:0", bind: "127.0.0.1:0",
		profile: "local", statusEvery: time.Second, logLevel: "info", logOutput: agentLog,
		containerdSocket: d.socket, git: gitConfig{repo: dir, dev: true}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := startAgent(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		a.stopWorkloads(context.Background())
		a.stop()
	}()
	api := cluster.NewAPI(a.node)
	var seen string
	waitUntil(t, 2*time.Minute, "the OOM kill is in /itg/local/ctx.hog", func() bool {
		e, ok := a.node.Store().Get("/itg/local/ctx.hog")
		if !ok {
			return false
		}
		seen = cborToText(e.Value)
		return strings.Contains(seen, "OOM killed")
	})
	var out strings.Builder
	printStatus(&out, api.Status(ctx), time.Now())
	if !strings.Contains(out.String(), "/itg/local/ctx.hog: ctx hog:") || !strings.Contains(out.String(), "OOM killed") {
		t.Fatalf("ctxos status does not show the OOM kill (itg: %s):\n%s", seen, out.String())
	}
}

// cborToText renders a VFS value for a failure message.
func cborToText(b []byte) string {
	var v any
	if err := vfs.Decode(b, &v); err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return fmt.Sprint(v)
}
