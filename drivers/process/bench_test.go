package process_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/drivers/process"
)

// BenchmarkCreateDelete is one instance's full cycle: record, fork/exec,
// adoption bookkeeping, stop by SIGTERM, reap, record removal.
func BenchmarkCreateDelete(b *testing.B) {
	d := newDriver(b, process.Config{StateDir: b.TempDir(), Logger: discard()})
	defer d.Close()
	s := sleepSpec("ctx.bench.0", 0)
	create := drivers.Change{ID: s.ID, Action: drivers.Create, Spec: &s}
	del := drivers.Change{ID: s.ID, Action: drivers.Delete}
	ctx := b.Context()
	for b.Loop() {
		if _, err := d.Apply(ctx, create); err != nil {
			b.Fatal(err)
		}
		if _, err := d.Apply(ctx, del); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkObserveAdopt50 is the first Observe of a restarted agent over 50
// running instances: read each record, check pid and start time, open a
// pidfd.
func BenchmarkObserveAdopt50(b *testing.B) {
	dir := b.TempDir()
	d := newDriver(b, process.Config{StateDir: dir, Logger: discard()})
	var specs []drivers.Spec
	for i := range 50 {
		specs = append(specs, sleepSpec(fmt.Sprintf("ctx.bench.%d", i), 0))
	}
	ctx := b.Context()
	if _, err := drivers.Converge(ctx, d, specs); err != nil {
		b.Fatal(err)
	}
	d.Close()
	b.Cleanup(func() {
		for _, s := range specs {
			process.KillInstance(s.ID)
		}
	})
	for b.Loop() {
		d, err := process.New(process.Config{StateDir: dir, Logger: discard()})
		if err != nil {
			b.Fatal(err)
		}
		obs, err := d.Observe(ctx)
		if err != nil || len(obs) != 50 {
			b.Fatalf("observed %d, %v", len(obs), err)
		}
		d.Close()
	}
}

// BenchmarkObserve is the reconciler's steady pass: Observe of a driver
// that has loaded every record, over n running instances. Each live
// instance's CPU time is read from /proc, so this bounds what that reading
// costs per pass.
func BenchmarkObserve(b *testing.B) {
	for _, n := range []int{50, 1000} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			d := newDriver(b, process.Config{StateDir: b.TempDir(), Logger: discard()})
			specs := make([]drivers.Spec, n)
			for i := range specs {
				specs[i] = sleepSpec(fmt.Sprintf("ctx.bench.%d", i), 0)
			}
			b.Cleanup(func() {
				_, err := drivers.Converge(context.Background(), d, nil)
				d.Close()
				if err != nil { // each KillInstance scans /proc: only when the delete failed
					for _, s := range specs {
						process.KillInstance(s.ID)
					}
				}
			})
			ctx := b.Context()
			if _, err := drivers.Converge(ctx, d, specs); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				obs, err := d.Observe(ctx)
				if err != nil || len(obs) != n {
					b.Fatalf("observed %d, %v", len(obs), err)
				}
			}
		})
	}
}
