package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shirou/gopsutil/v4/process"
)

// syncBuffer is a bytes.Buffer safe to write from up and read from the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// countProcs counts running processes whose command line contains marker.
func countProcs(tb testing.TB, marker string) int {
	tb.Helper()
	procs, err := process.Processes()
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, p := range procs {
		cmd, err := p.Cmdline()
		if err != nil || !strings.Contains(cmd, marker) || strings.Contains(cmd, "go test") {
			continue
		}
		if st, err := p.Status(); err == nil && len(st) > 0 && st[0] == process.Zombie {
			continue
		}
		n++
	}
	return n
}

func waitUntil(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting until %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUpDevModeAppliesSavesAndStopsOnInterrupt runs `ctxos up` on a plain
// directory: it converges, applies a saved edit, refuses a bad one with its
// diagnostics while the last good state keeps running, and stops the
// workloads when interrupted.
func TestUpDevModeAppliesSavesAndStopsOnInterrupt(t *testing.T) {
	dir := t.TempDir()
	marker := fmt.Sprintf("%d", 200000+os.Getpid()%100000)
	ctxFile := filepath.Join(dir, "ctx", "s.cue")
	write := func(s string) {
		if err := os.MkdirAll(filepath.Dir(ctxFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ctxFile, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	spec := func(replicas int) string {
		return fmt.Sprintf("ctx: s: {command: \"/bin/sleep\", args: [%q], replicas: %d}\n", marker, replicas)
	}
	write(spec(2))
	t.Cleanup(func() {
		procs, _ := process.Processes()
		for _, p := range procs {
			if cmd, _ := p.Cmdline(); strings.Contains(cmd, "sleep "+marker) {
				p.Kill()
			}
		}
	})

	git, err := upSource(dir)
	if err != nil || !git.dev {
		t.Fatalf("upSource(%s) = %+v, %v; want dev mode", dir, git, err)
	}
	c := agentConfig{name: "local", dataDir: filepath.Join(t.TempDir(), "data"), api: "127.0.0.1:0", logLevel: "info", git: git}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- runUp(ctx, out, c, false) }()

	waitUntil(t, 60*time.Second, "up prints converged", func() bool { return strings.Contains(out.String(), "converged on worktree:") })
	if got := countProcs(t, "sleep "+marker); got != 2 {
		t.Fatalf("%d processes after converging, want 2\n%s", got, out)
	}
	for _, want := range []string{"dev mode", "synced worktree:", "[2/2 steps] converged: 2 of 2 instances running", "API http://127.0.0.1:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The dashboard it prints shows the instances.
	_, rest, ok := strings.Cut(out.String(), "dashboard ")
	if !ok {
		t.Fatalf("output names no dashboard:\n%s", out)
	}
	url, _, _ := strings.Cut(rest, "\n")
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "<td>ctx.s.1</td><td>local</td>") {
		t.Errorf("GET %s = %d, %v; want the dashboard listing ctx.s.1 on node local:\n%s", url, resp.StatusCode, err, page)
	}

	write(spec(3))
	waitUntil(t, 30*time.Second, "the saved edit runs 3 instances", func() bool { return countProcs(t, "sleep "+marker) == 3 })

	write("ctx: s: {command: \"/bin/sleep\", replicas: \"many\"}\n")
	waitUntil(t, 30*time.Second, "the bad edit is refused with its diagnostics", func() bool {
		return strings.Contains(out.String(), "refused worktree:") && strings.Contains(out.String(), "ctx/s.cue:1:")
	})
	if got := countProcs(t, "sleep "+marker); got != 3 {
		t.Fatalf("after a bad edit %d processes run, want the last good 3", got)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("up returned %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("up did not stop after the interrupt")
	}
	if got := countProcs(t, "sleep "+marker); got != 0 {
		t.Fatalf("%d workloads still run after up stopped, want 0\n%s", got, out)
	}
	if !strings.Contains(out.String(), "stopped 3 workload(s)") {
		t.Errorf("output lacks the stop report:\n%s", out)
	}
}

func TestUpRefusesAMissingDirectory(t *testing.T) {
	_, err := upSource(filepath.Join(t.TempDir(), "nope"))
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("err = %v, want one naming the missing directory", err)
	}
}
