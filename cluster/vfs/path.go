package vfs

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Roots of the VFS. Desired roots come only from Git; active roots are
// written by the nodes.
var (
	DesiredRoots = []string{"ctx", "mid", "ztb", "sys"}
	ActiveRoots  = []string{"hw", "sum", "run", "itg", "lk"}
)

// ErrInvalidPath is returned, wrapped with the offending path, for a path
// that breaks the VFS rules.
var ErrInvalidPath = errors.New("invalid vfs path")

var segmentRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// ValidSegment reports whether s may be one segment of a VFS path:
// [a-z0-9][a-z0-9._-]*. Names of CTXs, MIDs and nodes follow the same rule
// because they become path segments.
func ValidSegment(s string) bool { return segmentRE.MatchString(s) }

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
