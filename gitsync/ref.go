package gitsync

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/go-git/go-git/v5/plumbing"
)

// Ref says which commit of the remote to follow. At most one field is set;
// when none is, the branch the remote's HEAD points to is followed (what
// `git clone` checks out), so a repository whose default branch is "master"
// or "trunk" works without configuration.
type Ref struct {
	// Branch follows the tip of a branch ("main"), force pushes included.
	Branch string
	// Tag follows one tag ("v1.2.0"); a moved tag is followed too.
	Tag string
	// Semver follows the highest tag matching a constraint (">=1.2, <2",
	// "~1.4", "1.x"); tags may carry a leading "v". Pre-release tags match
	// only constraints that name a pre-release, as in Masterminds/semver.
	Semver string
	// Commit pins a full 40-hex commit hash. A pinned commit never changes,
	// so once cached it is served without contacting the remote.
	Commit string
}

// Validate reports a Ref that sets more than one field or a malformed one.
func (r Ref) Validate() error {
	n := 0
	for _, v := range []string{r.Branch, r.Tag, r.Semver, r.Commit} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("%w: set only one of branch, tag, semver and commit (got %s)", ErrInvalidRef, r)
	}
	switch {
	case r.Branch != "":
		if err := checkRefName("branch", r.Branch); err != nil {
			return err
		}
	case r.Tag != "":
		if err := checkRefName("tag", r.Tag); err != nil {
			return err
		}
	case r.Semver != "":
		if _, err := semver.NewConstraint(r.Semver); err != nil {
			return fmt.Errorf("%w: semver %q: %v", ErrInvalidRef, r.Semver, err)
		}
	case r.Commit != "":
		if len(r.Commit) != 40 {
			return fmt.Errorf("%w: commit %q: want a full 40-hex hash", ErrInvalidRef, r.Commit)
		}
		if _, err := hex.DecodeString(r.Commit); err != nil {
			return fmt.Errorf("%w: commit %q: not hexadecimal", ErrInvalidRef, r.Commit)
		}
	}
	return nil
}

// String names the ref the way the CLI takes it: "branch main", "tag v1",
// "semver ~1.2", "commit abc…", or "remote HEAD".
func (r Ref) String() string {
	var parts []string
	if r.Branch != "" {
		parts = append(parts, "branch "+r.Branch)
	}
	if r.Tag != "" {
		parts = append(parts, "tag "+r.Tag)
	}
	if r.Semver != "" {
		parts = append(parts, "semver "+r.Semver)
	}
	if r.Commit != "" {
		parts = append(parts, "commit "+r.Commit)
	}
	if len(parts) == 0 {
		return "remote HEAD"
	}
	return strings.Join(parts, ", ")
}

// checkRefName applies git's check-ref-format rules, plus no leading "-"
// (it would read as an option) and no "refs/" prefix (the kind adds it).
func checkRefName(kind, name string) error {
	bad := strings.HasPrefix(name, "refs/") || strings.HasPrefix(name, "-") ||
		strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.HasSuffix(name, ".") ||
		strings.Contains(name, "..") || strings.Contains(name, "@{") || strings.Contains(name, "//") || name == "@"
	for _, r := range name {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(" ~^:?*[\\", r) {
			bad = true
		}
	}
	for _, seg := range strings.Split(name, "/") {
		if strings.HasPrefix(seg, ".") || strings.HasSuffix(seg, ".lock") {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("%w: %s name %q", ErrInvalidRef, kind, name)
	}
	return nil
}

// target picks the reference to fetch from the remote's advertised
// references: its full name and the hash advertised for it (a commit, or an
// annotated tag object for tags).
func (r Ref) target(remote []*plumbing.Reference) (plumbing.ReferenceName, plumbing.Hash, error) {
	byName := make(map[plumbing.ReferenceName]*plumbing.Reference, len(remote))
	for _, ref := range remote {
		byName[ref.Name()] = ref
	}
	lookup := func(name plumbing.ReferenceName, what string) (plumbing.ReferenceName, plumbing.Hash, error) {
		ref, ok := byName[name]
		if !ok || ref.Type() != plumbing.HashReference {
			return "", plumbing.ZeroHash, fmt.Errorf("%w: %s does not exist on the remote", ErrRefNotFound, what)
		}
		return name, ref.Hash(), nil
	}
	switch {
	case r.Branch != "":
		return lookup(plumbing.NewBranchReferenceName(r.Branch), "branch "+r.Branch)
	case r.Tag != "":
		return lookup(plumbing.NewTagReferenceName(r.Tag), "tag "+r.Tag)
	case r.Semver != "":
		name, err := highestTag(r.Semver, remote)
		if err != nil {
			return "", plumbing.ZeroHash, err
		}
		return lookup(name, "tag "+name.Short())
	case r.Commit != "":
		return "", plumbing.NewHash(r.Commit), nil
	}
	head, ok := byName[plumbing.HEAD]
	if !ok {
		return "", plumbing.ZeroHash, fmt.Errorf("%w: remote HEAD is not advertised (set a branch)", ErrRefNotFound)
	}
	if head.Type() == plumbing.SymbolicReference {
		return lookup(head.Target(), "branch "+head.Target().Short()+" (remote HEAD)")
	}
	// Old servers advertise HEAD without its symref target: take the branch
	// whose tip matches, preferring the usual default names.
	var candidates []plumbing.ReferenceName
	for _, ref := range remote {
		if ref.Name().IsBranch() && ref.Hash() == head.Hash() {
			candidates = append(candidates, ref.Name())
		}
	}
	for _, pref := range []string{"main", "master"} {
		for _, c := range candidates {
			if c.Short() == pref {
				return c, head.Hash(), nil
			}
		}
	}
	if len(candidates) == 1 {
		return candidates[0], head.Hash(), nil
	}
	return "", plumbing.ZeroHash, fmt.Errorf("%w: cannot tell which branch remote HEAD is (set a branch)", ErrRefNotFound)
}

// highestTag returns the highest tag in refs that satisfies constraint.
func highestTag(constraint string, refs []*plumbing.Reference) (plumbing.ReferenceName, error) {
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return "", fmt.Errorf("%w: semver %q: %v", ErrInvalidRef, constraint, err)
	}
	var (
		best     *semver.Version
		bestName plumbing.ReferenceName
	)
	for _, ref := range refs {
		name := ref.Name()
		if !name.IsTag() || strings.HasSuffix(name.String(), "^{}") {
			continue
		}
		v, err := semver.NewVersion(name.Short())
		if err != nil || !c.Check(v) {
			continue
		}
		// "v1.2.0" and "1.2.0" are the same version: prefer the name
		// sorted first so the choice does not depend on listing order.
		if best == nil || v.GreaterThan(best) || (v.Equal(best) && name < bestName) {
			best, bestName = v, name
		}
	}
	if best == nil {
		return "", fmt.Errorf("%w: no tag matches semver %q", ErrRefNotFound, constraint)
	}
	return bestName, nil
}
