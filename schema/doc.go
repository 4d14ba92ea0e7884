// Package schema turns a desired-state repository of CUE files into a
// [Snapshot]: the concrete, validated desired state of one commit, as the
// VFS entries /ctx/<name>, /mid/<name>, /ztb/policy and /sys/config with
// canonical CBOR values.
//
// # Repository layout
//
// Desired state lives in .cue files under four roots: ctx/ (CTXs), mid/
// (MIDs), ztb/ (the zero trust bridge policy) and sys/ (cluster settings).
// cue.mod/ and directories starting with a dot are skipped; a .cue file
// anywhere else is an error. Files are at most [MaxFileSize] bytes, UTF-8,
// and symlinks must stay inside the repository.
//
// Every file is package config (or has no package clause). [Load] unifies
// all of them, as one package, with the embedded schema's #Config, so a
// file may be as plain as
//
//	ctx: web: {image: "nginx:1.27", replicas: 3}
//
// The files [Init] writes also start with
//
//	package config
//	import "github.com/ctxos/ctxos/schema"
//	schema.#Config
//
// and the schema is vendored into cue.mod/pkg, so the official `cue vet
// ./...` checks the same rules. Keep the embedding in every file: CUE
// closes only the fields of the file that embeds #Config, so without it
// `cue vet` lets an unknown field through (ctxos vet does not). Load drops
// these per-file embeddings and unifies the package with #Config once,
// which gives the same result without the cost that grows with the square
// of the number of files.
//
// Each CTX and MID is defined in one file; names follow the VFS segment
// rule [a-z0-9][a-z0-9._-]*. ztb rules and requires name existing CTXs or
// MIDs, and requires has no cycle.
//
// # Determinism
//
// The same repository content gives the same entries and [Snapshot.Hash]
// on every machine, whatever the order of files and fields:
// every value is decoded into the Go types of this package (with the
// schema's defaults filled in) and encoded as core deterministic CBOR, and
// [HashEntries] hashes the sorted entries.
package schema
