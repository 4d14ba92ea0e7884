//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// nsPrefix starts the name of every namespace this suite creates, so a
// later run can find and remove what a crashed one left.
const nsPrefix = "ctxos-e2e-"

// Ports every agent listens on, each on its own namespace's address.
const (
	gossipPort = 7946
	apiPort    = 7480
)

var (
	// ctxosBin is the binary built once in TestMain.
	ctxosBin string
	// skipReason is set when this machine cannot run the suite.
	skipReason string
	// profile is the gossip profile of every agent.
	profile = "local"
)

// world holds everything the suite created that must go away on SIGINT or
// SIGTERM of the test process as well as at each test's cleanup.
var world struct {
	mu         sync.Mutex
	namespaces map[string]bool
	agents     map[*os.Process]bool
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if p := os.Getenv("CTXOS_E2E_PROFILE"); p != "" {
		profile = p
	}
	world.namespaces = map[string]bool{}
	world.agents = map[*os.Process]bool{}
	switch {
	case os.Geteuid() != 0:
		skipReason = "e2e tests need root (they create network namespaces)"
	default:
		if _, err := exec.LookPath("ip"); err != nil {
			skipReason = "e2e tests need the ip command (iproute2)"
		} else if _, err := exec.LookPath("git"); err != nil {
			skipReason = "e2e tests need the git command"
		}
	}
	if skipReason != "" {
		return m.Run()
	}
	removeStaleNamespaces()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "e2e: %v: tearing down agents, workloads and namespaces\n", s)
		teardownAll()
		os.Exit(2)
	}()

	dir, err := os.MkdirTemp("", "ctxos-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctxosBin = filepath.Join(dir, "ctxos")
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	build := exec.Command("go", "build", "-o", ctxosBin, "./cmd/ctxos")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/ctxos: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	teardownAll()
	return code
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the ctxos module")
	}
	return filepath.Dir(mod), nil
}

func requireHosts(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// ip runs the ip command and returns its combined output.
func ip(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// nsPids lists the processes inside namespace ns: its agent and the
// workloads the agent started.
func nsPids(ns string) []int {
	out, err := ip("netns", "pids", ns)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// deleteNamespace kills every process inside ns and deletes it.
func deleteNamespace(ns string) error {
	for _, pid := range nsPids(ns) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	// Deleting the name would leave anything still inside running.
	gone := poll(10*time.Second, func() (bool, string) {
		left := liveOnly(nsPids(ns))
		return len(left) == 0, fmt.Sprintf("processes %v still in %s", left, ns)
	})
	_, err := ip("netns", "delete", ns)
	err = errors.Join(gone, err)
	world.mu.Lock()
	delete(world.namespaces, ns)
	world.mu.Unlock()
	return err
}

// liveOnly drops zombies: a killed workload whose parent is gone may stay
// a zombie until init reaps it, and it runs nothing.
func liveOnly(pids []int) []int {
	var out []int
	for _, pid := range pids {
		if processAlive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// itself hold spaces or parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	st := s[i+2]
	return st != 'Z' && st != 'X'
}

// removeStaleNamespaces deletes namespaces of earlier runs whose test
// process is gone (a crash or kill -9), with whatever still runs in them.
func removeStaleNamespaces() {
	out, err := ip("netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], nsPrefix) {
			continue
		}
		name := f[0]
		owner, _, _ := strings.Cut(strings.TrimPrefix(name, nsPrefix), "-")
		if pid, err := strconv.Atoi(owner); err == nil && pid != os.Getpid() && processAlive(pid) {
			continue // another run in progress
		}
		if err := deleteNamespace(name); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: stale namespace:", err)
		} else {
			fmt.Fprintln(os.Stderr, "e2e: removed stale namespace", name)
		}
	}
}

// teardownAll kills every agent and workload the suite started and
// deletes its namespaces.
func teardownAll() {
	world.mu.Lock()
	procs := make([]*os.Process, 0, len(world.agents))
	for p := range world.agents {
		procs = append(procs, p)
	}
	var nss []string
	for ns := range world.namespaces {
		nss = append(nss, ns)
	}
	world.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
	for _, ns := range nss {
		deleteNamespace(ns)
	}
}

// waitFor polls cond until it holds or timeout passes; the failure names
// what was awaited and cond's last reason.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	start, seen := time.Now(), map[string]bool{}
	err := poll(timeout, func() (bool, string) {
		ok, why := cond()
		// Each reason is logged the first time: the log shows what the
		// cluster went through while converging, and where it got stuck.
		if !ok && !seen[why] && testing.Verbose() {
			t.Logf("[+%.1fs] %s: %s", time.Since(start).Seconds(), what, why)
		}
		seen[why] = true
		return ok, why
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func poll(timeout time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	why := ""
	for {
		ok, w := cond()
		if ok {
			return nil
		}
		why = w
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %v: %s", timeout, why)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}

// runCmd runs a command with a deadline and returns stdout, stderr and the
// exit code (-1 when it did not run or was killed).
func runCmd(ctx context.Context, dir string, env []string, name string, args ...string) (string, string, int) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.Exited() {
			code = ee.ExitCode()
		}
		if code == -1 {
			stderr.WriteString(err.Error())
		}
	}
	return stdout.String(), stderr.String(), code
}
