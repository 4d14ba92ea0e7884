//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// nextSubnet numbers clusters: cluster k uses 10.231.<k>.0/24.
var nextSubnet atomic.Int32

// Cluster is N hosts, each a network namespace with one veth to a bridge
// in the cluster's switch namespace, each running `ctxos agent`. The
// first host follows the desired-state repository.
type Cluster struct {
	t     testing.TB
	k     int
	dir   string
	sw    string
	Hosts []*Host
	Repo  *Repo
	// Marker is the unique first argument of every sleep workload of this
	// cluster: it finds them in /proc.
	Marker string
}

// Host is one machine of a Cluster.
type Host struct {
	Name string
	NS   string
	Addr string
	// port is the host's veth end on the bridge, in the switch namespace.
	port    string
	dataDir string
	logPath string
	syncer  bool
	c       *Cluster

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	lost bool
}

// newCluster creates n hosts following repo and waits until every agent
// sees all n alive.
func newCluster(t *testing.T, n int, repo *Repo) *Cluster {
	t.Helper()
	requireHosts(t)
	k := int(nextSubnet.Add(1))
	if k > 250 {
		t.Fatal("out of subnets")
	}
	c := &Cluster{t: t, k: k, dir: t.TempDir(), Repo: repo, Marker: repo.Marker}
	c.sw = fmt.Sprintf("%s%d-%d-sw", nsPrefix, os.Getpid(), k)
	t.Cleanup(c.teardown)
	c.addNamespace(c.sw)
	for _, cmd := range [][]string{
		{"-n", c.sw, "link", "add", "br0", "type", "bridge"},
		{"-n", c.sw, "link", "set", "br0", "up"},
		{"-n", c.sw, "link", "set", "lo", "up"},
	} {
		c.mustIP(cmd...)
	}
	for i := 1; i <= n; i++ {
		h := &Host{
			Name: fmt.Sprintf("n%d", i),
			NS:   fmt.Sprintf("%s%d-%d-%d", nsPrefix, os.Getpid(), k, i),
			Addr: fmt.Sprintf("10.231.%d.%d", k, i),
			port: fmt.Sprintf("h%d", i),
			c:    c,
		}
		h.dataDir = filepath.Join(c.dir, h.Name)
		h.logPath = filepath.Join(c.dir, h.Name+".log")
		h.syncer = i == 1
		c.addNamespace(h.NS)
		for _, cmd := range [][]string{
			{"-n", c.sw, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
			{"-n", c.sw, "link", "set", h.port, "master", "br0", "up"},
			{"-n", h.NS, "addr", "add", h.Addr + "/24", "dev", "eth0"},
			{"-n", h.NS, "link", "set", "eth0", "up"},
			{"-n", h.NS, "link", "set", "lo", "up"},
		} {
			c.mustIP(cmd...)
		}
		c.Hosts = append(c.Hosts, h)
	}
	for i, h := range c.Hosts {
		var join []string
		if i > 0 {
			join = []string{c.Hosts[0].gossipAddr()}
		}
		h.start(t, join)
	}
	c.waitMembers(t, c.Hosts, 60*time.Second)
	return c
}

func (c *Cluster) mustIP(args ...string) {
	c.t.Helper()
	if _, err := ip(args...); err != nil {
		c.t.Fatal(err)
	}
}

func (c *Cluster) addNamespace(ns string) {
	c.t.Helper()
	world.mu.Lock()
	world.namespaces[ns] = true
	world.mu.Unlock()
	if _, err := ip("netns", "add", ns); err != nil {
		c.t.Fatal(err)
	}
}

// teardown kills agents and workloads and deletes the namespaces; on
// failure (or with CTXOS_E2E_LOGS=1) it first prints the end of every
// agent's log.
func (c *Cluster) teardown() {
	if c.t.Failed() || os.Getenv("CTXOS_E2E_LOGS") != "" {
		for _, h := range c.Hosts {
			b, _ := os.ReadFile(h.logPath)
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			c.t.Logf("--- last lines of %s's log (%s)\n%s", h.Name, h.logPath, strings.Join(lines, "\n"))
		}
	}
	for _, h := range c.Hosts {
		h.kill()
	}
	for _, h := range c.Hosts {
		if !h.lost {
			if err := deleteNamespace(h.NS); err != nil {
				c.t.Errorf("teardown: %v", err)
			}
		}
	}
	if err := deleteNamespace(c.sw); err != nil {
		c.t.Errorf("teardown: %v", err)
	}
	// Workloads never leave their host's namespace, but make sure none of
	// this cluster's survived it.
	for _, p := range markerProcesses(c.Marker) {
		syscall.Kill(p.Pid, syscall.SIGKILL)
		c.t.Errorf("teardown: workload pid %d outlived its namespace", p.Pid)
	}
}

// Live returns the hosts not lost.
func (c *Cluster) Live() []*Host {
	var out []*Host
	for _, h := range c.Hosts {
		if !h.lost {
			out = append(out, h)
		}
	}
	return out
}

// Host returns the host named name.
func (c *Cluster) Host(name string) *Host {
	for _, h := range c.Hosts {
		if h.Name == name {
			return h
		}
	}
	c.t.Fatalf("no host %s", name)
	return nil
}

func (h *Host) gossipAddr() string { return fmt.Sprintf("%s:%d", h.Addr, gossipPort) }
func (h *Host) apiAddr() string    { return fmt.Sprintf("%s:%d", h.Addr, apiPort) }

// start runs `ctxos agent` inside the host's namespace, its log appended
// to the host's log file; the agent keeps its data dir across restarts.
func (h *Host) start(t testing.TB, join []string) {
	t.Helper()
	args := []string{"netns", "exec", h.NS, ctxosBin, "agent",
		"--name", h.Name,
		"--data-dir", h.dataDir,
		"--bind", h.gossipAddr(),
		"--api", h.apiAddr(),
		"--profile", profile,
		"--status-interval", "2s",
		// The scaler decides every second and shrinks after 3 s of lower
		// recommendations, so the autoscale flow takes seconds.
		"--scale-period", "1s",
		"--scale-down-window", "3s",
	}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	if h.syncer {
		args = append(args, "--repo", h.c.Repo.Bare, "--branch", "main", "--interval", "2s")
	}
	logf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", args...)
	cmd.Dir = h.c.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C on the terminal reaches the test
	// process, which tears everything down, and not the agents directly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	world.mu.Lock()
	world.agents[cmd.Process] = true
	world.mu.Unlock()
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		world.mu.Lock()
		delete(world.agents, cmd.Process)
		world.mu.Unlock()
		close(done)
	}()
	h.mu.Lock()
	h.cmd, h.done = cmd, done
	h.mu.Unlock()
}

// signal sends sig to the agent and waits until it exits.
func (h *Host) signal(t testing.TB, sig syscall.Signal, timeout time.Duration) {
	t.Helper()
	h.mu.Lock()
	cmd, done := h.cmd, h.done
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatalf("%s: agent did not exit within %v of %v", h.Name, timeout, sig)
	}
}

// kill kills the agent (not its workloads) with SIGKILL.
func (h *Host) kill() {
	h.mu.Lock()
	cmd, done := h.cmd, h.done
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

// lose takes the host out for good, as a machine that dies: kill -9 of the
// agent and of everything in the namespace, then the namespace (and its
// link to the bridge) is deleted.
func (h *Host) lose(t testing.TB) {
	t.Helper()
	h.kill()
	if err := deleteNamespace(h.NS); err != nil {
		t.Fatal(err)
	}
	h.lost = true
}

// setLink brings the host's port on the bridge up or down: down cuts the
// host off from every other host while it keeps running.
func (h *Host) setLink(t testing.TB, up bool) {
	t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	if _, err := ip("-n", h.c.sw, "link", "set", h.port, state); err != nil {
		t.Fatal(err)
	}
}

// ctxos runs the CLI inside the host's namespace against its own agent.
func (h *Host) ctxos(args ...string) (stdout, stderr string, code int) {
	return h.run(append(args, "--api", h.apiAddr())...)
}

// run runs the CLI inside the host's namespace with args as given.
func (h *Host) run(args ...string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{"netns", "exec", h.NS, ctxosBin}, args...)
	return runCmd(ctx, h.c.dir, nil, "ip", full...)
}

// mustJSON runs a CLI command with -o json and decodes its output into v.
func (h *Host) mustJSON(t testing.TB, v any, args ...string) {
	t.Helper()
	if err := h.json(v, args...); err != nil {
		t.Fatal(err)
	}
}

func (h *Host) json(v any, args ...string) error {
	out, errOut, code := h.ctxos(append(args, "-o", "json")...)
	if code != 0 {
		return fmt.Errorf("%s: ctxos %s: exit %d: %s", h.Name, strings.Join(args, " "), code, strings.TrimSpace(errOut))
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("%s: ctxos %s: %w: %q", h.Name, strings.Join(args, " "), err, out)
	}
	return nil
}

// waitMembers waits until every host in hosts sees exactly hosts alive.
func (c *Cluster) waitMembers(t testing.TB, hosts []*Host, timeout time.Duration) {
	t.Helper()
	want := map[string]bool{}
	for _, h := range hosts {
		want[h.Name] = true
	}
	waitFor(t, timeout, fmt.Sprintf("%d hosts see each other alive", len(hosts)), func() (bool, string) {
		for _, h := range hosts {
			var st statusView
			if err := h.json(&st, "status"); err != nil {
				return false, err.Error()
			}
			alive := map[string]bool{}
			for _, m := range st.Members {
				if m.State == "alive" {
					alive[m.Name] = true
				}
			}
			for name := range want {
				if !alive[name] {
					return false, fmt.Sprintf("%s does not see %s alive (members %v)", h.Name, name, st.Members)
				}
			}
		}
		return true, ""
	})
}

// newMarker returns a sleep duration in seconds unique to this run, so
// the workloads of one cluster are told apart from everything else.
func newMarker(t testing.TB) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(1_000_000 + binary.BigEndian.Uint32(b[:])%8_000_000)
}
