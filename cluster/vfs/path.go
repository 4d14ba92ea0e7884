package vfs

import (
	"fmt"
	"strings"
)

// Roots of the VFS. Desired roots come only from Git; active roots are
// written by the nodes.
var (
	DesiredRoots = []string{"ctx", "mid", "ztb", "sys"}
	ActiveRoots  = []string{"hw", "sum", "run", "itg", "lk"}
)

// ValidSegment reports whether s may be one segment of a VFS path:
// [a-z0-9][a-z0-9._-]*. Names of CTXs, MIDs and nodes follow the same rule
// because they become path segments. It is hand-written rather than a
// regexp because every Put and Merge checks every segment.
func ValidSegment(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// singleWriterRoots are the active roots whose second segment names the
// only node allowed to write below it. /lk is shared.
var singleWriterRoots = []string{"hw", "sum", "run", "itg"}

// Owner returns the node that alone may write path, and whether path is
// under a single-writer root (/hw, /sum, /run, /itg). For a root without a
// node segment (such as "/hw") it returns "" and true: nobody may write it.
func Owner(path string) (node string, single bool) {
	rest := strings.TrimPrefix(path, "/")
	root, rest, _ := strings.Cut(rest, "/")
	if !contains(singleWriterRoots, root) {
		return "", false
	}
	node, _, _ = strings.Cut(rest, "/")
	return node, true
}

// under reports whether path is prefix itself or below it. prefix "/"
// matches every path; "/hw" matches "/hw/x" but not "/hwx".
func under(path, prefix string) bool {
	if prefix == "/" {
		return true
	}
	prefix = strings.TrimSuffix(prefix, "/")
	return path == prefix || (strings.HasPrefix(path, prefix) && path[len(prefix)] == '/')
}

// IsDesired reports whether root (without slashes) is a desired-state root.
func IsDesired(root string) bool { return contains(DesiredRoots, root) }

// IsActive reports whether root (without slashes) is an active-state root.
func IsActive(root string) bool { return contains(ActiveRoots, root) }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Split returns the segments of a valid path, or an error naming the path.
func Split(path string) ([]string, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("%w %q: must start with /", ErrInvalidPath, path)
	}
	segs := strings.Split(path[1:], "/")
	if !IsDesired(segs[0]) && !IsActive(segs[0]) {
		return nil, fmt.Errorf("%w %q: unknown root /%s (known: /%s, /%s)", ErrInvalidPath, path, segs[0],
			strings.Join(DesiredRoots, " /"), strings.Join(ActiveRoots, " /"))
	}
	for _, s := range segs[1:] {
		if !ValidSegment(s) {
			return nil, fmt.Errorf("%w %q: segment %q must match [a-z0-9][a-z0-9._-]*", ErrInvalidPath, path, s)
		}
	}
	return segs, nil
}

// ValidatePath returns an error naming path if it breaks the VFS rules.
func ValidatePath(path string) error {
	_, err := Split(path)
	return err
}

// ValidatePrefix accepts "/" and any valid path, optionally ending in "/",
// for listing and watching.
func ValidatePrefix(prefix string) error {
	if prefix == "/" {
		return nil
	}
	return ValidatePath(strings.TrimSuffix(prefix, "/"))
}
