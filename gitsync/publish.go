package gitsync

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/schema"
)

// Publication is what Publish did.
type Publication struct {
	Manifest schema.Manifest
	Written  int  // entries written because they were new or changed
	Removed  int  // desired entries deleted because the commit no longer has them
	Changed  bool // false when the same commit and content were already in force
}

// Publish writes snap, the snapshot of commit rev, into the desired roots
// of store: changed entries first, then tombstones for items deleted from
// Git, then the manifest at /sys/revision, last, with the next generation.
// Nodes switch to the new snapshot only once they hold every entry and the
// content hash matches (see schema.Assemble), so the order of arrival does
// not matter. Every field written comes from the commit and the previous
// generation, so two nodes publishing the same commit write the same bytes.
func Publish(store *vfs.Store, snap *schema.Snapshot, rev Revision) (Publication, error) {
	var pub Publication
	prev, hasPrev := currentManifest(store)
	in := make(map[string]bool, len(snap.Entries))
	for _, e := range snap.Entries {
		in[e.Path] = true
		if cur, ok := store.Get(e.Path); ok && bytes.Equal(cur.Value, e.Value) {
			continue
		}
		if _, err := store.Put(e.Path, e.Value); err != nil {
			return pub, fmt.Errorf("publish %s: %w", e.Path, err)
		}
		pub.Written++
	}
	for _, root := range vfs.DesiredRoots {
		for _, e := range store.List("/" + root) {
			if in[e.Path] || e.Path == schema.PathRevision {
				continue
			}
			if _, err := store.Delete(e.Path); err != nil {
				return pub, fmt.Errorf("remove %s: %w", e.Path, err)
			}
			pub.Removed++
		}
	}
	if hasPrev && prev.Commit == rev.Commit && prev.Hash == snap.Hash {
		pub.Manifest = prev
		return pub, nil
	}
	gen := uint64(1)
	if hasPrev {
		gen = prev.Generation + 1
	}
	m := schema.NewManifest(snap, rev.Commit, gen)
	m.Ref = rev.Ref
	m.Author = rev.Author
	m.Subject = rev.Subject
	m.Time = rev.Time.UTC()
	b, err := schema.Encode(m)
	if err != nil {
		return pub, err
	}
	if _, err := store.Put(schema.PathRevision, b); err != nil {
		return pub, fmt.Errorf("publish %s: %w", schema.PathRevision, err)
	}
	pub.Manifest, pub.Changed = m, true
	return pub, nil
}

// currentManifest reads the manifest in the replica, if any.
func currentManifest(store *vfs.Store) (schema.Manifest, bool) {
	var m schema.Manifest
	e, ok := store.Get(schema.PathRevision)
	if !ok || schema.Decode(e.Value, &m) != nil {
		return m, false
	}
	return m, true
}

// shortCommit is the commit as logs show it.
func shortCommit(c string) string {
	if strings.HasPrefix(c, "worktree:") || len(c) <= 12 {
		return c
	}
	return c[:12]
}
