package schema

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"cuelang.org/go/cue/parser"
)

// vetInParts vets dir evaluating partFiles files at a time where possible.
func vetInParts(tb testing.TB, dir string, partFiles int) (*loaded, []Diagnostic) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, diags, err := loadDir(ctx, dir, loadOptions{partFiles: partFiles})
	if err != nil {
		tb.Fatalf("vet %s: %v", dir, err)
	}
	return r, diags
}

// TestVetInPartsFindsWhatLoadFinds vets multi-file repositories one file
// per part and checks that the diagnostics are exactly Load's, for
// problems inside one part, across parts and in several parts at once.
func TestVetInPartsFindsWhatLoadFinds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		files   map[string]string
		inParts bool // whether the files are plain data, so evaluated in parts
		valid   bool
	}{
		{"valid, references across parts", map[string]string{
			"ctx/web.cue":    "package config\n\nctx: web: {command: \"x\", ports: http: 80, requires: [\"cache\"]}\n",
			"ctx/api.cue":    "ctx: api: {image: \"api:1\", requires: [\"web\"]}\n",
			"mid/cache.cue":  "mid: cache: {driver: \"process\", nodes: all: true, params: command: \"redis\"}\n",
			"ztb/policy.cue": "ztb: {default: \"deny\", allow: [{from: \"api\", to: \"web\", port: \"http\"}, {from: \"web\", to: \"cache\", port: 6379}]}\n",
			"sys/sys.cue":    "sys: sync: interval: \"1m\"\n",
		}, true, true},
		{"errors and incomplete values in different parts", map[string]string{
			"ctx/a.cue": "ctx: a: {command: \"x\", replica: 3}\n",
			"ctx/b.cue": "ctx: b: {command: \"x\", replicas: \"three\"}\n",
			"ctx/c.cue": "ctx: c: {args: [\"x\"]}\n",
			"ctx/d.cue": "ctx: d: {command: \"x\", ports: http: 70000}\n",
		}, true, false},
		{"only incomplete values", map[string]string{
			"ctx/a.cue": "ctx: a: {args: [\"x\"]}\n",
			"ctx/b.cue": "ctx: b: {command: \"x\"}\n",
			"ctx/c.cue": "ctx: c: {env: X: \"1\"}\n",
		}, true, false},
		{"references to what is in no part", map[string]string{
			"ctx/a.cue":      "ctx: a: {command: \"x\", requires: [\"nope\"]}\n",
			"ctx/b.cue":      "ctx: b: {command: \"x\", ports: http: 80}\n",
			"ztb/policy.cue": "ztb: allow: [{from: \"a\", to: \"b\", port: \"https\"}, {from: \"gone\", to: \"b\"}]\n",
		}, true, false},
		{"requires cycle across parts", map[string]string{
			"ctx/a.cue": "ctx: a: {command: \"x\", requires: [\"b\"]}\n",
			"ctx/b.cue": "ctx: b: {command: \"x\", requires: [\"c\"]}\n",
			"mid/c.cue": "mid: c: {driver: \"x\", nodes: all: true, requires: [\"a\"]}\n",
		}, true, false},
		{"ztb split over two files that conflict", map[string]string{
			"ctx/a.cue":  "ctx: a: command: \"x\"\n",
			"ztb/a.cue":  "ztb: default: \"deny\"\n",
			"ztb/b.cue":  "ztb: default: \"allow\"\n",
			"ctx/b.cue":  "ctx: b: command: \"x\"\n",
			"sys/s.cue":  "sys: gossip: profile: \"lan\"\n",
			"ctx/c.cue":  "ctxs: c: command: \"x\"\n",
			"ctx/d.cue":  "ctx: d: command: \"x\"\n",
			"ctx/e.cue":  "ctx: e: command: \"x\"\n",
			"ctx/f.cue":  "ctx: f: command: \"x\"\n",
			"ctx/g.cue":  "ctx: g: command: \"x\"\n",
			"ctx/hh.cue": "ctx: hh: {command: \"x\", isolate: \"yes\"}\n",
		}, true, false},
		{"a pattern in one file constrains the others: evaluated together", map[string]string{
			"ctx/all.cue": "ctx: [=~\"^w\"]: replicas: 2\n",
			"ctx/web.cue": "ctx: web: {command: \"x\", replicas: 3}\n",
			"ctx/api.cue": "ctx: api: {command: \"x\", replicas: 3}\n",
		}, false, false},
		{"a reference to another file: evaluated together", map[string]string{
			"ctx/web.cue": "ctx: web: {command: \"x\", replicas: ctx.api.replicas}\n",
			"ctx/api.cue": "ctx: api: {command: \"x\", replicas: -1}\n",
		}, false, false},
		{"the same CTX in two files: evaluated together", map[string]string{
			"ctx/a.cue": "ctx: web: {command: \"x\", replicas: 1}\n",
			"ctx/b.cue": "ctx: web: {command: \"x\", replicas: 2}\n",
		}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := writeRepo(t, tt.files)
			snap, want := load(t, dir)
			if got := snap != nil; got != tt.valid {
				t.Fatalf("Load valid = %v, want %v; diagnostics:\n%s", got, tt.valid, strings.Join(diagStrings(want), "\n"))
			}
			r, got := vetInParts(t, dir, 1)
			if (r != nil) != tt.valid {
				t.Errorf("vet in parts valid = %v, want %v", r != nil, tt.valid)
			}
			if !slices.Equal(diagStrings(got), diagStrings(want)) {
				t.Errorf("vet in parts:\n%s\nLoad:\n%s", strings.Join(diagStrings(got), "\n"), strings.Join(diagStrings(want), "\n"))
			}
			if r != nil {
				if got, want := r.summary, (Summary{Ctx: len(mustCtxs(t, snap)), Mid: len(mustMids(t, snap))}); got != want {
					t.Errorf("summary = %+v, want %+v", got, want)
				}
			}

			files, _, err := readFiles(context.Background(), dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(checkNames(files)) == 0 && literalParts(files, 1) != nil; got != tt.inParts {
				t.Errorf("evaluated in parts = %v, want %v", got, tt.inParts)
			}
		})
	}
}

func mustCtxs(tb testing.TB, s *Snapshot) map[string]Ctx {
	m, err := s.Ctxs()
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func mustMids(tb testing.TB, s *Snapshot) map[string]Mid {
	m, err := s.Mids()
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func TestLiteralFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, src string
		want      bool
	}{
		{"plain data", "package config\n\n// web\nctx: web: {command: \"x\", args: [\"-v\", 'b'], replicas: -1, isolate: true, env: \"A-B\": \"c\", x: null, f: 1.5}\n", true},
		{"ztb and sys", "ztb: allow: [{from: \"a\", to: \"b\"}]\nsys: sync: interval: \"1m\"\n", true},
		{"reference", "ctx: web: {command: \"x\", replicas: n}\n", false},
		{"predeclared identifier", "ctx: web: {command: string}\n", false},
		{"selector", "ctx: web: {command: x.y}\n", false},
		{"import", "import \"strings\"\n\nctx: web: {command: strings.ToLower(\"X\")}\n", false},
		{"schema embedding left in", "import \"github.com/ctxos/ctxos/schema\"\n\nschema.#Config\n", false},
		{"pattern", "ctx: [string]: replicas: 2\n", false},
		{"comprehension", "for n in [\"a\"] {ctx: (n): command: \"x\"}\n", false},
		{"let", "let x = 1\nctx: web: replicas: 1\n", false},
		{"alias", "X=ctx: web: command: \"x\"\n", false},
		{"optional field", "ctx: web: {command?: \"x\"}\n", false},
		{"required field", "ctx: web: {command!: \"x\"}\n", false},
		{"definition", "#Web: {command: \"x\"}\n", false},
		{"hidden field", "_n: 1\n", false},
		{"attribute", "ctx: web: {command: \"x\" @go(C)}\n", false},
		{"interpolation", "ctx: web: {command: \"\\(1)\"}\n", false},
		{"disjunction", "ctx: web: {restart: \"never\" | \"always\"}\n", false},
		{"ellipsis", "ctx: web: {args: [...]}\n", false},
		{"embedded struct", "{ctx: web: command: \"x\"}\n", false},
		{"ctx not a struct", "ctx: \"web\"\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parser.ParseFile("x.cue", tt.src)
			if err != nil {
				t.Fatal(err)
			}
			stripConfigEmbed(f)
			if tt.name == "schema embedding left in" {
				// What stripConfigEmbed takes away: parse it again.
				f, _ = parser.ParseFile("x.cue", tt.src)
			}
			if got := literalFile(f); got != tt.want {
				t.Errorf("literalFile(%q) = %v, want %v", tt.src, got, tt.want)
			}
		})
	}
}

func TestLiteralParts(t *testing.T) {
	t.Parallel()
	var files []sourceFile
	for _, src := range []struct{ rel, src string }{
		{"ctx/a.cue", "ctx: a: command: \"x\"\n"},
		{"ctx/b.cue", "ctx: b: command: \"x\"\n"},
		{"ztb/p.cue", "ztb: default: \"deny\"\n"},
		{"ctx/c.cue", "ctx: c: command: \"x\"\n"},
		{"sys/s.cue", "sys: sync: interval: \"1m\"\n"},
		{"mid/m.cue", "mid: m: driver: \"x\"\n"},
	} {
		f, err := parser.ParseFile(src.rel, src.src)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, sourceFile{rel: src.rel, syntax: f})
	}
	parts := literalParts(files, 2)
	var got []string
	for _, p := range parts {
		var names []string
		for _, f := range p {
			names = append(names, f.rel)
		}
		got = append(got, strings.Join(names, " "))
	}
	// ztb and sys first, together; then two files a part.
	want := []string{"ztb/p.cue sys/s.cue", "ctx/a.cue ctx/b.cue", "ctx/c.cue mid/m.cue"}
	if !slices.Equal(got, want) {
		t.Errorf("parts = %q, want %q", got, want)
	}
}
