package gitsync

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Trigger runs a sync function on a poll interval and on demand. Triggers
// that arrive while a sync runs (a webhook, `ctxos sync`, the poll tick)
// collapse into exactly one more sync, which gets all their reasons. A
// failed sync is retried with exponential backoff instead of waiting for
// the next poll; a success resets the backoff.
//
// The zero value is ready to use. Fire may be called from any goroutine at
// any time, before or during Run; Run must be called at most once at a time.
type Trigger struct {
	// MinBackoff is the delay after the first failed sync (default 1s); it
	// doubles with each further failure up to MaxBackoff (default 5m).
	MinBackoff, MaxBackoff time.Duration
	// Logger receives a line per failed sync; nil discards.
	Logger *slog.Logger

	// after and random replace the clock and the jitter source in tests.
	after  func(d time.Duration) (<-chan time.Time, func() bool)
	random func() float64

	mu      sync.Mutex
	pending []string
	wake    chan struct{}
}

// maxReasons bounds the reasons passed to one sync: a webhook storm during
// a long sync should not build an unbounded list.
const maxReasons = 20

// Fire asks for a sync. It never blocks.
func (t *Trigger) Fire(reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.initLocked()
	t.pending = append(t.pending, reason)
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *Trigger) initLocked() {
	if t.wake == nil {
		t.wake = make(chan struct{}, 1)
	}
}

// take returns the pending reasons and clears the wake signal with them,
// so that a wake always means reasons not yet handed to a sync.
func (t *Trigger) take() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.initLocked()
	r := t.pending
	t.pending = nil
	select {
	case <-t.wake:
	default:
	}
	return r
}

func (t *Trigger) wakeChan() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.initLocked()
	return t.wake
}

// Run calls sync once at start (reason "start"), then whenever Fire was
// called, when interval (±jitter, a fraction in [0, 1]) has passed since the
// last sync ended (reason "poll"), or after a backoff when the last sync
// failed (reason "retry"). An interval of 0 disables polling. Run returns
// when ctx is done; a sync in progress gets the same ctx.
func (t *Trigger) Run(ctx context.Context, interval time.Duration, jitter float64, sync func(ctx context.Context, reasons []string) error) {
	log := t.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	after := t.after
	if after == nil {
		after = func(d time.Duration) (<-chan time.Time, func() bool) {
			tm := time.NewTimer(d)
			return tm.C, tm.Stop
		}
	}
	wake := t.wakeChan()
	reasons := []string{"start"}
	failures := 0
	for {
		reasons = collapse(append(reasons, t.take()...))
		err := sync(ctx, reasons)
		if ctx.Err() != nil {
			return
		}
		var (
			wait time.Duration
			next string
		)
		if err != nil {
			failures++
			wait, next = t.backoff(failures), "retry"
			log.Warn("sync failed", "err", err, "failures", failures, "retry_in", wait, "reasons", reasons)
		} else {
			failures = 0
			if interval > 0 {
				wait, next = t.jittered(interval, jitter), "poll"
			}
		}
		var (
			timer <-chan time.Time
			stop  = func() bool { return false }
		)
		if wait > 0 {
			timer, stop = after(wait)
		}
		select {
		case <-ctx.Done():
			stop()
			return
		case <-wake:
			reasons = nil
		case <-timer:
			reasons = []string{next}
		}
		stop()
	}
}

// backoff is the delay after n consecutive failures.
func (t *Trigger) backoff(n int) time.Duration {
	lo, hi := t.MinBackoff, t.MaxBackoff
	if lo <= 0 {
		lo = time.Second
	}
	if hi <= 0 {
		hi = 5 * time.Minute
	}
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// jittered spreads polls of many nodes so they do not hit the Git server
// in step: interval scaled by a factor uniform in [1-jitter, 1+jitter].
func (t *Trigger) jittered(interval time.Duration, jitter float64) time.Duration {
	jitter = min(max(jitter, 0), 1)
	r := t.random
	if r == nil {
		r = rand.Float64
	}
	d := time.Duration(float64(interval) * (1 + jitter*(2*r()-1)))
	return max(d, time.Millisecond)
}

// collapse drops repeated reasons, keeping first-seen order, and bounds the
// list.
func collapse(reasons []string) []string {
	seen := make(map[string]bool, len(reasons))
	out := reasons[:0:0]
	dropped := 0
	for _, r := range reasons {
		if seen[r] {
			continue
		}
		seen[r] = true
		if len(out) == maxReasons {
			dropped++
			continue
		}
		out = append(out, r)
	}
	if dropped > 0 {
		out = append(out, fmt.Sprintf("and %d more", dropped))
	}
	return out
}
