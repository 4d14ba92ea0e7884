package schema

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeRepo writes files (slash path → content) into a new temporary
// directory and returns it.
func writeRepo(tb testing.TB, files map[string]string) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, content := range files {
		writeFile(tb, filepath.Join(dir, filepath.FromSlash(name)), content)
	}
	return dir
}

func writeFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

func load(tb testing.TB, dir string) (*Snapshot, []Diagnostic) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snap, diags, err := Load(ctx, dir)
	if err != nil {
		tb.Fatalf("Load(%s): %v", dir, err)
	}
	return snap, diags
}

func vet(tb testing.TB, dir string) (*Summary, []Diagnostic) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sum, diags, err := Vet(ctx, dir)
	if err != nil {
		tb.Fatalf("Vet(%s): %v", dir, err)
	}
	return sum, diags
}

func diagStrings(diags []Diagnostic) []string {
	var out []string
	for _, d := range diags {
		out = append(out, d.String())
	}
	return out
}

func TestLoadValid(t *testing.T) {
	t.Parallel()
	dir := writeRepo(t, map[string]string{
		"ctx/web.cue": `package config

ctx: web: {
	image:    "docker.io/library/nginx:1.27"
	replicas: 3
	ports: http: 8080
	health: http: port: 8080
	requires: ["cache"]
}
`,
		"ctx/worker.cue": `ctx: worker: {
	command: "/usr/bin/worker"
	args: ["--queue", "jobs"]
	autoscale: {min: 1, max: 5}
	resources: {cpu: 500, memory: "1Gi", gpu: 1}
	placement: {strategy: "spread", nodes: zone: "a", devices: ["gpu"]}
	mounts: [{source: "/data", target: "/data", readonly: true}, {type: "tmpfs", target: "/tmp"}]
}
`,
		"mid/cache.cue": `mid: cache: {
	driver: "process"
	nodes: count: 2
	params: {command: "redis-server", args: ["--port", "6379"]}
}
`,
		"ztb/policy.cue": `ztb: allow: [{from: "web", to: "cache", port: 6379}, {from: "worker", to: "web", port: "http"}]`,
		"sys/sys.cue":    `sys: sync: interval: "1m"`,
	})
	snap, diags := load(t, dir)
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", diags)
	}
	var paths []string
	for _, e := range snap.Entries {
		paths = append(paths, e.Path)
	}
	if got, want := strings.Join(paths, " "), "/ctx/web /ctx/worker /mid/cache /sys/config /ztb/policy"; got != want {
		t.Errorf("paths = %q, want %q", got, want)
	}
	if got := HashEntries(snap.Entries); got != snap.Hash || !strings.HasPrefix(got, "sha256:") {
		t.Errorf("HashEntries = %q, snapshot hash %q", got, snap.Hash)
	}
	sum, diags := vet(t, dir)
	if len(diags) > 0 || sum == nil {
		t.Fatalf("Vet: summary %v, diagnostics %v", sum, diags)
	}
	if got, want := *sum, (Summary{Ctx: 2, Mid: 1}); got != want {
		t.Errorf("Vet summary = %+v, want %+v", got, want)
	}

	ctxs, err := snap.Ctxs()
	if err != nil {
		t.Fatal(err)
	}
	web, worker := ctxs["web"], ctxs["worker"]
	// Defaults the schema fills in must reach the Go types.
	checks := []struct {
		name      string
		got, want any
	}{
		{"web runtime", web.Runtime, RuntimeContainerd},
		{"web replicas", web.Replicas, 3},
		{"web cpu default", web.Resources.CPU, 100},
		{"web memory default", web.Resources.Memory, "128Mi"},
		{"web restart default", web.Restart, RestartAlways},
		{"web strategy default", web.Placement.Strategy, StrategyBinpack},
		{"web health path default", web.Health.HTTP.Path, "/"},
		{"web health interval default", web.Health.Interval, "10s"},
		{"web stop signal default", web.Stop.Signal, "SIGTERM"},
		{"web stop grace default", web.Stop.Grace, "10s"},
		{"web maxUnavailable default", web.Rollout.MaxUnavailable, 1},
		{"web port", web.Ports["http"], 8080},
		{"worker runtime", worker.Runtime, RuntimeProcess},
		{"worker replicas with autoscale", worker.Replicas, 0},
		{"worker autoscale target default", worker.Autoscale.TargetCPU, 70},
		{"worker gpu", worker.Resources.GPU, 1},
		{"worker zone", worker.Placement.Nodes["zone"], "a"},
		{"worker mount type default", worker.Mounts[0].Type, "bind"},
		{"worker tmpfs", worker.Mounts[1].Type, "tmpfs"},
		{"worker args", strings.Join(worker.Args, " "), "--queue jobs"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	mids, err := snap.Mids()
	if err != nil {
		t.Fatal(err)
	}
	var pp ProcessParams
	if err := mids["cache"].DecodeParams(&pp); err != nil {
		t.Fatal(err)
	}
	if got, want := pp.Command+" "+strings.Join(pp.Args, " ")+" "+pp.Restart, "redis-server --port 6379 always"; got != want {
		t.Errorf("process params = %q, want %q", got, want)
	}
	if got, want := mids["cache"].Nodes.Count, 2; got != want {
		t.Errorf("nodes.count = %d, want %d", got, want)
	}

	ztb, err := snap.Ztb()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ztb.Default, "deny"; got != want {
		t.Errorf("ztb default = %q, want %q", got, want)
	}
	if got, want := ztb.Allow[0].Port, (PortRef{Number: 6379}); got != want {
		t.Errorf("rule 0 port = %+v, want %+v", got, want)
	}
	if got, want := ztb.Allow[1].Port, (PortRef{Name: "http"}); got != want {
		t.Errorf("rule 1 port = %+v, want %+v", got, want)
	}
	sys, err := snap.Sys()
	if err != nil {
		t.Fatal(err)
	}
	want := Sys{SyncConfig{"1m"}, SchedulerConfig{"binpack"}, GossipConfig{"lan"}, HistoryConfig{"168h"}}
	if sys != want {
		t.Errorf("sys = %+v, want %+v", sys, want)
	}
}

// TestLoadDeterministic: the same desired state gives the same bytes and
// hash whatever the order of fields and files, and wherever it lives.
func TestLoadDeterministic(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"ctx/a.cue": `ctx: a: {command: "a", env: {Z: "1", A: "2", M: "3"}, ports: {z: 1, a: 2}}`,
		"ctx/b.cue": `ctx: b: {image: "b", placement: nodes: {zone: "x", rack: "y"}}`,
		"mid/m.cue": `mid: m: {driver: "custom", nodes: selector: {z: "1", a: "2"}, params: {z: 1, a: [1.5, "x"], m: {q: true}}}`,
	}
	reordered := map[string]string{
		"ctx/b.cue": `ctx: b: {placement: nodes: {rack: "y", zone: "x"}, image: "b"}`,
		"ctx/a.cue": `ctx: a: {ports: {a: 2, z: 1}, env: {M: "3", A: "2", Z: "1"}, command: "a"}`,
		"mid/m.cue": `mid: m: {params: {m: {q: true}, a: [1.5, "x"], z: 1}, nodes: selector: {a: "2", z: "1"}, driver: "custom"}`,
	}
	first, _ := load(t, writeRepo(t, files))
	if first == nil {
		t.Fatal("first load failed")
	}
	for name, dir := range map[string]string{
		"same dir again": "",
		"copy":           writeRepo(t, files),
		"reordered":      writeRepo(t, reordered),
	} {
		if dir == "" {
			continue
		}
		got, diags := load(t, dir)
		if got == nil {
			t.Fatalf("%s: %v", name, diags)
		}
		if got.Hash != first.Hash {
			t.Errorf("%s: hash %s, want %s", name, got.Hash, first.Hash)
		}
		for i := range got.Entries {
			if !bytes.Equal(got.Entries[i].Value, first.Entries[i].Value) {
				t.Errorf("%s: %s differs", name, got.Entries[i].Path)
			}
		}
	}
	mids, err := first.Mids()
	if err != nil {
		t.Fatal(err)
	}
	// Whole numbers in driver params stay integers.
	if got, ok := mids["m"].Params["z"].(uint64); !ok || got != 1 {
		t.Errorf("params.z = %#v, want integer 1", mids["m"].Params["z"])
	}
}

// TestLoadBad feeds one bad input per case and checks the diagnostic names
// the file, the position where there is one, the path and the problem.
func TestLoadBad(t *testing.T) {
	t.Parallel()
	nonUTF8 := "ctx: web: {command: \"caf\xe9\"}\n"
	tests := []struct {
		name  string
		files map[string]string
		want  []string // each must appear in one diagnostic's String()
	}{
		{"syntax error", map[string]string{"ctx/web.cue": "ctx: web: {command: \"x\"\n"},
			[]string{"ctx/web.cue:1:25: expected '}', found 'EOF'"}},
		{"conflicting types", map[string]string{"ctx/web.cue": "ctx: web: {\n\tcommand: \"x\"\n\treplicas: \"three\"\n}\n"},
			[]string{"ctx/web.cue:3:12: ctx.web.replicas: conflicting values"}},
		{"undefined reference", map[string]string{"ctx/web.cue": "ctx: web: {\n\tcommand: cmd\n}\n"},
			[]string{`ctx/web.cue:2:11: ctx.web.command: reference "cmd" not found`}},
		{"unknown field", map[string]string{"ctx/web.cue": "ctx: web: {\n\tcommand: \"x\"\n\treplica: 3\n}\n"},
			[]string{"ctx/web.cue:3:2: ctx.web.replica: field not allowed"}},
		{"unknown top-level field", map[string]string{"ctx/web.cue": "ctxs: web: {command: \"x\"}\n"},
			[]string{"ctx/web.cue:1:1: ctxs: field not allowed"}},
		{"missing required field", map[string]string{"ctx/web.cue": "ctx: web: {\n\targs: [\"x\"]\n}\n"},
			[]string{"ctx/web.cue:1:6: ctx.web.command: field is required but not present"}},
		{"non-concrete value", map[string]string{"ctx/web.cue": "ctx: web: {\n\tcommand: string\n}\n"},
			[]string{"ctx/web.cue:2:2: ctx.web.command: incomplete value !=\"\" (the value must be concrete"}},
		{"upper case name", map[string]string{"ctx/web.cue": "ctx: Web: {command: \"x\"}\n"},
			[]string{`ctx/web.cue:1:6: ctx.Web: invalid CTX name "Web"`}},
		{"slash in name", map[string]string{"mid/m.cue": "mid: \"a/b\": {driver: \"x\", nodes: all: true}\n"},
			[]string{`mid/m.cue:1:6: mid.a/b: invalid MID name "a/b"`}},
		{"defined in two files", map[string]string{
			"ctx/a.cue": "ctx: web: {command: \"x\"}\n",
			"ctx/b.cue": "package config\n\nctx: {\n\tweb: {replicas: 2}\n}\n"},
			[]string{
				"ctx/a.cue:1:6: ctx.web: CTX web is defined in more than one file (also at ctx/b.cue:4:2)",
				"ctx/b.cue:4:2: ctx.web: CTX web is defined in more than one file (also at ctx/a.cue:1:6)"}},
		{"ztb rule naming an unknown CTX", map[string]string{
			"ctx/web.cue":    "ctx: web: {command: \"x\"}\n",
			"ztb/policy.cue": "ztb: allow: [\n\t{from: \"web\", to: \"db\"},\n]\n"},
			[]string{`ztb/policy.cue:2:16: ztb.allow.0.to: "db" names no CTX or MID`}},
		{"ztb rule naming an unknown port", map[string]string{
			"ctx/web.cue":    "ctx: web: {command: \"x\", ports: http: 80}\n",
			"ztb/policy.cue": "ztb: allow: [{from: \"web\", to: \"web\", port: \"https\"}]\n"},
			[]string{`ztb/policy.cue:1:39: ztb.allow.0.port: CTX web has no port named "https"`}},
		{"requires unknown", map[string]string{"ctx/web.cue": "ctx: web: {command: \"x\", requires: [\"db\"]}\n"},
			[]string{`ctx/web.cue:1:37: ctx.web.requires.0: "db" names no CTX or MID`}},
		{"requires cycle", map[string]string{
			"ctx/a.cue": "ctx: a: {command: \"x\", requires: [\"b\"]}\n",
			"ctx/b.cue": "ctx: b: {command: \"x\", requires: [\"c\"]}\n",
			"mid/c.cue": "mid: c: {driver: \"x\", nodes: all: true, requires: [\"a\"]}\n"},
			[]string{"ctx/a.cue:1:24: ctx.a.requires: requires cycle: a -> b -> c -> a"}},
		{"replicas and autoscale", map[string]string{"ctx/web.cue": "ctx: web: {command: \"x\", replicas: 2, autoscale: {min: 1, max: 3}}\n"},
			[]string{"ctx/web.cue:1:26: ctx.web.replicas: set either replicas or autoscale, not both"}},
		{"health without a check", map[string]string{"ctx/web.cue": "ctx: web: {\n\tcommand: \"x\"\n\thealth: interval: \"5s\"\n}\n"},
			[]string{"ctx/web.cue:3:10: ctx.web.health: set exactly one of tcp, http or exec (0 matched, expected 1)"}},
		{"two health checks", map[string]string{"ctx/web.cue": "ctx: web: {\n\tcommand: \"x\"\n\thealth: {tcp: port: 1, exec: command: [\"true\"]}\n}\n"},
			[]string{"ctx/web.cue:3:10: ctx.web.health: set exactly one of tcp, http or exec (2 matched, expected 1)"}},
		{"mid without nodes", map[string]string{"mid/m.cue": "mid: m: {\n\tdriver: \"x\"\n\tnodes: {}\n}\n"},
			[]string{"mid/m.cue:3:9: mid.m.nodes: set exactly one of all, selector or count (0 matched, expected 1)"}},
		{"process params checked", map[string]string{"mid/m.cue": "mid: m: {\n\tdriver: \"process\"\n\tnodes: all: true\n\tparams: {cmd: \"x\"}\n}\n"},
			[]string{"mid/m.cue:4:11: mid.m.params.cmd: field not allowed"}},
		{"bad memory", map[string]string{"ctx/web.cue": "ctx: web: {\n\tcommand: \"x\"\n\tresources: memory: \"512MB\"\n}\n"},
			[]string{"ctx/web.cue:3:21: ctx.web.resources.memory: invalid value \"512MB\" (out of bound =~"}},
		{"bad duration", map[string]string{"sys/sys.cue": "sys: sync: interval: \"soon\"\n"},
			[]string{"sys/sys.cue:1:22: sys.sync.interval: invalid value \"soon\" (does not satisfy time.Duration)"}},
		{"port out of range", map[string]string{"ctx/web.cue": "ctx: web: {command: \"x\", ports: http: 70000}\n"},
			[]string{"ctx/web.cue:1:39: ctx.web.ports.http: invalid value 70000 (out of bound <=65535)"}},
		{"other package", map[string]string{"ctx/web.cue": "package web\n\nctx: web: {command: \"x\"}\n"},
			[]string{"ctx/web.cue:1:1: package web: desired-state files are package config (or have no package clause)"}},
		{"foreign import", map[string]string{"ctx/web.cue": "import \"example.com/lib\"\n\nctx: web: lib.#Web\n"},
			[]string{`ctx/web.cue:1:8: import "example.com/lib": only github.com/ctxos/ctxos/schema and CUE's standard library can be imported`}},
		{"file outside the known roots", map[string]string{"web.cue": "ctx: web: {command: \"x\"}\n", "ctx/a.cue": "ctx: a: command: \"x\"\n"},
			[]string{"web.cue: file outside the known roots: desired state lives under ctx/, mid/, ztb/ or sys/"}},
		{"not UTF-8", map[string]string{"ctx/web.cue": nonUTF8},
			[]string{"ctx/web.cue:1:25: file is not valid UTF-8"}},
		{"10 MB file", map[string]string{"ctx/big.cue": "// " + strings.Repeat("x", 10<<20) + "\n"},
			[]string{"ctx/big.cue: file is 10485764 bytes, more than the limit of 1048576 bytes (1 MiB): refused"}},
		{"empty directory", map[string]string{"README.md": "nothing here\n"},
			[]string{".: no desired state found: no .cue files under ctx/, mid/, ztb/ or sys/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := writeRepo(t, tt.files)
			snap, diags := load(t, dir)
			if snap != nil {
				t.Fatalf("got a snapshot, want diagnostics %q", tt.want)
			}
			// Vet skips the export, not a check: it must find exactly
			// what Load finds.
			sum, vetDiags := vet(t, dir)
			if sum != nil {
				t.Errorf("Vet: got a summary, want diagnostics %q", tt.want)
			}
			if got, want := diagStrings(vetDiags), diagStrings(diags); !slices.Equal(got, want) {
				t.Errorf("Vet diagnostics:\n%s\nLoad diagnostics:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			var got []string
			for _, d := range diags {
				got = append(got, d.String())
			}
			for _, w := range tt.want {
				found := false
				for _, g := range got {
					found = found || strings.HasPrefix(g, w)
				}
				if !found {
					t.Errorf("no diagnostic starts with %q; got:\n%s", w, strings.Join(got, "\n"))
				}
			}
		})
	}
}

func TestLoadSymlinks(t *testing.T) {
	t.Parallel()
	outside := writeRepo(t, map[string]string{"secret.cue": "ctx: x: command: \"x\"\n"})
	dir := writeRepo(t, map[string]string{"ctx/web.cue": "ctx: web: command: \"x\"\n", "shared/api.cue.txt": ""})
	if err := os.Symlink(filepath.Join(outside, "secret.cue"), filepath.Join(dir, "ctx", "secret.cue")); err != nil {
		t.Fatal(err)
	}
	_, diags := load(t, dir)
	if len(diags) != 1 || diags[0].File != "ctx/secret.cue" || !strings.Contains(diags[0].Message, "symlink points outside the repository") {
		t.Fatalf("diagnostics = %v, want one refusing ctx/secret.cue", diags)
	}

	// A symlink inside the repository is read like the file it names.
	inside := writeRepo(t, map[string]string{"ctx/web.cue": "ctx: web: command: \"x\"\n", "ctx/api.txt": "ctx: api: command: \"y\"\n"})
	if err := os.Symlink("api.txt", filepath.Join(inside, "ctx", "api.cue")); err != nil {
		t.Fatal(err)
	}
	snap, diags := load(t, inside)
	if snap == nil {
		t.Fatalf("diagnostics: %v", diags)
	}
	if got, want := len(snap.Entries), 4; got != want {
		t.Errorf("entries = %d, want %d", got, want)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dir  string
		want error
	}{
		{"missing directory", filepath.Join(t.TempDir(), "nope"), fs.ErrNotExist},
		{"not a directory", file, ErrNotDir},
	}
	for _, tt := range tests {
		_, _, err := Load(context.Background(), tt.dir)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
}

// TestLoadTimeout uses a configuration that takes CUE about half a second
// (three nested comprehensions over 30 elements), far more than the
// deadline; the abandoned evaluation ends by itself soon after.
func TestLoadTimeout(t *testing.T) {
	t.Parallel()
	dir := writeRepo(t, map[string]string{"ctx/slow.cue": `
_l: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]
ctx: slow: {command: "x", replicas: len([for a in _l for b in _l for c in _l {a}])}
`})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, _, err := Load(ctx, dir)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want %v", err, ErrTimeout)
	}
	if !strings.Contains(err.Error(), "evaluation did not finish within the timeout") {
		t.Errorf("message %q does not say what happened", err)
	}
}

func TestMemoryBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"512Mi", 512 << 20, false},
		{"1Gi", 1 << 30, false},
		{"2Ti", 2 << 40, false},
		{"64Ki", 64 << 10, false},
		{"1G", 1e9, false},
		{"3k", 3000, false},
		{"1048576", 1 << 20, false},
		{"512MB", 0, true},
		{"", 0, true},
		{"-1Mi", 0, true},
		{"99999999999999999999Ti", 0, true},
		{"9000000Ti", 0, true},
	}
	for _, tt := range tests {
		got, err := MemoryBytes(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("MemoryBytes(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrMemory) {
			t.Errorf("MemoryBytes(%q) error %v is not ErrMemory", tt.in, err)
		}
	}
}

func TestHashEntries(t *testing.T) {
	t.Parallel()
	a := []Entry{{Path: "/ctx/a", Value: []byte("bc")}}
	b := []Entry{{Path: "/ctx/ab", Value: []byte("c")}}
	if HashEntries(a) == HashEntries(b) {
		t.Error("moving bytes between path and value must change the hash")
	}
	if got, want := HashEntries(nil), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; got != want {
		t.Errorf("HashEntries(nil) = %s, want %s", got, want)
	}
}

func TestDiagnosticString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    Diagnostic
		want string
	}{
		{Diagnostic{File: "ctx/web.cue", Line: 4, Column: 12, Path: "ctx.web.replicas", Message: "conflicting values"}, "ctx/web.cue:4:12: ctx.web.replicas: conflicting values"},
		{Diagnostic{File: "ctx/big.cue", Message: "too big"}, "ctx/big.cue: too big"},
		{Diagnostic{File: ".", Message: "empty"}, ".: empty"},
	}
	for _, tt := range tests {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}
