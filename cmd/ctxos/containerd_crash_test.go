package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/reconcile"
)

// TestContainerdAgentSurvivesKill9 runs the real ctxos binary as the agent
// of a Git repository with a 3-replica oci-archive CTX, kills it with
// SIGKILL, and starts it again on the same data dir: `ctr c ls` shows
// exactly the desired containers and none was restarted.
func TestContainerdAgentSurvivesKill9(t *testing.T) {
	d := startTestContainerd(t)
	archive, client := d.archive, d.client(t)

	bin := filepath.Join(t.TempDir(), "ctxos")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	repo := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	if err := os.MkdirAll(filepath.Join(repo, "ctx"), 0o755); err != nil {
		t.Fatal(err)
	}
	cue := fmt.Sprintf("ctx: box: {image: %q, command: \"/bin/sh\", args: [\"-c\", \"trap 'exit 0' TERM; sleep 1000 & wait\"], replicas: 3}\n", "oci-archive:"+archive)
	if err := os.WriteFile(filepath.Join(repo, "ctx", "box.cue"), []byte(cue), 0o644); err != nil {
		t.Fatal(err)
	}
	git("init", "-q", "-b", "main")
	git("add", ".")
	git("commit", "-q", "-m", "box")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := ln.Addr().String()
	ln.Close()
	dataDir := t.TempDir()
	logFile := filepath.Join(t.TempDir(), "agent.log")
	start := func() *exec.Cmd {
		t.Helper()
		log, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close()
		cmd := exec.Command(bin, "agent", "--name", "local", "--data-dir", dataDir, "--bind", "127.0.0.1:0", "--api", api,
			"--profile", "local", "--containerd-socket", d.socket, "--repo", repo, "--interval", "1s")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("agent log:\n%s", tailString(string(b), 20000))
		}
	})
	want := []string{"ctx.box.0", "ctx.box.1", "ctx.box.2"}
	c := cluster.NewClient(api)
	converged := func(what string) {
		t.Helper()
		waitUntil(t, 2*time.Minute, what, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			e, err := c.Get(ctx, "/run/local/progress")
			if err != nil {
				return false
			}
			var p reconcile.Progress
			if err := json.Unmarshal(e.Value, &p); err != nil || !p.Converged || p.Running != 3 {
				return false
			}
			return len(d.runningTasks(t, client)) == 3
		})
	}

	agent := start()
	converged("the agent runs 3 containers")
	before := d.runningTasks(t, client)
	if err := agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	agent.Wait()
	if got := d.runningTasks(t, client); !maps.Equal(got, before) {
		t.Fatalf("after kill -9 of the agent the tasks are %v, want %v still running", got, before)
	}

	agent = start()
	defer func() {
		agent.Process.Signal(syscall.SIGTERM)
		agent.Wait()
	}()
	converged("the restarted agent converges")
	if got := d.containerIDs(t); !slices.Equal(got, want) {
		t.Fatalf("ctr c ls = %v after kill -9 and restart, want exactly %v", got, want)
	}
	if got := d.runningTasks(t, client); !maps.Equal(got, before) {
		t.Fatalf("tasks after the restart %v, want the same pids %v (adopted, not restarted)", got, before)
	}
}
