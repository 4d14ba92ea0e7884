// Package vfs is the cluster's state namespace on one node: paths, CBOR
// values, hybrid-logical-clock versions, tombstones, prefix watches and the
// bbolt replica on disk. Replication between nodes lives in package cluster;
// it feeds remote entries to [Store.Merge], broadcasts what
// [Options.OnChange] reports, and runs anti-entropy with [Store.Digest] and
// [Store.Missing].
//
// Rules the Store enforces: paths follow [ValidatePath]; below /hw, /sum,
// /run and /itg only the node named by the second segment writes
// ([ErrNotWriter]); /lk and the desired roots take any writer and resolve
// by last-writer-wins on [Version]; a remote version more than MaxSkew
// ahead of this node's clock is refused ([ErrFutureVersion]); values above
// MaxValueSize are refused ([ErrValueTooLarge]).
//
// Durability: the in-memory index is authoritative and a group-commit
// goroutine writes changes to bbolt in batches, each an fsynced
// transaction. A change is on disk after the commit that follows it
// ([Store.Flush] waits for that; [Store.Close] flushes). kill -9 or a power
// loss loses at most the changes not yet committed, never a committed one.
// That is acceptable because nothing here exists only on this node: its
// own active state is rewritten by its collectors and agent, and its
// replica of everyone else is copied back by anti-entropy. The HLC
// high-water mark is persisted with every commit, and the clock starts
// above every version on disk, so versions do not go backwards across a
// restart even if the wall clock does.
//
// Corruption: a replica file that bbolt refuses, that fails its
// consistency check, or whose entries do not decode is moved aside to
// <file>.corrupt-<timestamp> with one Error log line, and the node starts
// with an empty replica that peers fill again.
//
// Tombstones are kept for TombstoneGrace (default 24 h), then collected. A
// node away longer than that may hold entries whose tombstones its peers
// have collected: merging its replica back would resurrect them. So a
// replica whose last applied Merge is older than the grace period drops
// other nodes' entries at Open (keeping its own), and the replication layer
// should call [Store.Stale] with its own notion of last contact and
// [Store.DropReplica] when a partition outlived the grace period; the next
// anti-entropy exchange then copies everything afresh.
package vfs
