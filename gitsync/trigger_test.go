package gitsync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeTimers hands each timer Run asks for to the test, which decides when
// it fires.
type fakeTimers struct {
	requests chan timerRequest
}

type timerRequest struct {
	d    time.Duration
	fire chan time.Time
}

func newFakeTimers() *fakeTimers { return &fakeTimers{requests: make(chan timerRequest, 100)} }

func (f *fakeTimers) after(d time.Duration) (<-chan time.Time, func() bool) {
	ch := make(chan time.Time, 1)
	f.requests <- timerRequest{d: d, fire: ch}
	return ch, func() bool { return true }
}

func (f *fakeTimers) next(t *testing.T) timerRequest {
	t.Helper()
	select {
	case r := <-f.requests:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Run never asked for a timer")
		return timerRequest{}
	}
}

// syncLog records the reasons of each sync.
type syncLog struct {
	mu   sync.Mutex
	runs [][]string
}

func (l *syncLog) add(r []string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs = append(l.runs, slices.Clone(r))
	return len(l.runs)
}

func (l *syncLog) get() [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.runs)
}

func startRun(t *testing.T, tr *Trigger, interval time.Duration, sync func(context.Context, []string) error) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.Run(ctx, interval, 0, sync)
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return stop
}

func TestTriggerCollapses(t *testing.T) {
	t.Parallel()
	timers := newFakeTimers()
	tr := &Trigger{after: timers.after}
	var log syncLog
	started := make(chan struct{})
	release := make(chan struct{})
	stop := startRun(t, tr, time.Minute, func(ctx context.Context, r []string) error {
		if log.add(r) == 1 {
			close(started)
			<-release
		}
		return nil
	})
	<-started
	for i := range 10 {
		tr.Fire(fmt.Sprintf("webhook %d", i%4))
	}
	close(release)
	// After the first sync Run asks for a poll timer, sees the wake, syncs
	// once more, and asks for a poll timer again: then it is idle.
	timers.next(t)
	if r := timers.next(t); r.d != time.Minute {
		t.Errorf("poll timer = %v, want 1m (jitter 0)", r.d)
	}
	stop()
	got := log.get()
	want := [][]string{{"start"}, {"webhook 0", "webhook 1", "webhook 2", "webhook 3"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("syncs = %q, want %q", got, want)
	}
}

func TestTriggerPollAndFireBeforeRun(t *testing.T) {
	t.Parallel()
	timers := newFakeTimers()
	tr := &Trigger{after: timers.after}
	tr.Fire("ctxos sync")
	var log syncLog
	startRun(t, tr, 30*time.Second, func(ctx context.Context, r []string) error {
		log.add(r)
		return nil
	})
	timers.next(t).fire <- time.Now()
	timers.next(t) // idle again after the poll sync
	got := log.get()
	want := [][]string{{"start", "ctxos sync"}, {"poll"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("syncs = %q, want %q", got, want)
	}
}

func TestTriggerBackoff(t *testing.T) {
	t.Parallel()
	timers := newFakeTimers()
	tr := &Trigger{after: timers.after, MinBackoff: time.Second, MaxBackoff: 5 * time.Second}
	var log syncLog
	fail := errors.New("remote unreachable")
	// Fail 4 times, succeed once, fail again.
	startRun(t, tr, time.Minute, func(ctx context.Context, r []string) error {
		if n := log.add(r); n <= 4 || n == 6 {
			return fail
		}
		return nil
	})
	var waits []time.Duration
	for range 6 {
		r := timers.next(t)
		waits = append(waits, r.d)
		r.fire <- time.Now()
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, time.Minute, time.Second}
	if !slices.Equal(waits, want) {
		t.Errorf("waits = %v, want %v", waits, want)
	}
	runs := log.get()
	if got := runs[1]; !slices.Equal(got, []string{"retry"}) {
		t.Errorf("second sync reasons = %q, want [retry]", got)
	}
	if got := runs[5]; !slices.Equal(got, []string{"poll"}) {
		t.Errorf("sixth sync reasons = %q, want [poll]", got)
	}
}

func TestTriggerNoPolling(t *testing.T) {
	t.Parallel()
	timers := newFakeTimers()
	tr := &Trigger{after: timers.after}
	synced := make(chan []string, 10)
	stop := startRun(t, tr, 0, func(ctx context.Context, r []string) error {
		synced <- r
		return nil
	})
	<-synced
	tr.Fire("webhook")
	if got := <-synced; !slices.Equal(got, []string{"webhook"}) {
		t.Errorf("reasons = %q", got)
	}
	stop()
	if len(timers.requests) != 0 {
		t.Errorf("interval 0 asked for %d timers", len(timers.requests))
	}
}

func TestJitterAndCollapse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		random, jitter float64
		want           time.Duration
	}{
		{0, 0.1, 90 * time.Second},
		{1, 0.1, 110 * time.Second},
		{0.5, 0.5, 100 * time.Second},
		{0, 2, time.Millisecond}, // jitter clamped to 1
	}
	for _, tt := range tests {
		tr := &Trigger{random: func() float64 { return tt.random }}
		if got := tr.jittered(100*time.Second, tt.jitter); got != tt.want {
			t.Errorf("jittered(random %v, jitter %v) = %v, want %v", tt.random, tt.jitter, got, tt.want)
		}
	}
	var many []string
	for i := range 30 {
		many = append(many, fmt.Sprint(i), fmt.Sprint(i))
	}
	got := collapse(many)
	if len(got) != maxReasons+1 || got[maxReasons] != "and 10 more" || got[0] != "0" {
		t.Errorf("collapse = %q", got)
	}
}

func TestTriggerRealTimers(t *testing.T) {
	t.Parallel()
	tr := &Trigger{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	synced := make(chan []string, 100)
	n := 0
	startRun(t, tr, time.Millisecond, func(ctx context.Context, r []string) error {
		n++
		synced <- r
		if n < 3 {
			return errors.New("flaky")
		}
		return nil
	})
	// Two failures are retried and polling follows, on real timers.
	want := [][]string{{"start"}, {"retry"}, {"retry"}, {"poll"}}
	for i, w := range want {
		select {
		case got := <-synced:
			if !slices.Equal(got, w) {
				t.Errorf("sync %d reasons = %q, want %q", i, got, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("sync %d never ran", i)
		}
	}
}
