package reconcile

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

const gi = int64(1) << 30

func TestPlace(t *testing.T) {
	t.Parallel()
	four := func(name string, labels ...string) Node {
		n := Node{Name: name, CPUMilli: 4000, MemoryBytes: 8 * gi}
		if len(labels) > 0 {
			n.Labels = map[string]string{}
			for i := 0; i+1 < len(labels); i += 2 {
				n.Labels[labels[i]] = labels[i+1]
			}
		}
		return n
	}
	gpu := Node{Name: "g", CPUMilli: 4000, MemoryBytes: 8 * gi, GPUs: 1, Devices: []string{"nvidia0"}}
	web := func(replicas int, cpu int64) Request {
		return Request{Name: "web", Replicas: replicas, CPUMilli: cpu, MemoryBytes: gi}
	}
	tests := []struct {
		name     string
		nodes    []Node
		reqs     []Request
		current  Placement
		want     Placement // nil: check only wantOn
		wantOn   map[string]int
		unplaced []Unplaced
	}{
		{
			name:    "sticky",
			nodes:   []Node{four("a"), four("b"), four("c")},
			reqs:    []Request{web(2, 1000)},
			current: Placement{"web.0": "c", "web.1": "a"},
			want:    Placement{"web.0": "c", "web.1": "a"},
		},
		{
			name:    "node gone moves only its instances",
			nodes:   []Node{four("a"), four("b")},
			reqs:    []Request{web(2, 1000)},
			current: Placement{"web.0": "gone", "web.1": "b"},
			// binpack: b is the most allocated node.
			want: Placement{"web.0": "b", "web.1": "b"},
		},
		{
			name:    "broken constraint moves the instance",
			nodes:   []Node{four("a", "zone", "eu"), four("b", "zone", "us")},
			reqs:    []Request{{Name: "web", Replicas: 1, CPUMilli: 100, Constraints: map[string]string{"zone": "eu"}}},
			current: Placement{"web.0": "b"},
			want:    Placement{"web.0": "a"},
		},
		{
			name:    "node over capacity evicts the later instance",
			nodes:   []Node{four("a"), four("b")},
			reqs:    []Request{web(2, 3000)},
			current: Placement{"web.0": "a", "web.1": "a"},
			want:    Placement{"web.0": "a", "web.1": "b"},
		},
		{
			name:    "scale down removes the highest indexes",
			nodes:   []Node{four("a"), four("b")},
			reqs:    []Request{web(2, 100)},
			current: Placement{"web.0": "a", "web.1": "b", "web.2": "a", "web.10": "b", "old.0": "a"},
			want:    Placement{"web.0": "a", "web.1": "b"},
		},
		{
			name:   "binpack fills one node before the next",
			nodes:  []Node{four("a"), four("b"), four("c")},
			reqs:   []Request{web(4, 1000)},
			wantOn: map[string]int{"4": 1},
		},
		{
			name:  "binpack prefers the fuller node",
			nodes: []Node{four("a"), four("b")},
			reqs:  []Request{{Name: "db", Replicas: 1, CPUMilli: 2000}, web(2, 1000)},
			// db lands somewhere; web fills the same node (2000+2000=4000).
			wantOn: map[string]int{"3": 1},
		},
		{
			name:   "spread",
			nodes:  []Node{four("a"), four("b"), four("c")},
			reqs:   []Request{{Name: "web", Replicas: 6, CPUMilli: 100, Strategy: StrategySpread}},
			wantOn: map[string]int{"2": 3},
		},
		{
			name:  "gpu and device",
			nodes: []Node{four("a"), gpu},
			reqs:  []Request{{Name: "ml", Replicas: 2, GPUs: 1, Devices: []string{"nvidia0"}}},
			want:  Placement{"ml.0": "g"},
			unplaced: []Unplaced{
				{"ml.1", "no eligible node has 1 GPU free"},
			},
		},
		{
			name:  "reasons",
			nodes: []Node{four("a", "zone", "eu"), four("b")},
			reqs: []Request{
				{Name: "big", Replicas: 1, CPUMilli: 5000},
				{Name: "mem", Replicas: 1, MemoryBytes: 9 * gi},
				{Name: "gpu", Replicas: 1, GPUs: 2},
				{Name: "both", Replicas: 2, CPUMilli: 3000, MemoryBytes: 6 * gi},
				{Name: "us", Replicas: 1, Constraints: map[string]string{"zone": "us"}},
				{Name: "dev", Replicas: 1, Devices: []string{"fuse"}},
				{Name: "eudev", Replicas: 1, Constraints: map[string]string{"zone": "eu"}, Devices: []string{"fuse"}},
			},
			want: Placement{"both.0": "a", "both.1": "b"},
			unplaced: []Unplaced{
				{"big.0", "no node has 5000m CPU free"},
				{"dev.0", "no node has devices fuse"},
				{"eudev.0", "no node with labels zone=eu has devices fuse"},
				{"gpu.0", "no node has 2 GPUs free"},
				{"mem.0", "no node has 9Gi memory free"},
				{"us.0", "no node matches labels zone=us"},
			},
		},
		{
			name:  "not together",
			nodes: []Node{{Name: "a", CPUMilli: 4000, MemoryBytes: gi}, {Name: "b", CPUMilli: 1000, MemoryBytes: 8 * gi}},
			reqs:  []Request{{Name: "x", Replicas: 1, CPUMilli: 2000, MemoryBytes: 2 * gi}},
			want:  Placement{},
			unplaced: []Unplaced{
				{"x.0", "no node has 2000m CPU, 2Gi memory and 0 GPUs free together"},
			},
		},
		{
			name: "no nodes",
			reqs: []Request{web(1, 1)},
			want: Placement{},
			unplaced: []Unplaced{
				{"web.0", "no live node"},
			},
		},
		{
			name:  "invalid requests",
			nodes: []Node{four("a")},
			reqs: []Request{
				{Name: "dup", Replicas: 1}, {Name: "dup", Replicas: 2},
				{Name: "", Replicas: 1},
				{Name: "cpu", Replicas: 1, CPUMilli: -1},
				{Name: "mem", Replicas: 1, MemoryBytes: -1},
				{Name: "gpu", Replicas: 1, GPUs: -1},
				{Name: "strat", Replicas: 1, Strategy: "random"},
				{Name: "none", Replicas: -3},
			},
			want: Placement{},
			unplaced: []Unplaced{
				{".0", "invalid request: empty CTX name"},
				{"cpu.0", "invalid request: negative CPU -1m"},
				{"dup.0", `invalid request: CTX "dup" is requested twice`},
				{"dup.0", `invalid request: CTX "dup" is requested twice`},
				{"dup.1", `invalid request: CTX "dup" is requested twice`},
				{"gpu.0", "invalid request: negative GPUs -1"},
				{"mem.0", "invalid request: negative memory -1 bytes"},
				{"strat.0", `invalid request: unknown strategy "random" (want binpack or spread)`},
			},
		},
		{
			name:    "duplicate node names are left out",
			nodes:   []Node{four("a"), four("a"), four("b")},
			reqs:    []Request{web(1, 100)},
			current: Placement{"web.0": "a"},
			want:    Placement{"web.0": "b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, unplaced := Place(tt.nodes, tt.reqs, tt.current)
			if tt.want != nil && !maps.Equal(got, tt.want) {
				t.Errorf("placement = %v, want %v", got, tt.want)
			}
			if tt.wantOn != nil {
				// instances per node → how many nodes have that many
				perNode := map[string]int{}
				for _, n := range got {
					perNode[n]++
				}
				hist := map[string]int{}
				for _, c := range perNode {
					hist[fmt.Sprint(c)]++
				}
				if !maps.Equal(hist, tt.wantOn) {
					t.Errorf("instances per node %v (histogram %v), want histogram %v", perNode, hist, tt.wantOn)
				}
			}
			if !reflect.DeepEqual(unplaced, tt.unplaced) {
				t.Errorf("unplaced = %q\nwant %q", unplaced, tt.unplaced)
			}
		})
	}
}

func TestPlaceTieBreakAvoidsFirstNode(t *testing.T) {
	t.Parallel()
	var nodes []Node
	for i := range 10 {
		nodes = append(nodes, Node{Name: fmt.Sprintf("n%d", i), CPUMilli: 4000, MemoryBytes: 8 * gi})
	}
	var reqs []Request
	for i := range 20 {
		reqs = append(reqs, Request{Name: fmt.Sprintf("c%02d", i), Replicas: 1})
	}
	got, _ := Place(nodes, reqs, nil)
	used := map[string]bool{}
	for _, n := range got {
		used[n] = true
	}
	// 20 zero-size CTXs on an empty cluster: rendezvous ties spread them;
	// by name they would all land on n0.
	if len(used) < 5 {
		t.Errorf("20 CTXs used %d of 10 nodes: %v", len(used), got)
	}
}

func TestParseInstanceID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id, ctx string
		index   int
		bad     bool
	}{
		{id: "web.0", ctx: "web", index: 0},
		{id: "web.v2.13", ctx: "web.v2", index: 13},
		{id: "web", bad: true},
		{id: ".1", bad: true},
		{id: "web.", bad: true},
		{id: "web.-1", bad: true},
		{id: "web.01", bad: true},
		{id: "web.x", bad: true},
	}
	for _, tt := range tests {
		ctx, index, err := ParseInstanceID(tt.id)
		if (err != nil) != tt.bad {
			t.Errorf("ParseInstanceID(%q) error = %v, want error %v", tt.id, err, tt.bad)
			continue
		}
		if !tt.bad && (ctx != tt.ctx || index != tt.index) {
			t.Errorf("ParseInstanceID(%q) = %q, %d, want %q, %d", tt.id, ctx, index, tt.ctx, tt.index)
		}
		if !tt.bad && InstanceID(ctx, index) != tt.id {
			t.Errorf("InstanceID(%q, %d) = %q, want %q", ctx, index, InstanceID(ctx, index), tt.id)
		}
	}
}

func TestDedupe(t *testing.T) {
	t.Parallel()
	// For "web.2", placed nowhere among its runners, the survivor is the
	// rendezvous winner.
	winner := Rank("web.2", []string{"a", "b", "c"})[0]
	wantWeb2 := map[string][]string{}
	for _, n := range []string{"a", "b", "c"} {
		if n != winner {
			wantWeb2[n] = []string{"web.2"}
		}
	}
	tests := []struct {
		name    string
		running map[string][]string
		p       Placement
		want    map[string][]string
	}{
		{"no duplicates", map[string][]string{"web.0": {"a"}, "web.1": {"b"}}, Placement{"web.0": "b"}, map[string][]string{}},
		{"placed copy survives", map[string][]string{"web.0": {"a", "b"}, "web.10": {"a", "b"}, "web.9": {"b", "a", "a"}},
			Placement{"web.0": "a", "web.9": "a", "web.10": "a"}, map[string][]string{"b": {"web.0", "web.9", "web.10"}}},
		{"rank decides when the placed node runs none", map[string][]string{"web.2": {"c", "b", "a"}}, Placement{"web.2": "z"}, wantWeb2},
		{"rank decides for an unplaced instance", map[string][]string{"web.2": {"a", "c", "b"}}, nil, wantWeb2},
	}
	for _, tt := range tests {
		if got := Dedupe(tt.running, tt.p); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: Dedupe = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// Generators for the property tests: small worlds, so conflicts are common.

var (
	nodeNames = []string{"n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"}
	ctxNames  = []string{"api", "db", "web", "web.v2", "ml", "cache"}
	zones     = []string{"eu", "us"}
)

func genNode(name string) *rapid.Generator[Node] {
	return rapid.Custom(func(t *rapid.T) Node {
		n := Node{
			Name:        name,
			CPUMilli:    rapid.Int64Range(0, 8).Draw(t, "cpu") * 1000,
			MemoryBytes: rapid.Int64Range(0, 16).Draw(t, "mem") * gi,
			GPUs:        rapid.IntRange(0, 2).Draw(t, "gpus"),
			Labels:      map[string]string{"zone": rapid.SampledFrom(zones).Draw(t, "zone")},
		}
		if rapid.Bool().Draw(t, "fuse") {
			n.Devices = append(n.Devices, "fuse")
		}
		return n
	})
}

func genRequest(name string) *rapid.Generator[Request] {
	return rapid.Custom(func(t *rapid.T) Request {
		r := Request{
			Name:        name,
			Replicas:    rapid.IntRange(0, 8).Draw(t, "replicas"),
			CPUMilli:    rapid.Int64Range(0, 3000).Draw(t, "cpu"),
			MemoryBytes: rapid.Int64Range(0, 4).Draw(t, "mem") * gi,
			GPUs:        rapid.IntRange(0, 1).Draw(t, "gpus"),
			Strategy:    rapid.SampledFrom([]string{"", StrategyBinpack, StrategySpread}).Draw(t, "strategy"),
		}
		if rapid.Bool().Draw(t, "constrained") {
			r.Constraints = map[string]string{"zone": rapid.SampledFrom(zones).Draw(t, "zone")}
		}
		if rapid.IntRange(0, 3).Draw(t, "device") == 0 {
			r.Devices = []string{"fuse"}
		}
		return r
	})
}

type world struct {
	nodes   []Node
	reqs    []Request
	current Placement
}

func genWorld(t *rapid.T) world {
	var w world
	for _, name := range rapid.SliceOfNDistinct(rapid.SampledFrom(nodeNames), 0, len(nodeNames), rapid.ID).Draw(t, "nodes") {
		w.nodes = append(w.nodes, genNode(name).Draw(t, "node "+name))
	}
	for _, name := range rapid.SliceOfNDistinct(rapid.SampledFrom(ctxNames), 0, len(ctxNames), rapid.ID).Draw(t, "ctxs") {
		w.reqs = append(w.reqs, genRequest(name).Draw(t, "request "+name))
	}
	// current may name gone nodes and instances beyond the replica count.
	w.current = Placement{}
	for range rapid.IntRange(0, 12).Draw(t, "current") {
		id := InstanceID(rapid.SampledFrom(ctxNames).Draw(t, "cur ctx"), rapid.IntRange(0, 9).Draw(t, "cur index"))
		w.current[id] = rapid.SampledFrom(append(slices.Clone(nodeNames), "gone")).Draw(t, "cur node")
	}
	return w
}

// checkPlacement asserts the invariants every result of Place keeps.
func checkPlacement(t *rapid.T, w world, p Placement, unplaced []Unplaced) {
	nodes := map[string]Node{}
	for _, n := range w.nodes {
		nodes[n.Name] = n
	}
	seen := map[string]bool{}
	type use struct {
		cpu, mem int64
		gpus     int
	}
	used := map[string]use{}
	for _, r := range w.reqs {
		for i := range r.Replicas {
			id := InstanceID(r.Name, i)
			seen[id] = true
			name, placed := p[id]
			isUnplaced := slices.ContainsFunc(unplaced, func(u Unplaced) bool { return u.Instance == id })
			if placed == isUnplaced {
				t.Fatalf("%s: placed %v, unplaced %v: want exactly one", id, placed, isUnplaced)
			}
			if !placed {
				continue
			}
			n, ok := nodes[name]
			if !ok {
				t.Fatalf("%s placed on unknown node %q", id, name)
			}
			for k, v := range r.Constraints {
				if n.Labels[k] != v {
					t.Fatalf("%s on %s: label %s=%q, want %q", id, name, k, n.Labels[k], v)
				}
			}
			for _, d := range r.Devices {
				if !slices.Contains(n.Devices, d) {
					t.Fatalf("%s on %s: device %s missing", id, name, d)
				}
			}
			u := used[name]
			u.cpu += r.CPUMilli
			u.mem += r.MemoryBytes
			u.gpus += r.GPUs
			used[name] = u
		}
	}
	for id := range p {
		if !seen[id] {
			t.Fatalf("placement has %s, which no request asks for", id)
		}
	}
	for _, u := range unplaced {
		if u.Reason == "" {
			t.Fatalf("%s unplaced without a reason", u.Instance)
		}
	}
	for name, u := range used {
		n := nodes[name]
		if u.cpu > n.CPUMilli || u.mem > n.MemoryBytes || u.gpus > n.GPUs {
			t.Fatalf("node %s over capacity: used %+v of cpu %d mem %d gpus %d", name, u, n.CPUMilli, n.MemoryBytes, n.GPUs)
		}
	}
}

func TestPlaceProperties(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t)
		p, unplaced := Place(w.nodes, w.reqs, w.current)
		checkPlacement(t, w, p, unplaced)

		// Same result for shuffled inputs (maps are rebuilt, so their
		// iteration order differs too).
		nodes := rapid.Permutation(w.nodes).Draw(t, "shuffled nodes")
		for i := range nodes {
			nodes[i].Labels = maps.Clone(nodes[i].Labels)
		}
		p2, unplaced2 := Place(nodes, rapid.Permutation(w.reqs).Draw(t, "shuffled reqs"), maps.Clone(w.current))
		if !maps.Equal(p, p2) || !reflect.DeepEqual(unplaced, unplaced2) {
			t.Fatalf("shuffled inputs: %v %v, want %v %v", p2, unplaced2, p, unplaced)
		}

		// Sticky: the result as current changes nothing.
		p3, unplaced3 := Place(w.nodes, w.reqs, p)
		if !maps.Equal(p, p3) || !reflect.DeepEqual(unplaced, unplaced3) {
			t.Fatalf("re-placing the result: %v %v, want %v %v", p3, unplaced3, p, unplaced)
		}

		// Adding a node moves nothing that runs.
		extra := genNode("n9-new").Draw(t, "new node")
		p4, unplaced4 := Place(append(slices.Clone(w.nodes), extra), w.reqs, p)
		checkPlacement(t, world{nodes: append(slices.Clone(w.nodes), extra), reqs: w.reqs}, p4, unplaced4)
		for id, n := range p {
			if p4[id] != n {
				t.Fatalf("adding node %s moved %s from %s to %s", extra.Name, id, n, p4[id])
			}
		}
	})
}

func TestPlaceSpreadProperty(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		// Capacity allows everything: every node fits all replicas of all
		// requests at once.
		var nodes []Node
		for _, name := range rapid.SliceOfNDistinct(rapid.SampledFrom(nodeNames), 1, len(nodeNames), rapid.ID).Draw(t, "nodes") {
			nodes = append(nodes, Node{Name: name, CPUMilli: 1 << 40, MemoryBytes: 1 << 50, GPUs: 1 << 20,
				Labels: map[string]string{"zone": rapid.SampledFrom(zones).Draw(t, "zone")}})
		}
		var reqs []Request
		for _, name := range rapid.SliceOfNDistinct(rapid.SampledFrom(ctxNames), 1, len(ctxNames), rapid.ID).Draw(t, "ctxs") {
			r := genRequest(name).Draw(t, "request")
			r.Devices = nil
			r.Replicas = rapid.IntRange(0, 30).Draw(t, "replicas")
			reqs = append(reqs, r)
		}
		p, unplaced := Place(nodes, reqs, nil)
		checkPlacement(t, world{nodes: nodes, reqs: reqs}, p, unplaced)
		for _, r := range reqs {
			if r.Strategy != StrategySpread {
				continue
			}
			counts := map[string]int{}
			for _, n := range nodes {
				if r.Constraints == nil || n.Labels["zone"] == r.Constraints["zone"] {
					counts[n.Name] = 0
				}
			}
			for i := range r.Replicas {
				if n, ok := p[InstanceID(r.Name, i)]; ok {
					counts[n]++
				}
			}
			if len(counts) == 0 {
				continue
			}
			lo, hi := slices.Min(slices.Collect(maps.Values(counts))), slices.Max(slices.Collect(maps.Values(counts)))
			if hi-lo > 1 {
				t.Fatalf("spread %s over %d eligible nodes: %v", r.Name, len(counts), counts)
			}
		}
	})
}
