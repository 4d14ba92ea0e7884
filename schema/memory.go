package schema

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
)

var memoryRE = regexp.MustCompile(`^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$`)

var memoryUnits = map[string]int64{
	"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
	"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
}

// MemoryBytes converts a memory amount as the schema writes it ("512Mi",
// "1G", "1048576") to bytes.
func MemoryBytes(s string) (int64, error) {
	m := memoryRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%w %q: want a whole number with an optional unit Ki, Mi, Gi, Ti, k, M, G or T", ErrMemory, s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	unit := memoryUnits[m[2]]
	if err != nil || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("%w %q: too large", ErrMemory, s)
	}
	return n * unit, nil
}
