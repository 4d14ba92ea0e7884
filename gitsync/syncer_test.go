package gitsync

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/gitsync/internal/gittest"
	"github.com/ctxos/ctxos/schema"
)

func newStore(tb testing.TB, node string) *vfs.Store {
	tb.Helper()
	s, err := vfs.Open(context.Background(), vfs.Options{Node: node})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func newSyncer(tb testing.TB, repo string, store *vfs.Store) *Syncer {
	tb.Helper()
	dir := tb.TempDir()
	s := &Syncer{
		Tree:  &GitTree{Source: &Source{URL: repo, CacheDir: filepath.Join(dir, "cache")}, WorkDir: filepath.Join(dir, "work")},
		Store: store,
		Node:  store.Node(),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
	return s
}

func syncNow(tb testing.TB, s *Syncer) SyncStatus {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s.SyncNow(ctx, "test")
	if err != nil {
		tb.Fatalf("sync: %v (status %+v)", err, st)
	}
	return st
}

func inForce(tb testing.TB, store *vfs.Store) (*schema.Snapshot, schema.Manifest) {
	tb.Helper()
	m, ok := currentManifest(store)
	if !ok {
		tb.Fatal("no manifest at /sys/revision")
	}
	snap, err := schema.Assemble(m, func(p string) ([]byte, bool) {
		e, ok := store.Get(p)
		return e.Value, ok
	})
	if err != nil {
		tb.Fatal(err)
	}
	return snap, m
}

const webV1 = "ctx: web: {command: \"/bin/sleep\", args: [\"1000\"], replicas: 2}\n"
const webV2 = "ctx: web: {command: \"/bin/sleep\", args: [\"1000\"], replicas: 3}\n"

func TestSyncerPublishesValidCommitsAndKeepsLastGood(t *testing.T) {
	repo := gittest.NewRepo(t)
	c1 := repo.Commit("web", map[string]string{"ctx/web.cue": webV1, "ctx/api.cue": "ctx: api: {command: \"/bin/true\"}\n"})
	store := newStore(t, "n1")
	s := newSyncer(t, repo.Dir, store)

	st := syncNow(t, s)
	if st.State != StateSynced || st.InForce != c1 || st.Generation != 1 {
		t.Fatalf("after the first commit: status %+v", st)
	}
	snap, _ := inForce(t, store)
	ctxs, _ := snap.Ctxs()
	if ctxs["web"].Replicas != 2 || len(ctxs) != 2 {
		t.Fatalf("in force: %+v", ctxs)
	}

	// An invalid commit: the last good one stays, diagnostics in /itg.
	bad := repo.Commit("typo", map[string]string{"ctx/web.cue": "ctx: web: {command: \"/bin/sleep\", replicas: \"three\"}\n"})
	st = syncNow(t, s)
	if st.State != StateInvalid || st.Commit != bad || st.InForce != c1 || len(st.Diagnostics) == 0 {
		t.Fatalf("after an invalid commit: status %+v", st)
	}
	if d := st.Diagnostics[0]; d.File != "ctx/web.cue" || d.Line != 1 {
		t.Errorf("diagnostic = %+v, want one at ctx/web.cue:1", d)
	}
	if _, m := inForce(t, store); m.Commit != c1 {
		t.Fatalf("the invalid commit replaced the good one: %s", m.Commit)
	}
	itg, ok := store.Get("/itg/n1/gitsync")
	if !ok {
		t.Fatal("no /itg/n1/gitsync for an invalid commit")
	}
	var got SyncStatus
	if err := vfs.Decode(itg.Value, &got); err != nil || got.State != StateInvalid || len(got.Diagnostics) == 0 {
		t.Fatalf("/itg/n1/gitsync = %+v, %v", got, err)
	}

	// A fix that also deletes a CTX: published, the CTX removed, /itg cleared.
	c3 := repo.Commit("fix, drop api", map[string]string{"ctx/web.cue": webV2, "ctx/api.cue": gittest.Delete})
	st = syncNow(t, s)
	if st.State != StateSynced || st.InForce != c3 || st.Generation != 2 {
		t.Fatalf("after the fix: status %+v", st)
	}
	if _, ok := store.Get("/ctx/api"); ok {
		t.Error("/ctx/api deleted from Git is still in the VFS")
	}
	if _, ok := store.Get("/itg/n1/gitsync"); ok {
		t.Error("/itg/n1/gitsync still present after a good commit")
	}
	snap, m := inForce(t, store)
	ctxs, _ = snap.Ctxs()
	if ctxs["web"].Replicas != 3 || m.Subject != "fix, drop api" || m.Author == "" {
		t.Fatalf("in force after the fix: %+v, manifest %+v", ctxs, m)
	}

	// Nothing new: nothing published again.
	before, _ := store.Get(schema.PathRevision)
	syncNow(t, s)
	after, _ := store.Get(schema.PathRevision)
	if before.Version != after.Version {
		t.Error("an unchanged commit was published again")
	}
}

func TestSyncerFollowsForcePushWithGrowingGeneration(t *testing.T) {
	repo := gittest.NewRepo(t)
	c1 := repo.Commit("one", map[string]string{"ctx/web.cue": webV1})
	store := newStore(t, "n1")
	s := newSyncer(t, repo.Dir, store)
	syncNow(t, s)
	repo.Commit("two", map[string]string{"ctx/web.cue": webV2})
	if st := syncNow(t, s); st.Generation != 2 {
		t.Fatalf("generation after the second commit = %d", st.Generation)
	}
	repo.Git("reset", "-q", "--hard", c1)
	st := syncNow(t, s)
	if st.InForce != c1 || st.Generation != 3 {
		t.Fatalf("after a reset to the first commit: %+v, want it in force at generation 3", st)
	}
	snap, _ := inForce(t, store)
	if ctxs, _ := snap.Ctxs(); ctxs["web"].Replicas != 2 {
		t.Fatalf("after the reset web has %d replicas, want 2", ctxs["web"].Replicas)
	}
}

func TestTwoSyncersPublishIdenticalBytes(t *testing.T) {
	repo := gittest.NewRepo(t)
	repo.Commit("one", map[string]string{"ctx/web.cue": webV1, "sys/sys.cue": "sys: sync: interval: \"10s\"\n"})
	a, b := newStore(t, "a"), newStore(t, "b")
	syncNow(t, newSyncer(t, repo.Dir, a))
	syncNow(t, newSyncer(t, repo.Dir, b))
	ea, eb := a.List("/"), b.List("/")
	desired := func(es []vfs.Entry) map[string]string {
		out := map[string]string{}
		for _, e := range es {
			if segs, _ := vfs.Split(e.Path); vfs.IsDesired(segs[0]) {
				out[e.Path] = string(e.Value)
			}
		}
		return out
	}
	da, db := desired(ea), desired(eb)
	if len(da) == 0 || len(da) != len(db) {
		t.Fatalf("desired entries: %d vs %d", len(da), len(db))
	}
	for p, v := range da {
		if db[p] != v {
			t.Errorf("%s differs between the two syncers", p)
		}
	}
}

func TestSyncerUnreachableRemoteKeepsLastGood(t *testing.T) {
	repo := gittest.NewRepo(t)
	c1 := repo.Commit("one", map[string]string{"ctx/web.cue": webV1})
	store := newStore(t, "n1")
	s := newSyncer(t, repo.Dir, store)
	syncNow(t, s)
	moved := repo.Dir + ".moved"
	if err := os.Rename(repo.Dir, moved); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s.SyncNow(ctx, "test")
	if err == nil || st.State != StateFailing {
		t.Fatalf("with the remote gone: status %+v, err %v; want failing", st, err)
	}
	if _, m := inForce(t, store); m.Commit != c1 {
		t.Fatal("the last good commit is no longer in force")
	}
	if _, ok := store.Get("/itg/n1/gitsync"); !ok {
		t.Error("no /itg entry while the remote is unreachable")
	}
	if err := os.Rename(moved, repo.Dir); err != nil {
		t.Fatal(err)
	}
	c2 := repo.Commit("two", map[string]string{"ctx/web.cue": webV2})
	if st := syncNow(t, s); st.State != StateSynced || st.InForce != c2 {
		t.Fatalf("after the remote came back: %+v", st)
	}
}

func TestDirTreeDevModeSyncsEverySave(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "ctx"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(content string) {
		if err := os.WriteFile(filepath.Join(dir, "ctx", "web.cue"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(webV1)
	store := newStore(t, "n1")
	tree := &DirTree{Dir: dir}
	s := &Syncer{Tree: tree, Store: store, Node: "n1"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	if err := tree.Watch(ctx, s.Fire, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the first version is in force", func() bool {
		m, ok := currentManifest(store)
		return ok && strings.HasPrefix(m.Commit, "worktree:")
	})
	write(webV2)
	waitUntil(t, "the saved change is in force", func() bool {
		e, ok := store.Get("/ctx/web")
		if !ok {
			return false
		}
		var c schema.Ctx
		return schema.Decode(e.Value, &c) == nil && c.Replicas == 3
	})
	if st := s.Status(); st.Generation != 2 {
		t.Errorf("generation = %d after one save, want 2", st.Generation)
	}
}

func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSyncerRefusesUnsignedCommitWithVerification(t *testing.T) {
	repo := gittest.NewRepo(t)
	c1 := repo.Commit("unsigned", map[string]string{"ctx/web.cue": webV1})
	v, err := ParseVerify("ssh:" + writeAllowedSigners(t, "ada@example.com "+authorized(newSSHSigner(t).PublicKey())))
	if err != nil {
		t.Fatal(err)
	}
	store := newStore(t, "n1")
	dir := t.TempDir()
	s := &Syncer{
		Tree:  &GitTree{Source: &Source{URL: repo.Dir, CacheDir: filepath.Join(dir, "cache"), Verify: v}, WorkDir: filepath.Join(dir, "work")},
		Store: store,
		Node:  "n1",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	st := syncNow(t, s)
	if st.State != StateInvalid || st.Commit != c1 || !strings.Contains(st.Error, "not signed") {
		t.Fatalf("status %+v, want the unsigned commit refused with the reason", st)
	}
	if _, ok := currentManifest(store); ok {
		t.Fatal("an unsigned commit was published")
	}
	if _, ok := store.Get("/itg/n1/gitsync"); !ok {
		t.Fatal("no /itg/n1/gitsync for a refused commit")
	}
}
