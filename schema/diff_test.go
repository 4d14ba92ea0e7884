package schema

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// renderDiff writes diffs one field per line, so that a test's want reads
// like the change it describes.
func renderDiff(diffs []ItemDiff) []string {
	var out []string
	for _, d := range diffs {
		for _, f := range d.Fields {
			line := fmt.Sprintf("%s %s/%s %s:", d.Op, d.Kind, d.Name, f.Field)
			switch f.Op {
			case OpAdd:
				line += " + " + FormatValue(f.New)
			case OpRemove:
				line += " - " + FormatValue(f.Old)
			case OpChange:
				line += " " + FormatValue(f.Old) + " -> " + FormatValue(f.New)
			}
			out = append(out, line)
		}
	}
	return out
}

// loadText loads a repository whose whole desired state is one file.
func loadText(tb testing.TB, text string) *Snapshot {
	tb.Helper()
	snap, diags := load(tb, writeRepo(tb, map[string]string{"ctx/all.cue": text}))
	if len(diags) > 0 {
		tb.Fatalf("load:\n%s\n%v", text, diags)
	}
	return snap
}

func TestDiffSnapshots(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name          string
		before, after string
		want          []string
	}{
		{
			name:   "defaults written out are no change",
			before: `ctx: web: command: "web"`,
			after: `ctx: web: {command: "web", replicas: 1, restart: "always", resources: {cpu: 100, memory: "128Mi", gpu: 0}
				stop: grace: "10s", placement: strategy: "binpack"}`,
		},
		{
			name:   "scalar fields",
			before: `ctx: web: {command: "web", replicas: 3, resources: memory: "256Mi"}`,
			after:  `ctx: web: {command: "web", replicas: 5, resources: memory: "512Mi"}`,
			want: []string{
				`changed ctx/web replicas: 3 -> 5`,
				`changed ctx/web resources.memory: "256Mi" -> "512Mi"`,
			},
		},
		{
			name:   "map keys added, removed and changed",
			before: `ctx: web: {command: "web", env: {A: "1", B: "2"}}`,
			after:  `ctx: web: {command: "web", env: {B: "3", C: "4"}}`,
			want: []string{
				`changed ctx/web env.A: - "1"`,
				`changed ctx/web env.B: "2" -> "3"`,
				`changed ctx/web env.C: + "4"`,
			},
		},
		{
			name:   "nested map with a key that is not an identifier",
			before: `ctx: web: {command: "web", placement: nodes: "example.com/zone": "a"}`,
			after:  `ctx: web: {command: "web", placement: nodes: "example.com/zone": "b"}`,
			want:   []string{`changed ctx/web placement.nodes."example.com/zone": "a" -> "b"`},
		},
		{
			name:   "list appended to",
			before: `ctx: web: {command: "web", args: ["-v"]}`,
			after:  `ctx: web: {command: "web", args: ["-v", "--port=80"]}`,
			want:   []string{`changed ctx/web args[1]: + "--port=80"`},
		},
		{
			name:   "list element inserted in the middle",
			before: `ctx: web: {command: "web", args: ["a", "c"]}`,
			after:  `ctx: web: {command: "web", args: ["a", "b", "c"]}`,
			want:   []string{`changed ctx/web args[1]: + "b"`},
		},
		{
			name:   "list element edited",
			before: `ctx: web: {command: "web", args: ["a", "b", "c"]}`,
			after:  `ctx: web: {command: "web", args: ["a", "x", "c"]}`,
			want:   []string{`changed ctx/web args[1]: "b" -> "x"`},
		},
		{
			name:   "list elements removed",
			before: `ctx: web: {command: "web", args: ["a", "b", "c", "d"]}`,
			after:  `ctx: web: {command: "web", args: ["a", "d"]}`,
			want: []string{
				`changed ctx/web args[1]: - "b"`,
				`changed ctx/web args[2]: - "c"`,
			},
		},
		{
			name:   "field inside a list of objects",
			before: `ctx: web: {command: "web", mounts: [{source: "/a", target: "/a"}, {type: "tmpfs", target: "/tmp"}]}`,
			after:  `ctx: web: {command: "web", mounts: [{source: "/a", target: "/a", readonly: true}, {type: "tmpfs", target: "/tmp"}]}`,
			want:   []string{`changed ctx/web mounts[0].readonly: false -> true`},
		},
		{
			name: "rule added to a list of objects",
			before: `ctx: web: {command: "web", ports: http: 80}
				ctx: api: command: "api"
				ztb: allow: [{from: "api", to: "web"}]`,
			after: `ctx: web: {command: "web", ports: http: 80}
				ctx: api: command: "api"
				ztb: allow: [{from: "web", to: "api"}, {from: "api", to: "web"}]`,
			// Rule.Port's omitempty does not apply to CBOR, so the
			// snapshot holds port 0 for "every port".
			want: []string{`changed ztb/policy allow[0]: + {from: "web", port: 0, to: "api"}`},
		},
		{
			name: "rule edited in place",
			before: `ctx: web: {command: "web", ports: http: 80}
				ctx: api: command: "api"
				ztb: allow: [{from: "web", to: "api"}, {from: "api", to: "web"}]`,
			after: `ctx: web: {command: "web", ports: http: 80}
				ctx: api: command: "api"
				ztb: allow: [{from: "web", to: "api"}, {from: "api", to: "web", port: "http"}]`,
			want: []string{`changed ztb/policy allow[1].port: 0 -> "http"`},
		},
		{
			name: "rule replaced by two others",
			before: `ctx: web: {command: "web", ports: http: 80}
				ctx: api: command: "api"
				ztb: allow: [{from: "api", to: "web"}]`,
			after: `ctx: web: {command: "web", ports: http: 80}
				ctx: api: command: "api"
				ztb: allow: [{from: "web", to: "api"}, {from: "api", to: "web", port: 80}]`,
			want: []string{
				`changed ztb/policy allow[0]: - {from: "api", port: 0, to: "web"}`,
				`changed ztb/policy allow[0]: + {from: "web", port: 0, to: "api"}`,
				`changed ztb/policy allow[1]: + {from: "api", port: 80, to: "web"}`,
			},
		},
		{
			name: "rule replaced by an unrelated one",
			before: `ctx: web: {command: "web", ports: http: 80}
				ctx: api: command: "api"
				ztb: allow: [{from: "api", to: "web"}]`,
			after: `ctx: web: {command: "web", ports: http: 80}
				ctx: api: command: "api"
				ztb: allow: [{from: "web", to: "api", port: 1}]`,
			want: []string{
				`changed ztb/policy allow[0]: - {from: "api", port: 0, to: "web"}`,
				`changed ztb/policy allow[0]: + {from: "web", port: 1, to: "api"}`,
			},
		},
		{
			name:   "replicas to autoscale",
			before: `ctx: web: {command: "web", replicas: 2}`,
			after:  `ctx: web: {command: "web", autoscale: {min: 1, max: 4}}`,
			want: []string{
				`changed ctx/web autoscale.max: + 4`,
				`changed ctx/web autoscale.min: + 1`,
				`changed ctx/web autoscale.targetCPU: + 70`,
				`changed ctx/web replicas: - 2`,
			},
		},
		{
			name:   "autoscale bounds",
			before: `ctx: web: {command: "web", autoscale: {min: 1, max: 4}}`,
			after:  `ctx: web: {command: "web", autoscale: {min: 2, max: 4}}`,
			want:   []string{`changed ctx/web autoscale.min: 1 -> 2`},
		},
		{
			name:   "optional struct appears with its defaults",
			before: `ctx: web: {command: "web"}`,
			after:  `ctx: web: {command: "web", health: tcp: port: 80}`,
			want: []string{
				`changed ctx/web health.interval: + "10s"`,
				`changed ctx/web health.tcp.port: + 80`,
				`changed ctx/web health.threshold: + 3`,
				`changed ctx/web health.timeout: + "2s"`,
			},
		},
		{
			name:   "item added lists every leaf with its default, but no empty map or list",
			before: `ctx: web: {command: "web"}`,
			after:  `ctx: web: {command: "web"}, ctx: api: {command: "api", args: ["-v"], env: X: "1"}`,
			want: []string{
				`added ctx/api args: + ["-v"]`,
				`added ctx/api command: + "api"`,
				`added ctx/api env.X: + "1"`,
				`added ctx/api isolate: + false`,
				`added ctx/api placement.strategy: + "binpack"`,
				`added ctx/api replicas: + 1`,
				`added ctx/api resources.cpu: + 100`,
				`added ctx/api resources.gpu: + 0`,
				`added ctx/api resources.memory: + "128Mi"`,
				`added ctx/api restart: + "always"`,
				`added ctx/api rollout.maxUnavailable: + 1`,
				`added ctx/api runtime: + "process"`,
				`added ctx/api stop.grace: + "10s"`,
				`added ctx/api stop.signal: + "SIGTERM"`,
			},
		},
		{
			name:   "items come in the order ctx, mid, ztb, sys",
			before: `ctx: web: command: "web", mid: cache: {driver: "redis", nodes: count: 2, params: port: 6379}`,
			after: `ctx: web: command: "web2", ztb: default: "allow", sys: sync: interval: "1m"
				mid: cache: {driver: "redis", nodes: count: 3, params: {port: 6380, "max-memory": "1gb"}}`,
			want: []string{
				`changed ctx/web command: "web" -> "web2"`,
				`changed mid/cache nodes.count: 2 -> 3`,
				`changed mid/cache params."max-memory": + "1gb"`,
				`changed mid/cache params.port: 6379 -> 6380`,
				`changed ztb/policy default: "deny" -> "allow"`,
				`changed sys/config sync.interval: "30s" -> "1m"`,
			},
		},
		{
			name:   "item removed",
			before: `ctx: web: command: "web", mid: cache: {driver: "process", nodes: all: true, params: command: "redis"}`,
			after:  `ctx: web: command: "web"`,
			want: []string{
				`removed mid/cache driver: - "process"`,
				`removed mid/cache nodes.all: - true`,
				`removed mid/cache params.command: - "redis"`,
				`removed mid/cache params.restart: - "always"`,
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before, after := loadText(t, tc.before), loadText(t, tc.after)
			diffs, err := DiffSnapshots(before, after)
			if err != nil {
				t.Fatal(err)
			}
			if got := renderDiff(diffs); !slices.Equal(got, tc.want) {
				t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(tc.want, "\n\t"))
			}
			// The reverse diff mirrors it: as many fields, ops swapped.
			back, err := DiffSnapshots(after, before)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := len(renderDiff(back)), len(tc.want); got != want {
				t.Errorf("reverse diff has %d fields, want %d", got, want)
			}
		})
	}
}

func TestDiffSnapshotsNilAndEmpty(t *testing.T) {
	t.Parallel()
	snap := loadText(t, `ctx: web: command: "web"`)
	diffs, err := DiffSnapshots(nil, snap)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range diffs {
		got = append(got, string(d.Op)+" "+d.Path)
	}
	want := []string{"added /ctx/web", "added /ztb/policy", "added /sys/config"}
	if !slices.Equal(got, want) {
		t.Errorf("diff from nothing = %v, want %v", got, want)
	}
	if diffs, err := DiffSnapshots(snap, snap); err != nil || len(diffs) != 0 {
		t.Errorf("diff with itself = %v, %v; want nothing", diffs, err)
	}
	if diffs, err := DiffSnapshots(nil, nil); err != nil || len(diffs) != 0 {
		t.Errorf("diff of two nil snapshots = %v, %v; want nothing", diffs, err)
	}
}

func TestDiffSnapshotsBadInput(t *testing.T) {
	t.Parallel()
	good, err := Encode(map[string]any{"a": 1})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		snap *Snapshot
		want string
	}{
		{"bad cbor", &Snapshot{Entries: []Entry{{Path: "/ctx/web", Value: []byte{0xff}}}}, "/ctx/web: decode cbor"},
		{"duplicate path", &Snapshot{Entries: []Entry{{Path: "/ctx/web", Value: good}, {Path: "/ctx/web", Value: good}}}, "two entries at /ctx/web"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DiffSnapshots(nil, tc.snap)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestDiffNilEqualsEmpty covers snapshots built from Go values, where a
// nil slice encodes as null and Load writes an empty list.
func TestDiffNilEqualsEmpty(t *testing.T) {
	t.Parallel()
	withNil, err := snapshotOf(&Config{Ctx: map[string]Ctx{"web": {Command: "web", Replicas: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	withEmpty, err := snapshotOf(&Config{Ctx: map[string]Ctx{"web": {Command: "web", Replicas: 1, Args: []string{}, Env: map[string]string{}}}})
	if err != nil {
		t.Fatal(err)
	}
	diffs, err := DiffSnapshots(withNil, withEmpty)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"changed ctx/web : " + FormatValue(mustPlain(t, withNil, "/ctx/web")) + " -> " + FormatValue(mustPlain(t, withEmpty, "/ctx/web"))}
	if got := renderDiff(diffs); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func mustPlain(tb testing.TB, s *Snapshot, path string) any {
	tb.Helper()
	for _, e := range s.Entries {
		if e.Path == path {
			v, err := decodePlain(path, e.Value)
			if err != nil {
				tb.Fatal(err)
			}
			return v
		}
	}
	tb.Fatalf("no %s", path)
	return nil
}

func TestDiffListLong(t *testing.T) {
	t.Parallel()
	long := func(n int, last string) []any {
		l := make([]any, n)
		for i := range l {
			l[i] = int64(i)
		}
		l[n-1] = last
		return l
	}
	var got []FieldDiff
	diffList("args", long(2000, "x"), long(2000, "y"), &got)
	if len(got) != 1 || got[0].Field != "args" || got[0].Op != OpChange {
		t.Errorf("a list too long for LCS: got %d fields (first %+v), want one change of the whole list", len(got), got[0])
	}
	got = nil
	diffList("args", long(2000, "x"), long(2000, "x"), &got)
	if len(got) != 0 {
		t.Errorf("equal long lists: got %d fields, want none", len(got))
	}
}

func TestFormatValue(t *testing.T) {
	t.Parallel()
	cases := []struct {
		v    any
		want string
	}{
		{nil, "null"},
		{"a\"b", `"a\"b"`},
		{int64(-3), "-3"},
		{1.5, "1.5"},
		{true, "true"},
		{[]any{}, "[]"},
		{[]any{"a", int64(1)}, `["a", 1]`},
		{map[string]any{}, "{}"},
		{map[string]any{"to": "web", "from": "api", "a-b": []any{true}}, `{"a-b": [true], from: "api", to: "web"}`},
	}
	for _, tc := range cases {
		if got := FormatValue(tc.v); got != tc.want {
			t.Errorf("FormatValue(%#v) = %s, want %s", tc.v, got, tc.want)
		}
	}
}

func TestTotalsOf(t *testing.T) {
	t.Parallel()
	ctx := func(replicas, cpu int, memory string, gpu int, as *Autoscale) Ctx {
		return Ctx{Command: "x", Replicas: replicas, Autoscale: as, Resources: Resources{CPU: cpu, Memory: memory, GPU: gpu}}
	}
	cases := []struct {
		name string
		cfg  *Config
		want Totals
		err  string
	}{
		{name: "nil snapshot", want: Totals{}},
		{
			name: "fixed replicas in binary and decimal units",
			cfg: &Config{
				Ctx: map[string]Ctx{
					"web": ctx(3, 250, "256Mi", 0, nil),
					"db":  ctx(1, 1000, "1G", 1, nil),
				},
				Mid: map[string]Mid{"cache": {Driver: "redis", Nodes: Nodes{All: true}}},
			},
			want: Totals{
				CTX: 2, MID: 1,
				Replicas: 4, ReplicasMax: 4,
				CPUMilli: 1750, CPUMilliMax: 1750,
				MemoryBytes: 3*256<<20 + 1e9, MemoryBytesMax: 3*256<<20 + 1e9,
				GPUs: 1, GPUsMax: 1,
			},
		},
		{
			name: "autoscale counts min and max",
			cfg: &Config{Ctx: map[string]Ctx{
				"web": ctx(2, 100, "128Mi", 0, nil),
				"api": ctx(0, 500, "1Gi", 1, &Autoscale{Min: 1, Max: 4, TargetCPU: 70}),
			}},
			want: Totals{
				CTX: 2, Autoscaled: 1,
				Replicas: 3, ReplicasMax: 6,
				CPUMilli: 700, CPUMilliMax: 2200,
				MemoryBytes: 256<<20 + 1<<30, MemoryBytesMax: 256<<20 + 4<<30,
				GPUs: 1, GPUsMax: 4,
			},
		},
		{
			name: "zero replicas ask for nothing",
			cfg:  &Config{Ctx: map[string]Ctx{"web": ctx(0, 100, "128Mi", 0, nil)}},
			want: Totals{CTX: 1},
		},
		{
			name: "malformed memory names the CTX",
			cfg:  &Config{Ctx: map[string]Ctx{"web": ctx(1, 100, "lots", 0, nil)}},
			err:  `/ctx/web: resources.memory: invalid memory amount "lots"`,
		},
		{
			name: "overflow names the CTX",
			cfg:  &Config{Ctx: map[string]Ctx{"big": ctx(math.MaxInt32, 100, "8Ti", 0, nil)}},
			err:  "/ctx/big: total overflows int64",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var snap *Snapshot
			if tc.cfg != nil {
				var err error
				if snap, err = snapshotOf(tc.cfg); err != nil {
					t.Fatal(err)
				}
			}
			got, err := TotalsOf(snap)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(tc.err, "overflow") && !errors.Is(err, ErrTotalOverflow) {
					t.Errorf("err = %v, want ErrTotalOverflow", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestFormatBytes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		n    int64
		want string
	}{
		{0, "0B"},
		{1023, "1023B"},
		{1024, "1Ki"},
		{512 << 20, "512Mi"},
		{3 << 30, "3Gi"},
		{2304 << 20, "2.25Gi"},
		{1e9, "953.67Mi"},
		{5 << 40, "5Ti"},
		{math.MaxInt64, "8388608Ti"},
		{-1, "-1B"},
	}
	for _, tc := range cases {
		if got := FormatBytes(tc.n); got != tc.want {
			t.Errorf("FormatBytes(%d) = %s, want %s", tc.n, got, tc.want)
		}
	}
}

// BenchmarkDiffSnapshots diffs two snapshots of 1000 CTXs of which 100
// changed (replicas and an env key), the size of a large repository.
func BenchmarkDiffSnapshots(b *testing.B) {
	build := func(changed bool) *Snapshot {
		cfg := &Config{Ctx: map[string]Ctx{}}
		for i := range 1000 {
			c := Ctx{Command: "app", Replicas: 2, Args: []string{"--id", strconv.Itoa(i)}, Env: map[string]string{"A": "1"},
				Resources: Resources{CPU: 100, Memory: "128Mi"}, Ports: map[string]int{"http": 8080}}
			if changed && i%10 == 0 {
				c.Replicas, c.Env = 3, map[string]string{"A": "2", "B": "x"}
			}
			cfg.Ctx["app"+strconv.Itoa(i)] = c
		}
		snap, err := snapshotOf(cfg)
		if err != nil {
			b.Fatal(err)
		}
		return snap
	}
	before, after := build(false), build(true)
	b.ReportAllocs()
	for b.Loop() {
		diffs, err := DiffSnapshots(before, after)
		if err != nil || len(diffs) != 100 {
			b.Fatalf("%d diffs, %v", len(diffs), err)
		}
	}
}
