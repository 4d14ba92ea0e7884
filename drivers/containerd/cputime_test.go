package containerd_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ctxos/ctxos/drivers"
	ctrd "github.com/ctxos/ctxos/drivers/containerd"
)

// TestCPUTime reads a busy container's CPU time both ways the driver can:
// from the host's cgroup files, and through containerd's task metrics when
// those files are out of its reach. The CPU burns in a child of the
// container's init; an idle container beside it stays low.
func TestCPUTime(t *testing.T) {
	dm := requireContainerd(t)
	const ns = "ctxos-cpu"
	const busyCPU = 200 * time.Millisecond
	tests := []struct {
		name    string
		metrics bool
	}{
		{"cgroup files", false},
		{"task metrics", true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDriver(t, dm, ctrd.Config{Namespace: ns})
			if tc.metrics {
				d.ReadCPUTimeFromMetrics()
			}
			busy := shellSpec(fmt.Sprintf("ctx.busy.%d", i), "trap 'exit 0' TERM; yes > /dev/null & wait")
			idle := shellSpec(fmt.Sprintf("ctx.idle.%d", i), "trap 'exit 0' TERM; sleep 1000 & wait")
			converge(t, d, busy, idle)
			if !tc.metrics {
				v1 := filepath.Join("/sys/fs/cgroup/cpuacct", ns, busy.ID, "cpuacct.usage")
				v2 := filepath.Join("/sys/fs/cgroup", ns, busy.ID, "cpu.stat")
				_, err1 := os.Stat(v1)
				_, err2 := os.Stat(v2)
				if err1 != nil && err2 != nil {
					t.Fatalf("neither %s nor %s exists: the driver cannot read them either", v1, v2)
				}
			}
			var b, s drivers.Instance
			waitFor(t, "busy container at "+busyCPU.String()+" of CPU", 30*time.Second, func() (bool, string) {
				prev := b.CPUTime
				obs := observe(t, d)
				b, _ = find(obs, busy.ID)
				s, _ = find(obs, idle.ID)
				if b.CPUTime < prev {
					t.Fatalf("CPU time went back from %s to %s", prev, b.CPUTime)
				}
				return b.CPUTime >= busyCPU, fmt.Sprintf("busy %s", b.CPUTime)
			})
			if s.State != drivers.Running || s.CPUTime >= busyCPU/2 {
				t.Errorf("idle container: %s with CPU time %s, want running under %s", s.State, s.CPUTime, busyCPU/2)
			}
			if s.CPUTime == 0 {
				t.Errorf("idle container: CPU time 0, want what its start cost (runc init, sh)")
			}
		})
	}
}
