// Package gitsync follows a Git repository of desired state: it fetches a
// branch, tag, semver tag range or pinned commit into a local cache (go-git),
// writes the tree of one commit out as plain files for the schema loader,
// verifies commit signatures (OpenPGP or SSH), receives push webhooks from
// GitHub, Gitea/Forgejo and GitLab, and collapses sync triggers so a burst
// of pushes costs one sync.
//
// Credentials never leave this package: every error and log line carries a
// URL stripped of its userinfo, and the text of errors from the transport is
// scrubbed of the password or token in use before it is returned.
package gitsync

import "errors"

var (
	// ErrInvalidRef is returned when a [Ref] sets more than one of Branch,
	// Tag, Semver and Commit, or one of them is malformed.
	ErrInvalidRef = errors.New("invalid ref")
	// ErrRefNotFound is returned when the followed branch or tag does not
	// exist on the remote (deleted, renamed, never pushed) or no tag matches
	// a semver range. The cache keeps the last commit fetched.
	ErrRefNotFound = errors.New("ref not found")
	// ErrCommitNotFound is returned when a commit is not in the cache or the
	// remote.
	ErrCommitNotFound = errors.New("commit not found")
	// ErrPathNotFound is returned when Source.Path is not a directory at a
	// commit.
	ErrPathNotFound = errors.New("path not found")
	// ErrUnsafePath is returned by Checkout for a tree entry that would
	// write outside the destination: a symlink pointing out of the checked
	// out subtree, or an entry named "..", ".git" or containing a slash.
	ErrUnsafePath = errors.New("unsafe path in tree")
	// ErrSubmodule is returned by Checkout for a submodule inside the
	// checked out subtree: its content is not in this repository, so the
	// desired state would silently miss it.
	ErrSubmodule = errors.New("submodules are not supported")
	// ErrNoCache is returned by Checkout, Resolve and IsAncestor before the
	// first successful Fetch has created the cache.
	ErrNoCache = errors.New("no cached repository yet (fetch first)")
	// ErrAuth is returned when the remote refuses the credentials or asks
	// for some, and when credentials cannot be read.
	ErrAuth = errors.New("authentication failed")
	// ErrUnreachable is returned when the remote cannot be reached: DNS,
	// connection refused, timeout, host key mismatch.
	ErrUnreachable = errors.New("remote unreachable")
	// ErrShallowHistory is returned by IsAncestor when the cached history is
	// cut by a shallow fetch before the answer is known, even after
	// deepening the cache.
	ErrShallowHistory = errors.New("history is shallow")

	// ErrUnsigned is returned by Verifier.Verify for a commit without a
	// signature.
	ErrUnsigned = errors.New("commit is not signed")
	// ErrUntrusted is returned by Verifier.Verify when the signing key is
	// not in the keyring or allowed signers file.
	ErrUntrusted = errors.New("commit signed by an untrusted key")
	// ErrBadSignature is returned by Verifier.Verify when a signature is
	// malformed or does not match the commit.
	ErrBadSignature = errors.New("bad commit signature")

	// ErrWebhookSecret is returned by NewWebhook for an empty secret.
	ErrWebhookSecret = errors.New("webhook secret is required")
)
