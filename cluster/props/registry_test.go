package props

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

// propsFunc is a props collector made of a function.
type propsFunc struct {
	name string
	fn   func(ctx context.Context, hw *HW) error
}

func (p propsFunc) Name() string                                   { return p.name }
func (p propsFunc) CollectProps(ctx context.Context, hw *HW) error { return p.fn(ctx, hw) }

// statusFunc is a status collector made of a function.
type statusFunc struct {
	name string
	fn   func(ctx context.Context, s *Status) error
}

func (p statusFunc) Name() string                                       { return p.name }
func (p statusFunc) CollectStatus(ctx context.Context, s *Status) error { return p.fn(ctx, s) }

func setCPU(threads int) propsFunc {
	return propsFunc{"cpu", func(_ context.Context, hw *HW) error {
		hw.CPU = CPU{Model: "fake", Cores: threads / 2, Threads: threads, MHz: 1000}
		return nil
	}}
}

func setMemory(b uint64) propsFunc {
	return propsFunc{"memory", func(_ context.Context, hw *HW) error {
		hw.MemoryBytes = b
		return nil
	}}
}

func TestPropsFailingCollector(t *testing.T) {
	r := NewRegistry(Options{})
	r.AddProps(setCPU(8))
	r.AddProps(propsFunc{"disk", func(_ context.Context, hw *HW) error {
		// Part of the facts with an error for the rest: the part is kept.
		hw.Disks = []Disk{{Mountpoint: "/", Device: "/dev/sda1", Fstype: "ext4", Total: 100, Free: 10}}
		return errors.New("size of /data: permission denied")
	}})
	r.AddProps(propsFunc{"broken", func(context.Context, *HW) error { return errors.New("no such device") }})
	r.AddProps(propsFunc{"panics", func(context.Context, *HW) error { panic("index out of range") }})
	r.AddProps(setMemory(4 << 30))

	hw, err := r.Props(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := HW{
		CPU:         CPU{Model: "fake", Cores: 4, Threads: 8, MHz: 1000},
		MemoryBytes: 4 << 30,
		Disks:       []Disk{{Mountpoint: "/", Device: "/dev/sda1", Fstype: "ext4", Total: 100, Free: 10}},
		Capacity:    Capacity{CPUMilli: 8000, MemoryBytes: 4 << 30},
		Errors: map[string]string{
			"disk":   "size of /data: permission denied",
			"broken": "no such device",
			"panics": "collector panics panicked: index out of range",
		},
	}
	if !reflect.DeepEqual(hw, want) {
		t.Errorf("Props =\n%+v\nwant\n%+v", hw, want)
	}
}

func TestPropsTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	r := NewRegistry(Options{Timeout: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	r.AddProps(propsFunc{"hung", func(_ context.Context, hw *HW) error {
		<-release // ignores ctx, as statfs on a dead NFS mount would
		hw.MemoryBytes = 1
		return nil
	}})
	r.AddProps(setCPU(2))

	hw, err := r.Props(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := hw.Errors["hung"]; !strings.Contains(got, ErrTimeout.Error()) {
		t.Errorf("Errors[hung] = %q, want %q", got, ErrTimeout)
	}
	if got, want := hw.CPU.Threads, 2; got != want {
		t.Errorf("Threads = %d, want %d: the collector after the hung one must still run", got, want)
	}
	if hw.MemoryBytes != 0 {
		t.Errorf("MemoryBytes = %d: output of an abandoned collector was used", hw.MemoryBytes)
	}
}

func TestPropsCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := NewRegistry(Options{})
	r.AddProps(setCPU(2))
	r.AddProps(propsFunc{"cancels", func(ctx context.Context, hw *HW) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	}})
	r.AddProps(setMemory(1))
	hw, err := r.Props(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want %v", err, context.Canceled)
	}
	if hw.CPU.Threads != 2 || hw.MemoryBytes != 0 {
		t.Errorf("partial props = %+v, want cpu set and memory not collected", hw)
	}
}

func TestStatusFailingCollector(t *testing.T) {
	at := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	r := NewRegistry(Options{Now: func() time.Time { return at }})
	r.AddStatus(statusFunc{"load", func(_ context.Context, s *Status) error {
		s.Load1, s.Load5, s.Load15 = 1, 0.5, 0.25
		return nil
	}})
	r.AddStatus(statusFunc{"memory", func(context.Context, *Status) error { return errors.New("read memory: EIO") }})
	r.AddStatus(statusFunc{"uptime", func(_ context.Context, s *Status) error {
		s.UptimeSeconds = 42
		return nil
	}})
	got, err := r.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := Status{Time: at, Load1: 1, Load5: 0.5, Load15: 0.25, UptimeSeconds: 42,
		Errors: map[string]string{"memory": "read memory: EIO"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Status =\n%+v\nwant\n%+v", got, want)
	}
}

func TestFakeGPUsAndLabels(t *testing.T) {
	gpus := StaticGPUs{
		{Index: 1, UUID: "GPU-b", Name: "Fake H100", MemoryBytes: 80 << 30, Driver: "550.54"},
		{Index: 0, UUID: "GPU-a", Name: "Fake H100", MemoryBytes: 80 << 30, Driver: "550.54"},
	}
	labels := map[string]string{"zone": "eu-1", "tier": "gpu"}
	r, err := DefaultRegistry(Options{GPUs: gpus, Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	labels["zone"] = "changed after the registry was made"
	hw, err := r.Props(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hw.GPUs, []GPU{gpus[1], gpus[0]}; !reflect.DeepEqual(got, want) {
		t.Errorf("GPUs = %+v, want %+v (sorted by index)", got, want)
	}
	if got, want := hw.Capacity.GPUs, 2; got != want {
		t.Errorf("Capacity.GPUs = %d, want %d", got, want)
	}
	if got, want := hw.Labels, map[string]string{"zone": "eu-1", "tier": "gpu"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Labels = %v, want %v", got, want)
	}
}

// gpuError is a GPU source whose driver is present but broken.
type gpuError struct{}

func (gpuError) Devices(context.Context) ([]GPU, error) {
	return nil, errors.New("nvml init: ERROR_NO_PERMISSION")
}

func TestGPUSourceError(t *testing.T) {
	r := NewRegistry(Options{})
	r.AddProps(GPUProps{Source: gpuError{}})
	r.AddProps(setCPU(4))
	hw, err := r.Props(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hw.Errors["gpu"], "find gpus: nvml init: ERROR_NO_PERMISSION"; got != want {
		t.Errorf("Errors[gpu] = %q, want %q", got, want)
	}
	if hw.Capacity.GPUs != 0 || hw.Capacity.CPUMilli != 4000 {
		t.Errorf("Capacity = %+v, want 4000 millicores and no GPU", hw.Capacity)
	}
}

func TestBadLabels(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"empty key", map[string]string{"": "x"}, `label with value "x" has an empty key`},
		{"space in key", map[string]string{"my zone": "a"}, `label key "my zone"`},
		{"newline in value", map[string]string{"zone": "a\nb"}, `label "zone": value "a\nb"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DefaultRegistry(Options{Labels: tt.labels})
			if !errors.Is(err, ErrBadLabel) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %v naming %s", err, ErrBadLabel, tt.want)
			}
		})
	}
}

func TestDuplicateCollectorPanics(t *testing.T) {
	tests := []struct {
		name string
		add  func(r *Registry)
	}{
		{"props twice", func(r *Registry) { r.AddProps(setCPU(1)); r.AddProps(setCPU(2)) }},
		{"empty name", func(r *Registry) { r.AddProps(propsFunc{name: ""}) }},
		{"status twice", func(r *Registry) { r.AddStatus(LoadStatus{}); r.AddStatus(LoadStatus{}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			tt.add(NewRegistry(Options{}))
		})
	}
	// One name may serve a props and a status collector.
	r := NewRegistry(Options{})
	r.AddProps(MemoryProps{})
	r.AddStatus(MemoryStatus{})
}
