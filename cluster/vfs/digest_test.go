package vfs

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// held returns every entry of s, tombstones included.
func held(s *Store) map[string]Entry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]Entry, len(s.entries))
	for p, r := range s.entries {
		out[p] = r.e
	}
	return out
}

func mergeAll(tb testing.TB, dst *Store, es []Entry) {
	tb.Helper()
	for _, e := range es {
		if _, err := dst.Merge(e); err != nil {
			tb.Fatalf("merge %s into %s: %v", e.Path, dst.Node(), err)
		}
	}
}

// exchange runs one anti-entropy round between a and b, both ways.
func exchange(tb testing.TB, a, b *Store) {
	tb.Helper()
	toB := a.Missing(b.Digest())
	toA := b.Missing(a.Digest())
	mergeAll(tb, b, toB)
	mergeAll(tb, a, toA)
}

func sameEntries(a, b map[string]Entry) error {
	for _, p := range slices.Sorted(maps.Keys(a)) {
		x, y := a[p], b[p]
		if _, ok := b[p]; !ok {
			return fmt.Errorf("%s: held by one side only (%s)", p, x.Version)
		}
		if x.Version != y.Version || x.Deleted != y.Deleted || !bytes.Equal(x.Value, y.Value) {
			return fmt.Errorf("%s: %s deleted=%v vs %s deleted=%v", p, x.Version, x.Deleted, y.Version, y.Deleted)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			return fmt.Errorf("%s: held by one side only (%s)", p, b[p].Version)
		}
	}
	return nil
}

func TestMissingGap(t *testing.T) {
	f := newFixture()
	a := f.open(t, "n1", "")
	b := f.open(t, "n2", "")
	var es []Entry
	for i := range 3 {
		e, err := a.PutValue(fmt.Sprintf("/hw/n1/k%d", i), i)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	// b got the newest write of n1 but missed the older ones: its Max for
	// n1 equals a's, and only Count and Sum show the gap.
	mergeAll(t, b, es[2:])
	if got, want := b.Digest()["n1"].Max, a.Digest()["n1"].Max; got != want {
		t.Fatalf("setup: max %s, want %s", got, want)
	}
	var got []string
	for _, e := range a.Missing(b.Digest()) {
		got = append(got, e.Path)
	}
	if want := []string{"/hw/n1/k0", "/hw/n1/k1", "/hw/n1/k2"}; !slices.Equal(got, want) {
		t.Errorf("Missing = %q, want %q", got, want)
	}

	// Without a gap only the newer entries go.
	c := f.open(t, "n3", "")
	mergeAll(t, c, es[:2])
	got = nil
	for _, e := range a.Missing(c.Digest()) {
		got = append(got, e.Path)
	}
	if want := []string{"/hw/n1/k2"}; !slices.Equal(got, want) {
		t.Errorf("Missing without gap = %q, want %q", got, want)
	}
	if got := a.Missing(a.Digest()); len(got) != 0 {
		t.Errorf("Missing against own digest = %d entries", len(got))
	}
}

// TestAntiEntropyConverges checks that random writes, deletes and partial
// copies (which leave gaps) spread over three stores end, after pairwise
// Missing exchanges, in three identical stores holding the newest version
// of every key.
func TestAntiEntropyConverges(t *testing.T) {
	nodes := []string{"n1", "n2", "n3"}
	rapid.Check(t, func(rt *rapid.T) {
		f := newFixture()
		stores := make([]*Store, len(nodes))
		for i, n := range nodes {
			stores[i] = f.open(t, n, "")
		}
		newest := make(map[string]Entry) // the oracle: highest version written per path
		record := func(e Entry) {
			if old, ok := newest[e.Path]; !ok || old.Version.Less(e.Version) {
				newest[e.Path] = e
			}
		}
		steps := rapid.IntRange(1, 80).Draw(rt, "steps")
		for range steps {
			switch rapid.IntRange(0, 9).Draw(rt, "op") {
			case 0, 1, 2, 3, 4, 5:
				i := rapid.IntRange(0, len(stores)-1).Draw(rt, "store")
				root := rapid.SampledFrom([]string{"/hw/" + nodes[i], "/lk", "/ctx"}).Draw(rt, "root")
				path := fmt.Sprintf("%s/k%d", root, rapid.IntRange(0, 4).Draw(rt, "key"))
				var e Entry
				var err error
				if rapid.IntRange(0, 4).Draw(rt, "delete") == 0 {
					e, err = stores[i].Delete(path)
				} else {
					e, err = stores[i].PutValue(path, rapid.IntRange(0, 1000).Draw(rt, "value"))
				}
				if err != nil {
					rt.Fatal(err)
				}
				record(e)
			case 6, 7:
				// A partial copy, as a lossy broadcast would leave it.
				src := rapid.IntRange(0, len(stores)-1).Draw(rt, "src")
				dst := rapid.IntRange(0, len(stores)-1).Draw(rt, "dst")
				all := held(stores[src])
				for _, p := range slices.Sorted(maps.Keys(all)) {
					if rapid.Bool().Draw(rt, "copy") {
						if _, err := stores[dst].Merge(all[p]); err != nil {
							rt.Fatal(err)
						}
					}
				}
			default:
				f.clock.Add(time.Duration(rapid.IntRange(0, 3).Draw(rt, "ms")) * time.Millisecond)
			}
		}
		exchange(t, stores[0], stores[1])
		exchange(t, stores[0], stores[2])
		exchange(t, stores[1], stores[2])

		for i, s := range stores {
			if err := sameEntries(newest, held(s)); err != nil {
				rt.Fatalf("store %s differs from the newest writes: %v", nodes[i], err)
			}
		}
		d0 := stores[0].Digest()
		for i, s := range stores {
			if d := s.Digest(); !maps.Equal(d, d0) {
				rt.Fatalf("digest of %s = %v, want %v", nodes[i], d, d0)
			}
			for j, o := range stores {
				if got := s.Missing(o.Digest()); len(got) != 0 {
					rt.Fatalf("after convergence %s still offers %s %d entries", nodes[i], nodes[j], len(got))
				}
			}
		}
	})
}
