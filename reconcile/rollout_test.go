package reconcile

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/schema"
)

func TestRolloutAdmit(t *testing.T) {
	tests := []struct {
		name      string
		max       int
		health    bool
		down      []string
		known     []string // of down, those known down (not unchecked)
		replaces  []string
		wantAdmit []string
		wantWhy   string // the reason of the first refused replace
	}{
		{"one at a time", 1, false, nil, nil, []string{"ctx.web.0", "ctx.web.1", "ctx.web.2"}, []string{"ctx.web.0"},
			"rollout: 1 of 1 unavailable, waiting for ctx.web.0 to run"},
		{"two at a time", 2, false, nil, nil, []string{"ctx.web.0", "ctx.web.1", "ctx.web.2"}, []string{"ctx.web.0", "ctx.web.1"},
			"rollout: 2 of 2 unavailable, waiting for ctx.web.0, ctx.web.1 to run"},
		{"health", 1, true, []string{"ctx.web.0"}, nil, []string{"ctx.web.1", "ctx.web.2"}, nil,
			"rollout: 1 of 1 unavailable, waiting for ctx.web.0 to be healthy"},
		{"replacing what is down is free", 1, true, []string{"ctx.web.0", "ctx.web.1"}, []string{"ctx.web.0", "ctx.web.1"},
			[]string{"ctx.web.0", "ctx.web.1", "ctx.web.2"},
			[]string{"ctx.web.0", "ctx.web.1"}, "rollout: 2 of 1 unavailable, waiting for ctx.web.0, ctx.web.1 to be healthy"},
		{"unchecked is not free", 1, true, []string{"ctx.web.0", "ctx.web.1", "ctx.web.2"}, nil,
			[]string{"ctx.web.0", "ctx.web.1", "ctx.web.2"},
			nil, "rollout: 3 of 1 unavailable, waiting for ctx.web.0, ctx.web.1, ctx.web.2 to be healthy"},
		{"zero means one", 0, false, nil, nil, []string{"ctx.web.0", "ctx.web.1"}, []string{"ctx.web.0"},
			"rollout: 1 of 1 unavailable, waiting for ctx.web.0 to run"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ro := &rollout{
				max:       map[string]int{"web": tt.max},
				hasHealth: map[string]bool{"web": tt.health},
				down:      map[string][]string{"web": slices.Clone(tt.down)},
				known:     map[string]bool{},
			}
			for _, id := range tt.known {
				ro.known[id] = true
			}
			var admitted []string
			why := ""
			for _, id := range tt.replaces {
				w := ro.admit(id, "web")
				if w == "" {
					admitted = append(admitted, id)
				} else if why == "" {
					why = w
				}
			}
			if !slices.Equal(admitted, tt.wantAdmit) {
				t.Errorf("admitted %v, want %v", admitted, tt.wantAdmit)
			}
			if why != tt.wantWhy {
				t.Errorf("why = %q, want %q", why, tt.wantWhy)
			}
		})
	}
}

// replaceSpans returns, per resource, the running→done span of the
// generation's replace steps, in start order.
func replaceSpans(tb testing.TB, a *agent, gen uint64) (spans [][2]time.Time, resources []string, waits map[string][]string) {
	tb.Helper()
	steps, err := a.journal.History(HistoryFilter{CTX: "web"})
	if err != nil {
		tb.Fatal(err)
	}
	waits = map[string][]string{}
	for _, s := range steps {
		if s.Generation != gen || s.Action != "replace" {
			continue
		}
		switch s.State {
		case StepDone:
			spans = append(spans, [2]time.Time{s.Started, s.Ended})
			resources = append(resources, s.Resource)
		case StepWaiting:
			waits[s.Resource] = append(waits[s.Resource], s.Error)
		}
	}
	return spans, resources, waits
}

// TestRolloutOneAtATime changes a 3-replica CTX without a health check:
// the replaces run one after the other, the later ones recorded waiting.
func TestRolloutOneAtATime(t *testing.T) {
	marker := newMarker(t)
	t.Cleanup(func() { killMarked(marker) })
	store := newStore(t, "n1")
	putHW(t, store, "n1", nil)
	a := startAgent(t, "n1", store, agentOpts{parallel: 4})
	web := sleepCTX(marker, 3, "1000")
	web.Rollout.MaxUnavailable = 1
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"web": web}, nil), 1)
	converged(t, a, marker, 1, 3)

	web.Args = []string{"1001"}
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"web": web}, nil), 2)
	converged(t, a, marker, 2, 3)

	spans, resources, waits := replaceSpans(t, a, 2)
	if len(spans) != 3 {
		t.Fatalf("%d replaces done, want 3 (%v)", len(spans), resources)
	}
	for i := 1; i < len(spans); i++ {
		if spans[i][0].Before(spans[i-1][1]) {
			t.Errorf("replace of %s started at %s, before the replace of %s ended at %s", resources[i], spans[i][0], resources[i-1], spans[i-1][1])
		}
	}
	if got, want := waits["ctx/web.1"], "rollout: 1 of 1 unavailable, waiting for ctx.web.0 to run"; !slices.Contains(got, want) {
		t.Errorf("waiting reasons of ctx/web.1 = %q, want %q among them", got, want)
	}
}

// TestRolloutWaitsForHealth changes a CTX with a TCP health check: each
// replace starts only once the instance replaced before it passed its
// check threshold times; instances publish their health; a failing check
// is reported in /itg.
func TestRolloutWaitsForHealth(t *testing.T) {
	marker := newMarker(t)
	t.Cleanup(func() { killMarked(marker) })
	g := newGate(t)
	store := newStore(t, "n1")
	putHW(t, store, "n1", nil)
	a := startAgent(t, "n1", store, agentOpts{parallel: 4})
	const interval = 100 * time.Millisecond
	web := sleepCTX(marker, 3, "1000")
	web.Rollout.MaxUnavailable = 1
	web.Health = &schema.Health{TCP: &schema.TCPCheck{Port: portOf(t, g.addr)}, Interval: interval.String(), Timeout: "1s", Threshold: 3}
	allHealthy := func(want bool) func() (bool, string) {
		return func() (bool, string) {
			var insts map[string]InstanceStatus
			e, ok := store.Get("/run/n1/instances")
			if !ok || vfs.Decode(e.Value, &insts) != nil {
				return false, "no /run/n1/instances"
			}
			n := 0
			for _, st := range insts {
				if st.Healthy != nil && *st.Healthy == want {
					n++
				}
			}
			return n == 3, fmt.Sprintf("%+v", insts)
		}
	}
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"web": web}, nil), 1)
	converged(t, a, marker, 1, 3)
	waitUntil(t, "3 healthy instances published", allHealthy(true))

	web.Args = []string{"1001"}
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"web": web}, nil), 2)
	converged(t, a, marker, 2, 3)
	waitUntil(t, "3 healthy instances after the rollout", allHealthy(true))

	spans, resources, waits := replaceSpans(t, a, 2)
	if got, want := resources, []string{"ctx/web.0", "ctx/web.1", "ctx/web.2"}; !slices.Equal(got, want) {
		t.Fatalf("replaces %v, want %v in order", got, want)
	}
	// A new instance is healthy after its third pass, two intervals after
	// its first check, which comes after its replace ended.
	for i := 1; i < len(spans); i++ {
		if gap := spans[i][0].Sub(spans[i-1][1]); gap < 2*interval {
			t.Errorf("replace of %s started %s after the previous ended, before that instance could pass 3 checks %s apart", resources[i], gap, interval)
		}
	}
	for i, res := range []string{"ctx/web.1", "ctx/web.2"} {
		want := fmt.Sprintf("rollout: 1 of 1 unavailable, waiting for ctx.web.%d to be healthy", i)
		if !slices.Contains(waits[res], want) {
			t.Errorf("waiting reasons of %s = %q, want %q among them", res, waits[res], want)
		}
	}

	g.close()
	waitUntil(t, "3 unhealthy instances published", allHealthy(false))
	waitUntil(t, "/itg/n1/ctx.web says unhealthy", func() (bool, string) {
		e, ok := store.Get("/itg/n1/ctx.web")
		if !ok {
			return false, "no entry"
		}
		var pr Problem
		if err := vfs.Decode(e.Value, &pr); err != nil {
			return false, err.Error()
		}
		return strings.HasPrefix(pr.Reason, "unhealthy: tcp 127.0.0.1:") && len(pr.Instances) == 3, fmt.Sprintf("%+v", pr)
	})
	if p := a.rec.Progress(); p.Converged {
		t.Errorf("progress converged with 3 unhealthy instances: %s", progressOf(a))
	}
}

// TestRolloutAcrossNodes changes a CTX spread one instance per node on
// three nodes, maxUnavailable 1, with a TCP health check: the replaces run
// one after the other across the nodes, in instance order, each after the
// one before it is healthy on its own node.
func TestRolloutAcrossNodes(t *testing.T) {
	marker := newMarker(t)
	t.Cleanup(func() { killMarked(marker) })
	g := newGate(t)
	_, nodes, agents := threeAgents(t, agentOpts{parallel: 4})
	n0 := nodes[0]
	const interval = 100 * time.Millisecond
	web := sleepCTX(marker, 3, "1000")
	web.Placement.Strategy = schema.StrategySpread
	web.Rollout.MaxUnavailable = 1
	web.Health = &schema.Health{TCP: &schema.TCPCheck{Port: portOf(t, g.addr)}, Interval: interval.String(), Timeout: "1s", Threshold: 3}
	allConverged := func(gen uint64) func() (bool, string) {
		return func() (bool, string) {
			for _, a := range agents {
				p := a.rec.Progress()
				if !p.Converged || p.Generation != gen {
					return false, a.name + ": " + progressOf(a)
				}
			}
			return oncePerInstance(marker, 3), fmt.Sprintf("%d processes", countMarked(marker))
		}
	}
	publish(t, n0.Store(), buildSnapshot(t, map[string]schema.Ctx{"web": web}, nil), 1)
	waitUntil(t, "generation 1 everywhere", allConverged(1))
	if got := perNode(t, agents...); !maps.Equal(got, map[string]int{"n0": 1, "n1": 1, "n2": 1}) {
		t.Fatalf("spread: %v, want one instance per node", got)
	}

	web.Args = []string{"1001"}
	publish(t, n0.Store(), buildSnapshot(t, map[string]schema.Ctx{"web": web}, nil), 2)
	waitUntil(t, "generation 2 everywhere", allConverged(2))

	type span struct {
		resource   string
		start, end time.Time
	}
	var spans []span
	waited := false
	for _, a := range agents {
		s, res, waits := replaceSpans(t, a, 2)
		if len(s) != 1 {
			t.Fatalf("%s: %d replaces done (%v), want 1", a.name, len(s), res)
		}
		spans = append(spans, span{res[0], s[0][0], s[0][1]})
		for _, ws := range waits {
			for _, w := range ws {
				waited = waited || strings.Contains(w, "earlier in the cluster-wide rollout")
			}
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return a.start.Compare(b.start) })
	var order []string
	for _, s := range spans {
		order = append(order, s.resource)
	}
	if want := []string{"ctx/web.0", "ctx/web.1", "ctx/web.2"}; !slices.Equal(order, want) {
		t.Fatalf("replaces in the order %v, want %v", order, want)
	}
	for i := 1; i < len(spans); i++ {
		if gap := spans[i].start.Sub(spans[i-1].end); gap < 2*interval {
			t.Errorf("replace of %s started %s after that of %s ended, before that instance could pass 3 checks %s apart", spans[i].resource, gap, spans[i-1].resource, interval)
		}
	}
	if !waited {
		t.Error("no replace waited for an earlier wave on another node")
	}
}

// TestRolloutWaves: with maxUnavailable 2, instances 0 and 1 form the
// first wave and may go at once; 2 and 3 wait until both run the new spec
// where they are placed, whichever node reports them.
func TestRolloutWaves(t *testing.T) {
	web := schema.Ctx{Runtime: schema.RuntimeProcess, Command: "sleep", Args: []string{"1000"}, Replicas: 4,
		Resources: schema.Resources{CPU: 10, Memory: "16Mi"}, Rollout: schema.Rollout{MaxUnavailable: 2}}
	ctxs := map[string]schema.Ctx{"web": web}
	hash := func(i int) string {
		s, err := ctxSpec("web", web, i)
		if err != nil {
			t.Fatal(err)
		}
		return s.Hash()
	}
	placement := Placement{"web.0": "a", "web.1": "b", "web.2": "b", "web.3": "a"}
	tests := []struct {
		name    string
		updated []int // instances whose node reports them running the new spec
		want    map[int]string
	}{
		{"nothing updated yet", nil, map[int]string{
			0: "", 1: "",
			2: "rollout: waiting for web.0, web.1, earlier in the cluster-wide rollout, to run the new spec",
			3: "rollout: waiting for web.0, web.1, earlier in the cluster-wide rollout, to run the new spec"}},
		{"half the first wave", []int{1}, map[int]string{
			2: "rollout: waiting for web.0, earlier in the cluster-wide rollout, to run the new spec"}},
		{"the first wave done", []int{0, 1}, map[int]string{2: "", 3: ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			others := map[string]map[string]InstanceStatus{"a": {}, "b": {}}
			for i := range 4 {
				inst := InstanceID("web", i)
				st := InstanceStatus{Kind: "ctx", Name: "web", Instance: inst, State: drivers.Running, SpecHash: "old"}
				if slices.Contains(tt.updated, i) {
					st.SpecHash = hash(i)
				}
				others[placement[inst]][CTXSpecID(inst)] = st
			}
			w := &waves{r: &Reconciler{cfg: Config{Node: "c"}}, ctxs: ctxs, updated: map[string]bool{},
				ps: &passState{desired: &Desired{Placement: placement}, others: others}}
			for i, want := range tt.want {
				if got := w.turn(CTXSpecID(InstanceID("web", i)), "web"); got != want {
					t.Errorf("turn of web.%d = %q, want %q", i, got, want)
				}
			}
		})
	}
}
