package vfs

// Digest summarises a store per writer node for anti-entropy: two stores
// whose digests agree for a writer hold the same entries of that writer.
type Digest map[string]WriterDigest

// WriterDigest summarises the entries held whose version one writer wrote:
// the highest such version, how many there are and the sum of their hashes.
type WriterDigest struct {
	Max   Version `cbor:"1,keyasint"`
	Count int     `cbor:"2,keyasint"`
	Sum   uint64  `cbor:"3,keyasint"` // sum of entryHash over the set, mod 2^64
}

// entryHash identifies one (path, version, deleted) triple; versions are
// unique per writer, so the value need not be hashed. Summing hashes (not
// xoring) keeps the digest incremental and order-free.
func entryHash(e Entry) uint64 {
	h := fnvString(fnvOffset, e.Path)
	h = fnvByte(h, 0)
	h = fnvUint(h, uint64(e.Version.Wall), 8)
	h = fnvUint(h, uint64(e.Version.Logical), 4)
	h = fnvString(h, e.Version.Node)
	if e.Deleted {
		h = fnvByte(h, 1)
	}
	return mix64(h)
}

// FNV-1a, inlined: hash/fnv would allocate on every write.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvByte(h uint64, c byte) uint64 { return (h ^ uint64(c)) * fnvPrime }

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = fnvByte(h, s[i])
	}
	return h
}

func fnvUint(h, v uint64, n int) uint64 {
	for i := n - 1; i >= 0; i-- {
		h = fnvByte(h, byte(v>>(8*i)))
	}
	return h
}

// mix64 is the splitmix64 finaliser: FNV's low bits are weak, and sums of
// weak hashes collide more easily than the hashes do.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// digestAdd and digestRemove keep the per-writer digest in step with the
// index. The caller holds mu for writing. Removing the entry that holds a
// writer's Max only marks the Max stale: finding the next one takes a scan,
// which Digest does once rather than every write.
func (s *Store) digestAdd(v Version, h uint64) {
	d := s.digest[v.Node]
	if d == nil {
		d = &writerState{}
		s.digest[v.Node] = d
	}
	d.Count++
	d.Sum += h
	if d.Max.Less(v) {
		d.Max, d.stale = v, false
	}
}

func (s *Store) digestRemove(v Version, h uint64) {
	d := s.digest[v.Node]
	d.Count--
	d.Sum -= h
	if d.Count == 0 {
		delete(s.digest, v.Node)
	} else if d.Max == v {
		d.stale = true
	}
}

// writerState is a WriterDigest under maintenance.
type writerState struct {
	WriterDigest
	stale bool // Max was removed; the true Max is lower
}

// Fingerprint summarises the whole store in one number: stores holding the
// same entries have the same fingerprint, and stores that differ almost
// surely do not. Nodes put it in the acks of memberlist's probes to find
// out, within about a probe interval, that gossip missed one of them.
func (s *Store) Fingerprint() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var sum, count uint64
	for _, d := range s.digest {
		sum += d.Sum
		count += uint64(d.Count)
	}
	return mix64(sum ^ mix64(count))
}

// Digest returns the per-writer summary of this store, for a peer's Missing.
func (s *Store) Digest() Digest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var stale map[string]*writerState
	for w, d := range s.digest {
		if d.stale {
			if stale == nil {
				stale = make(map[string]*writerState)
			}
			stale[w] = d
			d.Max = Version{}
		}
	}
	if stale != nil {
		for _, r := range s.entries {
			if d := stale[r.e.Version.Node]; d != nil && d.Max.Less(r.e.Version) {
				d.Max = r.e.Version
			}
		}
		for _, d := range stale {
			d.stale = false
		}
	}
	out := make(Digest, len(s.digest))
	for w, d := range s.digest {
		out[w] = d.WriterDigest
	}
	return out
}

// Missing returns the entries (tombstones included, expired ones not) that
// this store holds and the holder of remote lacks or holds older, as far as
// the digest can tell. Per writer: equal Count and Sum means nothing to
// send; if the entries held here at or below remote's Max add up to
// remote's Count and Sum, remote has no gaps and only the newer entries are
// sent; otherwise (remote missed an older entry but got a newer one, or
// holds a version this store does not) all of that writer's entries are
// sent and the receiver's Merge keeps what is newer. Entries are in path
// order.
func (s *Store) Missing(remote Digest) []Entry {
	const (
		newer = iota + 1 // send entries above remote's Max
		all              // send every entry of the writer
	)
	now := s.now()
	s.mu.RLock()
	defer s.mu.RUnlock()

	mode := make(map[string]int)
	for w, ld := range s.digest {
		rd, ok := remote[w]
		switch {
		case ld.Count == 0:
		case ok && rd.Count == ld.Count && rd.Sum == ld.Sum:
		case !ok || rd.Count <= 0 || rd.Max.IsZero():
			mode[w] = all
		default:
			mode[w] = newer
		}
	}
	if len(mode) == 0 {
		return nil
	}

	// One pass decides, for the writers in "newer" mode, whether remote's
	// set equals ours up to its Max.
	type below struct {
		count int
		sum   uint64
	}
	seen := make(map[string]*below)
	for w, m := range mode {
		if m == newer {
			seen[w] = &below{}
		}
	}
	if len(seen) > 0 {
		s.tree.Ascend(func(r *record) bool {
			w := r.e.Version.Node
			if b := seen[w]; b != nil && !remote[w].Max.Less(r.e.Version) {
				b.count++
				b.sum += r.h
			}
			return true
		})
		for w, b := range seen {
			if rd := remote[w]; b.count != rd.Count || b.sum != rd.Sum {
				mode[w] = all
			}
		}
	}

	var out []Entry
	s.tree.Ascend(func(r *record) bool {
		w := r.e.Version.Node
		switch mode[w] {
		case all:
		case newer:
			if !remote[w].Max.Less(r.e.Version) {
				return true
			}
		default:
			return true
		}
		if !s.expired(r.e, now) {
			out = append(out, r.e)
		}
		return true
	})
	return out
}
