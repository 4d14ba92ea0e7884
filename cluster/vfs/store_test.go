package vfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is the injected clock of the tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) lines(substr string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		if line != "" && strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

type fixture struct {
	clock *fakeClock
	logs  *logBuffer
}

func newFixture() *fixture { return &fixture{clock: newClock(), logs: &logBuffer{}} }

// open opens a store of node on the fixture's clock; dir "" keeps it in
// memory. edit adjusts the options.
func (f *fixture) open(tb testing.TB, node, dir string, edit ...func(*Options)) *Store {
	tb.Helper()
	opts := Options{
		Node:       node,
		Dir:        dir,
		Now:        f.clock.Now,
		Logger:     slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		GCInterval: -1,
	}
	for _, fn := range edit {
		fn(&opts)
	}
	s, err := Open(context.Background(), opts)
	if err != nil {
		tb.Fatalf("open %s: %v", node, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func cborOf(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := Encode(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestVersionLess(t *testing.T) {
	tests := []struct {
		a, b Version
		want bool
	}{
		{Version{1, 0, "a"}, Version{2, 0, "a"}, true},
		{Version{2, 0, "a"}, Version{1, 9, "z"}, false},
		{Version{1, 1, "a"}, Version{1, 2, "a"}, true},
		{Version{1, 2, "a"}, Version{1, 1, "z"}, false},
		{Version{1, 1, "a"}, Version{1, 1, "b"}, true},
		{Version{1, 1, "b"}, Version{1, 1, "a"}, false},
		{Version{1, 1, "a"}, Version{1, 1, "a"}, false},
		{Version{}, Version{1, 0, ""}, true},
	}
	for _, tt := range tests {
		if got := tt.a.Less(tt.b); got != tt.want {
			t.Errorf("%s.Less(%s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
	if !(Version{}).IsZero() || (Version{Wall: 1}).IsZero() {
		t.Error("IsZero wrong")
	}
	if got, want := (Version{5, 2, "n1"}).String(), "5.2@n1"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

func TestHLCMonotonic(t *testing.T) {
	f := newFixture()
	s := f.open(t, "n1", "")
	var last Version
	put := func(step string) Version {
		t.Helper()
		e, err := s.Put("/hw/n1/cpu", cborOf(t, step))
		if err != nil {
			t.Fatal(err)
		}
		if !last.Less(e.Version) {
			t.Fatalf("%s: version %s not after %s", step, e.Version, last)
		}
		last = e.Version
		return e.Version
	}

	v := put("first")
	if got, want := v, (Version{f.clock.Now().UnixNano(), 0, "n1"}); got != want {
		t.Errorf("first version = %s, want %s", got, want)
	}
	v = put("same instant")
	if got, want := v.Logical, uint32(1); got != want {
		t.Errorf("logical at same instant = %d, want %d", got, want)
	}
	f.clock.Add(-time.Hour)
	prev := last
	v = put("clock went back")
	if got, want := v.Wall, prev.Wall; got != want || v.Logical != 2 {
		t.Errorf("after clock went back: %s, want wall %d logical 2", v, want)
	}

	// A remote version ahead (within skew) pulls the clock forward.
	f.clock.Add(time.Hour)
	remote := Version{Wall: f.clock.Now().Add(3 * time.Second).UnixNano(), Logical: 7, Node: "n2"}
	if _, err := s.Merge(Entry{Path: "/lk/x", Value: cborOf(t, 1), Version: remote}); err != nil {
		t.Fatal(err)
	}
	v = put("after remote")
	if got, want := v, (Version{remote.Wall, 8, "n1"}); got != want {
		t.Errorf("after merge = %s, want %s", got, want)
	}
	f.clock.Add(10 * time.Second)
	v = put("physical ahead")
	if got, want := v, (Version{f.clock.Now().UnixNano(), 0, "n1"}); got != want {
		t.Errorf("physical ahead = %s, want %s", got, want)
	}
}

func TestPutGetList(t *testing.T) {
	f := newFixture()
	s := f.open(t, "n1", "")
	paths := []string{"/hw/n1", "/hw/n1/cpu", "/hw/n1/gpu/0", "/hw/n1-b", "/hw/n1.x", "/hw/n1b/y", "/lk/web", "/ctx/web"}
	for _, p := range paths {
		if strings.HasPrefix(p, "/hw/n1") && p != "/hw/n1" && !strings.HasPrefix(p, "/hw/n1/") {
			continue // other nodes' subtrees: merged below
		}
		if _, err := s.PutValue(p, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"/hw/n1-b", "/hw/n1.x", "/hw/n1b/y"} {
		node, _ := Owner(p)
		if _, err := s.Merge(Entry{Path: p, Value: cborOf(t, p), Version: Version{1, 0, node}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Delete("/hw/n1/gpu/0"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		prefix string
		want   []string
	}{
		{"/", []string{"/ctx/web", "/hw/n1", "/hw/n1-b", "/hw/n1.x", "/hw/n1/cpu", "/hw/n1b/y", "/lk/web"}},
		{"/hw/n1", []string{"/hw/n1", "/hw/n1/cpu"}},
		{"/hw/n1/", []string{"/hw/n1", "/hw/n1/cpu"}},
		{"/hw", []string{"/hw/n1", "/hw/n1-b", "/hw/n1.x", "/hw/n1/cpu", "/hw/n1b/y"}},
		{"/hw/n1/gpu", nil},
		{"/lk", []string{"/lk/web"}},
		{"/sum", nil},
		{"hw", nil},
		{"/nope", nil},
	}
	for _, tt := range tests {
		var got []string
		for _, e := range s.List(tt.prefix) {
			got = append(got, e.Path)
			var v string
			if err := Decode(e.Value, &v); err != nil || v != e.Path {
				t.Errorf("List(%q): %s holds %q (%v)", tt.prefix, e.Path, v, err)
			}
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("List(%q) = %q, want %q", tt.prefix, got, tt.want)
		}
	}

	e, ok := s.Get("/hw/n1/cpu")
	if !ok || e.Version.Node != "n1" || e.Deleted {
		t.Errorf("Get /hw/n1/cpu = %+v, %v", e, ok)
	}
	if _, ok := s.Get("/hw/n1/gpu/0"); ok {
		t.Error("Get of a deleted key found it")
	}
	if _, ok := s.Get("/hw/n9"); ok {
		t.Error("Get of a missing key found it")
	}
}

func TestPutCopiesValue(t *testing.T) {
	s := newFixture().open(t, "n1", "")
	b := cborOf(t, "abc")
	if _, err := s.Put("/lk/a", b); err != nil {
		t.Fatal(err)
	}
	b[1] = 'z'
	e, _ := s.Get("/lk/a")
	if got, want := string(e.Value), string(cborOf(t, "abc")); got != want {
		t.Errorf("stored value changed with the caller's buffer: %q, want %q", got, want)
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture()
	s := f.open(t, "n1", "", func(o *Options) { o.MaxValueSize = 64 })
	big := cborOf(t, strings.Repeat("x", 100))
	ok := cborOf(t, 1)
	ver := Version{Wall: f.clock.Now().UnixNano(), Node: "n2"}
	tests := []struct {
		name    string
		run     func() error
		want    error
		mention []string
	}{
		{"relative path", func() error { _, err := s.Put("hw/n1", ok); return err }, ErrInvalidPath, []string{`"hw/n1"`}},
		{"unknown root", func() error { _, err := s.Put("/tmp/x", ok); return err }, ErrInvalidPath, []string{`"/tmp/x"`, "/tmp"}},
		{"upper case", func() error { _, err := s.Put("/lk/Web", ok); return err }, ErrInvalidPath, []string{`"/lk/Web"`, `"Web"`}},
		{"empty segment", func() error { _, err := s.Put("/lk//x", ok); return err }, ErrInvalidPath, []string{`"/lk//x"`}},
		{"trailing slash", func() error { _, err := s.Put("/lk/x/", ok); return err }, ErrInvalidPath, []string{`"/lk/x/"`}},
		{"root only", func() error { _, err := s.Put("/", ok); return err }, ErrInvalidPath, nil},
		{"leading dash", func() error { _, err := s.Delete("/lk/-x"); return err }, ErrInvalidPath, []string{`"-x"`}},
		{"merge bad path", func() error { _, err := s.Merge(Entry{Path: "/lk/a b", Value: ok, Version: ver}); return err }, ErrInvalidPath, []string{`"/lk/a b"`}},
		{"too large", func() error { _, err := s.Put("/lk/big", big); return err }, ErrValueTooLarge, []string{"/lk/big", "102 bytes", "limit 64"}},
		{"merge too large", func() error { _, err := s.Merge(Entry{Path: "/lk/big", Value: big, Version: ver}); return err }, ErrValueTooLarge, []string{"/lk/big", "102 bytes"}},
		{"not cbor", func() error { _, err := s.Put("/lk/x", []byte{0xff, 0x00}); return err }, ErrInvalidValue, []string{"/lk/x"}},
		{"two items", func() error { _, err := s.Put("/lk/x", []byte{0x01, 0x02}); return err }, ErrInvalidValue, []string{"/lk/x"}},
		{"empty value", func() error { _, err := s.Put("/lk/x", nil); return err }, ErrInvalidValue, []string{"/lk/x"}},
		{"unencodable", func() error { _, err := s.PutValue("/lk/x", make(chan int)); return err }, nil, []string{"/lk/x", "chan int"}},
		{"zero version", func() error { _, err := s.Merge(Entry{Path: "/lk/x", Value: ok}); return err }, ErrInvalidVersion, []string{"/lk/x"}},
		{"bad writer", func() error {
			_, err := s.Merge(Entry{Path: "/lk/x", Value: ok, Version: Version{Wall: 1, Node: "N 2"}})
			return err
		}, ErrInvalidVersion, []string{"/lk/x", "N 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if err == nil {
				t.Fatal("no error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %q is not %v", err, tt.want)
			}
			for _, m := range tt.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %s", err, m)
				}
			}
		})
	}
	if got := s.Len(); got != 0 {
		t.Errorf("bad input stored %d entries", got)
	}
	if _, err := Open(context.Background(), Options{Node: "Bad Name"}); err == nil || !strings.Contains(err.Error(), `"Bad Name"`) {
		t.Errorf("Open with a bad node name: %v", err)
	}
}

func TestSingleWriter(t *testing.T) {
	f := newFixture()
	s := f.open(t, "n1", "")
	now := f.clock.Now().UnixNano()
	v := cborOf(t, 1)
	tests := []struct {
		name    string
		run     func() error
		refused bool
		mention []string
	}{
		{"own hw", func() error { _, err := s.Put("/hw/n1/cpu", v); return err }, false, nil},
		{"own sum", func() error { _, err := s.Put("/sum/n1", v); return err }, false, nil},
		{"other hw", func() error { _, err := s.Put("/hw/n2/cpu", v); return err }, true, []string{"/hw/n2/cpu", `"n1"`, `"n2"`}},
		{"other run", func() error { _, err := s.Delete("/run/n2/step"); return err }, true, []string{"/run/n2/step"}},
		{"other itg", func() error { _, err := s.Put("/itg/n2", v); return err }, true, []string{"/itg/n2"}},
		{"root without node", func() error { _, err := s.Put("/sum", v); return err }, true, []string{"/sum"}},
		{"shared lk", func() error { _, err := s.Put("/lk/web", v); return err }, false, nil},
		{"desired ctx", func() error { _, err := s.Put("/ctx/web", v); return err }, false, nil},
		{"merge from owner", func() error {
			_, err := s.Merge(Entry{Path: "/hw/n2/cpu", Value: v, Version: Version{now, 0, "n2"}})
			return err
		}, false, nil},
		{"merge from non-owner", func() error {
			_, err := s.Merge(Entry{Path: "/hw/n2/gpu", Value: v, Version: Version{now, 0, "n3"}})
			return err
		}, true, []string{"/hw/n2/gpu", `"n3"`, `"n2"`}},
		{"merge own path from other", func() error {
			_, err := s.Merge(Entry{Path: "/run/n1/x", Value: v, Version: Version{now, 0, "n2"}})
			return err
		}, true, []string{"/run/n1/x"}},
		{"merge lk from anyone", func() error {
			_, err := s.Merge(Entry{Path: "/lk/db", Value: v, Version: Version{now, 0, "n3"}})
			return err
		}, false, nil},
		{"merge desired from anyone", func() error {
			_, err := s.Merge(Entry{Path: "/sys/revision", Value: v, Version: Version{now, 0, "n3"}})
			return err
		}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if got := errors.Is(err, ErrNotWriter); got != tt.refused {
				t.Fatalf("refused = %v (err %v), want %v", got, err, tt.refused)
			}
			if err != nil && !tt.refused {
				t.Fatal(err)
			}
			for _, m := range tt.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %s", err, m)
				}
			}
		})
	}
}

type change struct {
	e     Entry
	local bool
}

func TestMergeLastWriterWins(t *testing.T) {
	f := newFixture()
	var (
		mu      sync.Mutex
		changes []change
	)
	var s *Store
	s = f.open(t, "n1", "", func(o *Options) {
		o.OnChange = func(e Entry, local bool) {
			// OnChange may read the store: the change is already in it.
			if got, ok := s.Get(e.Path); !e.Deleted && (!ok || got.Version != e.Version) {
				t.Errorf("OnChange(%s): store holds %+v", e.Version, got)
			}
			mu.Lock()
			changes = append(changes, change{e, local})
			mu.Unlock()
		}
	})
	base := f.clock.Now().UnixNano()
	at := func(wall int64, logical uint32, node string, val int) Entry {
		return Entry{Path: "/lk/web", Value: cborOf(t, val), Version: Version{base + wall, logical, node}}
	}
	tests := []struct {
		name string
		e    Entry
		want bool
	}{
		{"first", at(10, 0, "n2", 1), true},
		{"older wall", at(5, 9, "n3", 2), false},
		{"same version again", at(10, 0, "n2", 1), false},
		{"newer logical", at(10, 1, "n2", 3), true},
		{"tie broken by node", at(10, 1, "n3", 4), true},
		{"lower node at tie", at(10, 1, "n2", 5), false},
		{"newer wall", at(20, 0, "n2", 6), true},
	}
	want := 0
	for _, tt := range tests {
		got, err := s.Merge(tt.e)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got != tt.want {
			t.Errorf("%s: applied = %v, want %v", tt.name, got, tt.want)
		}
		if tt.want {
			want = mustInt(t, tt.e.Value)
		}
		e, _ := s.Get("/lk/web")
		if got := mustInt(t, e.Value); got != want {
			t.Errorf("%s: value = %d, want %d", tt.name, got, want)
		}
	}
	if _, err := s.Put("/lk/web", cborOf(t, 7)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var got []int
	for _, c := range changes {
		got = append(got, mustInt(t, c.e.Value))
		if c.local != (c.e.Version.Node == "n1") {
			t.Errorf("change %s local = %v", c.e.Version, c.local)
		}
	}
	if want := []int{1, 3, 4, 6, 7}; !slices.Equal(got, want) {
		t.Errorf("OnChange values = %v, want %v", got, want)
	}
}

func mustInt(tb testing.TB, b []byte) int {
	tb.Helper()
	var v int
	if err := Decode(b, &v); err != nil {
		tb.Fatal(err)
	}
	return v
}

func TestTombstones(t *testing.T) {
	f := newFixture()
	s := f.open(t, "n1", "")
	put, err := s.Put("/ctx/web", cborOf(t, "v1"))
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Add(time.Second)
	del, err := s.Delete("/ctx/web")
	if err != nil {
		t.Fatal(err)
	}
	if !del.Deleted || !put.Version.Less(del.Version) || del.Value != nil {
		t.Fatalf("tombstone = %+v", del)
	}
	// A stale copy of the live entry does not undo the delete.
	if applied, err := s.Merge(put); err != nil || applied {
		t.Errorf("merge of stale live copy: applied %v, err %v", applied, err)
	}
	if _, ok := s.Get("/ctx/web"); ok {
		t.Error("deleted entry came back")
	}
	again, err := s.Delete("/ctx/web")
	if err != nil || again.Version != del.Version {
		t.Errorf("second delete = %+v, %v; want the first tombstone", again, err)
	}
	// Deleting a missing key writes a tombstone for peers that may hold it.
	miss, err := s.Delete("/ctx/none")
	if err != nil || !miss.Deleted {
		t.Errorf("delete of missing key = %+v, %v", miss, err)
	}
	// A newer write after the delete wins.
	f.clock.Add(time.Second)
	remote := Entry{Path: "/ctx/web", Value: cborOf(t, "v2"), Version: Version{f.clock.Now().UnixNano(), 0, "n2"}}
	if applied, err := s.Merge(remote); err != nil || !applied {
		t.Fatalf("newer write after delete: applied %v, err %v", applied, err)
	}
	if e, ok := s.Get("/ctx/web"); !ok || e.Version != remote.Version {
		t.Errorf("Get after newer write = %+v, %v", e, ok)
	}
	// A remote tombstone replaces an older live entry.
	f.clock.Add(time.Second)
	rdel := Entry{Path: "/ctx/web", Version: Version{f.clock.Now().UnixNano(), 0, "n3"}, Deleted: true, Value: cborOf(t, "ignored")}
	if applied, err := s.Merge(rdel); err != nil || !applied {
		t.Fatalf("remote tombstone: applied %v, err %v", applied, err)
	}
	if _, ok := s.Get("/ctx/web"); ok {
		t.Error("remote tombstone did not delete")
	}
}

func TestCollectGarbage(t *testing.T) {
	f := newFixture()
	s := f.open(t, "n1", "", func(o *Options) { o.TombstoneGrace = time.Hour })
	if _, err := s.Put("/lk/keep", cborOf(t, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete("/lk/gone"); err != nil {
		t.Fatal(err)
	}
	old := Entry{Path: "/lk/old", Version: Version{f.clock.Now().UnixNano(), 0, "n2"}, Deleted: true}
	f.clock.Add(30 * time.Minute)
	if got := s.CollectGarbage(); got != 0 {
		t.Errorf("collected %d tombstones inside the grace period", got)
	}
	f.clock.Add(31 * time.Minute)
	if got, want := s.CollectGarbage(), 1; got != want {
		t.Errorf("collected %d, want %d", got, want)
	}
	if got, want := s.Len(), 1; got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
	if d := s.Digest()["n1"]; d.Count != 1 {
		t.Errorf("digest after GC = %+v, want count 1", d)
	}
	// An expired tombstone from a slower peer is not stored again.
	if applied, err := s.Merge(old); err != nil || applied {
		t.Errorf("expired tombstone: applied %v, err %v", applied, err)
	}
	// ...but it still deletes an older live copy.
	live := Entry{Path: "/lk/old2", Value: cborOf(t, 1), Version: Version{old.Version.Wall - 1, 0, "n2"}}
	if _, err := s.Merge(live); err != nil {
		t.Fatal(err)
	}
	old.Path = "/lk/old2"
	if applied, err := s.Merge(old); err != nil || !applied {
		t.Errorf("expired tombstone over older live entry: applied %v, err %v", applied, err)
	}
	if _, ok := s.Get("/lk/old2"); ok {
		t.Error("expired tombstone did not delete the older live entry")
	}
	if got := s.Missing(Digest{}); slices.ContainsFunc(got, func(e Entry) bool { return e.Deleted }) {
		t.Errorf("Missing offers expired tombstones: %+v", got)
	}
	if !s.Stale(f.clock.Now().Add(-61*time.Minute)) || s.Stale(f.clock.Now().Add(-59*time.Minute)) {
		t.Error("Stale does not follow the grace period")
	}
}

func TestFutureVersion(t *testing.T) {
	f := newFixture()
	s := f.open(t, "n1", "", func(o *Options) { o.MaxSkew = 5 * time.Second })
	ahead := func(d time.Duration, node string) Entry {
		return Entry{Path: "/lk/x", Value: cborOf(t, 1), Version: Version{f.clock.Now().Add(d).UnixNano(), 0, node}}
	}
	if _, err := s.Merge(ahead(4*time.Second, "n2")); err != nil {
		t.Errorf("4s ahead refused: %v", err)
	}
	for range 3 {
		_, err := s.Merge(ahead(6*time.Second, "n3"))
		if !errors.Is(err, ErrFutureVersion) || !strings.Contains(err.Error(), "/lk/x") {
			t.Fatalf("6s ahead: err %v, want ErrFutureVersion naming the path", err)
		}
	}
	if got := len(f.logs.lines("clock is ahead")); got != 1 {
		t.Errorf("logged %d times, want once per writer per minute", got)
	}
	if _, err := s.Merge(ahead(time.Minute, "n4")); !errors.Is(err, ErrFutureVersion) {
		t.Fatal(err)
	}
	f.clock.Add(61 * time.Second)
	if _, err := s.Merge(ahead(time.Minute, "n3")); !errors.Is(err, ErrFutureVersion) {
		t.Fatal(err)
	}
	if got, want := len(f.logs.lines("clock is ahead")), 3; got != want {
		t.Errorf("logged %d times, want %d", got, want)
	}
	// The refused versions did not advance the clock.
	e, err := s.Put("/lk/y", cborOf(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.Version.Wall, f.clock.Now().UnixNano(); got != want {
		t.Errorf("clock after refusals at %d, want %d", got, want)
	}
}

func TestClosed(t *testing.T) {
	s := newFixture().open(t, "n1", "")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put("/lk/x", cborOf(t, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close: %v", err)
	}
	if _, err := s.Delete("/lk/x"); !errors.Is(err, ErrClosed) {
		t.Errorf("Delete after Close: %v", err)
	}
	if _, err := s.Merge(Entry{Path: "/lk/x", Value: cborOf(t, 1), Version: Version{1, 0, "n2"}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Merge after Close: %v", err)
	}
	if _, ok := <-s.Watch(context.Background(), "/"); ok {
		t.Error("Watch after Close delivered an event")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCodecCanonical(t *testing.T) {
	a, err := Encode(map[string]int{"b": 2, "a": 1, "ccc": 3})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encode(map[string]int{"ccc": 3, "a": 1, "b": 2})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("encodings differ: %x vs %x", a, b)
	}
	var got map[string]int
	if err := Decode(a, &got); err != nil || got["ccc"] != 3 {
		t.Errorf("Decode = %v, %v", got, err)
	}
	if err := Decode([]byte{0xff}, &got); err == nil {
		t.Error("Decode of garbage succeeded")
	}
	e := Entry{Path: "/lk/a", Value: a, Version: Version{1, 2, "n1"}}
	var back Entry
	if err := Decode(cborOf(t, e), &back); err != nil || back.Path != e.Path || back.Version != e.Version || !bytes.Equal(back.Value, e.Value) {
		t.Errorf("entry round trip = %+v, %v", back, err)
	}
}

// TestOnChangeConcurrent writes from many goroutines while OnChange reads
// the store: no deadlock, and per key OnChange sees increasing versions.
func TestOnChangeConcurrent(t *testing.T) {
	f := newFixture()
	var (
		mu   sync.Mutex
		last = make(map[string]Version)
		bad  []string
	)
	var s *Store
	s = f.open(t, "n1", t.TempDir(), func(o *Options) {
		o.OnChange = func(e Entry, local bool) {
			s.Get(e.Path)
			s.List("/lk")
			mu.Lock()
			if !last[e.Path].Less(e.Version) {
				bad = append(bad, e.Path+" "+e.Version.String())
			}
			last[e.Path] = e.Version
			mu.Unlock()
		}
	})
	watch := s.Watch(t.Context(), "/lk/k0")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				if _, err := s.PutValue(fmt.Sprintf("/lk/k%d", i%4), g*1000+i); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("OnChange out of version order: %q", bad)
	}
	want, _ := s.Get("/lk/k0")
	var prev Version
	for {
		ev, _ := next(t, watch)
		if ev.Resync {
			t.Fatal("unexpected resync")
		}
		if !prev.Less(ev.Entry.Version) {
			t.Fatalf("watch out of order: %s after %s", ev.Entry.Version, prev)
		}
		prev = ev.Entry.Version
		if prev == want.Version {
			break
		}
	}
}

func TestMergeCopiesValueUnlessOwned(t *testing.T) {
	tests := []struct {
		name    string
		merge   func(*Store, Entry) (bool, error)
		aliased bool
	}{
		{"Merge", (*Store).Merge, false},
		{"MergeOwned", (*Store).MergeOwned, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture()
			s := f.open(t, "n1", "")
			b := cborOf(t, "abc")
			e := Entry{Path: "/lk/a", Value: b, Version: Version{Wall: f.clock.Now().UnixNano(), Node: "n2"}}
			if applied, err := tt.merge(s, e); err != nil || !applied {
				t.Fatalf("merge = %v, %v; want applied", applied, err)
			}
			b[1] = 'z'
			got, _ := s.Get("/lk/a")
			if aliased := string(got.Value) == string(b); aliased != tt.aliased {
				t.Errorf("stored value follows the caller's buffer: %v, want %v", aliased, tt.aliased)
			}
		})
	}
}
