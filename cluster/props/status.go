package props

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/load"
	"github.com/shirou/gopsutil/v4/mem"
	psnet "github.com/shirou/gopsutil/v4/net"
)

// DefaultCPUWindow is how long the first CPU sample measures.
const DefaultCPUWindow = 200 * time.Millisecond

var (
	_ StatusCollector = (*CPUStatus)(nil)
	_ StatusCollector = LoadStatus{}
	_ StatusCollector = MemoryStatus{}
	_ StatusCollector = DiskStatus{}
	_ StatusCollector = (*DiskIOStatus)(nil)
	_ StatusCollector = (*NetIOStatus)(nil)
	_ StatusCollector = UptimeStatus{}
)

// CPUStatus reports the busy share of all CPUs since its previous sample.
// It keeps its own previous sample rather than using gopsutil's
// cpu.Percent(0), whose previous sample is global to the process and so
// shared with any other caller.
type CPUStatus struct {
	// Times returns cumulative busy and total CPU seconds summed over all
	// CPUs; nil means gopsutil's cpu.Times.
	Times func(ctx context.Context) (busy, total float64, err error)
	// Window is how long the first sample measures, blocking the call for
	// that long; zero or negative means the first sample reports 0%.
	Window time.Duration

	mu   sync.Mutex
	last *[2]float64 // busy, total
}

// Name implements [StatusCollector].
func (*CPUStatus) Name() string { return "cpu" }

// CollectStatus implements [StatusCollector].
func (c *CPUStatus) CollectStatus(ctx context.Context, s *Status) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	times := c.Times
	if times == nil {
		times = cpuTimes
	}
	if c.last == nil && c.Window > 0 {
		busy, total, err := times(ctx)
		if err != nil {
			return err
		}
		c.last = &[2]float64{busy, total}
		t := time.NewTimer(c.Window)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	busy, total, err := times(ctx)
	if err != nil {
		return err
	}
	if c.last != nil {
		s.CPUPercent = busyPercent(c.last[0], c.last[1], busy, total)
	}
	c.last = &[2]float64{busy, total}
	return nil
}

// busyPercent is the busy share between two samples, clamped to 0–100 as
// counters read from different CPUs at slightly different times can
// disagree a little.
func busyPercent(busy0, total0, busy1, total1 float64) float64 {
	dBusy, dTotal := busy1-busy0, total1-total0
	if dTotal <= 0 || dBusy <= 0 {
		return 0
	}
	return min(100, dBusy/dTotal*100)
}

func cpuTimes(ctx context.Context) (busy, total float64, err error) {
	ts, err := cpu.TimesWithContext(ctx, false)
	if err != nil {
		return 0, 0, fmt.Errorf("read cpu times: %w", err)
	}
	if len(ts) == 0 {
		return 0, 0, errors.New("read cpu times: no cpu")
	}
	t := ts[0]
	// Linux counts guest time inside user and nice already.
	total = t.User + t.System + t.Idle + t.Nice + t.Iowait + t.Irq + t.Softirq + t.Steal
	return total - t.Idle - t.Iowait, total, nil
}

// LoadStatus reports the load averages.
type LoadStatus struct{}

// Name implements [StatusCollector].
func (LoadStatus) Name() string { return "load" }

// CollectStatus implements [StatusCollector].
func (LoadStatus) CollectStatus(ctx context.Context, s *Status) error {
	a, err := load.AvgWithContext(ctx)
	if err != nil {
		return fmt.Errorf("read load average: %w", err)
	}
	s.Load1, s.Load5, s.Load15 = a.Load1, a.Load5, a.Load15
	return nil
}

// MemoryStatus reports the use of physical memory.
type MemoryStatus struct{}

// Name implements [StatusCollector].
func (MemoryStatus) Name() string { return "memory" }

// CollectStatus implements [StatusCollector].
func (MemoryStatus) CollectStatus(ctx context.Context, s *Status) error {
	vm, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return fmt.Errorf("read memory: %w", err)
	}
	s.Memory = Memory{Total: vm.Total, Used: vm.Used, Available: vm.Available}
	return nil
}

// DiskStatus reports the live space of the filesystems [DiskProps] lists.
type DiskStatus struct{}

// Name implements [StatusCollector].
func (DiskStatus) Name() string { return "disk" }

// CollectStatus implements [StatusCollector].
func (DiskStatus) CollectStatus(ctx context.Context, s *Status) error {
	parts, err := realFilesystems(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range parts {
		u, err := disk.UsageWithContext(ctx, p.Mountpoint)
		if err != nil {
			errs = append(errs, fmt.Errorf("size of %s: %w", p.Mountpoint, err))
			continue
		}
		s.Disks = append(s.Disks, DiskSpace{Mountpoint: p.Mountpoint, Total: u.Total, Free: u.Free})
	}
	return errors.Join(errs...)
}

// DiskIOStatus reports the bytes read and written by the node's physical
// disks and their rate since its previous sample.
type DiskIOStatus struct {
	// Counters returns cumulative bytes read and written; nil means the
	// physical disks' counters through gopsutil.
	Counters func(ctx context.Context) (read, written uint64, err error)
	// Now is the clock for rates; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	rates counterRates
}

// Name implements [StatusCollector].
func (*DiskIOStatus) Name() string { return "diskio" }

// CollectStatus implements [StatusCollector].
func (d *DiskIOStatus) CollectStatus(ctx context.Context, s *Status) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	counters := d.Counters
	if counters == nil {
		counters = diskCounters
	}
	read, written, err := counters(ctx)
	if err != nil {
		return err
	}
	r := d.rates.next(clock(d.Now)(), read, written)
	s.DiskIO = DiskIO{ReadBytes: read, WriteBytes: written, ReadBytesPerSec: r[0], WriteBytesPerSec: r[1]}
	return nil
}

// diskCounters sums the counters of whole physical disks only: partitions
// and virtual block devices (loop, device mapper, md, zram) count the same
// bytes again or none that reach a disk.
func diskCounters(ctx context.Context) (read, written uint64, err error) {
	all, err := disk.IOCountersWithContext(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("read disk counters: %w", err)
	}
	entries, err := os.ReadDir(sysPath("block"))
	if err != nil {
		return 0, 0, fmt.Errorf("list disks: %w", err)
	}
	for _, e := range entries {
		c, ok := all[e.Name()]
		if !ok || virtualDevice(sysPath("block", e.Name())) {
			continue
		}
		read += c.ReadBytes
		written += c.WriteBytes
	}
	return read, written, nil
}

// NetIOStatus reports the bytes received and sent by the node's physical
// network interfaces and their rate since its previous sample.
type NetIOStatus struct {
	// Counters returns cumulative bytes received and sent; nil means the
	// physical interfaces' counters through gopsutil.
	Counters func(ctx context.Context) (rx, tx uint64, err error)
	// Now is the clock for rates; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	rates counterRates
}

// Name implements [StatusCollector].
func (*NetIOStatus) Name() string { return "netio" }

// CollectStatus implements [StatusCollector].
func (n *NetIOStatus) CollectStatus(ctx context.Context, s *Status) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	counters := n.Counters
	if counters == nil {
		counters = netCounters
	}
	rx, tx, err := counters(ctx)
	if err != nil {
		return err
	}
	r := n.rates.next(clock(n.Now)(), rx, tx)
	s.NetIO = NetIO{RxBytes: rx, TxBytes: tx, RxBytesPerSec: r[0], TxBytesPerSec: r[1]}
	return nil
}

// netCounters sums the counters of physical interfaces: traffic of a
// container crosses its veth, a bridge and the uplink, and would count
// three times. Where no interface is physical (inside a container or some
// VMs) every interface but loopback counts.
func netCounters(ctx context.Context) (rx, tx uint64, err error) {
	all, err := psnet.IOCountersWithContext(ctx, true)
	if err != nil {
		return 0, 0, fmt.Errorf("read network counters: %w", err)
	}
	var prx, ptx, vrx, vtx uint64
	physical := false
	for _, c := range all {
		if !virtualDevice(sysPath("class", "net", c.Name)) {
			physical = true
			prx += c.BytesRecv
			ptx += c.BytesSent
		} else if c.Name != "lo" {
			vrx += c.BytesRecv
			vtx += c.BytesSent
		}
	}
	if physical {
		return prx, ptx, nil
	}
	return vrx, vtx, nil
}

// virtualDevice reports whether the sysfs entry at p belongs to a device
// the kernel made up, found under /sys/devices/virtual. An entry that
// cannot be resolved counts as virtual.
func virtualDevice(p string) bool {
	target, err := filepath.EvalSymlinks(p)
	if err != nil {
		return true
	}
	return strings.Contains(target, "/devices/virtual/")
}

// sysPath joins elems under sysfs, honouring HOST_SYS as gopsutil does for
// an agent that runs in a container with the host's /sys mounted elsewhere.
func sysPath(elems ...string) string {
	root := os.Getenv("HOST_SYS")
	if root == "" {
		root = "/sys"
	}
	return filepath.Join(append([]string{root}, elems...)...)
}

// UptimeStatus reports the time since boot.
type UptimeStatus struct{}

// Name implements [StatusCollector].
func (UptimeStatus) Name() string { return "uptime" }

// CollectStatus implements [StatusCollector].
func (UptimeStatus) CollectStatus(ctx context.Context, s *Status) error {
	up, err := host.UptimeWithContext(ctx)
	if err != nil {
		return fmt.Errorf("read uptime: %w", err)
	}
	s.UptimeSeconds = up
	return nil
}

// counterRates turns cumulative counters into per-second rates between
// consecutive calls. The zero value is ready; the first call gives zeros.
type counterRates struct {
	at   time.Time
	vals []uint64
}

func (c *counterRates) next(now time.Time, vals ...uint64) []float64 {
	rates := make([]float64, len(vals))
	if c.vals != nil && len(c.vals) == len(vals) && now.After(c.at) {
		secs := now.Sub(c.at).Seconds()
		for i, v := range vals {
			// A counter that went back (a disk removed, an interface
			// recreated) has no meaningful rate for this sample.
			if v >= c.vals[i] {
				rates[i] = float64(v-c.vals[i]) / secs
			}
		}
	}
	c.at, c.vals = now, vals
	return rates
}

func clock(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}
