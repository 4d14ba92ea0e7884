package vfs

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

var (
	encMode = mustEncMode()
	decMode = mustDecMode()
)

func mustEncMode() cbor.EncMode {
	opts := cbor.CoreDetEncOptions()
	// Times as RFC 3339 text: readable once the API turns a value into
	// JSON, and still one encoding per instant.
	opts.Time = cbor.TimeRFC3339Nano
	m, err := opts.EncMode()
	if err != nil {
		panic(fmt.Sprintf("vfs: cbor encoding options: %v", err))
	}
	return m
}

func mustDecMode() cbor.DecMode {
	m, err := cbor.DecOptions{
		// Values come from peers; keep a hostile one from exhausting memory.
		MaxNestedLevels:  64,
		MaxArrayElements: 1 << 20,
		MaxMapPairs:      1 << 20,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("vfs: cbor decoding options: %v", err))
	}
	return m
}

// Encode returns the canonical CBOR encoding of v (core deterministic
// encoding: sorted map keys, shortest forms), so two nodes exporting the
// same value write identical bytes.
func Encode(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("cbor encode %T: %w", v, err)
	}
	return b, nil
}

// Decode parses CBOR bytes into v.
func Decode(b []byte, v any) error {
	if err := decMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("cbor decode into %T: %w", v, err)
	}
	return nil
}

// wellFormed reports an error if b is not exactly one well-formed CBOR item.
func wellFormed(b []byte) error { return decMode.Wellformed(b) }
