package process_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/drivers/driverstest"
	"github.com/ctxos/ctxos/drivers/process"
)

func TestConformance(t *testing.T) {
	driverstest.Run(t, driverstest.Factory{
		New: func(tb testing.TB, dir string) drivers.Driver {
			tb.Helper()
			return newDriver(tb, process.Config{StateDir: dir})
		},
		Spec: func(id string, variant int) drivers.Spec {
			return sleepSpec(id, variant)
		},
		Halfway: func(ctx context.Context, tb testing.TB, d drivers.Driver, c drivers.Change) {
			tb.Helper()
			if err := d.(*process.Driver).ApplyHalfway(ctx, c); err != nil {
				tb.Fatalf("ApplyHalfway: %v", err)
			}
		},
		Count: func(tb testing.TB, id string) int { return process.CountRunning(id) },
		Busy: func(id string) drivers.Spec {
			return shSpec(id, "while :; do :; done")
		},
	})
}

// sleepSpec runs a shell that sleeps; variants differ in the sleep length.
// The shell forwards TERM to its sleep so the stop is quick.
func sleepSpec(id string, variant int) drivers.Spec {
	return drivers.Spec{
		ID: id, Kind: drivers.KindCTX, Name: "conf",
		Command: "sleep", Args: []string{[]string{"1000", "2000", "3000"}[variant%3]},
		Stop: drivers.StopPolicy{Grace: 5 * time.Second},
	}
}

func newDriver(tb testing.TB, cfg process.Config) *process.Driver {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d, err := process.New(cfg)
	if err != nil {
		tb.Fatalf("process.New: %v", err)
	}
	return d
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(string(p))
	return len(p), nil
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
