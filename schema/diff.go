package schema

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// Op says how an item or a field differs between two snapshots.
type Op string

// Ops of [ItemDiff] and [FieldDiff].
const (
	OpAdd    Op = "added"
	OpRemove Op = "removed"
	OpChange Op = "changed"
)

// ItemDiff is one desired-state item (a VFS entry of a snapshot) that
// differs between two snapshots.
type ItemDiff struct {
	Path string `json:"path"` // VFS path: /ctx/web, /ztb/policy
	Kind string `json:"kind"` // ctx, mid, ztb or sys
	Name string `json:"name"` // web; policy for /ztb/policy, config for /sys/config
	Op   Op     `json:"op"`
	// Fields are the leaves that differ, in the order of the value: map
	// keys sorted, list elements by index. An added or removed item lists
	// every leaf it has; empty maps and lists are left out, and so is the
	// replicas of a CTX with autoscale.
	Fields []FieldDiff `json:"fields"`
}

// FieldDiff is one field that differs. Old and New are plain values as
// decoded from the snapshot: string, int64, float64, bool, nil,
// []any or map[string]any.
type FieldDiff struct {
	// Field is the CUE path of the field inside the item, such as
	// resources.memory, env.LOG_LEVEL, placement.nodes."example.com/zone"
	// or allow[2]. A list index is the old one for a removed element and
	// the new one otherwise.
	Field string `json:"field"`
	Op    Op     `json:"op"`
	Old   any    `json:"old,omitempty"`
	New   any    `json:"new,omitempty"`
}

// DiffSnapshots compares two snapshots field by field. A nil snapshot is
// empty (nothing desired). Items come in the order ctx, mid, ztb, sys, each
// by name. Values are compared as the snapshot holds them, with every
// default filled in, so writing a default out or leaving it to the schema
// is no change.
func DiffSnapshots(before, after *Snapshot) ([]ItemDiff, error) {
	old, err := entryMap(before)
	if err != nil {
		return nil, err
	}
	cur, err := entryMap(after)
	if err != nil {
		return nil, err
	}
	paths := make([]string, 0, len(old)+len(cur))
	for p := range old {
		paths = append(paths, p)
	}
	for p := range cur {
		if _, ok := old[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.SortFunc(paths, compareItemPaths)

	var out []ItemDiff
	for _, p := range paths {
		ob, inOld := old[p]
		nb, inNew := cur[p]
		if inOld && inNew && bytes.Equal(ob, nb) {
			continue
		}
		kind, name := splitItemPath(p)
		d := ItemDiff{Path: p, Kind: kind, Name: name, Fields: []FieldDiff{}}
		var ov, nv any
		if inOld {
			if ov, err = decodePlain(p, ob); err != nil {
				return nil, err
			}
		}
		if inNew {
			if nv, err = decodePlain(p, nb); err != nil {
				return nil, err
			}
		}
		if kind == "ctx" {
			dropMeaninglessReplicas(ov)
			dropMeaninglessReplicas(nv)
		}
		switch {
		case !inOld:
			d.Op = OpAdd
			flatten("", nv, OpAdd, &d.Fields)
		case !inNew:
			d.Op = OpRemove
			flatten("", ov, OpRemove, &d.Fields)
		default:
			d.Op = OpChange
			diffValue("", ov, nv, &d.Fields)
			if len(d.Fields) == 0 {
				// The bytes differ but no leaf does (only an empty map or
				// list appeared or went): show the whole value rather
				// than a change without content.
				d.Fields = []FieldDiff{{Field: "", Op: OpChange, Old: ov, New: nv}}
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// dropMeaninglessReplicas leaves replicas out of a CTX with autoscale: it
// is 0 there and means nothing ([Ctx.Autoscale]), and "replicas: 3 → 0"
// would read as scaling to zero.
func dropMeaninglessReplicas(v any) {
	if m, ok := v.(map[string]any); ok && m["autoscale"] != nil {
		delete(m, "replicas")
	}
}

// itemKinds orders the roots as the design lists them.
var itemKinds = []string{"ctx", "mid", "ztb", "sys"}

func splitItemPath(p string) (kind, name string) {
	kind, name, _ = strings.Cut(strings.TrimPrefix(p, "/"), "/")
	return kind, name
}

func compareItemPaths(a, b string) int {
	ak, an := splitItemPath(a)
	bk, bn := splitItemPath(b)
	rank := func(k string) int {
		if i := slices.Index(itemKinds, k); i >= 0 {
			return i
		}
		return len(itemKinds)
	}
	if c := rank(ak) - rank(bk); c != 0 {
		return c
	}
	if c := strings.Compare(ak, bk); c != 0 {
		return c
	}
	return strings.Compare(an, bn)
}

func entryMap(s *Snapshot) (map[string][]byte, error) {
	m := map[string][]byte{}
	if s == nil {
		return m, nil
	}
	for _, e := range s.Entries {
		if _, dup := m[e.Path]; dup {
			return nil, fmt.Errorf("snapshot has two entries at %s", e.Path)
		}
		m[e.Path] = e.Value
	}
	return m, nil
}

var plainDecMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{DefaultMapType: reflect.TypeOf(map[string]any(nil))}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// decodePlain decodes a snapshot value into plain Go values, with every
// integer as int64 (or float64 past its range) so that equal numbers
// compare equal whatever their CBOR encoding.
func decodePlain(path string, b []byte) (any, error) {
	var v any
	if err := plainDecMode.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%s: decode cbor: %w", path, err)
	}
	return plain(v), nil
}

func plain(v any) any {
	switch x := v.(type) {
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
		return float64(x)
	case float32:
		return float64(x)
	case map[string]any:
		for k, e := range x {
			x[k] = plain(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = plain(e)
		}
		return x
	case []byte:
		return string(x)
	}
	return v
}

// diffValue appends the leaves that differ between old and new at field.
func diffValue(field string, old, new any, out *[]FieldDiff) {
	om, oIsMap := old.(map[string]any)
	nm, nIsMap := new.(map[string]any)
	if oIsMap && nIsMap {
		for _, k := range unionKeys(om, nm) {
			ov, inOld := om[k]
			nv, inNew := nm[k]
			f := joinField(field, k)
			switch {
			case !inOld:
				flatten(f, nv, OpAdd, out)
			case !inNew:
				flatten(f, ov, OpRemove, out)
			default:
				diffValue(f, ov, nv, out)
			}
		}
		return
	}
	ol, oIsList := old.([]any)
	nl, nIsList := new.([]any)
	if oIsList && nIsList {
		diffList(field, ol, nl, out)
		return
	}
	if reflect.DeepEqual(old, new) || (isEmpty(old) && isEmpty(new)) {
		return
	}
	*out = append(*out, FieldDiff{Field: field, Op: OpChange, Old: old, New: new})
}

// isEmpty reports a value that says nothing: null, an empty map or list.
// A snapshot built from Go values with a nil slice holds null where Load
// writes an empty list; the two mean the same.
func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

// flatten lists every leaf of v under field as added or removed. Maps are
// walked; lists are leaves (a whole list reads better on one line than as
// numbered elements); empty maps and lists say nothing and are left out.
func flatten(field string, v any, op Op, out *[]FieldDiff) {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range unionKeys(x, nil) {
			flatten(joinField(field, k), x[k], op, out)
		}
		return
	case []any, nil:
		if isEmpty(x) {
			return
		}
	}
	fd := FieldDiff{Field: field, Op: op}
	if op == OpAdd {
		fd.New = v
	} else {
		fd.Old = v
	}
	*out = append(*out, fd)
}

// maxLCSCells bounds the work of a list diff; longer lists are shown as a
// whole list changed.
const maxLCSCells = 1 << 20

// diffList diffs two lists by their longest common subsequence: elements
// only in old are removed, only in new added, and a run of removals
// facing a run of additions of the same length is paired up element by
// element, so an edited element reads as a change of its fields (when the
// two are [similar]).
func diffList(field string, old, new []any, out *[]FieldDiff) {
	if len(old)*len(new) > maxLCSCells {
		if !reflect.DeepEqual(old, new) {
			*out = append(*out, FieldDiff{Field: field, Op: OpChange, Old: old, New: new})
		}
		return
	}
	// lcs[i][j] is the LCS length of old[i:] and new[j:].
	lcs := make([][]int, len(old)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(new)+1)
	}
	for i := len(old) - 1; i >= 0; i-- {
		for j := len(new) - 1; j >= 0; j-- {
			if reflect.DeepEqual(old[i], new[j]) {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(old) || j < len(new) {
		if i < len(old) && j < len(new) && reflect.DeepEqual(old[i], new[j]) {
			i, j = i+1, j+1
			continue
		}
		// A hunk: walk to the next common element.
		i0, j0 := i, j
		for (i < len(old) || j < len(new)) && !(i < len(old) && j < len(new) && reflect.DeepEqual(old[i], new[j])) {
			if j >= len(new) || (i < len(old) && lcs[i+1][j] >= lcs[i][j+1]) {
				i++
			} else {
				j++
			}
		}
		if i-i0 == j-j0 {
			for k := range i - i0 {
				o, n := old[i0+k], new[j0+k]
				if similar(o, n) {
					diffValue(indexField(field, j0+k), o, n, out)
					continue
				}
				*out = append(*out,
					FieldDiff{Field: indexField(field, i0+k), Op: OpRemove, Old: o},
					FieldDiff{Field: indexField(field, j0+k), Op: OpAdd, New: n})
			}
			continue
		}
		for k := i0; k < i; k++ {
			*out = append(*out, FieldDiff{Field: indexField(field, k), Op: OpRemove, Old: old[k]})
		}
		for k := j0; k < j; k++ {
			*out = append(*out, FieldDiff{Field: indexField(field, k), Op: OpAdd, New: new[k]})
		}
	}
}

// similar reports whether two list elements in the same place are one
// element edited rather than one replaced by another: scalars always are,
// maps when at least half their fields are equal. A ztb rule whose from,
// to and port all changed reads better as a rule removed and one added.
func similar(a, b any) bool {
	am, aIsMap := a.(map[string]any)
	bm, bIsMap := b.(map[string]any)
	if aIsMap != bIsMap {
		return false
	}
	if !aIsMap {
		return true
	}
	same := 0
	for k, v := range am {
		if w, ok := bm[k]; ok && reflect.DeepEqual(v, w) {
			same++
		}
	}
	return 2*same >= max(len(am), len(bm))
}

func unionKeys(a, b map[string]any) []string {
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// joinField appends a map key to a CUE path, quoting keys that are not
// identifiers (labels such as "example.com/zone", env names with dashes).
func joinField(field, key string) string {
	if !identRE.MatchString(key) {
		key = strconv.Quote(key)
	}
	if field == "" {
		return key
	}
	return field + "." + key
}

func indexField(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }

// FormatValue writes a plain value as CUE would: strings quoted, lists in
// brackets, maps in braces with sorted keys, so the same value always
// reads the same.
func FormatValue(v any) string {
	var b strings.Builder
	formatValue(&b, v)
	return b.String()
}

func formatValue(b *strings.Builder, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case string:
		b.WriteString(strconv.Quote(x))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case int:
		b.WriteString(strconv.Itoa(x))
	case float64:
		b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			formatValue(b, e)
		}
		b.WriteByte(']')
	case map[string]any:
		b.WriteByte('{')
		for i, k := range unionKeys(x, nil) {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(joinField("", k))
			b.WriteString(": ")
			formatValue(b, x[k])
		}
		b.WriteByte('}')
	default:
		fmt.Fprintf(b, "%v", x)
	}
}

// Totals is what the CTXs of a snapshot ask of the cluster. A CTX with
// autoscale counts with its min in the first figure of each pair and its
// max in the second; without autoscale both figures are equal.
type Totals struct {
	CTX        int `json:"ctx"`
	MID        int `json:"mid"`
	Autoscaled int `json:"autoscaled"` // CTXs with autoscale

	Replicas       int   `json:"replicas"`
	ReplicasMax    int   `json:"replicasMax"`
	CPUMilli       int64 `json:"cpuMilli"` // millicores × instances
	CPUMilliMax    int64 `json:"cpuMilliMax"`
	MemoryBytes    int64 `json:"memoryBytes"` // bytes × instances
	MemoryBytesMax int64 `json:"memoryBytesMax"`
	GPUs           int64 `json:"gpus"`
	GPUsMax        int64 `json:"gpusMax"`
}

// ErrTotalOverflow is returned by [TotalsOf] when a total does not fit in
// 64 bits. (It sits here rather than in the var block of load.go so that
// the diff stays one file.)
var ErrTotalOverflow = errors.New("total overflows int64")

// TotalsOf adds up the instances and resources of every CTX of snap. A nil
// snapshot has zero totals. It fails on a CTX whose memory amount is
// malformed or when a total overflows, naming the CTX.
func TotalsOf(snap *Snapshot) (Totals, error) {
	var t Totals
	if snap == nil {
		return t, nil
	}
	ctxs, err := snap.Ctxs()
	if err != nil {
		return t, err
	}
	mids, err := snap.Mids()
	if err != nil {
		return t, err
	}
	t.CTX, t.MID = len(ctxs), len(mids)
	names := make([]string, 0, len(ctxs))
	for name := range ctxs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		c := ctxs[name]
		lo, hi := c.Replicas, c.Replicas
		if c.Autoscale != nil {
			lo, hi = c.Autoscale.Min, c.Autoscale.Max
			t.Autoscaled++
		}
		mem, err := c.Resources.MemoryBytes()
		if err != nil {
			return Totals{}, fmt.Errorf("/ctx/%s: resources.memory: %w", name, err)
		}
		var ok [8]bool
		t.Replicas, ok[0] = addInt(t.Replicas, lo)
		t.ReplicasMax, ok[1] = addInt(t.ReplicasMax, hi)
		t.CPUMilli, ok[2] = mulAdd(t.CPUMilli, int64(c.Resources.CPU), lo)
		t.CPUMilliMax, ok[3] = mulAdd(t.CPUMilliMax, int64(c.Resources.CPU), hi)
		t.MemoryBytes, ok[4] = mulAdd(t.MemoryBytes, mem, lo)
		t.MemoryBytesMax, ok[5] = mulAdd(t.MemoryBytesMax, mem, hi)
		t.GPUs, ok[6] = mulAdd(t.GPUs, int64(c.Resources.GPU), lo)
		t.GPUsMax, ok[7] = mulAdd(t.GPUsMax, int64(c.Resources.GPU), hi)
		if slices.Contains(ok[:], false) {
			return Totals{}, fmt.Errorf("/ctx/%s: %w", name, ErrTotalOverflow)
		}
	}
	return t, nil
}

func addInt(a, b int) (int, bool) {
	s := a + b
	return s, (b >= 0) == (s >= a)
}

// mulAdd returns sum + x*n, and false when a step overflows or an input
// is negative (the schema allows neither).
func mulAdd(sum, x int64, n int) (int64, bool) {
	if x < 0 || n < 0 || sum < 0 {
		return 0, false
	}
	hi, lo := bits.Mul64(uint64(x), uint64(n))
	if hi != 0 || lo > math.MaxInt64 {
		return 0, false
	}
	s := sum + int64(lo)
	return s, s >= sum
}

// FormatBytes writes a byte count in binary units: exact ("512Mi", "3Gi")
// when the count is a whole number of the largest unit that fits,
// otherwise with up to two decimals ("2.25Gi"), and in bytes below 1Ki.
func FormatBytes(n int64) string {
	if n < 0 {
		return strconv.FormatInt(n, 10) + "B"
	}
	units := []struct {
		suffix string
		size   int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}}
	for _, u := range units {
		if n < u.size {
			continue
		}
		if n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
		s := strconv.FormatFloat(float64(n)/float64(u.size), 'f', 2, 64)
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		return s + u.suffix
	}
	return strconv.FormatInt(n, 10) + "B"
}
