package schema

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// VFS paths of the desired state that are not per name.
const (
	PathZtb = "/ztb/policy"
	PathSys = "/sys/config"
)

// Snapshot is the concrete desired state of one commit.
type Snapshot struct {
	Entries []Entry // sorted by Path
	Hash    string  // "sha256:" + hex, see HashEntries
}

// Entry is one VFS entry of a snapshot.
type Entry struct {
	Path  string // VFS path: /ctx/<name>, /mid/<name>, /ztb/policy, /sys/config
	Value []byte // canonical CBOR of Ctx, Mid, Ztb or Sys
}

// encMode is core deterministic CBOR (RFC 8949 section 4.2: sorted map
// keys, shortest encodings), so that every machine exporting the same
// commit writes the same bytes.
var encMode = func() cbor.EncMode {
	opts := cbor.CoreDetEncOptions()
	// Times (the manifest's commit time) as RFC 3339 text, as package vfs
	// writes them, so they read as times once the API shows them as JSON.
	opts.Time = cbor.TimeRFC3339Nano
	em, err := opts.EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

// Encode returns the canonical CBOR encoding of v, as Load writes values.
func Encode(v any) ([]byte, error) { return encMode.Marshal(v) }

// Decode decodes a CBOR value of a snapshot entry into v.
func Decode(value []byte, v any) error {
	if err := cbor.Unmarshal(value, v); err != nil {
		return fmt.Errorf("decode cbor: %w", err)
	}
	return nil
}

// HashEntries returns "sha256:" and the hex SHA-256 of the entries in the
// order given (Load sorts them by path). Each entry contributes its path
// and value, each preceded by its length as a big-endian uint64, so that
// no two different entry lists hash the same bytes.
func HashEntries(entries []Entry) string {
	h := sha256.New()
	var n [8]byte
	for _, e := range entries {
		binary.BigEndian.PutUint64(n[:], uint64(len(e.Path)))
		h.Write(n[:])
		h.Write([]byte(e.Path))
		binary.BigEndian.PutUint64(n[:], uint64(len(e.Value)))
		h.Write(n[:])
		h.Write(e.Value)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Ctxs decodes every /ctx/<name> entry, by name.
func (s *Snapshot) Ctxs() (map[string]Ctx, error) { return decodeRoot[Ctx](s, "/ctx/") }

// Mids decodes every /mid/<name> entry, by name.
func (s *Snapshot) Mids() (map[string]Mid, error) { return decodeRoot[Mid](s, "/mid/") }

// Ztb decodes the /ztb/policy entry.
func (s *Snapshot) Ztb() (Ztb, error) { return decodeOne[Ztb](s, PathZtb) }

// Sys decodes the /sys/config entry.
func (s *Snapshot) Sys() (Sys, error) { return decodeOne[Sys](s, PathSys) }

func decodeRoot[T any](s *Snapshot, prefix string) (map[string]T, error) {
	out := make(map[string]T)
	for _, e := range s.Entries {
		name, ok := strings.CutPrefix(e.Path, prefix)
		if !ok {
			continue
		}
		var v T
		if err := Decode(e.Value, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Path, err)
		}
		out[name] = v
	}
	return out, nil
}

func decodeOne[T any](s *Snapshot, path string) (T, error) {
	var v T
	for _, e := range s.Entries {
		if e.Path == path {
			if err := Decode(e.Value, &v); err != nil {
				return v, fmt.Errorf("%s: %w", path, err)
			}
			return v, nil
		}
	}
	return v, fmt.Errorf("%w: %s", ErrNoEntry, path)
}
