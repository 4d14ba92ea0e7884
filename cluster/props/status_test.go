package props

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fakeClock advances only when told.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestIORates(t *testing.T) {
	type sample struct {
		after     time.Duration // since the previous sample
		read, wr  uint64
		wantRead  float64
		wantWrite float64
	}
	tests := []struct {
		name    string
		samples []sample
	}{
		{"steady", []sample{
			{0, 1000, 5000, 0, 0}, // first sample: no rate yet
			{2 * time.Second, 3000, 5000, 1000, 0},
			{500 * time.Millisecond, 3500, 6000, 1000, 2000},
		}},
		{"counter reset", []sample{
			{0, 1 << 20, 1 << 20, 0, 0},
			{time.Second, 100, (1 << 20) + 512, 0, 512},
			{time.Second, 1100, (1 << 20) + 512, 1000, 0},
		}},
		{"clock did not move", []sample{
			{0, 0, 0, 0, 0},
			{0, 100, 100, 0, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(1000, 0)}
			var cur sample
			d := &DiskIOStatus{Now: clk.now, Counters: func(context.Context) (uint64, uint64, error) { return cur.read, cur.wr, nil }}
			n := &NetIOStatus{Now: clk.now, Counters: func(context.Context) (uint64, uint64, error) { return cur.read, cur.wr, nil }}
			for i, sm := range tt.samples {
				cur = sm
				clk.advance(sm.after)
				var s Status
				if err := d.CollectStatus(context.Background(), &s); err != nil {
					t.Fatal(err)
				}
				if err := n.CollectStatus(context.Background(), &s); err != nil {
					t.Fatal(err)
				}
				if got, want := s.DiskIO, (DiskIO{sm.read, sm.wr, sm.wantRead, sm.wantWrite}); got != want {
					t.Errorf("sample %d: DiskIO = %+v, want %+v", i, got, want)
				}
				if got, want := s.NetIO, (NetIO{sm.read, sm.wr, sm.wantRead, sm.wantWrite}); got != want {
					t.Errorf("sample %d: NetIO = %+v, want %+v", i, got, want)
				}
			}
		})
	}
}

func TestIOCountersError(t *testing.T) {
	d := &DiskIOStatus{Counters: func(context.Context) (uint64, uint64, error) { return 0, 0, errors.New("read disk counters: EIO") }}
	var s Status
	if err := d.CollectStatus(context.Background(), &s); err == nil || s.DiskIO != (DiskIO{}) {
		t.Fatalf("CollectStatus = %v with %+v, want the error and no counters", err, s.DiskIO)
	}
}

func TestCPUStatus(t *testing.T) {
	// Cumulative (busy, total) seconds the fake kernel reports, in order.
	tests := []struct {
		name   string
		window time.Duration
		times  [][2]float64
		want   []float64 // CPUPercent of each collection
	}{
		{"no window", 0, [][2]float64{{10, 100}, {15, 110}, {15, 120}, {35, 140}}, []float64{0, 50, 0, 100}},
		// With a window the first collection reads twice.
		{"window", time.Nanosecond, [][2]float64{{10, 100}, {12, 108}, {14, 112}}, []float64{25, 50}},
		{"total went back", 0, [][2]float64{{10, 100}, {11, 90}}, []float64{0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := 0
			c := &CPUStatus{Window: tt.window, Times: func(context.Context) (float64, float64, error) {
				bt := tt.times[next]
				next++
				return bt[0], bt[1], nil
			}}
			for i, want := range tt.want {
				var s Status
				if err := c.CollectStatus(context.Background(), &s); err != nil {
					t.Fatal(err)
				}
				if s.CPUPercent != want {
					t.Errorf("collection %d: CPUPercent = %v, want %v", i, s.CPUPercent, want)
				}
			}
			if next != len(tt.times) {
				t.Errorf("read times %d times, want %d", next, len(tt.times))
			}
		})
	}
}

func TestCPUStatusWindowCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &CPUStatus{Window: time.Hour, Times: func(context.Context) (float64, float64, error) {
		cancel() // the window must end with ctx, not after an hour
		return 1, 2, nil
	}}
	var s Status
	if err := c.CollectStatus(ctx, &s); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want %v", err, context.Canceled)
	}
}
