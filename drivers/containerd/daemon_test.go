package containerd_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/ctxos/ctxos/drivers"
	ctrd "github.com/ctxos/ctxos/drivers/containerd"
	"github.com/ctxos/ctxos/drivers/containerd/containerdtest"
)

const containerdBin = "/usr/bin/containerd"

// shared is the containerd every test uses unless it needs its own; nil
// with skipReason set when containerd cannot run here.
var (
	shared     *daemon
	skipReason string
	archives   string // dir of the test image archives
)

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			skipReason = "containerd tests need root (running as uid " + strconv.Itoa(os.Geteuid()) + ")"
		} else if _, err := os.Stat(containerdBin); err != nil {
			skipReason = "containerd is not installed: " + err.Error()
		} else if _, err := os.Stat(containerdtest.BusyboxPath); err != nil {
			skipReason = "busybox-static is not installed (apt-get install -y busybox-static): " + err.Error()
		} else {
			var err error
			shared, err = startDaemon()
			if err != nil {
				fmt.Fprintln(os.Stderr, "start containerd:", err)
				return 1
			}
			defer shared.stop()
			archives, err = os.MkdirTemp("", "ctxos-images-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(archives)
			if err := buildArchives(archives); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// daemon is a containerd of the tests' own, with config, root, state and
// socket under a short temp dir (unix socket paths must stay under 108
// bytes).
type daemon struct {
	dir    string
	socket string
	cmd    *exec.Cmd
	logf   *os.File
}

// startDaemon starts containerd in a new temp dir and waits for its socket.
func startDaemon() (*daemon, error) {
	dir, err := os.MkdirTemp("/tmp", "ctxd-")
	if err != nil {
		return nil, err
	}
	socket, err := containerdtest.WriteConfig(dir)
	if err != nil {
		return nil, err
	}
	d := &daemon{dir: dir, socket: socket}
	return d, d.start()
}

// start runs containerd over d's dir (again, after stop) and waits until
// it serves.
func (d *daemon) start() error {
	logf, err := os.OpenFile(filepath.Join(d.dir, "containerd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	d.logf = logf
	d.cmd = exec.Command(containerdBin, "--config", filepath.Join(d.dir, "config.toml"))
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", containerdBin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- d.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("containerd exited at start: %v; log %s:\n%s", err, logf.Name(), tail(logf.Name()))
		default:
		}
		if serving(d.socket) {
			go func() { <-exited }()
			return nil
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	d.cmd.Process.Kill()
	return fmt.Errorf("containerd did not serve %s within 30s; log:\n%s", d.socket, tail(logf.Name()))
}

func serving(socket string) bool {
	conn, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	c, err := containerd.New(socket, containerd.WithTimeout(time.Second))
	if err != nil {
		return false
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ok, err := c.IsServing(ctx)
	return err == nil && ok
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// kill stops the daemon alone: its shims and containers keep running, as
// when containerd crashes or is restarted on a node.
func (d *daemon) kill() {
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && d.cmd.Process.Signal(syscall.Signal(0)) == nil {
			time.Sleep(20 * time.Millisecond) // polling interval
		}
		d.cmd.Process.Kill()
	}
	for serving(d.socket) {
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	d.logf.Close()
}

// stop removes every task and container the tests left, stops the daemon,
// ends the shims it started and removes its dir.
func (d *daemon) stop() {
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
	d.kill()
	for _, pid := range shimPids(d.socket) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	unmountUnder(d.dir)
	os.RemoveAll(d.dir)
}

// shimPids returns the pids of the shims started by the daemon at socket,
// found by the -address argument each shim carries.
func shimPids(socket string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.Contains(args[0], "containerd-shim") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == socket {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var targets []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			targets = append(targets, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(targets)))
	for _, t := range targets {
		syscall.Unmount(t, syscall.MNT_DETACH)
	}
}

// requireContainerd skips tb when containerd cannot run here and returns
// the shared daemon.
func requireContainerd(tb testing.TB) *daemon {
	tb.Helper()
	if shared == nil {
		tb.Skip(skipReason)
	}
	return shared
}

// startContainerd starts a containerd of tb's own, stopped at the end.
func startContainerd(tb testing.TB) *daemon {
	tb.Helper()
	requireContainerd(tb)
	d, err := startDaemon()
	if err != nil {
		tb.Fatalf("start containerd: %v", err)
	}
	tb.Cleanup(d.stop)
	return d
}

// client returns a containerd client of d for namespace ns, closed at the
// end of tb: the tests' independent view of what runs.
func (d *daemon) client(tb testing.TB, ns string) (*containerd.Client, context.Context) {
	tb.Helper()
	c, err := containerd.New(d.socket, containerd.WithDefaultNamespace(ns), containerd.WithTimeout(2*time.Second))
	if err != nil {
		tb.Fatalf("containerd client: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c, namespaces.WithNamespace(context.Background(), ns)
}

// running counts the running tasks of container id in namespace ns.
func (d *daemon) running(tb testing.TB, ns, id string) int {
	tb.Helper()
	c, ctx := d.client(tb, ns)
	resp, err := c.TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		tb.Fatalf("list tasks: %v", err)
	}
	n := 0
	for _, p := range resp.Tasks {
		if p.ID == id && p.Status == tasktypes.Status_RUNNING {
			n++
		}
	}
	return n
}

// containerIDs lists the containers of namespace ns, as `ctr c ls` would.
func (d *daemon) containerIDs(tb testing.TB, ns string) []string {
	tb.Helper()
	out, err := exec.Command("/usr/bin/ctr", "-a", d.socket, "-n", ns, "c", "ls", "-q").CombinedOutput()
	if err != nil {
		tb.Fatalf("ctr c ls: %v: %s", err, out)
	}
	ids := strings.Fields(string(out))
	sort.Strings(ids)
	return ids
}

// newDriver returns a driver on d configured by cfg. At the end of tb it
// deletes every container of its namespace and closes.
func newDriver(tb testing.TB, d *daemon, cfg ctrd.Config) *ctrd.Driver {
	tb.Helper()
	drv := openDriver(tb, d, cfg)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := drivers.Converge(ctx, drv, nil); err != nil && !errors.Is(err, drivers.ErrClosed) {
			tb.Errorf("cleanup: delete every container: %v", err)
		}
		drv.Close()
	})
	return drv
}

// openDriver returns a driver on d configured by cfg; the caller closes it.
func openDriver(tb testing.TB, d *daemon, cfg ctrd.Config) *ctrd.Driver {
	tb.Helper()
	cfg.Socket = d.socket
	if cfg.StateDir == "" {
		cfg.StateDir = tb.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	drv, err := ctrd.New(cfg)
	if err != nil {
		tb.Fatalf("containerd.New: %v", err)
	}
	return drv
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, timeout time.Duration, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(25 * time.Millisecond) // polling interval
	}
	tb.Fatalf("%s: not within %s; last: %s", what, timeout, last)
}
