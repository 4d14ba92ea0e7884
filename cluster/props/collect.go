package props

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"
	psnet "github.com/shirou/gopsutil/v4/net"
)

var (
	_ PropsCollector = CPUProps{}
	_ PropsCollector = MemoryProps{}
	_ PropsCollector = DiskProps{}
	_ PropsCollector = NetworkProps{}
	_ PropsCollector = OSProps{}
	_ PropsCollector = LabelProps{}
)

// CPUProps collects the CPU model and counts.
type CPUProps struct{}

// Name implements [PropsCollector].
func (CPUProps) Name() string { return "cpu" }

// CollectProps implements [PropsCollector]. Counts are set even when the
// model cannot be read.
func (CPUProps) CollectProps(ctx context.Context, hw *HW) error {
	var errs []error
	threads, err := cpu.CountsWithContext(ctx, true)
	if err != nil {
		errs = append(errs, fmt.Errorf("count logical cpus: %w", err))
	}
	cores, err := cpu.CountsWithContext(ctx, false)
	if err != nil {
		errs = append(errs, fmt.Errorf("count physical cores: %w", err))
	}
	hw.CPU.Threads, hw.CPU.Cores = threads, cores
	infos, err := cpu.InfoWithContext(ctx)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("read cpu info: %w", err))
	case len(infos) > 0:
		hw.CPU.Model = strings.TrimSpace(infos[0].ModelName)
		hw.CPU.MHz = infos[0].Mhz
	}
	if hw.CPU.Threads == 0 && err == nil {
		// Some kernels (containers with a masked cpuinfo) hide the
		// processor lines; one Info entry per logical CPU is the fallback.
		hw.CPU.Threads = len(infos)
	}
	return errors.Join(errs...)
}

// MemoryProps collects the physical memory size.
type MemoryProps struct{}

// Name implements [PropsCollector].
func (MemoryProps) Name() string { return "memory" }

// CollectProps implements [PropsCollector].
func (MemoryProps) CollectProps(ctx context.Context, hw *HW) error {
	vm, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return fmt.Errorf("read memory: %w", err)
	}
	hw.MemoryBytes = vm.Total
	return nil
}

// DiskProps collects the mounted real filesystems (see realFilesystems)
// with their size.
type DiskProps struct{}

// Name implements [PropsCollector].
func (DiskProps) Name() string { return "disk" }

// CollectProps implements [PropsCollector]. A filesystem whose size cannot
// be read is left out and named in the error; the others are set.
func (DiskProps) CollectProps(ctx context.Context, hw *HW) error {
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
		hw.Disks = append(hw.Disks, Disk{
			Mountpoint: p.Mountpoint,
			Device:     p.Device,
			Fstype:     p.Fstype,
			Total:      u.Total,
			Free:       u.Free,
		})
	}
	return errors.Join(errs...)
}

// realFilesystems lists the mounts of block-device filesystems, the ones
// /proc/filesystems does not mark "nodev" (so no proc, tmpfs, overlay,
// cgroup or network filesystem), without read-only images (squashfs, as
// snaps mount them) and with one mount per device: bind mounts of a
// device, as container runtimes make for /etc/hosts, are the same space,
// so the shortest mountpoint stands for them.
func realFilesystems(ctx context.Context) ([]disk.PartitionStat, error) {
	parts, err := disk.PartitionsWithContext(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	byDevice := map[string]disk.PartitionStat{}
	for _, p := range parts {
		if p.Fstype == "squashfs" {
			continue
		}
		if prev, ok := byDevice[p.Device]; ok && len(prev.Mountpoint) <= len(p.Mountpoint) {
			continue
		}
		byDevice[p.Device] = p
	}
	out := slices.Collect(maps.Values(byDevice))
	slices.SortFunc(out, func(a, b disk.PartitionStat) int { return strings.Compare(a.Mountpoint, b.Mountpoint) })
	return out, nil
}

// NetworkProps collects the network interfaces.
type NetworkProps struct{}

// Name implements [PropsCollector].
func (NetworkProps) Name() string { return "network" }

// CollectProps implements [PropsCollector].
func (NetworkProps) CollectProps(ctx context.Context, hw *HW) error {
	ifs, err := psnet.InterfacesWithContext(ctx)
	if err != nil {
		return fmt.Errorf("list network interfaces: %w", err)
	}
	for _, i := range ifs {
		n := Interface{
			Name:     i.Name,
			MAC:      i.HardwareAddr,
			MTU:      i.MTU,
			Up:       slices.Contains(i.Flags, "up"),
			Loopback: slices.Contains(i.Flags, "loopback"),
		}
		for _, a := range i.Addrs {
			n.Addrs = append(n.Addrs, a.Addr)
		}
		hw.Interfaces = append(hw.Interfaces, n)
	}
	return nil
}

// OSProps collects the operating system, kernel and host name.
type OSProps struct{}

// Name implements [PropsCollector].
func (OSProps) Name() string { return "os" }

// CollectProps implements [PropsCollector]. Each fact that can be read is
// set; the error names the others.
func (OSProps) CollectProps(ctx context.Context, hw *HW) error {
	var errs []error
	hw.OS.Name = runtime.GOOS
	platform, _, version, err := host.PlatformInformationWithContext(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("read platform: %w", err))
	}
	hw.OS.Platform, hw.OS.Version = platform, version
	if hw.OS.Kernel, err = host.KernelVersionWithContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("read kernel version: %w", err))
	}
	if hw.OS.Arch, err = host.KernelArch(); err != nil {
		errs = append(errs, fmt.Errorf("read kernel architecture: %w", err))
	}
	if hw.OS.Hostname, err = os.Hostname(); err != nil {
		errs = append(errs, fmt.Errorf("read host name: %w", err))
	}
	return errors.Join(errs...)
}

// LabelProps sets the node's labels, as given to the agent.
type LabelProps map[string]string

// Name implements [PropsCollector].
func (LabelProps) Name() string { return "labels" }

// CollectProps implements [PropsCollector].
func (l LabelProps) CollectProps(_ context.Context, hw *HW) error {
	hw.Labels = maps.Clone(map[string]string(l))
	return nil
}
