package cluster

import (
	"bytes"
	"encoding/json"

	"github.com/ctxos/ctxos/cluster/vfs"
)

func compact(b []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	return buf.String()
}

func decodeInto(b []byte, v any) error { return vfs.Decode(b, v) }
