package vfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/btree"
)

// Errors returned by the Store, wrapped with the path (and node or size)
// they concern; compare with errors.Is.
var (
	// ErrInvalidPath is returned for a path that breaks the VFS rules.
	ErrInvalidPath = errors.New("invalid vfs path")
	// ErrNotWriter is returned when a node writes below another node's
	// single-writer subtree (/hw, /sum, /run, /itg).
	ErrNotWriter = errors.New("not the writer of this path")
	// ErrFutureVersion is returned by Merge for a version further ahead of
	// this node's clock than Options.MaxSkew.
	ErrFutureVersion = errors.New("version too far in the future")
	// ErrValueTooLarge is returned for a value above Options.MaxValueSize.
	ErrValueTooLarge = errors.New("value too large")
	// ErrInvalidValue is returned for a value that is not exactly one
	// well-formed CBOR item.
	ErrInvalidValue = errors.New("value is not well-formed cbor")
	// ErrInvalidVersion is returned by Merge for an entry without a usable
	// version (zero, or a writer name that is not a valid segment).
	ErrInvalidVersion = errors.New("invalid version")
	// ErrClosed is returned by writes after Close.
	ErrClosed = errors.New("vfs store closed")
)

// Defaults for Options fields left zero.
const (
	DefaultMaxSkew        = 5 * time.Second
	DefaultTombstoneGrace = 24 * time.Hour
	DefaultMaxValueSize   = 1 << 20
	DefaultWatchBuffer    = 1024
)

// Entry is one VFS key. Value is CBOR. A deleted entry is a tombstone kept
// for the grace period so that a stale copy elsewhere cannot bring it back.
type Entry struct {
	Path    string  `cbor:"1,keyasint"`
	Value   []byte  `cbor:"2,keyasint"`
	Version Version `cbor:"3,keyasint"`
	Deleted bool    `cbor:"4,keyasint,omitempty"`
}

// Event is one change seen by a watcher. Resync means the watcher fell
// behind and events were dropped: it must List again to learn the state.
type Event struct {
	Entry  Entry
	Resync bool
}

// Options configure a Store. Only Node is required.
type Options struct {
	Node           string           // this node's name (a valid segment); required
	Dir            string           // bbolt replica directory; "" keeps the store in memory only
	Now            func() time.Time // default time.Now
	MaxSkew        time.Duration    // remote versions further in the future are refused; default 5s
	TombstoneGrace time.Duration    // default 24h
	MaxValueSize   int              // default 1 MiB; larger values are refused with an error naming path and size
	Logger         *slog.Logger     // default slog.Default()

	// OnChange is called for every applied change — a local Put/Delete or a
	// Merge that won — after it is in the store, in the caller's goroutine.
	// Calls are serialised in the order the changes were applied, so for one
	// key they come in version order. It must not block (replication queues
	// a broadcast from it); it may read the Store but must not write to it.
	OnChange func(e Entry, local bool)

	// GCInterval is how often Open's background loop collects expired
	// tombstones; default TombstoneGrace/24, negative disables the loop
	// (tests call CollectGarbage themselves).
	GCInterval time.Duration
	// WatchBuffer is how many events a watcher may fall behind before it
	// gets a Resync instead; default 1024.
	WatchBuffer int
}

// record is the store's copy of an entry; the tree and the map share it so
// an update to an existing key touches only the map lookup.
type record struct {
	e Entry
	h uint64 // entryHash(e), kept for the digest
}

// Store is the VFS of one node: every entry it wrote and its replica of
// everyone else's. All methods are safe for concurrent use. The in-memory
// index is authoritative; the bbolt file under Options.Dir trails it by
// at most one group commit (see Flush).
type Store struct {
	node     string
	now      func() time.Time
	maxSkew  time.Duration
	grace    time.Duration
	maxValue int
	log      *slog.Logger
	onChange func(Entry, bool)
	watchBuf int

	mu      sync.RWMutex
	closed  bool
	entries map[string]*record
	tree    *btree.BTreeG[*record]
	clock   hlc
	digest  map[string]*writerState
	contact int64 // wall time of the last applied Merge, persisted for Stale checks

	// Changes are published in the order they were applied without holding
	// mu (OnChange may read the store): each change takes a ticket under mu
	// and waits, after releasing mu, for its turn under notifyMu.
	notifyMu   sync.Mutex
	notifyTurn *sync.Cond
	ticketNext uint64 // under mu
	ticketDone uint64 // under notifyMu
	watchers   map[*watcher]struct{}

	futureMu     sync.Mutex
	futureLogged map[string]time.Time

	rep  *replica // nil when the store lives in memory only
	done chan struct{}
	wg   sync.WaitGroup
}

// Open returns the store of node opts.Node. With opts.Dir set it loads the
// bbolt replica there (moving a corrupt file aside and starting empty) and
// keeps it up to date in the background; Close flushes it.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if !ValidSegment(opts.Node) {
		return nil, fmt.Errorf("vfs open: node name %q must match [a-z0-9][a-z0-9._-]*", opts.Node)
	}
	s := &Store{
		node:         opts.Node,
		now:          opts.Now,
		maxSkew:      opts.MaxSkew,
		grace:        opts.TombstoneGrace,
		maxValue:     opts.MaxValueSize,
		log:          opts.Logger,
		onChange:     opts.OnChange,
		watchBuf:     opts.WatchBuffer,
		entries:      make(map[string]*record),
		tree:         btree.NewG(32, func(a, b *record) bool { return a.e.Path < b.e.Path }),
		digest:       make(map[string]*writerState),
		watchers:     make(map[*watcher]struct{}),
		futureLogged: make(map[string]time.Time),
		done:         make(chan struct{}),
	}
	s.notifyTurn = sync.NewCond(&s.notifyMu)
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxSkew <= 0 {
		s.maxSkew = DefaultMaxSkew
	}
	if s.grace <= 0 {
		s.grace = DefaultTombstoneGrace
	}
	if s.maxValue <= 0 {
		s.maxValue = DefaultMaxValueSize
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.watchBuf <= 0 {
		s.watchBuf = DefaultWatchBuffer
	}
	if opts.Dir != "" {
		if err := s.openReplica(ctx, opts.Dir); err != nil {
			return nil, err
		}
	}
	gcEvery := opts.GCInterval
	if gcEvery == 0 {
		gcEvery = s.grace / 24
	}
	if gcEvery > 0 {
		s.wg.Add(1)
		go s.gcLoop(gcEvery)
	}
	return s, nil
}

// Node returns the name of the node this store belongs to.
func (s *Store) Node() string { return s.node }

// Len returns the number of entries held, tombstones included.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.entries)
}

// Put writes CBOR bytes at path with a new version from this node's clock.
// It refuses invalid paths, values that are not one well-formed CBOR item,
// values above MaxValueSize and paths owned by another node (ErrNotWriter).
// The value is copied.
func (s *Store) Put(path string, value []byte) (Entry, error) {
	if err := ValidatePath(path); err != nil {
		return Entry{}, err
	}
	if err := s.checkValue(path, value); err != nil {
		return Entry{}, err
	}
	if err := s.checkLocalWriter(path); err != nil {
		return Entry{}, err
	}
	v := append([]byte(nil), value...)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Entry{}, fmt.Errorf("put %s: %w", path, ErrClosed)
	}
	e := Entry{Path: path, Value: v, Version: s.tick()}
	s.apply(e)
	s.publish(e, true)
	return e, nil
}

// PutValue encodes v as canonical CBOR and Puts it at path.
func (s *Store) PutValue(path string, v any) (Entry, error) {
	b, err := Encode(v)
	if err != nil {
		return Entry{}, fmt.Errorf("put %s: %w", path, err)
	}
	return s.Put(path, b)
}

// Delete writes a tombstone at path. Deleting a missing key is not an
// error: the tombstone is written anyway, because a peer may hold the key
// this node has not seen yet. Deleting a tombstone returns it unchanged.
func (s *Store) Delete(path string) (Entry, error) {
	if err := ValidatePath(path); err != nil {
		return Entry{}, err
	}
	if err := s.checkLocalWriter(path); err != nil {
		return Entry{}, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Entry{}, fmt.Errorf("delete %s: %w", path, ErrClosed)
	}
	if r := s.entries[path]; r != nil && r.e.Deleted {
		e := r.e
		s.mu.Unlock()
		return e, nil
	}
	e := Entry{Path: path, Version: s.tick(), Deleted: true}
	s.apply(e)
	s.publish(e, true)
	return e, nil
}

// Get returns the live entry at path. The returned Value is shared with
// the store: do not modify it.
func (s *Store) Get(path string) (Entry, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.entries[path]
	if r == nil || r.e.Deleted {
		return Entry{}, false
	}
	return r.e, true
}

// List returns the live entries under prefix, sorted by path. Prefix "/"
// lists everything; "/hw" matches "/hw" and "/hw/x" but not "/hwx". An
// invalid prefix lists nothing (check it with ValidatePrefix). Values are
// shared with the store: do not modify them.
func (s *Store) List(prefix string) []Entry {
	if ValidatePrefix(prefix) != nil {
		return nil
	}
	var out []Entry
	s.mu.RLock()
	defer s.mu.RUnlock()
	s.ascend(prefix, func(r *record) bool {
		if !r.e.Deleted {
			out = append(out, r.e)
		}
		return true
	})
	return out
}

// ascend visits the records under a valid prefix in path order. The caller
// holds mu.
func (s *Store) ascend(prefix string, fn func(*record) bool) {
	if prefix == "/" {
		s.tree.Ascend(fn)
		return
	}
	p := prefix
	if p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	if r := s.entries[p]; r != nil {
		if !fn(r) {
			return
		}
	}
	// '0' is the byte after '/', so [p/, p0) is exactly the subtree; paths
	// like p-x or p.x sort between p and p/ and are skipped.
	s.tree.AscendRange(&record{e: Entry{Path: p + "/"}}, &record{e: Entry{Path: p + "0"}}, fn)
}

// Merge applies an entry received from a peer if it is newer than the one
// held (last-writer-wins by Version) and reports whether it did. It refuses
// invalid paths and values, a version more than MaxSkew ahead of this
// node's clock (ErrFutureVersion), and a single-writer path whose version
// was written by another node (ErrNotWriter). Every accepted version
// advances this node's clock. A tombstone older than the grace period is
// applied only over an older live entry, never stored on its own, so
// collected tombstones do not come back from a slower peer. The store
// keeps a copy of e.Value.
func (s *Store) Merge(e Entry) (bool, error) {
	return s.merge(e, true)
}

// MergeOwned is Merge for an entry whose Value the caller hands over, such
// as one just decoded from a message: the store keeps that slice instead of
// a copy, so the caller must not change it afterwards.
func (s *Store) MergeOwned(e Entry) (bool, error) {
	return s.merge(e, false)
}

func (s *Store) merge(e Entry, copyValue bool) (bool, error) {
	if err := ValidatePath(e.Path); err != nil {
		return false, err
	}
	if e.Version.Wall <= 0 || !ValidSegment(e.Version.Node) {
		return false, fmt.Errorf("merge %s: %w %s", e.Path, ErrInvalidVersion, e.Version)
	}
	if node, single := Owner(e.Path); single && node != e.Version.Node {
		return false, fmt.Errorf("merge %s: %w: written by node %q, only node %q may write it", e.Path, ErrNotWriter, e.Version.Node, node)
	}
	if e.Deleted {
		e.Value = nil
	} else if err := s.checkValue(e.Path, e.Value); err != nil {
		return false, err
	}
	now := s.now()
	if ahead := time.Duration(e.Version.Wall - now.UnixNano()); ahead > s.maxSkew {
		s.logFuture(e, ahead, now)
		return false, fmt.Errorf("merge %s: %w: version %s is %s ahead of this node's clock (max skew %s)", e.Path, ErrFutureVersion, e.Version, ahead, s.maxSkew)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, fmt.Errorf("merge %s: %w", e.Path, ErrClosed)
	}
	s.clock.observe(e.Version)
	old := s.entries[e.Path]
	if old != nil && !old.e.Version.Less(e.Version) {
		s.mu.Unlock()
		return false, nil
	}
	if e.Deleted && old == nil && s.expired(e, now) {
		s.mu.Unlock()
		return false, nil
	}
	if !e.Deleted && copyValue {
		e.Value = append([]byte(nil), e.Value...)
	}
	s.contact = now.UnixNano()
	s.apply(e)
	s.publish(e, false)
	return true, nil
}

// logFuture logs a refused future version at most once per writer per
// minute, so a peer with a broken clock cannot flood the log.
func (s *Store) logFuture(e Entry, ahead time.Duration, now time.Time) {
	s.futureMu.Lock()
	last, seen := s.futureLogged[e.Version.Node]
	log := !seen || now.Sub(last) >= time.Minute
	if log {
		s.futureLogged[e.Version.Node] = now
	}
	s.futureMu.Unlock()
	if log {
		s.log.Warn("vfs: refusing entries from a node whose clock is ahead; check its time sync",
			"writer", e.Version.Node, "path", e.Path, "ahead", ahead, "max_skew", s.maxSkew)
	}
}

func (s *Store) checkValue(path string, value []byte) error {
	if len(value) > s.maxValue {
		return fmt.Errorf("%s: %w: %d bytes, limit %d", path, ErrValueTooLarge, len(value), s.maxValue)
	}
	if err := wellFormed(value); err != nil {
		return fmt.Errorf("%s: %w: %v", path, ErrInvalidValue, err)
	}
	return nil
}

func (s *Store) checkLocalWriter(path string) error {
	if node, single := Owner(path); single && node != s.node {
		if node == "" {
			return fmt.Errorf("%s: %w: node %q may only write below %s/%s", path, ErrNotWriter, s.node, path, s.node)
		}
		return fmt.Errorf("%s: %w: node %q may not write below node %q's subtree", path, ErrNotWriter, s.node, node)
	}
	return nil
}

// tick returns the next local version. The caller holds mu.
func (s *Store) tick() Version {
	w, l := s.clock.tick(s.now().UnixNano())
	return Version{Wall: w, Logical: l, Node: s.node}
}

func (s *Store) expired(e Entry, now time.Time) bool {
	return e.Deleted && now.UnixNano()-e.Version.Wall > int64(s.grace)
}

// apply puts e into the index, the digest and the replica's queue. The
// caller holds mu for writing.
func (s *Store) apply(e Entry) {
	h := entryHash(e)
	if r := s.entries[e.Path]; r != nil {
		// Add before remove, so a writer replacing its own newest entry
		// moves its Max up instead of marking it stale.
		oldV, oldH := r.e.Version, r.h
		r.e, r.h = e, h
		s.digestAdd(e.Version, h)
		s.digestRemove(oldV, oldH)
	} else {
		r = &record{e: e, h: h}
		s.entries[e.Path] = r
		s.tree.ReplaceOrInsert(r)
		s.digestAdd(e.Version, h)
	}
	if s.rep != nil {
		s.rep.mark(e.Path, &e, s.clockVersion(), s.contact)
	}
}

// remove drops a record without a tombstone (garbage collection, replica
// reset). The caller holds mu for writing.
func (s *Store) remove(r *record) {
	delete(s.entries, r.e.Path)
	s.tree.Delete(r)
	s.digestRemove(r.e.Version, r.h)
	if s.rep != nil {
		s.rep.mark(r.e.Path, nil, s.clockVersion(), s.contact)
	}
}

// StartEpoch moves the store's clock to a Wall above every version it has
// written or merged (and not below the wall clock) and returns that Wall:
// every later local write has at least that Wall, every earlier one less.
// A node calls it when it starts, to tell the entries of this life from
// those an earlier life left in its peers.
func (s *Store) StartEpoch() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock.wall, s.clock.logical = max(s.clock.wall+1, s.now().UnixNano()), 0
	return s.clock.wall
}

func (s *Store) clockVersion() Version {
	return Version{Wall: s.clock.wall, Logical: s.clock.logical, Node: s.node}
}

// publish hands a change to OnChange and the watchers in application
// order. The caller holds mu for writing; publish releases it.
func (s *Store) publish(e Entry, local bool) {
	s.awaitTurn()
	defer s.endTurn()
	for w := range s.watchers {
		if under(e.Path, w.prefix) {
			w.push(e)
		}
	}
	if s.onChange != nil {
		s.onChange(e, local)
	}
}

// CollectGarbage removes tombstones older than the grace period and
// returns how many it removed. Open runs it periodically.
func (s *Store) CollectGarbage() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0
	}
	var dead []*record
	for _, r := range s.entries {
		if s.expired(r.e, now) {
			dead = append(dead, r)
		}
	}
	for _, r := range dead {
		s.remove(r)
	}
	return len(dead)
}

func (s *Store) gcLoop(every time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			if n := s.CollectGarbage(); n > 0 {
				s.log.Debug("vfs: collected tombstones", "count", n)
			}
		}
	}
}

// Stale reports whether a node whose last exchange with its peers was at
// lastSeen has been away longer than the tombstone grace period. Such a
// node may hold entries whose tombstones its peers have already collected;
// merging its replica back would resurrect them. It must DropReplica and
// take a full copy from its peers instead.
func (s *Store) Stale(lastSeen time.Time) bool {
	return s.now().Sub(lastSeen) > s.grace
}

// LastContact returns the time of the last Merge this store applied
// (persisted with the replica), or the zero time if it never applied one.
func (s *Store) LastContact() time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.contact == 0 {
		return time.Time{}
	}
	return time.Unix(0, s.contact)
}

// DropReplica forgets every entry written by other nodes, keeping this
// node's own writes and its clock, and returns how many it dropped. Nothing
// is broadcast (they are not deletions); watchers get a Resync. After it
// the digest no longer names the other writers, so the next anti-entropy
// exchange copies their entries afresh.
func (s *Store) DropReplica() int {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0
	}
	var drop []*record
	for _, r := range s.entries {
		if r.e.Version.Node != s.node {
			drop = append(drop, r)
		}
	}
	for _, r := range drop {
		s.remove(r)
	}
	s.awaitTurn()
	for w := range s.watchers {
		w.pushResync()
	}
	s.endTurn()
	return len(drop)
}

// awaitTurn takes the next ticket while the caller holds mu for writing,
// releases mu and returns holding notifyMu once every earlier change is
// published.
func (s *Store) awaitTurn() {
	ticket := s.ticketNext
	s.ticketNext++
	s.mu.Unlock()
	s.notifyMu.Lock()
	for s.ticketDone != ticket {
		s.notifyTurn.Wait()
	}
}

func (s *Store) endTurn() {
	s.ticketDone++
	s.notifyTurn.Broadcast()
	s.notifyMu.Unlock()
}

// Flush waits until every change made before the call is committed to the
// bbolt replica. It returns at once for an in-memory store.
func (s *Store) Flush(ctx context.Context) error {
	if s.rep == nil {
		return nil
	}
	return s.rep.flush(ctx)
}

// Close stops the background loops, ends every watch, flushes the replica
// and closes it. Writes after Close return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.done)
	s.wg.Wait()
	if s.rep != nil {
		return s.rep.close()
	}
	return nil
}
