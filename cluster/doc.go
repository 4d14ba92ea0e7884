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
// the entry over HTTP from a node that has it. Anti-entropy piggybacks on
// memberlist's periodic push/pull: the state exchanged is only a digest (per
// writer node, the highest version held, a count and a fingerprint); a node
// that sees a difference pulls exactly the missing entries from its peer
// over a reliable connection. The whole store never travels in LocalState.
package cluster
