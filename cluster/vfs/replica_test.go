package vfs

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReplicaRestart(t *testing.T) {
	f := newFixture()
	dir := t.TempDir()
	s := f.open(t, "n1", dir)
	var last Version
	for i := range 200 {
		e, err := s.PutValue(fmt.Sprintf("/hw/n1/k%03d", i), i)
		if err != nil {
			t.Fatal(err)
		}
		last = e.Version
	}
	if _, err := s.Delete("/hw/n1/k000"); err != nil {
		t.Fatal(err)
	}
	remote := Entry{Path: "/lk/web", Value: cborOf(t, "n2"), Version: Version{f.clock.Now().Add(2 * time.Second).UnixNano(), 3, "n2"}}
	if _, err := s.Merge(remote); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutValue("/hw/n1/after-flush", 1); err != nil {
		t.Fatal(err)
	}
	before := held(s)
	digest := s.Digest()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The wall clock went back across the restart: versions must not.
	f.clock.Add(-time.Hour)
	s = f.open(t, "n1", dir)
	if err := sameEntries(before, held(s)); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if got := s.Digest(); fmt.Sprint(got) != fmt.Sprint(digest) {
		t.Errorf("digest after restart = %v, want %v", got, digest)
	}
	if _, ok := s.Get("/hw/n1/k000"); ok {
		t.Error("tombstone lost across restart")
	}
	e, err := s.PutValue("/hw/n1/k001", "new")
	if err != nil {
		t.Fatal(err)
	}
	if !last.Less(e.Version) || !remote.Version.Less(e.Version) {
		t.Errorf("version after restart %s is not after %s and %s", e.Version, last, remote.Version)
	}
	if got := s.LastContact(); !got.Equal(f.clock.Now().Add(time.Hour)) {
		t.Errorf("LastContact = %v, want the time of the last merge", got)
	}
}

// TestReplicaCrashAfterFlush copies the file of a running store, as a
// kill -9 would leave it, and checks that it holds everything flushed.
func TestReplicaCrashAfterFlush(t *testing.T) {
	f := newFixture()
	dir := t.TempDir()
	s := f.open(t, "n1", dir)
	for i := range 1000 {
		if _, err := s.PutValue("/hw/n1/hot", i); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutValue(fmt.Sprintf("/hw/n1/k%d", i%97), i); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := held(s)
	b, err := os.ReadFile(filepath.Join(dir, ReplicaFile))
	if err != nil {
		t.Fatal(err)
	}
	crashed := t.TempDir()
	if err := os.WriteFile(filepath.Join(crashed, ReplicaFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	c := f.open(t, "n1", crashed)
	if err := sameEntries(want, held(c)); err != nil {
		t.Errorf("copy taken after Flush: %v", err)
	}
}

func TestReplicaCorrupt(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(t *testing.T, file string)
	}{
		{"garbage file", func(t *testing.T, file string) {
			if err := os.WriteFile(file, []byte(strings.Repeat("this is not a bbolt file ", 1000)), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"scribbled pages", func(t *testing.T, file string) {
			fh, err := os.OpenFile(file, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			st, err := fh.Stat()
			if err != nil {
				t.Fatal(err)
			}
			// Keep the two meta pages, ruin everything after them.
			page := int64(os.Getpagesize())
			junk := []byte(strings.Repeat("\xde\xad\xbe\xef", int(page)/4))
			for off := 2 * page; off < st.Size(); off += page {
				if _, err := fh.WriteAt(junk, off); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"truncated", func(t *testing.T, file string) {
			// Meta pages survive, the tree they point to does not.
			if err := os.Truncate(file, 3*int64(os.Getpagesize())); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture()
			dir := t.TempDir()
			s := f.open(t, "n1", dir)
			for i := range 500 {
				if _, err := s.PutValue(fmt.Sprintf("/hw/n1/k%03d", i), strings.Repeat("v", 100)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, ReplicaFile)
			tt.corrupt(t, file)

			s = f.open(t, "n1", dir)
			if got := s.Len(); got != 0 {
				t.Errorf("store after corruption holds %d entries, want a fresh one", got)
			}
			lines := f.logs.lines("level=")
			var errs []string
			for _, l := range lines {
				if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
					errs = append(errs, l)
				}
			}
			if len(errs) != 1 || !strings.Contains(errs[0], "corrupt") || !strings.Contains(errs[0], file) {
				t.Errorf("want one error line naming the file, got %q", errs)
			}
			aside, _ := filepath.Glob(file + ".corrupt-*")
			if len(aside) != 1 {
				t.Errorf("moved-aside files: %q, want one", aside)
			}
			// The fresh replica works and persists.
			if _, err := s.PutValue("/hw/n1/new", 1); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = f.open(t, "n1", dir)
			if _, ok := s.Get("/hw/n1/new"); !ok || s.Len() != 1 {
				t.Errorf("fresh replica after restart: Len %d", s.Len())
			}
		})
	}
}

func TestReplicaLocked(t *testing.T) {
	f := newFixture()
	dir := t.TempDir()
	f.open(t, "n1", dir)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := Open(ctx, Options{Node: "n1", Dir: dir, Now: f.clock.Now, GCInterval: -1})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("second Open of a locked replica: %v", err)
	}
	if aside, _ := filepath.Glob(filepath.Join(dir, "*.corrupt-*")); len(aside) != 0 {
		t.Errorf("a locked file was treated as corrupt: %q", aside)
	}
}

func TestReplicaBadDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), Options{Node: "n1", Dir: filepath.Join(file, "sub")})
	if err == nil || !strings.Contains(err.Error(), "replica directory") {
		t.Errorf("Open under a file: %v", err)
	}
}

func TestReplicaStaleAtOpen(t *testing.T) {
	f := newFixture()
	dir := t.TempDir()
	s := f.open(t, "n1", dir, func(o *Options) { o.TombstoneGrace = time.Hour })
	if _, err := s.PutValue("/hw/n1/cpu", 4); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Merge(Entry{Path: "/hw/n2/cpu", Value: cborOf(t, 8), Version: Version{f.clock.Now().UnixNano(), 0, "n2"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(2 * time.Hour)
	s = f.open(t, "n1", dir, func(o *Options) { o.TombstoneGrace = time.Hour })
	if _, ok := s.Get("/hw/n2/cpu"); ok {
		t.Error("a replica older than the grace period kept other nodes' entries")
	}
	if _, ok := s.Get("/hw/n1/cpu"); !ok {
		t.Error("own entry dropped")
	}
	if got := len(f.logs.lines("older than the tombstone grace period")); got != 1 {
		t.Errorf("logged %d times, want 1", got)
	}
}

func TestGCLoop(t *testing.T) {
	f := newFixture()
	s := f.open(t, "n1", "", func(o *Options) {
		o.TombstoneGrace = time.Hour
		o.GCInterval = time.Millisecond
	})
	if _, err := s.Delete("/lk/x"); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(2 * time.Hour)
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	deadline := time.After(10 * time.Second)
	for s.Len() != 0 {
		select {
		case <-poll.C:
		case <-deadline:
			t.Fatal("background loop did not collect the tombstone")
		}
	}
}

// TestReplicaBurstLargerThanOneTransaction merges, in random order, more
// entries than one transaction commits: every one is on disk after a
// restart.
func TestReplicaBurstLargerThanOneTransaction(t *testing.T) {
	const count = 3 * maxBatch
	f := newFixture()
	dir := t.TempDir()
	s := f.open(t, "n1", dir)
	value := cborOf(t, strings.Repeat("v", 200))
	wall := f.clock.Now().UnixNano()
	for _, i := range rand.New(rand.NewPCG(1, 2)).Perm(count) {
		e := Entry{Path: fmt.Sprintf("/run/n2/k%06d", i), Value: value, Version: Version{Wall: wall, Logical: uint32(i), Node: "n2"}}
		if _, err := s.Merge(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	before := held(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = f.open(t, "n1", dir)
	if err := sameEntries(before, held(s)); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if got := s.Len(); got != count {
		t.Fatalf("after restart the store holds %d entries, want %d", got, count)
	}
}
