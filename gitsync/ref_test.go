package gitsync

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
)

func hashRef(name, hash string) *plumbing.Reference {
	return plumbing.NewHashReference(plumbing.ReferenceName(name), plumbing.NewHash(hash))
}

func TestRefTarget(t *testing.T) {
	t.Parallel()
	const a, b, c = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "cccccccccccccccccccccccccccccccccccccccc"
	branches := []*plumbing.Reference{hashRef("refs/heads/main", a), hashRef("refs/heads/dev", b), hashRef("refs/heads/trunk", c)}
	tags := []*plumbing.Reference{
		hashRef("refs/tags/v1.2.0", a), hashRef("refs/tags/1.2.0", b), hashRef("refs/tags/v1.10.0", c),
		hashRef("refs/tags/v1.10.0^{}", a), hashRef("refs/tags/release-7", a), hashRef("refs/tags/v2.0.0-beta.1", b),
	}
	withHead := func(head *plumbing.Reference, refs ...*plumbing.Reference) []*plumbing.Reference {
		return append([]*plumbing.Reference{head}, refs...)
	}
	tests := []struct {
		name     string
		ref      Ref
		remote   []*plumbing.Reference
		wantName string
		wantErr  error
	}{
		{"symbolic HEAD", Ref{}, withHead(plumbing.NewSymbolicReference("HEAD", "refs/heads/trunk"), branches...), "refs/heads/trunk", nil},
		{"HEAD without symref, main preferred", Ref{}, withHead(hashRef("HEAD", a), append(branches, hashRef("refs/heads/copy", a))...), "refs/heads/main", nil},
		{"HEAD without symref, one match", Ref{}, withHead(hashRef("HEAD", b), branches...), "refs/heads/dev", nil},
		{"HEAD ambiguous", Ref{}, withHead(hashRef("HEAD", b), hashRef("refs/heads/x", b), hashRef("refs/heads/y", b)), "", ErrRefNotFound},
		{"no HEAD", Ref{}, branches, "", ErrRefNotFound},
		{"HEAD to deleted branch", Ref{}, withHead(plumbing.NewSymbolicReference("HEAD", "refs/heads/gone"), branches...), "", ErrRefNotFound},
		{"semver numeric order", Ref{Semver: "^1"}, tags, "refs/tags/v1.10.0", nil},
		{"semver same version with and without v", Ref{Semver: "=1.2.0"}, tags, "refs/tags/1.2.0", nil},
		{"semver excludes prerelease", Ref{Semver: ">=1.11"}, tags, "", ErrRefNotFound},
		{"semver includes prerelease when asked", Ref{Semver: ">=2.0.0-0"}, tags, "refs/tags/v2.0.0-beta.1", nil},
		{"tag", Ref{Tag: "release-7"}, tags, "refs/tags/release-7", nil},
		{"branch is not a tag", Ref{Tag: "main"}, branches, "", ErrRefNotFound},
	}
	for _, tt := range tests {
		name, _, err := tt.ref.target(tt.remote)
		if !errors.Is(err, tt.wantErr) || string(name) != tt.wantName {
			t.Errorf("%s: target = %q, %v; want %q, %v", tt.name, name, err, tt.wantName, tt.wantErr)
		}
	}
}

func TestRefValidate(t *testing.T) {
	t.Parallel()
	good := []Ref{{}, {Branch: "main"}, {Branch: "feature/x-1"}, {Tag: "v1.0.0"}, {Semver: "~1.2"}, {Commit: strings.Repeat("0a", 20)}}
	for _, r := range good {
		if err := r.Validate(); err != nil {
			t.Errorf("%s: %v", r, err)
		}
	}
	bad := []Ref{
		{Branch: "main", Commit: strings.Repeat("0a", 20)}, {Branch: "-x"}, {Branch: "refs/heads/main"}, {Branch: "a b"},
		{Branch: "x.lock"}, {Branch: "a/.hidden"}, {Branch: "a~1"}, {Tag: "v1^"}, {Tag: "a:b"}, {Branch: "trailing/"},
		{Semver: ">>1"}, {Commit: strings.Repeat("zz", 20)}, {Commit: "abc"},
	}
	for _, r := range bad {
		if err := r.Validate(); !errors.Is(err, ErrInvalidRef) {
			t.Errorf("%s: err = %v, want ErrInvalidRef", r, err)
		}
	}
	if got, want := (Ref{}).String(), "remote HEAD"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
