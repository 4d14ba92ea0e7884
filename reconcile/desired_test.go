package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/schema"
)

// loadRepo exports a repository of CUE files with the real schema, as
// gitsync does.
func loadRepo(tb testing.TB, files map[string]string) *schema.Snapshot {
	tb.Helper()
	dir := tb.TempDir()
	files["cue.mod/module.cue"] = "module: \"example.com/infra\"\nlanguage: version: \"v0.12.0\"\n"
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snap, diags, err := schema.Load(ctx, dir)
	if err != nil || len(diags) > 0 {
		tb.Fatalf("Load: %v %v", err, diags)
	}
	return snap
}

func TestDesiredFromCUE(t *testing.T) {
	snap := loadRepo(t, map[string]string{
		"ctx/web.cue": `package config

ctx: web: {
	command: "sleep"
	args: ["1000"]
	env: PORT: "8080"
	replicas: 3
	resources: {cpu: 500, memory: "64Mi"}
	placement: strategy: "spread"
	stop: grace: "3s"
	restart: "on-failure"
	ports: http: 8080
	requires: ["cache"]
}
`,
		"mid/cache.cue": `package config

mid: cache: {
	driver: "process"
	nodes: count: 2
	params: {command: "sleep", args: ["2000"]}
}
`,
	})
	nodes := []Node{
		{Name: "a", CPUMilli: 4000, MemoryBytes: 8 << 30},
		{Name: "b", CPUMilli: 4000, MemoryBytes: 8 << 30},
		{Name: "c", CPUMilli: 4000, MemoryBytes: 8 << 30},
	}
	total := 0
	midOn := 0
	for _, n := range nodes {
		d, err := DesiredFor(snap, n.Name, nodes, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Problems) > 0 || len(d.Unplaced) > 0 {
			t.Fatalf("%s: problems %v, unplaced %v", n.Name, d.Problems, d.Unplaced)
		}
		// Spread puts one web instance on each node.
		var webs []drivers.Spec
		for _, s := range d.Specs[schema.RuntimeProcess] {
			if s.Kind == drivers.KindCTX {
				webs = append(webs, s)
			}
			if s.Kind == drivers.KindMID {
				midOn++
				if got, want := s.ID, MIDSpecID("cache", n.Name); got != want {
					t.Errorf("MID spec id = %s, want %s", got, want)
				}
				if s.Command != "sleep" || !slices.Equal(s.Args, []string{"2000"}) {
					t.Errorf("MID spec = %+v, want sleep 2000", s)
				}
				if u := d.Units[s.ID]; u.Resource != "mid/cache" || u.Kind != drivers.KindMID {
					t.Errorf("MID unit = %+v", u)
				}
			}
		}
		if len(webs) != 1 {
			t.Fatalf("%s runs %d web instances, want 1 (spread)", n.Name, len(webs))
		}
		total++
		s := webs[0]
		_, idx, err := ParseInstanceID(strings.TrimPrefix(s.ID, "ctx."))
		if err != nil {
			t.Fatal(err)
		}
		cwd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		want := drivers.Spec{
			ID: s.ID, Kind: drivers.KindCTX, Name: "web", Dir: cwd, // no dir is the agent's own
			Command: "sleep", Args: []string{"1000"}, Env: map[string]string{"PORT": "8080"},
			Resources: drivers.Resources{CPUMilli: 500, MemoryBytes: 64 << 20},
			Restart:   drivers.RestartPolicy{Policy: "on-failure"},
			Ports:     map[string]int{"http": 8080},
			Stop:      drivers.StopPolicy{Signal: "SIGTERM", Grace: 3 * time.Second},
		}
		if !reflect.DeepEqual(s, want) {
			t.Errorf("%s: spec\n got %+v\nwant %+v", n.Name, s, want)
		}
		if u := d.Units[s.ID]; u.Resource != "ctx/web."+string(rune('0'+idx)) || !slices.Equal(u.Requires, []string{"cache"}) || u.Driver != "process" {
			t.Errorf("unit = %+v", u)
		}
	}
	if total != 3 || midOn != 2 {
		t.Errorf("web on %d nodes, cache on %d, want 3 and 2", total, midOn)
	}
}

func TestDesiredProblems(t *testing.T) {
	ok := schema.Ctx{Runtime: "process", Command: "sleep", Args: []string{"1"}, Replicas: 1}
	badGrace := ok
	badGrace.Stop.Grace = "soon"
	badMem := ok
	badMem.Resources.Memory = "lots"
	noRuntime := ok
	noRuntime.Runtime = ""
	long := strings.Repeat("x", 80)
	tests := []struct {
		name string
		ctx  schema.Ctx
		want string // in the problem of ctx.<name>
	}{
		{"grace", badGrace, "stop.grace"},
		{"mem", badMem, "resources.memory"},
		{"noruntime", noRuntime, "runtime: missing"},
		{"bad..name", ok, "not a valid instance id"},
		{long, ok, "not a valid instance id"},
	}
	for _, tt := range tests {
		t.Run(tt.name[:min(len(tt.name), 10)], func(t *testing.T) {
			snap := buildSnapshot(t, map[string]schema.Ctx{tt.name: tt.ctx, "fine": ok}, nil)
			d, err := DesiredFor(snap, "a", []Node{{Name: "a", CPUMilli: 1000, MemoryBytes: 1 << 30}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			key := ProblemKey(drivers.KindCTX, tt.name)
			if got := d.Problems[key]; !strings.Contains(got, tt.want) || !strings.Contains(got, tt.name) {
				t.Errorf("problem %s = %q, want it to name the CTX and say %q", key, got, tt.want)
			}
			if !d.Keep[key] {
				t.Errorf("what runs of %s is not kept", key)
			}
			// The good CTX runs regardless.
			if got := d.Specs["process"]; len(got) != 1 || got[0].ID != "ctx.fine.0" {
				t.Errorf("specs = %+v, want ctx.fine.0 only", got)
			}
		})
	}
}

func TestDesiredUnplacedAndMIDSelection(t *testing.T) {
	gpu := schema.Ctx{Runtime: "process", Command: "train", Replicas: 1, Placement: schema.Placement{Devices: []string{DeviceGPU}}}
	big := schema.Ctx{Runtime: "process", Command: "big", Replicas: 1, Resources: schema.Resources{CPU: 99000}}
	mids := map[string]schema.Mid{
		"all":  {Driver: "redis", Nodes: schema.Nodes{All: true}, Params: map[string]any{"port": 6379, "role": "primary"}},
		"sel":  {Driver: "redis", Nodes: schema.Nodes{Selector: map[string]string{"disk": "ssd"}}},
		"none": {Driver: "redis", Nodes: schema.Nodes{Selector: map[string]string{"disk": "tape"}}},
		"many": {Driver: "redis", Nodes: schema.Nodes{Count: 5}},
	}
	nodes := []Node{
		{Name: "a", CPUMilli: 4000, MemoryBytes: 8 << 30, Labels: map[string]string{"disk": "ssd"}},
		{Name: "b", CPUMilli: 4000, MemoryBytes: 8 << 30, GPUs: 1, Devices: []string{DeviceGPU}},
	}
	snap := buildSnapshot(t, map[string]schema.Ctx{"gpu": gpu, "big": big}, mids)
	d, err := DesiredFor(snap, "a", nodes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.Placement["gpu.0"], "b"; got != want {
		t.Errorf("gpu.0 placed on %q, want %q", got, want)
	}
	var unplaced []string
	for _, u := range d.Unplaced {
		unplaced = append(unplaced, u.Instance+": "+u.Reason)
	}
	for _, want := range []string{"big.0: no node has 99000m CPU free", "mid.none: no node matches selector disk=tape", "mid.many #3: count 5, but only 2 eligible nodes"} {
		if !slices.Contains(unplaced, want) {
			t.Errorf("unplaced %q missing from %q", want, unplaced)
		}
	}
	if got, want := d.MIDNodes, map[string][]string{"all": {"a", "b"}, "sel": {"a"}, "none": nil, "many": {"a", "b"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("MIDNodes = %v, want %v", got, want)
	}
	var ids []string
	for _, s := range d.Specs["redis"] {
		ids = append(ids, s.ID)
		if s.ID == "mid.all.a" && !reflect.DeepEqual(s.Params, map[string]string{"port": "6379", "role": "primary"}) {
			t.Errorf("params = %v", s.Params)
		}
	}
	if want := []string{"mid.all.a", "mid.many.a", "mid.sel.a"}; !slices.Equal(ids, want) {
		t.Errorf("redis specs on a = %v, want %v", ids, want)
	}
}

func TestResourceOf(t *testing.T) {
	tests := []struct{ id, node, want string }{
		{"ctx.web.0", "n1", "ctx/web.0"},
		{"ctx.my.app.12", "n1", "ctx/my.app.12"},
		{"mid.cache.n1", "n1", "mid/cache"},
		{"mid.cache.node.one", "node.one", "mid/cache"},
		{"mid.cache.n2", "n1", "mid/cache.n2"},
		{"other", "n1", "other/other"},
	}
	for _, tt := range tests {
		if got := ResourceOf(tt.id, tt.node); got != tt.want {
			t.Errorf("ResourceOf(%q, %q) = %q, want %q", tt.id, tt.node, got, tt.want)
		}
	}
	for _, tt := range []struct{ res, want string }{{"ctx/web.0", "ctx.web"}, {"ctx/my.app.3", "ctx.my.app"}, {"mid/cache", "mid.cache"}} {
		if got := problemKeyOf(tt.res); got != tt.want {
			t.Errorf("problemKeyOf(%q) = %q, want %q", tt.res, got, tt.want)
		}
	}
}

func TestDesiredAutoscaledRunsItsMinimum(t *testing.T) {
	snap := loadRepo(t, map[string]string{
		"ctx/api.cue": "ctx: api: {command: \"sleep\", args: [\"1000\"], autoscale: {min: 2, max: 5}}\n",
	})
	nodes := []Node{{Name: "a", CPUMilli: 4000, MemoryBytes: 8 << 30}}
	d, err := DesiredFor(snap, "a", nodes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(d.Specs["process"]); got != 2 {
		t.Fatalf("an autoscaled CTX with min 2 runs %d instances, want 2 (problems %v)", got, d.Problems)
	}
}
