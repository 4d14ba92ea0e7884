package props

import (
	"context"
	"log/slog"
	"time"
)

// Default intervals of the watches. Props change rarely (a disk added, an
// address moved); status feeds the scaler and the dashboard.
const (
	DefaultPropsInterval  = time.Minute
	DefaultStatusInterval = 5 * time.Second
)

// PropsWatch publishes a node's props once at start and then whenever a
// periodic collection finds different facts ([HW.SameFacts]).
type PropsWatch struct {
	Registry *Registry
	// Interval between collections; zero means DefaultPropsInterval.
	Interval time.Duration
	// Publish receives the props. It is called from the goroutine of Run
	// or Step, one call at a time, and may keep or change the value: the
	// watch compares with its own copy.
	Publish func(HW)
	// Ticks, when not nil, replaces the ticker of Interval, so tests can
	// drive the watch one collection at a time.
	Ticks <-chan time.Time
	// Logger receives failures of collections; nil means slog.Default().
	Logger *slog.Logger

	last      HW // facts of the last published props
	published bool
}

// Run steps at once and then at every tick until ctx ends, and returns
// ctx's error. Run and Step must not be called concurrently.
func (w *PropsWatch) Run(ctx context.Context) error {
	return loop(ctx, w.Interval, DefaultPropsInterval, w.Ticks, func() { w.Step(ctx) })
}

// Step collects the props once and publishes them if nothing was published
// yet or the facts changed. It reports whether it published, and returns
// an error only when ctx ended during the collection, in which case
// nothing is published.
func (w *PropsWatch) Step(ctx context.Context) (bool, error) {
	hw, err := w.Registry.Props(ctx)
	if err != nil {
		return false, err
	}
	if w.published && hw.SameFacts(w.last) {
		return false, nil
	}
	// Logged on change only: a collector failing every minute the same
	// way is one event, already visible in the published Errors.
	if len(hw.Errors) > 0 {
		orDefault(w.Logger).Warn("props collectors failed", "errors", hw.Errors)
	}
	w.last, w.published = hw.facts(), true
	w.Publish(hw)
	return true, nil
}

// StatusWatch publishes a node's status at every interval.
type StatusWatch struct {
	Registry *Registry
	// Interval between collections; zero means DefaultStatusInterval.
	Interval time.Duration
	// Publish receives the status, from the goroutine of Run or Step, one
	// call at a time.
	Publish func(Status)
	// Ticks, when not nil, replaces the ticker of Interval.
	Ticks <-chan time.Time
}

// Run steps at once and then at every tick until ctx ends, and returns
// ctx's error.
func (w *StatusWatch) Run(ctx context.Context) error {
	return loop(ctx, w.Interval, DefaultStatusInterval, w.Ticks, func() { w.Step(ctx) })
}

// Step collects the status once and publishes it, failed collectors and
// all. It returns an error only when ctx ended during the collection, in
// which case nothing is published.
func (w *StatusWatch) Step(ctx context.Context) error {
	s, err := w.Registry.Status(ctx)
	if err != nil {
		return err
	}
	w.Publish(s)
	return nil
}

// WatchProps runs a [PropsWatch] of r until ctx ends.
func (r *Registry) WatchProps(ctx context.Context, interval time.Duration, publish func(HW)) error {
	w := &PropsWatch{Registry: r, Interval: interval, Publish: publish, Logger: r.log}
	return w.Run(ctx)
}

// WatchStatus runs a [StatusWatch] of r until ctx ends.
func (r *Registry) WatchStatus(ctx context.Context, interval time.Duration, publish func(Status)) error {
	w := &StatusWatch{Registry: r, Interval: interval, Publish: publish}
	return w.Run(ctx)
}

// loop calls step at once and then at every tick of ticks, or of a ticker
// of interval (def when zero) if ticks is nil, until ctx ends. A tick that
// comes while step runs is dropped by the ticker, so a slow collection
// delays the next one instead of queueing them.
func loop(ctx context.Context, interval, def time.Duration, ticks <-chan time.Time, step func()) error {
	if ticks == nil {
		if interval <= 0 {
			interval = def
		}
		t := time.NewTicker(interval)
		defer t.Stop()
		ticks = t.C
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		step()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticks:
		}
	}
}
