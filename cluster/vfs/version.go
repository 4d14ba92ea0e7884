package vfs

import (
	"math"
	"strconv"
)

// Version is a hybrid logical clock timestamp; Node breaks ties. Versions
// are ordered by (Wall, Logical, Node), so two nodes never produce equal
// versions and last-writer-wins has one answer everywhere.
type Version struct {
	Wall    int64  `cbor:"1,keyasint"` // unix nanoseconds, physical part
	Logical uint32 `cbor:"2,keyasint"`
	Node    string `cbor:"3,keyasint"` // the writer
}

// Less reports whether v is older than o.
func (v Version) Less(o Version) bool {
	if v.Wall != o.Wall {
		return v.Wall < o.Wall
	}
	if v.Logical != o.Logical {
		return v.Logical < o.Logical
	}
	return v.Node < o.Node
}

// IsZero reports whether v is the zero Version, which no write carries.
func (v Version) IsZero() bool { return v.Wall == 0 && v.Logical == 0 && v.Node == "" }

// String formats v as wall.logical@node.
func (v Version) String() string {
	return strconv.FormatInt(v.Wall, 10) + "." + strconv.FormatUint(uint64(v.Logical), 10) + "@" + v.Node
}

// hlc is the clock state of one node: the highest (Wall, Logical) seen
// locally or from a peer. The caller serialises access.
type hlc struct {
	wall    int64
	logical uint32
}

// tick returns the next local timestamp: the physical time when it is ahead
// of everything seen, else the last seen one with the logical counter
// bumped, so versions never go backwards even when the wall clock does.
func (c *hlc) tick(now int64) (int64, uint32) {
	switch {
	case now > c.wall:
		c.wall, c.logical = now, 0
	case c.logical == math.MaxUint32:
		c.wall, c.logical = c.wall+1, 0
	default:
		c.logical++
	}
	return c.wall, c.logical
}

// observe advances the clock past a version seen from anywhere, so the
// next tick orders after it.
func (c *hlc) observe(v Version) {
	if v.Wall > c.wall || (v.Wall == c.wall && v.Logical > c.logical) {
		c.wall, c.logical = v.Wall, v.Logical
	}
}
