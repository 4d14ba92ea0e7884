package vfs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ReplicaFile is the name of the bbolt file under Options.Dir.
const ReplicaFile = "vfs.db"

var (
	bucketEntries = []byte("entries") // path → CBOR Entry
	bucketMeta    = []byte("meta")
	keyClock      = []byte("clock")   // CBOR Version: the HLC high-water mark
	keyContact    = []byte("contact") // int64 big-endian: wall time of the last applied Merge
)

// errCorrupt marks a replica file that cannot be trusted; Open moves it
// aside instead of failing.
var errCorrupt = errors.New("corrupt replica")

// replica keeps the bbolt file in step with the in-memory index by group
// commit: writers only record the latest state of each changed path in a
// map (so a hot key costs one write per commit, not one per Put), and one
// goroutine commits everything pending in a single fsynced transaction,
// then starts again at once if more arrived meanwhile.
//
// The durability promise: a Put, Delete or Merge returns before it is on
// disk. It is on disk after the commit that follows it — normally within
// one fsync (milliseconds) — and Flush waits for that; Close flushes. A
// kill -9 or a power loss loses the changes of at most the commit in
// flight and those queued behind it, never a committed one (bbolt fsyncs
// each transaction), and never corrupts the file. That is acceptable
// because nothing in the VFS exists only here: a node's own active state
// (/hw, /sum, /run, /itg) is rewritten by its collectors and its agent,
// and everything else is copied back from peers by anti-entropy.
type replica struct {
	db  *bolt.DB
	log *slog.Logger

	mu          sync.Mutex
	dirty       map[string]pending
	clock       Version
	contact     int64
	marked      uint64 // count of mark calls
	committed   uint64 // value of marked covered by the last commit
	committedCh chan struct{}
	err         error // of the last commit attempt

	kick    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
}

// pending is the state a path must reach on disk: the entry, or gone.
type pending struct {
	e    Entry
	gone bool
}

func newReplica(db *bolt.DB, log *slog.Logger) *replica {
	r := &replica{
		db:          db,
		log:         log,
		dirty:       make(map[string]pending),
		committedCh: make(chan struct{}),
		kick:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		stopped:     make(chan struct{}),
	}
	go r.run()
	return r
}

// mark records the state path must reach (nil: removed) along with the
// clock and contact time to persist. The store calls it with its lock held,
// so marks for one path arrive in order.
func (r *replica) mark(path string, e *Entry, clock Version, contact int64) {
	r.mu.Lock()
	if e == nil {
		r.dirty[path] = pending{gone: true}
	} else {
		r.dirty[path] = pending{e: *e}
	}
	r.clock, r.contact = clock, contact
	r.marked++
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *replica) run() {
	defer close(r.stopped)
	for {
		select {
		case <-r.kick:
		case <-r.stop:
			r.commit()
			return
		}
		if err := r.commit(); err != nil {
			// Disk full or an I/O error: keep the changes and retry later
			// rather than spinning on every new write.
			select {
			case <-time.After(time.Second):
				r.signal()
			case <-r.stop:
				r.commit()
				return
			}
		}
	}
}

func (r *replica) signal() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// maxBatch bounds one transaction, so a burst (a full resync, a bulk
// export) costs bounded memory in bbolt's dirty pages rather than one
// transaction as large as the store.
const maxBatch = 8192

func (r *replica) commit() error {
	r.mu.Lock()
	if r.committed == r.marked {
		r.mu.Unlock()
		return nil
	}
	gen, clock, contact := r.marked, r.clock, r.contact
	paths := make([]string, 0, min(len(r.dirty), maxBatch))
	for path := range r.dirty {
		if len(paths) == maxBatch {
			break
		}
		paths = append(paths, path)
	}
	batch := make(map[string]pending, len(paths))
	for _, path := range paths {
		batch[path] = r.dirty[path]
		delete(r.dirty, path)
	}
	partial := len(r.dirty) > 0
	if !partial {
		// Go maps never shrink: drop the one a burst grew.
		r.dirty = make(map[string]pending)
	}
	r.mu.Unlock()
	// In key order bbolt touches each page once and appends mostly in place.
	slices.Sort(paths)

	err := r.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		// Paths are mostly written once and updated in place, so pack pages
		// fuller than bbolt's default of half.
		b.FillPercent = 0.9
		for _, path := range paths {
			p := batch[path]
			if p.gone {
				if err := b.Delete([]byte(path)); err != nil {
					return err
				}
				continue
			}
			v, err := Encode(p.e)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(path), v); err != nil {
				return err
			}
		}
		return putMeta(tx, clock, contact)
	})

	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		for path, p := range batch {
			if _, newer := r.dirty[path]; !newer {
				r.dirty[path] = p
			}
		}
		if r.err == nil {
			r.log.Error("vfs: writing the replica to disk failed; changes stay in memory and are retried", "err", err)
		}
		r.err = err
		close(r.committedCh)
		r.committedCh = make(chan struct{})
		return err
	}
	r.err = nil
	if partial {
		// More is queued: go again at once; committed waits for the rest.
		r.signal()
		return nil
	}
	r.committed = gen
	close(r.committedCh)
	r.committedCh = make(chan struct{})
	return nil
}

func putMeta(tx *bolt.Tx, clock Version, contact int64) error {
	m := tx.Bucket(bucketMeta)
	c, err := Encode(clock)
	if err != nil {
		return err
	}
	if err := m.Put(keyClock, c); err != nil {
		return err
	}
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(contact))
	return m.Put(keyContact, t[:])
}

// flush waits until every mark made before the call is committed, or
// returns the error of the last failed commit.
func (r *replica) flush(ctx context.Context) error {
	r.mu.Lock()
	target := r.marked
	r.mu.Unlock()
	r.signal()
	for {
		r.mu.Lock()
		done, ch, err := r.committed >= target, r.committedCh, r.err
		r.mu.Unlock()
		if done {
			return nil
		}
		if err != nil {
			return fmt.Errorf("vfs flush: %w", err)
		}
		select {
		case <-ch:
		case <-r.stopped:
			r.mu.Lock()
			done, err = r.committed >= target, r.err
			r.mu.Unlock()
			if done {
				return nil
			}
			return fmt.Errorf("vfs flush: %w (store closed)", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close commits what is pending and closes the file.
func (r *replica) close() error {
	close(r.stop)
	<-r.stopped
	r.mu.Lock()
	err := r.err
	r.mu.Unlock()
	if cerr := r.db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("vfs close: %w", err)
	}
	return nil
}

// openReplica loads the replica under dir into s. A file that bbolt cannot
// open, that fails bbolt's consistency check or that holds undecodable
// entries is moved aside to <file>.corrupt-<timestamp>, logged once at
// Error, and replaced by an empty replica: peers copy the state back.
func (s *Store) openReplica(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("vfs open: replica directory: %w", err)
	}
	file := filepath.Join(dir, ReplicaFile)
	db, err := s.loadReplica(ctx, file)
	if errors.Is(err, errCorrupt) {
		aside := fmt.Sprintf("%s.corrupt-%s", file, s.now().UTC().Format("20060102T150405.000000000Z"))
		if rerr := os.Rename(file, aside); rerr != nil {
			return fmt.Errorf("vfs open: %w; moving it aside failed: %v", err, rerr)
		}
		s.log.Error("vfs: replica database is corrupt; moved it aside and started an empty replica, peers will copy the state back",
			"file", file, "moved_to", aside, "err", err)
		s.entries = make(map[string]*record)
		s.tree.Clear(false)
		s.digest = make(map[string]*writerState)
		s.clock, s.contact = hlc{}, 0
		db, err = s.loadReplica(ctx, file)
	}
	if err != nil {
		return err
	}
	s.rep = newReplica(db, s.log)
	if s.contact != 0 && s.Stale(time.Unix(0, s.contact)) {
		if n := s.DropReplica(); n > 0 {
			s.log.Warn("vfs: replica is older than the tombstone grace period; dropped other nodes' entries, peers will copy them afresh",
				"last_contact", time.Unix(0, s.contact).UTC(), "grace", s.grace, "dropped", n)
		}
	}
	return nil
}

// loadReplica opens file and reads it into s. Errors wrapping errCorrupt
// mean the file is bad; others (locked by another process, permissions,
// a cancelled ctx) are returned as they are.
func (s *Store) loadReplica(ctx context.Context, file string) (db *bolt.DB, err error) {
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	// bbolt trusts its pages: a scribbled file can make it panic, and a
	// truncated one fault on the mapping. Turn both into errCorrupt.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, fmt.Errorf("vfs open %s: %w: %v", file, errCorrupt, p)
		}
	}()
	// The freelist stays synced (NoFreelistSync false): without it bbolt
	// rebuilds the freelist at open in a goroutine of its own, where a
	// corrupt page panics beyond our recover.
	db, err = bolt.Open(file, 0o600, &bolt.Options{
		Timeout:      timeout,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("vfs open %s: locked by another process: %w", file, err)
		}
		if errors.Is(err, os.ErrPermission) || errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("vfs open %s: %w", file, err)
		}
		return nil, fmt.Errorf("vfs open %s: %w: %v", file, errCorrupt, err)
	}
	if err := s.readReplica(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("vfs open %s: %w: %v", file, errCorrupt, err)
	}
	return db, nil
}

func (s *Store) readReplica(db *bolt.DB) error {
	err := db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		if first != nil {
			return fmt.Errorf("consistency check: %w", first)
		}
		if m := tx.Bucket(bucketMeta); m != nil {
			if c := m.Get(keyClock); c != nil {
				var v Version
				if err := Decode(c, &v); err != nil {
					return fmt.Errorf("clock: %w", err)
				}
				s.clock.observe(v)
			}
			if c := m.Get(keyContact); len(c) == 8 {
				s.contact = int64(binary.BigEndian.Uint64(c))
			}
		}
		b := tx.Bucket(bucketEntries)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var e Entry
			if err := Decode(v, &e); err != nil {
				return fmt.Errorf("entry %q: %w", k, err)
			}
			if e.Path != string(k) {
				return fmt.Errorf("entry %q holds path %q", k, e.Path)
			}
			if err := ValidatePath(e.Path); err != nil {
				return err
			}
			s.clock.observe(e.Version)
			r := &record{e: e, h: entryHash(e)}
			s.entries[e.Path] = r
			s.tree.ReplaceOrInsert(r)
			s.digestAdd(e.Version, r.h)
			return nil
		})
	})
	if err != nil {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketEntries, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
}
