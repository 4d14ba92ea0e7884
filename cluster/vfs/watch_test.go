package vfs

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// next reads one event, failing after a deadline instead of hanging.
func next(tb testing.TB, ch <-chan Event) (Event, bool) {
	tb.Helper()
	select {
	case ev, ok := <-ch:
		return ev, ok
	case <-time.After(10 * time.Second):
		tb.Fatal("no event within 10s")
		return Event{}, false
	}
}

func TestWatchOrderAndPrefix(t *testing.T) {
	f := newFixture()
	s := f.open(t, "n1", "")
	ctx := t.Context()
	all := s.Watch(ctx, "/")
	hw := s.Watch(ctx, "/hw/n1")

	var want []Version
	for i := range 50 {
		e, err := s.PutValue("/hw/n1/cpu", i)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, e.Version)
		if i%10 == 0 {
			f.clock.Add(time.Millisecond)
		}
	}
	if _, err := s.Merge(Entry{Path: "/hw/n1-b/x", Value: cborOf(t, 1), Version: Version{1, 0, "n1-b"}}); err != nil {
		t.Fatal(err)
	}
	del, err := s.Delete("/hw/n1/cpu")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, del.Version)
	if _, err := s.PutValue("/lk/end", 1); err != nil {
		t.Fatal(err)
	}

	var got []Version
	for len(got) < len(want) {
		ev, ok := next(t, hw)
		if !ok || ev.Resync {
			t.Fatalf("hw watch: %+v, open %v", ev, ok)
		}
		if ev.Entry.Path != "/hw/n1/cpu" {
			t.Fatalf("hw watch got %s, outside its prefix", ev.Entry.Path)
		}
		got = append(got, ev.Entry.Version)
	}
	if !slices.Equal(got, want) {
		t.Errorf("versions out of order:\n got %v\nwant %v", got, want)
	}
	if !slices.IsSortedFunc(got, func(a, b Version) int {
		if a.Less(b) {
			return -1
		}
		return 1
	}) {
		t.Error("versions not increasing")
	}
	if last, _ := s.Get("/hw/n1/cpu"); last.Path != "" {
		t.Error("deleted key visible")
	}

	var paths []string
	for {
		ev, _ := next(t, all)
		paths = append(paths, ev.Entry.Path)
		if ev.Entry.Path == "/lk/end" {
			break
		}
	}
	if got, want := len(paths), 53; got != want {
		t.Errorf("watch / saw %d events, want %d", got, want)
	}
	if !slices.Contains(paths, "/hw/n1-b/x") {
		t.Error("watch / missed the merged entry")
	}
}

func TestWatchSlowWatcherResyncs(t *testing.T) {
	f := newFixture()
	s := f.open(t, "n1", "", func(o *Options) { o.WatchBuffer = 4 })
	ch := s.Watch(t.Context(), "/lk")
	// Nobody reads: the store must not block, whatever the watcher does.
	for i := range 100 {
		if _, err := s.PutValue(fmt.Sprintf("/lk/k%d", i), i); err != nil {
			t.Fatal(err)
		}
	}
	// The watcher's goroutine may hold one event it took before the
	// overflow; after at most that one comes the Resync.
	ev, _ := next(t, ch)
	if !ev.Resync {
		ev, _ = next(t, ch)
	}
	if !ev.Resync {
		t.Fatalf("slow watcher got %+v, want a Resync", ev)
	}
	// Changes made after a Resync was taken are delivered, in order. A
	// second overflow may still be pending from the burst (the goroutine
	// takes events while the burst runs); it drops the change below, and
	// once it is consumed the next change must arrive.
	e, err := s.PutValue("/lk/after", 1)
	if err != nil {
		t.Fatal(err)
	}
	var prev Version
	for resyncs := 0; prev != e.Version; {
		ev, _ = next(t, ch)
		if ev.Resync {
			if resyncs++; resyncs > 1 {
				t.Fatal("more than one Resync after the burst")
			}
			prev = Version{}
			if e, err = s.PutValue("/lk/after", 2); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !prev.Less(ev.Entry.Version) {
			t.Fatalf("after resync: %s after %s", ev.Entry.Version, prev)
		}
		prev = ev.Entry.Version
	}
	if got := len(s.List("/lk")); got != 101 {
		t.Errorf("List after resync has %d entries, want 101", got)
	}
}

func TestWatchEnds(t *testing.T) {
	f := newFixture()
	s := f.open(t, "n1", "")
	ctx, cancel := context.WithCancel(t.Context())
	ch := s.Watch(ctx, "/lk")
	cancel()
	for {
		if _, ok := next(t, ch); !ok {
			break
		}
	}
	if _, ok := next(t, s.Watch(t.Context(), "/bad root")); ok {
		t.Error("watch of an invalid prefix delivered an event")
	}
	if got := len(f.logs.lines("watch refused")); got != 1 {
		t.Errorf("invalid prefix logged %d times, want 1", got)
	}
	open := s.Watch(t.Context(), "/")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for {
		if _, ok := next(t, open); !ok {
			break
		}
	}
}

func TestDropReplica(t *testing.T) {
	f := newFixture()
	s := f.open(t, "n1", "")
	ch := s.Watch(t.Context(), "/")
	if _, err := s.PutValue("/hw/n1/cpu", 4); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Merge(Entry{Path: "/hw/n2/cpu", Value: cborOf(t, 8), Version: Version{1, 0, "n2"}}); err != nil {
		t.Fatal(err)
	}
	if got, want := s.DropReplica(), 1; got != want {
		t.Errorf("dropped %d, want %d", got, want)
	}
	var paths []string
	for _, e := range s.List("/") {
		paths = append(paths, e.Path)
	}
	if want := []string{"/hw/n1/cpu"}; !slices.Equal(paths, want) {
		t.Errorf("after DropReplica: %q, want %q", paths, want)
	}
	if _, ok := s.Digest()["n2"]; ok {
		t.Error("digest still names n2")
	}
	for {
		ev, _ := next(t, ch)
		if ev.Resync {
			break
		}
	}
}
