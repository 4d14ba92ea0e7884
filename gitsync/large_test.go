package gitsync

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ctxos/ctxos/gitsync/internal/gittest"
)

// TestLargeFile fetches and checks out a repository holding a 50 MB file of
// incompressible bytes over smart HTTP, and logs the peak heap seen while
// doing so: blobs above largeObject are streamed, not held in memory.
func TestLargeFile(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and fetches 50 MB")
	}
	repo := gittest.NewRepo(t)
	const size = 50 << 20
	big := filepath.Join(repo.Dir, "state", "blob.bin")
	if err := os.MkdirAll(filepath.Dir(big), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{1})
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rng, size)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	wantSum := h.Sum(nil)
	repo.Git("add", "state/blob.bin")
	c := repo.Commit("big file", map[string]string{"state/a.cue": "a: 1\n"})

	srv := gittest.HTTPServer(t, filepath.Dir(repo.Dir), "", "")
	src := newSource(t, srv.URL+"/repo")
	src.Path = "state"

	peak := watchHeap(t)
	rev, err := src.Fetch(t.Context())
	if err != nil || rev.Commit != c {
		t.Fatalf("fetch = %s, %v; want %s", rev.Commit, err, c)
	}
	// go-git's packfile indexer inflates each object once to hash it, so
	// the fetch peaks near the blob's size.
	t.Logf("peak heap in use during the fetch of a 50 MB blob: %d MiB", peak()>>20)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	dst := t.TempDir()
	if err := src.Checkout(t.Context(), c, dst); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	// Checkout streams the blob from the packfile to the file.
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated during its checkout: %d KiB", allocated>>10)
	if allocated > 16<<20 {
		t.Errorf("checkout of a 50 MB blob allocated %d MiB; want it streamed (< 16 MiB)", allocated>>20)
	}

	got, err := os.Open(filepath.Join(dst, "blob.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	h.Reset()
	n, err := io.Copy(h, got)
	if err != nil || n != size || string(h.Sum(nil)) != string(wantSum) {
		t.Errorf("checked out blob: %d bytes, sum match %v, %v", n, string(h.Sum(nil)) == string(wantSum), err)
	}
}

// watchHeap samples HeapInuse until the returned function is called, which
// returns the peak.
func watchHeap(t *testing.T) func() uint64 {
	var (
		mu   sync.Mutex
		peak uint64
		wg   sync.WaitGroup
	)
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			mu.Lock()
			peak = max(peak, ms.HeapInuse)
			mu.Unlock()
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	stop := func() uint64 {
		once.Do(func() { close(done); wg.Wait() })
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
	t.Cleanup(func() { stop() })
	return stop
}
