package containerd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/typeurl/v2"
)

// cpuTimes returns the CPU time the tasks of ids have used, by id: the
// usage of each task's cgroup, which counts every process the container
// ran. The driver's containers get the cgroup /<namespace>/<id> (containerd's
// default for a spec that names none), so the agent reads its usage file
// straight from the host's cgroup mount: a few µs a task. Where that file
// cannot be read (the agent sees another cgroup tree than runc, or runc
// runs with the systemd cgroup driver), one Metrics call asks containerd,
// which asks each task's shim for all its cgroup's stats: about 1ms a task.
// A task that has no metrics (it exited meanwhile) or metrics of a type
// this driver does not know is left out.
func (d *Driver) cpuTimes(ctx context.Context, ids []string) (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(ids))
	var filters []string
	for _, id := range ids {
		if t, ok := cgroupCPUTime(filepath.Join(d.cgroupRoot, "cpuacct", d.cfg.Namespace, id, "cpuacct.usage"),
			filepath.Join(d.cgroupRoot, d.cfg.Namespace, id, "cpu.stat")); ok {
			out[id] = t
			continue
		}
		filters = append(filters, "id=="+strconv.Quote(id))
	}
	if len(filters) == 0 {
		return out, nil
	}
	resp, err := d.client.TaskService().Metrics(ctx, &tasks.MetricsRequest{Filters: filters})
	if err != nil {
		return nil, d.wrap(fmt.Errorf("task metrics: %w", err))
	}
	for _, m := range resp.Metrics {
		if m.Data == nil {
			continue
		}
		v, err := typeurl.UnmarshalAny(m.Data)
		if err != nil {
			d.log.Debug("task metrics of unknown type", "id", m.ID, "type", m.Data.GetTypeUrl(), "err", err)
			continue
		}
		if t, ok := cgroupCPU(v); ok {
			out[m.ID] = t
		}
	}
	return out, nil
}

// cgroupCPU is the CPU usage in a cgroup v1 or v2 stats message.
func cgroupCPU(v any) (time.Duration, bool) {
	switch s := v.(type) {
	case *cgroupsv1.Metrics:
		if s.GetCPU().GetUsage() != nil {
			return time.Duration(s.GetCPU().GetUsage().GetTotal()), true // ns
		}
	case *cgroupsv2.Metrics:
		if s.GetCPU() != nil {
			return time.Duration(s.GetCPU().GetUsageUsec()) * time.Microsecond, true
		}
	}
	return 0, false
}

// cgroupCPUTime reads a cgroup's CPU usage: cpuacct.usage (ns) on cgroup v1,
// else usage_usec of cpu.stat on v2.
func cgroupCPUTime(v1Usage, v2Stat string) (time.Duration, bool) {
	if b, err := os.ReadFile(v1Usage); err == nil {
		if ns, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64); err == nil {
			return time.Duration(ns), true
		}
	}
	b, err := os.ReadFile(v2Stat)
	if err != nil {
		return 0, false
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("usage_usec ")); ok {
			if us, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64); err == nil {
				return time.Duration(us) * time.Microsecond, true
			}
		}
	}
	return 0, false
}
