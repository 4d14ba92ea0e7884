package reconcile

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctxos/ctxos/schema"
)

const benchCTXs = 1000

// manyCTXs is n process CTXs of one `sleep 100000` each.
func manyCTXs(marker string, n int) map[string]schema.Ctx {
	ctxs := make(map[string]schema.Ctx, n)
	for i := range n {
		ctxs[fmt.Sprintf("w%04d", i)] = sleepCTX(marker, 1, "100000")
	}
	return ctxs
}

// BenchmarkConverge1000 times one node from a published snapshot of 1000
// process CTXs to all 1000 running (the reconciler converged), then stops
// them all. Run with -benchtime=1x: each iteration starts 1000 processes.
func BenchmarkConverge1000(b *testing.B) {
	marker := newMarker(b)
	b.Cleanup(func() { killMarked(marker) })
	snap := buildSnapshot(b, manyCTXs(marker, benchCTXs), nil)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		store := newStore(b, "n1")
		putHW(b, store, "n1", nil)
		a := startAgent(b, "n1", store, agentOpts{})
		b.StartTimer()
		start := time.Now()
		publish(b, store, snap, 1)
		converged(b, a, marker, 1, benchCTXs)
		total += time.Since(start)
		b.StopTimer()
		a.cleanup()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/converge")
}

// BenchmarkIdle1000 measures the agent's CPU (user+system, getrusage of
// this process: reconciler, process driver supervising 1000 processes,
// VFS store) over 10 s of idle with 1000 CTXs converged, and its RSS.
func BenchmarkIdle1000(b *testing.B) {
	marker := newMarker(b)
	b.Cleanup(func() { killMarked(marker) })
	store := newStore(b, "n1")
	putHW(b, store, "n1", nil)
	a := startAgent(b, "n1", store, agentOpts{resync: DefaultResync})
	publish(b, store, buildSnapshot(b, manyCTXs(marker, benchCTXs), nil), 1)
	converged(b, a, marker, 1, benchCTXs)
	window := 10 * time.Second
	if s := os.Getenv("CTXOS_BENCH_IDLE"); s != "" {
		if d, err := time.ParseDuration(s); err == nil {
			window = d
		}
	}
	b.ResetTimer()
	var cpu time.Duration
	var passes uint64
	for i := 0; i < b.N; i++ {
		before, p0 := rusageCPU(b), a.rec.Progress().Passes
		time.Sleep(window) // the measured idle period itself
		cpu += rusageCPU(b) - before
		passes += a.rec.Progress().Passes - p0
	}
	b.StopTimer()
	b.ReportMetric(100*cpu.Seconds()/(window.Seconds()*float64(b.N)), "%cpu")
	b.ReportMetric(float64(passes)/float64(b.N), "passes/window")
	b.ReportMetric(float64(rssBytes(b))/(1<<20), "MiB-rss")
}

func rusageCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssBytes is this process's resident set size now (VmRSS).
func rssBytes(tb testing.TB) int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
