// Package vfs is the cluster's state namespace on one node: paths, CBOR
// values, hybrid-logical-clock versions, tombstones, prefix watches and the
// bbolt replica on disk. Replication between nodes lives in package cluster.
package vfs
