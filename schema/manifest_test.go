package schema

import (
	"errors"
	"strings"
	"testing"
)

func TestAssembleWaitsForEveryEntryAndTheHash(t *testing.T) {
	snap := &Snapshot{Entries: []Entry{
		{Path: "/ctx/a", Value: []byte{0x01}},
		{Path: "/sys/config", Value: []byte{0x02}},
	}}
	snap.Hash = HashEntries(snap.Entries)
	m := NewManifest(snap, "abc123", 7)
	replica := map[string][]byte{"/ctx/a": {0x01}}
	get := func(p string) ([]byte, bool) { v, ok := replica[p]; return v, ok }

	if _, err := Assemble(m, get); !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "/sys/config") {
		t.Fatalf("with an entry missing: err = %v, want ErrIncomplete naming /sys/config", err)
	}
	replica["/sys/config"] = []byte{0x03} // the value of another commit
	if _, err := Assemble(m, get); !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "content hash") {
		t.Fatalf("with a value of another commit: err = %v, want a hash mismatch", err)
	}
	replica["/sys/config"] = []byte{0x02}
	replica["/ctx/stale"] = []byte{0x09} // not in the manifest: ignored
	got, err := Assemble(m, get)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash != snap.Hash || len(got.Entries) != 2 {
		t.Fatalf("assembled %+v, want the published snapshot", got)
	}
}
