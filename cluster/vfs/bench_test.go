package vfs

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// benchValue is a CBOR byte string of exactly size bytes in all.
func benchValue(tb testing.TB, size int) []byte {
	tb.Helper()
	for n := size; n > 0; n-- {
		b, err := Encode(bytes.Repeat([]byte{'v'}, n))
		if err != nil {
			tb.Fatal(err)
		}
		if len(b) == size {
			return b
		}
	}
	tb.Fatalf("no CBOR byte string of %d bytes", size)
	return nil
}

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("/hw/n1/bench/k%06d", i)
	}
	return keys
}

func BenchmarkPut(b *testing.B) {
	for _, size := range []int{200, 4096} {
		b.Run(strconv.Itoa(size)+"B", func(b *testing.B) {
			s := newFixture().open(b, "n1", b.TempDir(), func(o *Options) { o.Now = nil })
			v := benchValue(b, size)
			keys := benchKeys(10_000)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Put(keys[i%len(keys)], v); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Flush(b.Context()); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}

func BenchmarkGet(b *testing.B) {
	for _, size := range []int{200, 4096} {
		b.Run(strconv.Itoa(size)+"B", func(b *testing.B) {
			s := newFixture().open(b, "n1", b.TempDir(), func(o *Options) { o.Now = nil })
			v := benchValue(b, size)
			keys := benchKeys(10_000)
			for _, k := range keys {
				if _, err := s.Put(k, v); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, ok := s.Get(keys[i%len(keys)]); !ok {
					b.Fatal("missing key")
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
		})
	}
}

// BenchmarkMemory100k fills one persistent store with 100 000 entries of
// 200-byte values and reports the Go heap in use and the process RSS: once
// after the fill (the heap still holds what the burst freed, and sync.Pool
// caches), once after debug.FreeOSMemory (what the scavenger gets back to
// over time), and once after a restart that loads the file (the steady
// state of a restarted agent). RSS includes the bbolt mapping (rss-file).
func BenchmarkMemory100k(b *testing.B) {
	report := func(b *testing.B, stage string) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		anon, file := rss(b)
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), stage+"-heap-MB")
		b.ReportMetric(float64(anon+file)/(1<<20), stage+"-rss-MB")
		b.ReportMetric(float64(file)/(1<<20), stage+"-rss-file-MB")
	}
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		// Opened without the test fixture, whose cleanup would keep the
		// first store reachable while the reopened one is measured.
		open := func() *Store {
			s, err := Open(b.Context(), Options{Node: "n1", Dir: dir, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}
		s := open()
		v := benchValue(b, 200)
		for j := range 100_000 {
			if _, err := s.Put(fmt.Sprintf("/hw/n1/mem/k%06d", j), v); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Flush(b.Context()); err != nil {
			b.Fatal(err)
		}
		report(b, "fill")
		debug.FreeOSMemory()
		report(b, "freed")
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		s = nil
		debug.FreeOSMemory()
		s = open()
		if got := s.Len(); got != 100_000 {
			b.Fatalf("reopened store holds %d entries", got)
		}
		report(b, "reopen")
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// rss reads the anonymous and file-backed resident set from
// /proc/self/status.
func rss(tb testing.TB) (anon, file int64) {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skipf("no /proc/self/status: %v", err)
	}
	field := func(name string) int64 {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, name+":"); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if err != nil {
					tb.Fatalf("%s line %q: %v", name, line, err)
				}
				return kb << 10
			}
		}
		tb.Fatalf("no %s in /proc/self/status", name)
		return 0
	}
	return field("RssAnon"), field("RssFile") + field("RssShmem")
}
