package reconcile

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// A Lease is a lock in /lk: who holds it, its fencing epoch and when it
// expires unless renewed.
//
// Leases replicate by gossip, and gossip cannot give mutual exclusion: under
// a partition both sides can hold the same lease, and two nodes that write at
// the same moment each believe they won until last-writer-wins settles it. A
// lease is therefore a way to make contention rare, never the thing that
// keeps data safe. Safety comes from idempotent steps and from drivers that
// check the fencing Epoch before acting: a driver remembers the highest epoch
// it has seen for a key and refuses work carrying a lower one, so a holder
// that lost the lease without knowing it cannot undo its successor's work.
type Lease struct {
	Holder  string    `cbor:"holder" json:"holder"`
	Epoch   uint64    `cbor:"epoch" json:"epoch"`
	Expires time.Time `cbor:"expires" json:"expires"`
}

// Valid reports whether the lease is held at now: it has a holder and has
// not expired.
func (l Lease) Valid(now time.Time) bool { return l.Holder != "" && now.Before(l.Expires) }

// LeaseStore reads and writes leases by key. The reconcile loop backs it with
// /lk in the VFS; writes are local and replicate by gossip, so a read may not
// yet show another node's write. Implementations must be safe for concurrent
// use.
type LeaseStore interface {
	// GetLease returns the lease stored under key, and false if none is.
	GetLease(key string) (Lease, bool)
	// PutLease stores l under key.
	PutLease(key string, l Lease) error
}

// Leases takes and renews leases for one node.
//
// Who may take a free lease is decided by rendezvous hashing over the live
// eligible members ([Rank]): the first in rank takes it at once, so in the
// normal case exactly one node tries and nobody competes. When a lease
// expires, its holder is passed over and the next in rank takes it, with a
// higher epoch. So that a free lease does not stay free when the node first
// in line is listed as live but does not act (hung, or its view lags), the
// node at position k of that line may take it once k TTLs have passed since
// the lease became free (expired or released). A lease that was never taken
// has no such moment, so only the first in line takes it.
//
// A holder keeps renewing while it is eligible, even when a node ranked
// higher comes back: moving the lease costs a new epoch and a handover, so
// the loop releases a lease explicitly when it wants the preferred holder to
// take over.
type Leases struct {
	Store LeaseStore
	Node  string
	TTL   time.Duration
	Now   func() time.Time // time.Now when nil
}

// Acquire takes or renews the lease on key for l.Node. eligible lists the
// live members that may hold it. It returns the lease as this node now sees
// it and whether l.Node holds it.
//
// Acquire renews a valid lease held by l.Node (same epoch, new expiry); takes
// a free or expired lease when l.Node is next in line (epoch+1 on every
// take, even by the previous holder, so a fencing check can tell the two
// tenures apart); and otherwise changes nothing. A node that is not in
// eligible never takes or renews.
func (l *Leases) Acquire(key string, eligible []string) (Lease, bool, error) {
	if err := l.check(key); err != nil {
		return Lease{}, false, err
	}
	now := l.now()
	cur, ok := l.Store.GetLease(key)
	if !slices.Contains(eligible, l.Node) {
		return cur, false, nil
	}
	if ok && cur.Valid(now) {
		if cur.Holder != l.Node {
			return cur, false, nil
		}
		renewed := cur
		renewed.Expires = now.Add(l.TTL)
		if err := l.Store.PutLease(key, renewed); err != nil {
			return cur, false, fmt.Errorf("renew lease %s: %w", key, err)
		}
		return renewed, true, nil
	}

	line := Rank(key, eligible)
	if ok && cur.Holder != "" && len(line) > 1 {
		// An expired holder had its chance; hand over.
		line = slices.DeleteFunc(line, func(n string) bool { return n == cur.Holder })
	}
	pos := slices.Index(line, l.Node)
	if pos < 0 {
		return cur, false, nil
	}
	if pos > 0 && (!ok || now.Before(cur.Expires.Add(time.Duration(pos)*l.TTL))) {
		return cur, false, nil
	}
	taken := Lease{Holder: l.Node, Epoch: cur.Epoch + 1, Expires: now.Add(l.TTL)}
	if err := l.Store.PutLease(key, taken); err != nil {
		return cur, false, fmt.Errorf("take lease %s: %w", key, err)
	}
	return taken, true, nil
}

// Release gives up the lease on key so the next in line takes it without
// waiting for expiry. It keeps the epoch, so the next holder's is higher. It
// returns ErrNotLeaseHolder when l.Node does not hold the lease.
func (l *Leases) Release(key string) error {
	if err := l.check(key); err != nil {
		return err
	}
	cur, ok := l.Store.GetLease(key)
	if !ok || cur.Holder != l.Node {
		return fmt.Errorf("release lease %s held by %q: %w", key, cur.Holder, ErrNotLeaseHolder)
	}
	released := Lease{Epoch: cur.Epoch, Expires: l.now()}
	if err := l.Store.PutLease(key, released); err != nil {
		return fmt.Errorf("release lease %s: %w", key, err)
	}
	return nil
}

func (l *Leases) check(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidLease)
	case l.Node == "":
		return fmt.Errorf("%w: lease %s: empty node name", ErrInvalidLease, key)
	case l.Store == nil:
		return fmt.Errorf("%w: lease %s: no store", ErrInvalidLease, key)
	case l.TTL <= 0:
		return fmt.Errorf("%w: lease %s: TTL %s is not positive", ErrInvalidLease, key, l.TTL)
	}
	return nil
}

func (l *Leases) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// PreferredHolder is the member that should hold the lease on key: the first
// of [Rank]. It returns "" when eligible is empty.
func PreferredHolder(key string, eligible []string) string {
	if r := Rank(key, eligible); len(r) > 0 {
		return r[0]
	}
	return ""
}

// Rank orders the eligible members for key by rendezvous (highest random
// weight) hashing: each member gets a pseudo-random weight from (key,
// member), highest first, ties by name. Duplicates and empty names are
// dropped. The order of two members never depends on anyone else, so when a
// member joins or leaves only the keys it ranks first for change hands.
//
// The weight function is part of the wire contract: every node of a cluster
// must compute the same ranks, so it must not change between versions.
func Rank(key string, eligible []string) []string {
	type ranked struct {
		name   string
		weight uint64
	}
	kh := hashString(key)
	rs := make([]ranked, 0, len(eligible))
	for _, n := range eligible {
		if n != "" {
			rs = append(rs, ranked{n, rendezvousWeight(kh, hashString(n))})
		}
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		if c := cmp.Compare(b.weight, a.weight); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	})
	out := make([]string, 0, len(rs))
	for i, r := range rs {
		if i > 0 && rs[i-1].name == r.name {
			continue // equal names have equal weights, so duplicates are adjacent
		}
		out = append(out, r.name)
	}
	return out
}

// hashString is 64-bit FNV-1a, written out so hashing allocates nothing.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// rendezvousWeight combines a key hash and a member hash into the member's
// weight for that key. FNV alone mixes its last bytes poorly, so both sides
// go through the splitmix64 finalizer.
func rendezvousWeight(keyHash, memberHash uint64) uint64 {
	return mix64(keyHash ^ mix64(memberHash))
}

func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
