//go:build cgo

package process_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/drivers/driverstest"
	"github.com/ctxos/ctxos/drivers/process"
)

func skipUnlessRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("isolate: true needs root")
	}
}

// isolatedSpec is a shell that, as the init of its pid namespace, must
// handle TERM itself: the kernel drops signals a namespace init has no
// handler for (a TERM that comes before the trap is set waits out the
// grace period).
func isolatedSpec(id string, variant int) drivers.Spec {
	s := drivers.Spec{
		ID: id, Kind: drivers.KindCTX, Name: "iso", Isolate: true,
		Command: "sh", Args: []string{"-c", `trap 'exit 0' TERM; sleep ` + []string{"1000", "2000", "3000"}[variant%3] + ` & wait`},
		Stop: drivers.StopPolicy{Grace: time.Second},
	}
	return s
}

func TestConformanceIsolated(t *testing.T) {
	skipUnlessRoot(t)
	driverstest.Run(t, driverstest.Factory{
		New: func(tb testing.TB, dir string) drivers.Driver {
			tb.Helper()
			return newDriver(tb, process.Config{StateDir: dir, Logger: discard()})
		},
		Spec: isolatedSpec,
		Halfway: func(ctx context.Context, tb testing.TB, d drivers.Driver, c drivers.Change) {
			tb.Helper()
			if err := d.(*process.Driver).ApplyHalfway(ctx, c); err != nil {
				tb.Fatalf("ApplyHalfway: %v", err)
			}
		},
		Count: func(tb testing.TB, id string) int { return process.CountRunning(id) },
		Busy: func(id string) drivers.Spec {
			s := isolatedSpec(id, 0)
			s.Args = []string{"-c", `trap 'exit 0' TERM; while :; do :; done & wait`}
			return s
		},
	})
}

// cgroupFile returns the first of the v1 and v2 paths of a cgroup file that
// exists.
func cgroupFile(id, controller, v1, v2 string) string {
	for _, p := range []string{filepath.Join("/sys/fs/cgroup", controller, "ctxos", id, v1), filepath.Join("/sys/fs/cgroup/ctxos", id, v2)} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func TestIsolateNamespacesAndLimits(t *testing.T) {
	skipUnlessRoot(t)
	const id = "ctx.iso.0"
	d := setup(t, process.Config{}, id)
	s := shSpec(id, `echo "pid=$$ host=$(hostname)"; if touch /etc/ctxos-probe 2>/dev/null; then echo rw; else echo ro; fi; trap 'exit 0' TERM; sleep 1000 & wait`)
	s.Isolate = true
	s.Resources = drivers.Resources{MemoryBytes: 64 << 20, Pids: 50, CPUMilli: 500}
	create(t, d, s)
	stdout, stderr := d.LogPaths(id)
	want := "pid=1 host=ctx.iso.0\nro\n"
	eventually(t, "probe output", func() bool { return readLog(t, stdout) == want })
	if got := readLog(t, stderr); got != "" {
		t.Errorf("stderr = %q", got)
	}
	if _, err := os.Stat("/etc/ctxos-probe"); err == nil {
		os.Remove("/etc/ctxos-probe")
		t.Error("the isolated process wrote into the host's /etc")
	}
	inst := waitState(t, d, id, drivers.Running)

	limits := []struct{ controller, v1, v2, want string }{
		{"memory", "memory.limit_in_bytes", "memory.max", "67108864"},
		{"pids", "pids.max", "pids.max", "50"},
		{"cpu", "cpu.cfs_quota_us", "cpu.max", "50000"},
	}
	for _, l := range limits {
		p := cgroupFile(id, l.controller, l.v1, l.v2)
		if p == "" {
			t.Errorf("no cgroup file %s or %s for %s", l.v1, l.v2, id)
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(string(b)); len(got) == 0 || got[0] != l.want {
			t.Errorf("%s = %q, want %s", p, b, l.want)
		}
	}

	r, err := d.Apply(ctxT(t), drivers.Change{ID: id, Action: drivers.Delete, Observed: &inst})
	if err != nil || r.Result != drivers.ResultChanged {
		t.Fatalf("delete = %+v, %v", r, err)
	}
	if n := process.CountRunning(id); n != 0 {
		t.Errorf("%d processes run after delete", n)
	}
	if p := cgroupFile(id, "memory", "", ""); p != "" {
		t.Errorf("cgroup %s left after delete", p)
	}
}

func TestIsolateMemoryLimitKills(t *testing.T) {
	skipUnlessRoot(t)
	const id = "ctx.iso.oom"
	d := setup(t, process.Config{}, id)
	// Holding 256 MiB in a shell variable under a 64 MiB limit (the limit
	// leaves room for the container's init, a copy of this test binary).
	s := shSpec(id, `x=$(head -c 268435456 /dev/zero | tr '\0' a); echo survived`)
	s.Isolate = true
	s.Restart.Policy = drivers.RestartNever
	s.Resources.MemoryBytes = 64 << 20
	create(t, d, s)
	inst := waitState(t, d, id, drivers.Failed)
	stdout, _ := d.LogPaths(id)
	if strings.Contains(readLog(t, stdout), "survived") || inst.ExitCode == 0 {
		t.Errorf("the process outgrew its memory limit: %+v, stdout %q", inst, readLog(t, stdout))
	}
}

func TestIsolateNeedsRootAndMountsNeedIsolate(t *testing.T) {
	t.Parallel()
	d := setup(t, process.Config{})
	iso := shSpec("ctx.iso.noroot", "true")
	iso.Isolate = true
	d.SetEUID(1000)
	_, err := d.Plan(ctxT(t), []drivers.Spec{iso}, nil)
	d.SetEUID(os.Geteuid())
	if !errors.Is(err, drivers.ErrUnsupported) || !strings.Contains(err.Error(), "root") || !strings.Contains(err.Error(), iso.ID) {
		t.Errorf("isolate without root: Plan = %v, want ErrUnsupported naming root and the instance", err)
	}
	s := shSpec("ctx.iso.mount", "true")
	s.Mounts = []drivers.Mount{{Source: "/srv", Target: "/data"}}
	if _, err := d.Plan(ctxT(t), []drivers.Spec{s}, nil); !errors.Is(err, drivers.ErrUnsupported) || !strings.Contains(err.Error(), "mounts") {
		t.Errorf("mounts without isolate: Plan = %v, want ErrUnsupported naming mounts", err)
	}
}

// TestIsolateCPUTimeFromCgroup: an isolated instance's CPU time is its
// cgroup's usage, which counts every process of the container.
func TestIsolateCPUTimeFromCgroup(t *testing.T) {
	skipUnlessRoot(t)
	const id = "ctx.iso.cpu"
	d := setup(t, process.Config{}, id)
	d.MeasureCPU([]string{id})
	s := isolatedSpec(id, 0)
	s.Args = []string{"-c", `trap 'exit 0' TERM; yes > /dev/null & wait`}
	create(t, d, s)
	var inst drivers.Instance
	eventually(t, "200ms of CPU", func() bool {
		inst, _ = observeOne(t, d, id)
		return inst.CPUTime >= 200*time.Millisecond
	})
	// Read after Observe, the cgroup's counter is at least what Observe
	// said; the /proc tree would count in 10ms ticks, the cgroup in ns.
	cg, ok := process.CgroupCPUTime(id)
	if !ok {
		t.Fatalf("no cgroup CPU usage readable for %s", id)
	}
	if cg < inst.CPUTime {
		t.Errorf("cgroup usage %s < observed CPU time %s", cg, inst.CPUTime)
	}
	if inst.CPUTime%(10*time.Millisecond) == 0 {
		t.Errorf("observed CPU time %s is a whole number of clock ticks: not read from the cgroup", inst.CPUTime)
	}
}
