// Package cluster makes one machine a member of a ctxos cluster: membership
// and failure detection on hashicorp/memberlist, replication of the VFS
// store (package [vfs]) by gossip and anti-entropy, the node HTTP API and
// its Go [Client], and the publication of props and status.
//
// Replication has two paths. Small deltas ride memberlist broadcasts, one
// pending message per key; a node that applies a delta newer than what it
// held queues it again, as Serf does, because memberlist only retransmits a
// message a few times from the node that queued it. Values too large for a
// gossip packet travel as a notice (path and version) and the receiver pulls
// the entry over memberlist's reliable (TCP) channel from a node that has
// it. Anti-entropy repairs what gossip misses: the state exchanged is only
// a digest (per writer node, the highest version held, a count and a sum of
// entry hashes), and the peer answers with exactly the entries missing, in
// 1 MiB batches that each wait for the receiver's ack. It runs at
// memberlist's push/pull, every CatchUpInterval with a random member, right
// after a burst of desired state from its writer, and whenever the store
// fingerprint that every probe ack carries differs from this node's own
// (then at most 1 MiB, so that a missed write is back within about a
// second). The whole store never travels in LocalState.
package cluster
