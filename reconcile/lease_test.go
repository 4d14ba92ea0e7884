package reconcile

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"
)

// memLeases is an in-memory LeaseStore shared by all nodes of a test, as if
// gossip were instant.
type memLeases struct {
	mu     sync.Mutex
	leases map[string]Lease
	putErr error
}

func (m *memLeases) GetLease(key string) (Lease, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.leases[key]
	return l, ok
}

func (m *memLeases) PutLease(key string, l Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.putErr != nil {
		return m.putErr
	}
	if m.leases == nil {
		m.leases = map[string]Lease{}
	}
	m.leases[key] = l
	return nil
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const ttl = 10 * time.Second

// leaseCluster returns one Leases per member over a shared store and clock.
func leaseCluster(members ...string) (map[string]*Leases, *memLeases, *fakeClock) {
	store := &memLeases{}
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	out := map[string]*Leases{}
	for _, m := range members {
		out[m] = &Leases{Store: store, Node: m, TTL: ttl, Now: clock.Now}
	}
	return out, store, clock
}

// acquireAll lets every member try, in rank-independent (name) order, and
// returns who got the lease.
func acquireAll(t *testing.T, nodes map[string]*Leases, key string, eligible []string) []string {
	t.Helper()
	var got []string
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range nodes {
			if !yield(n) {
				return
			}
		}
	})
	for _, n := range names {
		_, ok, err := nodes[n].Acquire(key, eligible)
		if err != nil {
			t.Fatalf("%s: Acquire(%s): %v", n, key, err)
		}
		if ok {
			got = append(got, n)
		}
	}
	return got
}

func TestLeasePreferredHolderWins(t *testing.T) {
	t.Parallel()
	members := []string{"a", "b", "c", "d"}
	nodes, store, _ := leaseCluster(members...)
	for _, key := range []string{"mid/cache/primary", "mid/db/primary", "sys/migrate"} {
		want := PreferredHolder(key, members)
		if got := acquireAll(t, nodes, key, members); !reflect.DeepEqual(got, []string{want}) {
			t.Errorf("%s: holders %v, want only the preferred %s", key, got, want)
		}
		l, _ := store.GetLease(key)
		if l.Holder != want || l.Epoch != 1 {
			t.Errorf("%s: lease %+v, want holder %s epoch 1", key, l, want)
		}
		// While it is valid nobody else takes it, whatever order they try.
		if got := acquireAll(t, nodes, key, members); !reflect.DeepEqual(got, []string{want}) {
			t.Errorf("%s: second round holders %v, want %s", key, got, want)
		}
	}
}

func TestLeaseRenewKeepsEpoch(t *testing.T) {
	t.Parallel()
	members := []string{"a", "b", "c"}
	nodes, _, clock := leaseCluster(members...)
	key := "mid/cache/primary"
	holder := nodes[PreferredHolder(key, members)]
	first, ok, err := holder.Acquire(key, members)
	if err != nil || !ok {
		t.Fatalf("Acquire = %v, %v", ok, err)
	}
	for range 5 {
		clock.Advance(ttl / 2)
		l, ok, err := holder.Acquire(key, members)
		if err != nil || !ok {
			t.Fatalf("renew = %v, %v", ok, err)
		}
		if l.Epoch != first.Epoch {
			t.Errorf("renew epoch = %d, want %d", l.Epoch, first.Epoch)
		}
		if want := clock.Now().Add(ttl); !l.Expires.Equal(want) {
			t.Errorf("renew expires = %v, want %v", l.Expires, want)
		}
	}
}

func TestLeaseExpiryHandsOverInRank(t *testing.T) {
	t.Parallel()
	members := []string{"a", "b", "c", "d"}
	nodes, store, clock := leaseCluster(members...)
	key := "mid/db/primary"
	rank := Rank(key, members)
	if _, ok, _ := nodes[rank[0]].Acquire(key, members); !ok {
		t.Fatalf("preferred %s did not take the lease", rank[0])
	}

	// The holder stops renewing (hung, or cut off). Before expiry nobody
	// moves; at expiry the next in rank takes over with a higher epoch, and
	// the old holder may not take it back.
	clock.Advance(ttl - time.Nanosecond)
	if got := acquireAll(t, map[string]*Leases{rank[1]: nodes[rank[1]], rank[2]: nodes[rank[2]], rank[3]: nodes[rank[3]]}, key, members); got != nil {
		t.Fatalf("before expiry %v took the lease", got)
	}
	clock.Advance(time.Nanosecond)
	if got := acquireAll(t, nodes, key, members); !reflect.DeepEqual(got, []string{rank[1]}) {
		t.Fatalf("at expiry holders %v, want %s", got, rank[1])
	}
	if l, _ := store.GetLease(key); l.Holder != rank[1] || l.Epoch != 2 {
		t.Fatalf("after hand-over lease = %+v, want holder %s epoch 2", l, rank[1])
	}

	// rank[1] also falls silent and is still listed: rank[0] (not the last
	// holder any more) is first in line again.
	clock.Advance(ttl)
	if got := acquireAll(t, nodes, key, members); !reflect.DeepEqual(got, []string{rank[0]}) {
		t.Fatalf("second expiry holders %v, want %s", got, rank[0])
	}
	if l, _ := store.GetLease(key); l.Epoch != 3 {
		t.Fatalf("epoch = %d, want 3", l.Epoch)
	}
}

func TestLeaseCascadeWhenFirstInLineDoesNotAct(t *testing.T) {
	t.Parallel()
	members := []string{"a", "b", "c", "d"}
	nodes, store, clock := leaseCluster(members...)
	key := "sys/migrate"
	rank := Rank(key, members)
	nodes[rank[0]].Acquire(key, members)
	clock.Advance(ttl) // expired: line is rank[1], rank[2], rank[3]
	// rank[1] is listed as live but never acts; rank[2] waits one TTL more,
	// rank[3] two.
	others := map[string]*Leases{rank[2]: nodes[rank[2]], rank[3]: nodes[rank[3]]}
	if got := acquireAll(t, others, key, members); got != nil {
		t.Fatalf("at expiry %v took the lease before first in line", got)
	}
	clock.Advance(ttl)
	if got := acquireAll(t, others, key, members); !reflect.DeepEqual(got, []string{rank[2]}) {
		t.Fatalf("one TTL after expiry holders %v, want %s", got, rank[2])
	}
	if l, _ := store.GetLease(key); l.Epoch != 2 {
		t.Errorf("epoch = %d, want 2", l.Epoch)
	}
}

func TestLeaseRelease(t *testing.T) {
	t.Parallel()
	members := []string{"a", "b", "c"}
	nodes, store, _ := leaseCluster(members...)
	key := "mid/cache/primary"
	rank := Rank(key, members)
	nodes[rank[0]].Acquire(key, members)

	if err := nodes[rank[1]].Release(key); !errors.Is(err, ErrNotLeaseHolder) {
		t.Errorf("Release by non-holder = %v, want ErrNotLeaseHolder", err)
	}
	if err := nodes[rank[0]].Release(key); err != nil {
		t.Fatal(err)
	}
	if err := nodes[rank[0]].Release(key); !errors.Is(err, ErrNotLeaseHolder) {
		t.Errorf("second Release = %v, want ErrNotLeaseHolder", err)
	}
	if l, _ := store.GetLease(key); l.Holder != "" || l.Epoch != 1 {
		t.Errorf("released lease = %+v, want no holder, epoch kept", l)
	}
	// The releasing node leaves the eligible set (it is shutting down):
	// the next one takes over at once.
	rest := members[:0:0]
	for _, m := range members {
		if m != rank[0] {
			rest = append(rest, m)
		}
	}
	if got := acquireAll(t, nodes, key, rest); !reflect.DeepEqual(got, []string{rank[1]}) {
		t.Fatalf("after release holders %v, want %s", got, rank[1])
	}
	if l, _ := store.GetLease(key); l.Epoch != 2 {
		t.Errorf("epoch after release = %d, want 2", l.Epoch)
	}
}

func TestLeaseNotEligibleNeverHolds(t *testing.T) {
	t.Parallel()
	nodes, store, clock := leaseCluster("a", "b")
	key := "k"
	if got := acquireAll(t, nodes, key, []string{"b"}); !reflect.DeepEqual(got, []string{"b"}) {
		t.Fatalf("holders %v, want b", got)
	}
	// b loses eligibility (a label changed): it stops renewing, and after
	// expiry a takes over.
	if _, ok, _ := nodes["b"].Acquire(key, []string{"a"}); ok {
		t.Error("b renewed a lease it is not eligible for")
	}
	clock.Advance(ttl)
	if _, ok, _ := nodes["a"].Acquire(key, []string{"a"}); !ok {
		t.Error("a did not take the expired lease")
	}
	if l, _ := store.GetLease(key); l.Holder != "a" || l.Epoch != 2 {
		t.Errorf("lease = %+v, want a epoch 2", l)
	}
}

func TestLeaseSoleMemberRetakesWithNewEpoch(t *testing.T) {
	t.Parallel()
	nodes, _, clock := leaseCluster("a")
	nodes["a"].Acquire("k", []string{"a"})
	clock.Advance(2 * ttl)
	l, ok, err := nodes["a"].Acquire("k", []string{"a"})
	if err != nil || !ok || l.Epoch != 2 {
		t.Errorf("retake after expiry = %+v, %v, %v; want epoch 2", l, ok, err)
	}
}

func TestLeaseBadInput(t *testing.T) {
	t.Parallel()
	store := &memLeases{}
	tests := []struct {
		name string
		l    Leases
		key  string
		want error
	}{
		{"empty key", Leases{Store: store, Node: "a", TTL: ttl}, "", ErrInvalidLease},
		{"no node", Leases{Store: store, TTL: ttl}, "k", ErrInvalidLease},
		{"no store", Leases{Node: "a", TTL: ttl}, "k", ErrInvalidLease},
		{"zero ttl", Leases{Store: store, Node: "a"}, "k", ErrInvalidLease},
		{"negative ttl", Leases{Store: store, Node: "a", TTL: -ttl}, "k", ErrInvalidLease},
	}
	for _, tt := range tests {
		if _, _, err := tt.l.Acquire(tt.key, []string{"a"}); !errors.Is(err, tt.want) {
			t.Errorf("%s: Acquire error = %v, want %v", tt.name, err, tt.want)
		}
		if err := tt.l.Release(tt.key); !errors.Is(err, tt.want) {
			t.Errorf("%s: Release error = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestLeaseStoreError(t *testing.T) {
	t.Parallel()
	boom := errors.New("disk full")
	nodes, store, clock := leaseCluster("a")
	store.putErr = boom
	if _, ok, err := nodes["a"].Acquire("k", []string{"a"}); !errors.Is(err, boom) || ok {
		t.Errorf("take with failing store = %v, %v; want %v", ok, err, boom)
	}
	store.putErr = nil
	nodes["a"].Acquire("k", []string{"a"})
	store.putErr = boom
	clock.Advance(time.Second)
	if _, ok, err := nodes["a"].Acquire("k", []string{"a"}); !errors.Is(err, boom) || ok {
		t.Errorf("renew with failing store = %v, %v; want %v", ok, err, boom)
	}
	if err := nodes["a"].Release("k"); !errors.Is(err, boom) {
		t.Errorf("release with failing store = %v; want %v", err, boom)
	}
}

func TestLeaseValid(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		l    Lease
		want bool
	}{
		{Lease{Holder: "a", Expires: now.Add(time.Second)}, true},
		{Lease{Holder: "a", Expires: now}, false},
		{Lease{Holder: "", Expires: now.Add(time.Second)}, false},
		{Lease{}, false},
	}
	for _, tt := range tests {
		if got := tt.l.Valid(now); got != tt.want {
			t.Errorf("%+v.Valid = %v, want %v", tt.l, got, tt.want)
		}
	}
}

func TestRankDeterministic(t *testing.T) {
	t.Parallel()
	members := []string{"n1", "n2", "n3", "n4", "n5"}
	want := Rank("mid/cache", members)
	if len(want) != len(members) {
		t.Fatalf("Rank = %v, want all of %v", want, members)
	}
	for _, in := range [][]string{
		{"n5", "n4", "n3", "n2", "n1"},
		{"n3", "n1", "n5", "n2", "n4", "n3", ""},
	} {
		if got := Rank("mid/cache", in); !reflect.DeepEqual(got, want) {
			t.Errorf("Rank(%v) = %v, want %v", in, got, want)
		}
	}
	if got := PreferredHolder("k", nil); got != "" {
		t.Errorf("PreferredHolder of nobody = %q", got)
	}
	// Pin the weight function: it is a wire contract between versions.
	if got, want := Rank("mid/cache/primary", members), []string{"n1", "n4", "n3", "n5", "n2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Rank changed: %v, want %v; every node of a cluster must agree", got, want)
	}
	if got, want := rendezvousWeight(hashString("mid/cache/primary"), hashString("n1")), uint64(0xfaa3e2678b93b4e4); got != want {
		t.Errorf("rendezvousWeight changed: %#x, want %#x", got, want)
	}
}

// TestRankRendezvous checks the rendezvous property: when a member leaves,
// only the keys it held move; when one joins, keys move only to it; and the
// keys are shared about evenly.
func TestRankRendezvous(t *testing.T) {
	t.Parallel()
	members := []string{"a", "b", "c", "d", "e"}
	keys := make([]string, 2000)
	for i := range keys {
		keys[i] = fmt.Sprintf("mid/svc-%d/primary", i)
	}
	owner := map[string]string{}
	load := map[string]int{}
	for _, k := range keys {
		owner[k] = PreferredHolder(k, members)
		load[owner[k]]++
	}
	for m, n := range load {
		// 400 expected; a fixed hash, so this is deterministic, and a
		// broken mix would be far off.
		if n < 300 || n > 500 {
			t.Errorf("member %s is preferred for %d of %d keys, want about 400", m, n, len(keys))
		}
	}
	without := []string{"a", "b", "d", "e"}
	with := append(slices.Clone(members), "f")
	for _, k := range keys {
		if got := PreferredHolder(k, without); owner[k] != "c" && got != owner[k] {
			t.Errorf("%s moved from %s to %s when c left", k, owner[k], got)
		}
		if got := PreferredHolder(k, with); got != owner[k] && got != "f" {
			t.Errorf("%s moved from %s to %s when f joined", k, owner[k], got)
		}
		// The whole order of the others is unchanged too.
		r := slices.DeleteFunc(Rank(k, with), func(m string) bool { return m == "f" })
		if want := Rank(k, members); !reflect.DeepEqual(r, want) {
			t.Errorf("%s: rank without f %v, want %v", k, r, want)
		}
	}
}

func TestLeaseNeverTakenOnlyFirstInLine(t *testing.T) {
	t.Parallel()
	members := []string{"a", "b", "c"}
	nodes, _, clock := leaseCluster(members...)
	key := "mid/cache/primary"
	rank := Rank(key, members)
	clock.Advance(100 * ttl)
	others := map[string]*Leases{rank[1]: nodes[rank[1]], rank[2]: nodes[rank[2]]}
	if got := acquireAll(t, others, key, members); got != nil {
		t.Errorf("a lease never taken went to %v, not first in line %s", got, rank[0])
	}
}
