package reconcile

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/schema"
)

// startMember starts cluster node name on loopback behind net, joined
// through join (if any), with props at /hw/<name>.
func startMember(tb testing.TB, net *cluster.Partition, name string, join string) *cluster.Node {
	tb.Helper()
	tr, addr, err := net.NewLoopbackTransport()
	if err != nil {
		tb.Fatal(err)
	}
	cfg := cluster.LocalConfig()
	cfg.Name, cfg.BindAddr, cfg.Transport, cfg.Logger = name, addr, tr, testLogger()
	n, err := cluster.Start(context.Background(), cfg, vfs.Options{Logger: testLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { n.Close() })
	if join != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Join(ctx, []string{join}); err != nil {
			tb.Fatal(err)
		}
	}
	putHW(tb, n.Store(), name, nil)
	return n
}

// threeAgents starts three members n0, n1, n2 on loopback (n1 and n2
// joined through n0), waits until each sees the three alive, and starts an
// agent on each with opts (members set to its node's).
func threeAgents(tb testing.TB, opts agentOpts) (*cluster.Partition, []*cluster.Node, []*agent) {
	tb.Helper()
	net := cluster.NewPartition()
	n0 := startMember(tb, net, "n0", "")
	nodes := []*cluster.Node{n0, startMember(tb, net, "n1", n0.GossipAddr()), startMember(tb, net, "n2", n0.GossipAddr())}
	waitUntil(tb, "three live members everywhere", func() (bool, string) {
		for _, n := range nodes {
			if liveCount(n) != 3 {
				return false, fmt.Sprintf("%s sees %d", n.Name(), liveCount(n))
			}
		}
		return true, ""
	})
	agents := make([]*agent, 3)
	for i, n := range nodes {
		o := opts
		o.members = n.Members
		agents[i] = startAgent(tb, n.Name(), n.Store(), o)
	}
	return net, nodes, agents
}

func liveCount(n *cluster.Node) int {
	c := 0
	for _, m := range n.Members() {
		if m.State == cluster.StateAlive {
			c++
		}
	}
	return c
}

// perNode counts the instances each agent's driver runs, by node.
func perNode(tb testing.TB, agents ...*agent) map[string]int {
	tb.Helper()
	out := map[string]int{}
	for _, a := range agents {
		insts, err := a.drv.Observe(context.Background())
		if err != nil {
			tb.Fatal(err)
		}
		for _, in := range insts {
			if in.Live() {
				out[a.name]++
			}
		}
	}
	return out
}

func TestLoopThreeNodesSpreadFailoverNoFlap(t *testing.T) {
	marker := newMarker(t)
	t.Cleanup(func() { killMarked(marker) })
	net, nodes, agents := threeAgents(t, agentOpts{})
	n0, n2 := nodes[0], nodes[2]

	web := sleepCTX(marker, 6, "1000")
	web.Placement.Strategy = schema.StrategySpread
	publish(t, n0.Store(), buildSnapshot(t, map[string]schema.Ctx{"web": web}, nil), 1)
	waitUntil(t, "6 instances spread 2/2/2", func() (bool, string) {
		got := perNode(t, agents...)
		all := true
		for _, a := range agents {
			all = all && a.rec.Progress().Converged
		}
		return all && maps.Equal(got, map[string]int{"n0": 2, "n1": 2, "n2": 2}) && oncePerInstance(marker, 6),
			fmt.Sprintf("%v, %d processes", got, countMarked(marker))
	})

	// n2 goes away and its processes die with it.
	gone := publishedIDs(agents[2])
	agents[2].stop(t)
	for id, pids := range markedProcesses(marker) {
		if slices.Contains(gone, id) {
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if err := n2.Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	n2.Close()
	waitUntil(t, "n2's instances run on n0 and n1", func() (bool, string) {
		got := perNode(t, agents[0], agents[1])
		conv := agents[0].rec.Progress().Converged && agents[1].rec.Progress().Converged
		return conv && got["n0"]+got["n1"] == 6 && oncePerInstance(marker, 6), fmt.Sprintf("%v, %d processes, %s / %s", got, countMarked(marker), progressOf(agents[0]), progressOf(agents[1]))
	})
	before := markedProcesses(marker)

	// n2 comes back (its replica lost, its driver state dir kept).
	n2b := startMember(t, net, "n2", n0.GossipAddr())
	back := startAgent(t, "n2", n2b.Store(), agentOpts{members: n2b.Members, stateDir: agents[2].stateDir})
	waitUntil(t, "n2 back and converged with nothing to run", func() (bool, string) {
		p := back.rec.Progress()
		return p.Converged && p.Generation == 1 && liveCount(n0) == 3, progressOf(back)
	})
	// A few more passes everywhere: nothing moves back.
	for round := 0; round < 3; round++ {
		for _, a := range []*agent{agents[0], agents[1], back} {
			passes := a.rec.Progress().Passes
			a.rec.Trigger("test")
			waitUntil(t, a.name+" passes again", func() (bool, string) {
				p := a.rec.Progress()
				return p.Passes > passes && p.Converged, progressOf(a)
			})
		}
	}
	if after := markedProcesses(marker); !mapsEqualPids(after, before) {
		t.Errorf("instances moved or restarted after n2 came back:\nbefore %v\nafter  %v", before, after)
	}
	if got := perNode(t, back); got["n2"] != 0 {
		t.Errorf("n2 runs %d instances after coming back, want 0", got["n2"])
	}
	var insts map[string]InstanceStatus
	for _, a := range agents[:2] {
		readValue(t, a.store, "/run/"+a.name+"/instances", &insts)
		for id, in := range insts {
			if in.Restarts != 0 {
				t.Errorf("%s: %s restarted %d times", a.name, id, in.Restarts)
			}
		}
	}
}

// publishedIDs lists the instance ids a last published in
// /run/<node>/instances.
func publishedIDs(a *agent) []string {
	e, ok := a.store.Get("/run/" + a.name + "/instances")
	if !ok {
		return nil
	}
	var m map[string]InstanceStatus
	if vfs.Decode(e.Value, &m) != nil {
		return nil
	}
	return sortedNames(m)
}

// oncePerInstance reports whether n instances run, each exactly once.
func oncePerInstance(marker string, n int) bool {
	m := markedProcesses(marker)
	for _, pids := range m {
		if len(pids) != 1 {
			return false
		}
	}
	return len(m) == n
}

// TestReadInstancesOfAMemberThatJustJoined checks which /run/<m>/instances
// entries of a member seen joining after this loop started are believed:
// one written in the member's current life (at or above its Started) at
// once, even when written before this node saw the join; one from an
// earlier life only after JoinGrace, or never when Started says so.
func TestReadInstancesOfAMemberThatJustJoined(t *testing.T) {
	store := newStore(t, "n1")
	journal, _ := openTestJournal(t, t.TempDir())
	rec, err := New(Config{Node: "n1", Store: store, Journal: journal, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec.started = now.Add(-time.Minute)
	joined := now.Add(-time.Second) // this node saw m join a second ago
	life := now.Add(-3 * time.Second).UnixNano()
	tests := []struct {
		name    string
		written int64 // the entry's Wall
		started int64 // the member's Started
		want    bool
	}{
		{"written in this life, before the join was seen", life + 1, life, true},
		{"written after the join was seen", now.UnixNano(), life, true},
		{"from an earlier life", life - 1, life, false},
		{"older than the join, Started unknown", life + 1, 0, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := fmt.Sprintf("m%d", i)
			value, err := vfs.Encode(map[string]InstanceStatus{"web.0": {Kind: "ctx", Name: "web", Instance: "web.0", Driver: "process"}})
			if err != nil {
				t.Fatal(err)
			}
			e := vfs.Entry{Path: "/run/" + m + "/" + runInstances, Value: value, Version: vfs.Version{Wall: tt.written, Node: m}}
			if _, err := store.Merge(e); err != nil {
				t.Fatal(err)
			}
			got := rec.readInstances([]string{"n1", m}, map[string]time.Time{m: joined}, map[string]int64{m: tt.started})
			if _, ok := got[m]; ok != tt.want {
				t.Errorf("entry believed = %v, want %v", ok, tt.want)
			}
		})
	}
}

// TestScalerAcrossNodes: on three nodes, the holder of the scaler lease
// reads what the instances on every node use, and every node places the
// number it decides, each instance once.
func TestScalerAcrossNodes(t *testing.T) {
	marker := newMarker(t)
	t.Cleanup(func() { killMarked(marker) })
	_, nodes, agents := threeAgents(t, agentOpts{resync: time.Second, scalePeriod: 300 * time.Millisecond, scaleDownWindow: 2 * time.Second})
	n0 := nodes[0]
	web := busyCTX(marker)
	web.Placement.Strategy = schema.StrategySpread
	holder := Rank(scaleLease+"web", []string{"n0", "n1", "n2"})[0]
	scaled := func(want int) (bool, string) {
		got := perNode(t, agents...)
		total := 0
		for _, c := range got {
			total += c
		}
		all := true
		for _, a := range agents {
			all = all && a.rec.Progress().Converged
		}
		var s Scale
		e, ok := n0.Store().Get(scalePrefix + "web")
		if ok {
			vfs.Decode(e.Value, &s)
		}
		return all && total == want && oncePerInstance(marker, want) && s.Replicas == want && s.By == holder,
			fmt.Sprintf("%v, decision %+v", got, s)
	}
	publish(t, n0.Store(), buildSnapshot(t, map[string]schema.Ctx{"web": web}, nil), 1)
	waitUntil(t, "3 busy instances, one per node, decided by the lease holder "+holder, func() (bool, string) { return scaled(3) })
	got := perNode(t, agents...)
	if !maps.Equal(got, map[string]int{"n0": 1, "n1": 1, "n2": 1}) {
		t.Errorf("spread: %v, want one instance per node", got)
	}

	idle := web
	idle.Command, idle.Args = "sleep", []string{"1000"}
	publish(t, n0.Store(), buildSnapshot(t, map[string]schema.Ctx{"web": idle}, nil), 2)
	waitUntil(t, "back to 1 idle instance", func() (bool, string) { return scaled(1) })
}
