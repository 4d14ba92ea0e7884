package gitsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/schema"
)

// Tree is where a syncer gets commits from: a Git [Source], or a plain
// directory in dev mode ([DirTree]).
type Tree interface {
	// Fetch brings the followed ref up to date and describes its commit.
	Fetch(ctx context.Context) (Revision, error)
	// Open makes the desired state at commit readable as a directory and
	// returns it with a function that releases it.
	Open(ctx context.Context, commit string) (dir string, release func(), err error)
}

// Sync states, as /run/<node>/gitsync and `ctxos status` show them.
const (
	StateSyncing = "syncing"
	StateSynced  = "synced"
	StateInvalid = "invalid"  // the newest commit was refused; the last good one stays in force
	StateFailing = "failing"  // the remote or the checkout failed; retrying with backoff
	StateWaiting = "starting" // no sync finished yet
)

// SyncStatus is the syncer's state, published at /run/<node>/gitsync and,
// when something is wrong, at /itg/<node>/gitsync.
type SyncStatus struct {
	State string `cbor:"state" json:"state"`
	// Commit is the newest commit seen; InForce the one whose snapshot
	// this syncer last published or found published.
	Commit      string              `cbor:"commit,omitempty" json:"commit,omitempty"`
	Author      string              `cbor:"author,omitempty" json:"author,omitempty"`
	Subject     string              `cbor:"subject,omitempty" json:"subject,omitempty"`
	CommitTime  time.Time           `cbor:"commitTime,omitempty" json:"commitTime,omitzero"`
	InForce     string              `cbor:"inForce,omitempty" json:"inForce,omitempty"`
	Generation  uint64              `cbor:"generation,omitempty" json:"generation,omitempty"`
	LastSync    time.Time           `cbor:"lastSync,omitempty" json:"lastSync,omitzero"`
	Error       string              `cbor:"error,omitempty" json:"error,omitempty"`
	Diagnostics []schema.Diagnostic `cbor:"diagnostics,omitempty" json:"diagnostics,omitempty"`
}

// Syncer follows a Tree and publishes every valid commit's snapshot into
// the VFS. An invalid or refused commit leaves the last good snapshot in
// force; its diagnostics go to /itg/<node>/gitsync, logged once per commit.
type Syncer struct {
	Tree     Tree
	Store    *vfs.Store
	Node     string
	Interval time.Duration // poll interval; 0 polls never (webhooks and `ctxos sync` still work)
	// LoadTimeout bounds the evaluation of one commit (default 30s).
	LoadTimeout time.Duration
	Logger      *slog.Logger
	Now         func() time.Time

	trigger Trigger

	mu        sync.Mutex
	status    SyncStatus
	refused   string // the last commit refused, to log its diagnostics once
	started   uint64 // syncs started
	done      uint64 // syncs finished
	doneCond  *sync.Cond
	completed SyncStatus // the status as the last finished sync left it
	lastErr   error
}

func (s *Syncer) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Syncer) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Syncer) init() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.doneCond == nil {
		s.doneCond = sync.NewCond(&s.mu)
		s.status.State = StateWaiting
	}
}

// Run syncs at start, on every poll tick (jittered by 10%), on Fire, and
// after a backoff when a sync failed, until ctx ends.
func (s *Syncer) Run(ctx context.Context) {
	s.init()
	s.trigger.Logger = s.Logger
	s.trigger.Run(ctx, s.Interval, 0.1, s.sync)
}

// Fire asks for a sync now; calls during a sync collapse into one more.
func (s *Syncer) Fire(reason string) { s.trigger.Fire(reason) }

// SyncNow fires a sync and waits until one that started after the call
// has finished, returning its status and error.
func (s *Syncer) SyncNow(ctx context.Context, reason string) (SyncStatus, error) {
	s.init()
	s.mu.Lock()
	// Syncs run one after another, so the first to start after this point
	// is number started+1; a sync running now may have fetched before
	// the caller's commit, so it does not count.
	target := s.started + 1
	s.mu.Unlock()
	s.Fire(reason)
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.doneCond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.done < target && ctx.Err() == nil {
		s.doneCond.Wait()
	}
	if err := ctx.Err(); err != nil {
		return s.completed, err
	}
	return s.completed, s.lastErr
}

// Status is the syncer's current state.
func (s *Syncer) Status() SyncStatus {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *Syncer) sync(ctx context.Context, reasons []string) error {
	s.mu.Lock()
	s.started++
	s.status.State = StateSyncing
	s.mu.Unlock()
	err := s.syncOnce(ctx)
	s.mu.Lock()
	s.status.LastSync = s.now().UTC()
	st := s.status
	s.mu.Unlock()
	// Publish before waking SyncNow callers, so what they read next in
	// the VFS is this sync's outcome.
	s.publishStatus(st)
	s.mu.Lock()
	s.done++
	s.completed = st
	s.lastErr = err
	s.doneCond.Broadcast()
	s.mu.Unlock()
	return err
}

func (s *Syncer) setState(f func(*SyncStatus)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.status)
}

// syncOnce fetches, validates and publishes. It returns an error only for
// failures worth retrying (the remote, the disk); a refused commit is not
// retried until a new commit arrives.
func (s *Syncer) syncOnce(ctx context.Context) error {
	rev, err := s.Tree.Fetch(ctx)
	if err != nil {
		if errors.Is(err, ErrUnsigned) || errors.Is(err, ErrUntrusted) || errors.Is(err, ErrBadSignature) {
			s.refuse(rev, err.Error(), nil)
			return nil
		}
		s.setState(func(st *SyncStatus) { st.State, st.Error, st.Diagnostics = StateFailing, err.Error(), nil })
		return err
	}
	s.setState(func(st *SyncStatus) {
		st.Commit, st.Author, st.Subject, st.CommitTime = rev.Commit, rev.Author, rev.Subject, rev.Time.UTC()
	})
	s.mu.Lock()
	refusedAlready := s.refused == rev.Commit
	s.mu.Unlock()
	if refusedAlready {
		s.setState(func(st *SyncStatus) { st.State = StateInvalid })
		return nil
	}
	dir, release, err := s.Tree.Open(ctx, rev.Commit)
	if err != nil {
		if errors.Is(err, ErrPathNotFound) || errors.Is(err, ErrUnsafePath) || errors.Is(err, ErrSubmodule) {
			s.refuse(rev, err.Error(), nil)
			return nil
		}
		s.setState(func(st *SyncStatus) { st.State, st.Error = StateFailing, err.Error() })
		return err
	}
	defer release()
	timeout := s.LoadTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	lctx, cancel := context.WithTimeout(ctx, timeout)
	snap, diags, err := schema.Load(lctx, dir)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The commit itself is unusable (empty, or evaluation too slow):
		// retrying the same commit cannot help.
		s.refuse(rev, err.Error(), nil)
		return nil
	}
	if len(diags) > 0 {
		s.refuse(rev, fmt.Sprintf("%d problem(s) in the configuration", len(diags)), diags)
		return nil
	}
	prev, hadPrev := currentManifest(s.Store)
	pub, err := Publish(s.Store, snap, rev)
	if err != nil {
		s.setState(func(st *SyncStatus) { st.State, st.Error = StateFailing, err.Error() })
		return err
	}
	if pub.Changed {
		s.noteRewrite(ctx, prev, hadPrev, rev)
		s.log().Info("published desired state", "commit", shortCommit(rev.Commit), "generation", pub.Manifest.Generation,
			"written", pub.Written, "removed", pub.Removed, "subject", rev.Subject)
	}
	s.mu.Lock()
	s.refused = ""
	s.mu.Unlock()
	s.setState(func(st *SyncStatus) {
		st.State, st.Error, st.Diagnostics = StateSynced, "", nil
		st.InForce, st.Generation = pub.Manifest.Commit, pub.Manifest.Generation
	})
	return nil
}

// noteRewrite logs a force push or reset: the new commit does not descend
// from the one in force. The generation still grows.
func (s *Syncer) noteRewrite(ctx context.Context, prev schema.Manifest, hadPrev bool, rev Revision) {
	src, ok := s.Tree.(*GitTree)
	if !ok || !hadPrev || prev.Commit == "" {
		return
	}
	isAnc, err := src.Source.IsAncestor(ctx, prev.Commit, rev.Commit)
	if err == nil && !isAnc {
		s.log().Warn("history rewritten (force push or reset): following it", "from", shortCommit(prev.Commit), "to", shortCommit(rev.Commit))
	}
}

// refuse records a commit that will not be published; the last good
// snapshot stays in force.
func (s *Syncer) refuse(rev Revision, reason string, diags []schema.Diagnostic) {
	s.mu.Lock()
	first := s.refused != rev.Commit
	s.refused = rev.Commit
	s.mu.Unlock()
	if first {
		args := []any{"commit", shortCommit(rev.Commit), "reason", reason}
		for i, d := range diags {
			if i == 5 {
				args = append(args, "more", len(diags)-5)
				break
			}
			args = append(args, fmt.Sprintf("diag%d", i+1), d.String())
		}
		s.log().Error("commit refused; the last good desired state stays in force", args...)
	}
	s.setState(func(st *SyncStatus) {
		st.State, st.Error, st.Diagnostics = StateInvalid, reason, diags
		if rev.Commit != "" {
			st.Commit, st.Author, st.Subject, st.CommitTime = rev.Commit, rev.Author, rev.Subject, rev.Time.UTC()
		}
	})
}

// publishStatus writes the state to /run/<node>/gitsync, and to
// /itg/<node>/gitsync while something is wrong (deleted once it is fine).
func (s *Syncer) publishStatus(st SyncStatus) {
	if _, err := s.Store.PutValue("/run/"+s.Node+"/gitsync", st); err != nil {
		s.log().Error("publish sync status", "err", err)
	}
	itg := "/itg/" + s.Node + "/gitsync"
	if st.State == StateSynced {
		if _, ok := s.Store.Get(itg); ok {
			s.Store.Delete(itg)
		}
		return
	}
	if _, err := s.Store.PutValue(itg, st); err != nil {
		s.log().Error("publish sync problem", "err", err)
	}
}

// GitTree is a Git [Source] as a syncer's Tree: each commit is checked out
// into a fresh directory under WorkDir.
type GitTree struct {
	Source  *Source
	WorkDir string
}

func (g *GitTree) Fetch(ctx context.Context) (Revision, error) { return g.Source.Fetch(ctx) }

func (g *GitTree) Open(ctx context.Context, commit string) (string, func(), error) {
	if err := os.MkdirAll(g.WorkDir, 0o700); err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp(g.WorkDir, "checkout-")
	if err != nil {
		return "", nil, err
	}
	release := func() { os.RemoveAll(dir) }
	dst := filepath.Join(dir, "tree")
	if err := g.Source.Checkout(ctx, commit, dst); err != nil {
		release()
		return "", nil, err
	}
	return dst, release, nil
}
