// Package etcdbench measures the VFS store against an embedded etcd member
// on the same machine, with the same keys and value sizes. It is a module
// of its own so that etcd never enters ctxos's dependencies; run it with
//
//	cd cluster/vfs/etcdbench && go test -run '^$' -bench . -benchtime 2s
package etcdbench
