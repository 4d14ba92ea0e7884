// Package drivers is the contract between the reconciler and the code that
// runs software on a node: the [Driver] interface, the [Spec] of one desired
// instance, the [Instance] a driver observes, and the Salt-shaped [Report] of
// what a change did.
//
// A driver observes what runs from durable records (files, runtime labels),
// never from memory alone, so a restarted agent finds its workloads again
// instead of starting them twice (Nomad's lesson). A plan and a real apply
// return the same change report (Salt's lesson): [Preview] gives the report a
// plan shows and every driver returns exactly that report when the change
// succeeds. A driver reports what it did; the reconciler writes the VFS, so
// this package and its backends never import cluster, reconcile or gitsync.
//
// One sub-package per backend (process, containerd, ...) implements
// [Driver]; package driverstest holds the conformance suite each backend
// runs.
package drivers
