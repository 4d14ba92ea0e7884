package main

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/drivers/containerd/containerdtest"
	"github.com/ctxos/ctxos/reconcile"
)

// The containerd helpers below start a private containerd with its own
// root, state and socket for one test; the image comes from
// drivers/containerd/containerdtest, shared with the driver's tests.

const (
	testContainerd = "/usr/bin/containerd"
	testNamespace  = "ctxos"
)

type testDaemon struct {
	dir, socket string
	cmd         *exec.Cmd
	// archive is the busybox OCI image archive the tests' CTXs run.
	archive string
}

// startTestContainerd starts a containerd of tb's own, or skips tb saying
// why it cannot run here. It is stopped, with every container and shim it
// ran, at the end of tb.
func startTestContainerd(tb testing.TB) *testDaemon {
	tb.Helper()
	switch {
	case os.Geteuid() != 0:
		tb.Skipf("containerd agent test needs root (running as uid %d)", os.Geteuid())
	case !fileExists(testContainerd):
		tb.Skipf("containerd is not installed at %s", testContainerd)
	case !fileExists(containerdtest.BusyboxPath):
		tb.Skipf("busybox-static is not installed (apt-get install -y busybox-static): no %s", containerdtest.BusyboxPath)
	}
	dir, err := os.MkdirTemp("/tmp", "ctxd-")
	if err != nil {
		tb.Fatal(err)
	}
	socket, err := containerdtest.WriteConfig(dir)
	if err != nil {
		tb.Fatal(err)
	}
	d := &testDaemon{dir: dir, socket: socket}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		tb.Fatal(err)
	}
	d.cmd = exec.Command(testContainerd, "--config", filepath.Join(dir, "config.toml"))
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(dir)
		tb.Skipf("containerd cannot start: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait(); logf.Close() }()
	tb.Cleanup(func() { d.stop(exited) })
	deadline := time.Now().Add(30 * time.Second)
	for !d.serving() {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logf.Name())
			tb.Skipf("containerd cannot start: exited with %v:\n%s", err, tailString(string(b), 2000))
		default:
		}
		if time.Now().After(deadline) {
			tb.Skipf("containerd cannot start: no answer on %s within 30s", d.socket)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	d.archive = filepath.Join(d.dir, "busybox-oci.tar")
	if err := containerdtest.WriteArchive(d.archive, "oci"); err != nil {
		tb.Fatal(err)
	}
	return d
}

// client connects to d in the tests' namespace; it is closed at the end
// of tb.
func (d *testDaemon) client(tb testing.TB) *containerd.Client {
	tb.Helper()
	c, err := containerd.New(d.socket, containerd.WithDefaultNamespace(testNamespace), containerd.WithTimeout(5*time.Second))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (d *testDaemon) serving() bool {
	conn, err := net.DialTimeout("unix", d.socket, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	c, err := containerd.New(d.socket, containerd.WithTimeout(time.Second))
	if err != nil {
		return false
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ok, err := c.IsServing(ctx)
	return err == nil && ok
}

// stop deletes every task and container, stops containerd, kills the shims
// it started and removes its dir.
func (d *testDaemon) stop(exited <-chan error) {
	if c, err := containerd.New(d.socket, containerd.WithTimeout(2*time.Second)); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		nss, _ := c.NamespaceService().List(ctx)
		for _, ns := range nss {
			nctx := namespaces.WithNamespace(ctx, ns)
			cs, _ := c.Containers(nctx)
			for _, ct := range cs {
				if t, err := ct.Task(nctx, nil); err == nil {
					t.Delete(nctx, containerd.WithProcessKill)
				}
				ct.Delete(nctx, containerd.WithSnapshotCleanup)
			}
		}
		cancel()
		c.Close()
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-exited
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && strings.Contains(args[0], "containerd-shim") && slices.Contains(args, d.socket) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		var targets []string
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], d.dir+"/") {
				targets = append(targets, f[4])
			}
		}
		sort.Sort(sort.Reverse(sort.StringSlice(targets)))
		for _, t := range targets {
			syscall.Unmount(t, syscall.MNT_DETACH)
		}
	}
	os.RemoveAll(d.dir)
}

// runningTasks maps the running tasks of the ctxos namespace to their pids.
func (d *testDaemon) runningTasks(tb testing.TB, c *containerd.Client) map[string]uint32 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), testNamespace), 5*time.Second)
	defer cancel()
	resp, err := c.TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		tb.Errorf("list tasks: %v", err)
		return nil
	}
	out := map[string]uint32{}
	for _, t := range resp.Tasks {
		if t.Status == tasktypes.Status_RUNNING {
			out[t.ID] = t.Pid
		}
	}
	return out
}

// containerIDs lists the containers of the ctxos namespace with ctr, as a
// user would.
func (d *testDaemon) containerIDs(tb testing.TB) []string {
	tb.Helper()
	out, err := exec.Command("/usr/bin/ctr", "-a", d.socket, "-n", testNamespace, "c", "ls", "-q").CombinedOutput()
	if err != nil {
		tb.Fatalf("ctr c ls: %v: %s", err, out)
	}
	ids := strings.Fields(string(out))
	sort.Strings(ids)
	return ids
}

// agentInstances reads /run/<node>/instances from a's replica.
func agentInstances(a *agent) map[string]reconcile.InstanceStatus {
	e, ok := a.node.Store().Get("/run/" + a.cfg.name + "/instances")
	if !ok {
		return nil
	}
	var m map[string]reconcile.InstanceStatus
	if vfs.Decode(e.Value, &m) != nil {
		return nil
	}
	return m
}

// TestContainerdAgent runs an in-process agent with the containerd driver
// on a dev-mode directory holding an OCI-archive CTX of 3 replicas: the 3
// containers run; a changed command replaces them one at a time (never
// more than rollout.maxUnavailable = 1 down, as the running tasks show);
// an agent stopped without stopping its workloads and started again on the
// same data dir adopts the 3 containers without restarting any.
func TestContainerdAgent(t *testing.T) {
	d := startTestContainerd(t)
	archive, client := d.archive, d.client(t)

	dir := t.TempDir()
	ctxFile := filepath.Join(dir, "ctx", "box.cue")
	if err := os.MkdirAll(filepath.Dir(ctxFile), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(secs int) {
		cue := fmt.Sprintf(`ctx: box: {
	runtime: "containerd"
	image: %q
	command: "/bin/sh"
	args: ["-c", "trap 'exit 0' TERM; sleep %d & wait"]
	replicas: 3
	rollout: maxUnavailable: 1
}
`, "oci-archive:"+archive, secs)
		if err := os.WriteFile(ctxFile, []byte(cue), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(1000)
	want := []string{"ctx.box.0", "ctx.box.1", "ctx.box.2"}
	agentLog := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", tailString(agentLog.String(), 20000))
		}
	})
	cfg := agentConfig{name: "local", dataDir: filepath.Join(t.TempDir(), "data"), api: "127.0.0.1:0", bind: "127.0.0.1:0",
		profile: "local", statusEvery: time.Second, logLevel: "info", logOutput: agentLog,
		containerdSocket: d.socket, git: gitConfig{repo: dir, dev: true}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := startAgent(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			a.stop()
		}
	}()
	if _, ok := a.drivers["containerd"]; !ok {
		t.Fatalf("the agent did not open the containerd driver on %s; log:\n%s", d.socket, agentLog)
	}

	// converged waits until the agent has converged running the 3
	// instances, none with a spec hash of skip (each instance's spec, and
	// so its hash, differs by its id), and returns their hashes.
	converged := func(a *agent, skip map[string]string) map[string]string {
		t.Helper()
		var hashes map[string]string
		last := ""
		defer func() {
			if t.Failed() {
				t.Logf("last seen: %s", last)
			}
		}()
		waitUntil(t, 2*time.Minute, "3 containers of a new spec running, converged", func() bool {
			insts := agentInstances(a)
			last = fmt.Sprintf("instances %+v progress %+v", insts, a.reconciler.Progress())
			hashes = map[string]string{}
			for _, id := range want {
				st, ok := insts[id]
				if !ok || st.State != "running" || st.SpecHash == skip[id] {
					return false
				}
				hashes[id] = st.SpecHash
			}
			if len(insts) != 3 || !a.reconciler.Progress().Converged {
				return false
			}
			return len(d.runningTasks(t, client)) == 3
		})
		return hashes
	}
	first := converged(a, nil)
	if got := d.containerIDs(t); !slices.Equal(got, want) {
		t.Fatalf("ctr c ls = %v, want %v", got, want)
	}

	// Rollout: poll the running tasks while the 3 containers are replaced.
	var (
		mu         sync.Mutex
		minRunning = 3
		samples    int
	)
	pollCtx, stopPoll := context.WithCancel(ctx)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for pollCtx.Err() == nil {
			n := len(d.runningTasks(t, client))
			mu.Lock()
			minRunning, samples = min(minRunning, n), samples+1
			mu.Unlock()
			time.Sleep(5 * time.Millisecond) // sampling interval
		}
	}()
	write(1001)
	second := converged(a, first)
	stopPoll()
	<-polled
	mu.Lock()
	t.Logf("rollout: %d samples of the running tasks, fewest %d", samples, minRunning)
	if minRunning < 2 {
		t.Errorf("during the rollout only %d of 3 tasks ran at one point; maxUnavailable is 1", minRunning)
	}
	mu.Unlock()
	steps, err := a.journal.History(reconcile.HistoryFilter{CTX: "box"})
	if err != nil {
		t.Fatal(err)
	}
	var spans [][2]time.Time
	for _, s := range steps {
		if s.Action == "replace" && s.State == reconcile.StepDone {
			spans = append(spans, [2]time.Time{s.Started, s.Ended})
		}
	}
	if len(spans) != 3 {
		t.Fatalf("%d replace steps done, want 3", len(spans))
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i][0].Before(spans[j][0]) })
	for i := 1; i < len(spans); i++ {
		if spans[i][0].Before(spans[i-1][1]) {
			t.Errorf("replace %d started at %s before replace %d ended at %s", i, spans[i][0], i-1, spans[i-1][1])
		}
	}

	// Stop the agent, leaving the workloads; a new agent adopts them.
	before := d.runningTasks(t, client)
	if err := a.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	stopped = true
	if got := d.runningTasks(t, client); len(got) != 3 {
		t.Fatalf("after the agent stopped %d tasks run, want the 3 left running", len(got))
	}
	b, err := startAgent(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer scancel()
		if _, err := b.stopWorkloads(sctx); err != nil {
			t.Errorf("stop workloads: %v", err)
		}
		b.stop()
	}()
	waitUntil(t, 2*time.Minute, "the new agent converged", func() bool {
		p := b.reconciler.Progress()
		return p.Converged && p.Running == 3
	})
	if h := converged(b, first); !maps.Equal(h, second) {
		t.Errorf("after the restart the spec hashes are %v, want %v", h, second)
	}
	if got := d.containerIDs(t); !slices.Equal(got, want) {
		t.Errorf("ctr c ls after the restart = %v, want %v", got, want)
	}
	if after := d.runningTasks(t, client); !maps.Equal(after, before) {
		t.Errorf("task pids after the restart %v, want the same as before %v (none restarted)", after, before)
	}
	newSteps, err := b.journal.History(reconcile.HistoryFilter{CTX: "box", Since: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range newSteps {
		if s.At.After(spans[len(spans)-1][1]) && s.Action != "" && s.State == reconcile.StepRunning {
			t.Errorf("the restarted agent ran step %s %s", s.Action, s.Resource)
		}
	}
}
