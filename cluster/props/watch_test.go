package props

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// mutableProps is a props collector whose facts a test changes.
type mutableProps struct {
	mu sync.Mutex
	hw HW
}

func (*mutableProps) Name() string { return "mutable" }

func (m *mutableProps) CollectProps(_ context.Context, hw *HW) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	*hw = m.hw.clone()
	return nil
}

func (m *mutableProps) set(f func(hw *HW)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(&m.hw)
}

func TestPropsWatchPublishesChanges(t *testing.T) {
	m := &mutableProps{hw: HW{
		CPU:         CPU{Model: "fake", Cores: 2, Threads: 4, MHz: 2400},
		MemoryBytes: 8 << 30,
		Disks:       []Disk{{Mountpoint: "/", Device: "/dev/vda", Fstype: "ext4", Total: 100, Free: 50}},
	}}
	r := NewRegistry(Options{})
	r.AddProps(m)
	var got []HW
	w := &PropsWatch{Registry: r, Publish: func(hw HW) {
		hw.Disks[0].Device = "changed by the publisher" // must not affect the watch
		got = append(got, hw)
	}}

	steps := []struct {
		name    string
		change  func(hw *HW)
		publish bool
	}{
		{"first collection", nil, true},
		{"unchanged", nil, false},
		{"free space is volatile", func(hw *HW) { hw.Disks[0].Free = 10 }, false},
		{"clock is volatile", func(hw *HW) { hw.CPU.MHz = 3100 }, false},
		{"memory grew", func(hw *HW) { hw.MemoryBytes = 16 << 30 }, true},
		{"unchanged again", nil, false},
		{"disk added", func(hw *HW) { hw.Disks = append(hw.Disks, Disk{Mountpoint: "/data", Device: "/dev/vdb", Total: 1}) }, true},
		{"label added", func(hw *HW) { hw.Labels = map[string]string{"zone": "a"} }, true},
	}
	for _, st := range steps {
		if st.change != nil {
			m.set(st.change)
		}
		before := len(got)
		published, err := w.Step(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if published != st.publish || len(got)-before != map[bool]int{false: 0, true: 1}[st.publish] {
			t.Errorf("%s: published = %v (%d calls), want %v", st.name, published, len(got)-before, st.publish)
		}
	}
	if got, want := got[1].MemoryBytes, uint64(16<<30); got != want {
		t.Errorf("second publication MemoryBytes = %d, want %d", got, want)
	}
	if got, want := got[1].Disks[0].Free, uint64(10); got != want {
		t.Errorf("second publication carries Free = %d, want the current %d", got, want)
	}
}

// TestPropsWatchRun drives Run with a fake ticker. A send on the unbuffered
// tick channel completes only when Run is back waiting, so after each
// send the previous collection is over: no sleeping needed.
func TestPropsWatchRun(t *testing.T) {
	m := &mutableProps{hw: HW{MemoryBytes: 1}}
	r := NewRegistry(Options{})
	r.AddProps(m)
	ticks := make(chan time.Time)
	published := make(chan HW, 10)
	w := &PropsWatch{Registry: r, Ticks: ticks, Publish: func(hw HW) { published <- hw }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()

	ticks <- time.Time{} // Run collected at start and is waiting
	ticks <- time.Time{} // the first tick's collection (unchanged) is over
	if n := len(published); n != 1 {
		t.Fatalf("%d publications after two unchanged ticks, want 1", n)
	}
	m.set(func(hw *HW) { hw.MemoryBytes = 2 })
	ticks <- time.Time{}
	ticks <- time.Time{}
	if n := len(published); n != 2 {
		t.Fatalf("%d publications after a change, want 2", n)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want %v", err, context.Canceled)
	}
	<-published
	if got := <-published; got.MemoryBytes != 2 {
		t.Errorf("second publication MemoryBytes = %d, want 2", got.MemoryBytes)
	}
}

func TestStatusWatchRun(t *testing.T) {
	var mu sync.Mutex
	uptime := uint64(0)
	r := NewRegistry(Options{})
	r.AddStatus(statusFunc{"uptime", func(_ context.Context, s *Status) error {
		mu.Lock()
		defer mu.Unlock()
		uptime++
		s.UptimeSeconds = uptime
		return nil
	}})
	ticks := make(chan time.Time)
	published := make(chan Status, 10)
	w := &StatusWatch{Registry: r, Ticks: ticks, Publish: func(s Status) { published <- s }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	ticks <- time.Time{}
	ticks <- time.Time{}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want %v", err, context.Canceled)
	}
	close(published)
	var got []uint64
	for s := range published {
		got = append(got, s.UptimeSeconds)
	}
	// At start and after the first tick; the second tick's collection
	// may or may not have run before cancel was seen.
	if len(got) < 2 || got[0] != 1 || got[1] != 2 {
		t.Errorf("published uptimes %v, want 1, 2 (every collection, unchanged or not)", got)
	}
}

func TestWatchStopsOnCanceledCollection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := NewRegistry(Options{})
	r.AddProps(propsFunc{"cancels", func(ctx context.Context, _ *HW) error {
		cancel()
		return ctx.Err()
	}})
	r.AddStatus(statusFunc{"cancels", func(ctx context.Context, _ *Status) error {
		return ctx.Err()
	}})
	pw := &PropsWatch{Registry: r, Publish: func(HW) { t.Error("props published from a canceled collection") }}
	if _, err := pw.Step(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("PropsWatch.Step = %v, want %v", err, context.Canceled)
	}
	sw := &StatusWatch{Registry: r, Publish: func(Status) { t.Error("status published from a canceled collection") }}
	if err := sw.Step(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("StatusWatch.Step = %v, want %v", err, context.Canceled)
	}
}

// TestWatchStatusTicker runs the real ticker path with a short interval
// and waits, with a deadline, for collections at start and after ticks.
func TestWatchStatusTicker(t *testing.T) {
	r := NewRegistry(Options{})
	r.AddStatus(statusFunc{"uptime", func(_ context.Context, s *Status) error {
		s.UptimeSeconds = 1
		return nil
	}})
	published := make(chan Status, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.WatchStatus(ctx, time.Millisecond, func(s Status) { published <- s }) }()
	deadline := time.After(10 * time.Second)
	for i := range 3 {
		select {
		case s := <-published:
			if s.UptimeSeconds != 1 {
				t.Fatalf("publication %d: %+v", i, s)
			}
		case <-deadline:
			t.Fatalf("%d publications within 10s, want 3", i)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("WatchStatus = %v, want %v", err, context.Canceled)
	}
}
