package schema

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// PathRevision is the VFS path of the manifest of the snapshot in force.
const PathRevision = "/sys/revision"

// ErrIncomplete is returned by [Assemble] while a node does not yet hold
// every entry of a published snapshot (gossip delivers them in any order).
var ErrIncomplete = errors.New("snapshot incomplete")

// Manifest describes a published snapshot: gitsync writes it last, at
// /sys/revision, after the entries. Every field comes from the commit, so
// two nodes publishing the same commit after the same generation write the
// same bytes.
type Manifest struct {
	Commit     string    `cbor:"commit" json:"commit"`
	Hash       string    `cbor:"hash" json:"hash"`             // Snapshot.Hash
	Generation uint64    `cbor:"generation" json:"generation"` // grows with every published commit, also on a reset to an older one
	Paths      []string  `cbor:"paths" json:"paths"`           // every entry of the snapshot, sorted
	Ref        string    `cbor:"ref,omitempty" json:"ref,omitempty"`
	Author     string    `cbor:"author,omitempty" json:"author,omitempty"`
	Subject    string    `cbor:"subject,omitempty" json:"subject,omitempty"`
	Time       time.Time `cbor:"time" json:"time"` // commit time
}

// NewManifest describes snap at the given commit and generation.
func NewManifest(snap *Snapshot, commit string, generation uint64) Manifest {
	m := Manifest{Commit: commit, Hash: snap.Hash, Generation: generation}
	for _, e := range snap.Entries {
		m.Paths = append(m.Paths, e.Path)
	}
	return m
}

// Assemble rebuilds the snapshot a manifest describes from a node's
// replica, read through get (the live value at a path). It returns
// ErrIncomplete, naming what is missing or different, until every entry is
// present and the content hash matches: a node never acts on a mix of two
// commits.
func Assemble(m Manifest, get func(path string) ([]byte, bool)) (*Snapshot, error) {
	paths := append([]string(nil), m.Paths...)
	sort.Strings(paths)
	snap := &Snapshot{Entries: make([]Entry, 0, len(paths))}
	var missing []string
	for _, p := range paths {
		v, ok := get(p)
		if !ok {
			missing = append(missing, p)
			continue
		}
		snap.Entries = append(snap.Entries, Entry{Path: p, Value: v})
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: commit %.12s: %d of %d entries missing (first %s)", ErrIncomplete, m.Commit, len(missing), len(paths), missing[0])
	}
	snap.Hash = HashEntries(snap.Entries)
	if snap.Hash != m.Hash {
		return nil, fmt.Errorf("%w: commit %.12s: content hash %s, manifest says %s", ErrIncomplete, m.Commit, snap.Hash, m.Hash)
	}
	return snap, nil
}
