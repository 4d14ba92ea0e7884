package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/shirou/gopsutil/v4/process"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/reconcile"
)

// TestAgentKilledAtStepBoundaries runs the real ctxos binary as the agent of
// a repository with 3 process replicas and has it SIGKILL itself after its
// Nth journal record (CTXOS_CRASH_AFTER_STEPS), for several N; each time a
// plain restart on the same data dir converges with exactly 3 processes and
// every step of the journal ended.
func TestAgentKilledAtStepBoundaries(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "ctxos")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for n := 1; n <= 5; n++ {
		t.Run(fmt.Sprintf("after-%d-records", n), func(t *testing.T) {
			marker := fmt.Sprint(300000 + os.Getpid()%10000*10 + n)
			t.Cleanup(func() { killByMarker(marker) })
			repo := t.TempDir()
			if err := os.MkdirAll(filepath.Join(repo, "ctx"), 0o755); err != nil {
				t.Fatal(err)
			}
			cue := fmt.Sprintf("ctx: s: {command: \"/bin/sleep\", args: [%q], replicas: 3}\n", marker)
			if err := os.WriteFile(filepath.Join(repo, "ctx", "s.cue"), []byte(cue), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"commit", "-q", "-m", "s"}} {
				cmd := exec.Command("git", args...)
				cmd.Dir = repo
				cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("git %v: %v\n%s", args, err, out)
				}
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			api := ln.Addr().String()
			ln.Close()
			dataDir := t.TempDir()
			run := func(env ...string) *exec.Cmd {
				cmd := exec.Command(bin, "agent", "--name", "local", "--data-dir", dataDir, "--bind", "127.0.0.1:0",
					"--api", api, "--profile", "local", "--repo", repo, "--containerd-socket", "/nonexistent", "--log-level", "warn")
				cmd.Env = append(os.Environ(), env...)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				return cmd
			}

			crashing := run(fmt.Sprintf("CTXOS_CRASH_AFTER_STEPS=%d", n))
			err = crashing.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("the agent ended with %v, want killed by SIGKILL after record %d", err, n)
			}

			agent := run()
			defer func() {
				agent.Process.Signal(syscall.SIGTERM)
				agent.Wait()
			}()
			c := cluster.NewClient(api)
			waitUntil(t, time.Minute, "the restarted agent converges with 3 processes", func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				e, err := c.Get(ctx, "/run/local/progress")
				if err != nil {
					return false
				}
				var p reconcile.Progress
				return json.Unmarshal(e.Value, &p) == nil && p.Converged && p.Running == 3 && countProcs(t, "sleep "+marker) == 3
			})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var h nodeHistory
			if err := c.Do(ctx, "GET", "/v1/history", nil, &h); err != nil {
				t.Fatal(err)
			}
			last := map[string]reconcile.StepState{}
			for _, s := range h.Steps {
				last[s.ID] = s.State
			}
			for id, st := range last {
				if !st.Final() {
					t.Errorf("step %s ended %s after the crash and restart, want done or failed", id, st)
				}
			}
			if len(last) < 3 {
				t.Errorf("history holds %d steps, want at least the 3 creates", len(last))
			}
		})
	}
}

// killByMarker kills the processes whose command line holds "sleep marker".
func killByMarker(marker string) {
	procs, _ := process.Processes()
	for _, p := range procs {
		if cmd, _ := p.Cmdline(); cmd == "/bin/sleep "+marker {
			p.Kill()
		}
	}
}
