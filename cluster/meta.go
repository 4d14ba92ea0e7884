package cluster

import (
	"fmt"
	"sort"
	"time"

	"github.com/ctxos/ctxos/cluster/vfs"
)

// Meta is what a node tells the others about itself in memberlist's node
// metadata (at most 512 bytes once encoded).
type Meta struct {
	API    string            `cbor:"1,keyasint,omitempty" json:"api,omitempty"`
	Labels map[string]string `cbor:"2,keyasint,omitempty" json:"labels,omitempty"`
	Roles  []string          `cbor:"3,keyasint,omitempty" json:"roles,omitempty"`
	// Leaving is set just before a graceful leave, so the others can tell
	// "left" from "failed": memberlist does not expose that distinction.
	Leaving bool `cbor:"4,keyasint,omitempty" json:"leaving,omitempty"`
	// Started is the node's VFS clock (a version's Wall) when this life of
	// it started (vfs.Store.StartEpoch): every entry it writes from then on
	// has at least this Wall, and the replica keeps the clock across
	// restarts, so an entry below it is from an earlier life.
	Started int64 `cbor:"5,keyasint,omitempty" json:"started,omitempty"`
}

func encodeMeta(m Meta, limit int) ([]byte, error) {
	b, err := vfs.Encode(m)
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("node metadata is %d bytes, more than memberlist's limit of %d: use fewer or shorter labels", len(b), limit)
	}
	return b, nil
}

func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, nil
	}
	err := vfs.Decode(b, &m)
	return m, err
}

// MemberState is a member's state as this node sees it.
type MemberState string

const (
	StateAlive  MemberState = "alive"
	StateFailed MemberState = "failed"
	StateLeft   MemberState = "left"
)

// Member is one node of the cluster as seen by this node.
type Member struct {
	Name   string            `json:"name"`
	Addr   string            `json:"addr"`
	API    string            `json:"api,omitempty"`
	State  MemberState       `json:"state"`
	Labels map[string]string `json:"labels,omitempty"`
	Roles  []string          `json:"roles,omitempty"`
	// Since is when this node saw the member enter its current state.
	Since time.Time `json:"since"`
	// Started is Meta.Started: the member's VFS clock (Wall, Unix
	// nanoseconds) when it started; 0 when unknown.
	Started int64 `json:"started,omitempty"`
}

func sortMembers(ms []Member) {
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
}
