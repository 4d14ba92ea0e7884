package props

import (
	"context"
	"testing"
)

// BenchmarkProps is one props collection with the built-in collectors on
// this machine (NVML absent here, so its cost is one failed dlopen).
func BenchmarkProps(b *testing.B) {
	r, err := DefaultRegistry(Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		if hw, err := r.Props(ctx); err != nil || len(hw.Errors) > 0 {
			b.Fatal(err, hw.Errors)
		}
	}
}

// BenchmarkStatus is one status collection after the first, the one a
// watch makes every interval.
func BenchmarkStatus(b *testing.B) {
	r, err := DefaultRegistry(Options{CPUWindow: -1})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.Status(ctx); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if s, err := r.Status(ctx); err != nil || len(s.Errors) > 0 {
			b.Fatal(err, s.Errors)
		}
	}
}
