package props

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestPropsOnThisMachine collects with the built-in collectors and checks
// the facts are plausible for any Linux machine.
func TestPropsOnThisMachine(t *testing.T) {
	r, err := DefaultRegistry(Options{Labels: map[string]string{"zone": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	hw, err := r.Props(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(hw.Errors) != 0 {
		t.Errorf("Errors = %v, want none", hw.Errors)
	}
	if hw.CPU.Threads <= 0 || hw.CPU.Cores <= 0 || hw.CPU.Cores > hw.CPU.Threads {
		t.Errorf("CPU = %+v, want 0 < cores <= threads", hw.CPU)
	}
	if hw.MemoryBytes == 0 {
		t.Error("MemoryBytes = 0")
	}
	if hw.OS.Name != "linux" || hw.OS.Kernel == "" || hw.OS.Arch == "" || hw.OS.Hostname == "" {
		t.Errorf("OS = %+v, want linux with kernel, arch and hostname", hw.OS)
	}
	i := slices.IndexFunc(hw.Interfaces, func(n Interface) bool { return n.Name == "lo" })
	if i < 0 {
		t.Fatalf("Interfaces = %+v, want one named lo", hw.Interfaces)
	}
	if lo := hw.Interfaces[i]; !lo.Up || !lo.Loopback || !slices.Contains(lo.Addrs, "127.0.0.1/8") {
		t.Errorf("lo = %+v, want up, loopback, 127.0.0.1/8", lo)
	}
	pseudo := []string{"proc", "sysfs", "tmpfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "overlay", "squashfs"}
	devices := map[string]bool{}
	for _, d := range hw.Disks {
		if slices.Contains(pseudo, d.Fstype) || d.Total == 0 || d.Free > d.Total || !filepath.IsAbs(d.Mountpoint) {
			t.Errorf("disk %+v: want a real filesystem with 0 <= free <= total > 0", d)
		}
		if devices[d.Device] {
			t.Errorf("device %s listed twice", d.Device)
		}
		devices[d.Device] = true
	}
	if got, want := hw.Capacity, (Capacity{CPUMilli: int64(hw.CPU.Threads) * 1000, MemoryBytes: int64(hw.MemoryBytes)}); got != want {
		t.Errorf("Capacity = %+v, want %+v", got, want)
	}
	if got := hw.Labels["zone"]; got != "a" {
		t.Errorf("Labels[zone] = %q, want a", got)
	}
	t.Logf("cpu %+v, memory %d, disks %+v, os %+v", hw.CPU, hw.MemoryBytes, hw.Disks, hw.OS)
}

// TestStatusOnThisMachine takes two samples with the built-in collectors.
func TestStatusOnThisMachine(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	r, err := DefaultRegistry(Options{CPUWindow: 20 * time.Millisecond, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		s, err := r.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Errors) != 0 {
			t.Errorf("sample %d: Errors = %v, want none", i, s.Errors)
		}
		if !s.Time.Equal(at) {
			t.Errorf("sample %d: Time = %v, want %v", i, s.Time, at)
		}
		if s.CPUPercent < 0 || s.CPUPercent > 100 {
			t.Errorf("sample %d: CPUPercent = %v, want 0–100", i, s.CPUPercent)
		}
		if m := s.Memory; m.Total == 0 || m.Used > m.Total || m.Available > m.Total {
			t.Errorf("sample %d: Memory = %+v, want used, available <= total > 0", i, m)
		}
		if s.Load1 < 0 || s.Load5 < 0 || s.Load15 < 0 {
			t.Errorf("sample %d: load %v %v %v, want >= 0", i, s.Load1, s.Load5, s.Load15)
		}
		if s.UptimeSeconds == 0 {
			t.Errorf("sample %d: UptimeSeconds = 0", i)
		}
		for _, d := range s.Disks {
			if d.Total == 0 || d.Free > d.Total {
				t.Errorf("sample %d: disk %+v, want 0 <= free <= total > 0", i, d)
			}
		}
		if s.DiskIO.ReadBytesPerSec < 0 || s.NetIO.RxBytesPerSec < 0 {
			t.Errorf("sample %d: negative rate in %+v %+v", i, s.DiskIO, s.NetIO)
		}
		t.Logf("sample %d: %+v", i, s)
	}
}

func TestNVMLWithoutLibrary(t *testing.T) {
	tests := []struct {
		name string
		src  *NVML
	}{
		{"missing path", NewNVMLAt(filepath.Join(t.TempDir(), "libnvidia-ml.so.1"), nil)},
		{"not a library", NewNVMLAt("/etc/hostname", nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 { // the second call must not trip on state the first left
				gpus, err := tt.src.Devices(context.Background())
				if err != nil || len(gpus) != 0 {
					t.Fatalf("Devices = %v, %v; want none, nil", gpus, err)
				}
			}
		})
	}
}

// TestNVMLDefault runs the real loader lookup: no GPU here means no
// devices and no error; on a machine with the driver every device has an
// identity.
func TestNVMLDefault(t *testing.T) {
	gpus, err := NewNVML(nil).Devices(context.Background())
	if err != nil {
		t.Fatalf("Devices: %v", err)
	}
	for _, g := range gpus {
		if g.UUID == "" || g.Name == "" || g.Driver == "" {
			t.Errorf("gpu %+v: want uuid, name and driver", g)
		}
	}
	t.Logf("%d GPUs: %+v", len(gpus), gpus)
}

func TestNVMLCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewNVML(nil).Devices(ctx); err != context.Canceled {
		t.Fatalf("Devices on a canceled context: err = %v, want %v", err, context.Canceled)
	}
}
