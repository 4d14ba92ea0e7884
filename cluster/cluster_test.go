package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster/vfs"
)

// testLogger is quiet unless CTXOS_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("CTXOS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testNode starts one node on loopback behind net, with its replica in dir
// ("" for memory only).
func testNode(tb testing.TB, net *Partition, name, dir string, mutate func(*Config, *vfs.Options)) *Node {
	tb.Helper()
	tr, addr, err := net.NewLoopbackTransport()
	if err != nil {
		tb.Fatal(err)
	}
	cfg := LocalConfig()
	cfg.Name = name
	cfg.BindAddr = addr
	cfg.Transport = tr
	cfg.Logger = testLogger()
	opts := vfs.Options{Dir: dir}
	if mutate != nil {
		mutate(&cfg, &opts)
	}
	n, err := Start(context.Background(), cfg, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// testCluster starts size nodes named n0..n<size-1> and joins them all
// through the first one.
func testCluster(tb testing.TB, size int, mutate func(i int, c *Config, o *vfs.Options)) (*Partition, []*Node) {
	tb.Helper()
	net := NewPartition()
	nodes := make([]*Node, size)
	for i := range nodes {
		var m func(*Config, *vfs.Options)
		if mutate != nil {
			m = func(c *Config, o *vfs.Options) { mutate(i, c, o) }
		}
		nodes[i] = testNode(tb, net, fmt.Sprintf("n%d", i), "", m)
	}
	tb.Cleanup(func() {
		for _, n := range nodes {
			if n != nil {
				n.Close()
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range nodes[1:] {
		if err := n.Join(ctx, []string{nodes[0].GossipAddr()}); err != nil {
			tb.Fatal(err)
		}
	}
	waitFor(tb, 30*time.Second, "every node sees every member alive", func() bool {
		for _, n := range nodes {
			if countState(n, StateAlive) != size {
				return false
			}
		}
		return true
	})
	return net, nodes
}

func countState(n *Node, s MemberState) int {
	c := 0
	for _, m := range n.Members() {
		if m.State == s {
			c++
		}
	}
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting until %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// holds reports whether n has path with exactly value v (decoded).
func holds(n *Node, path string, want string) bool {
	e, ok := n.Store().Get(path)
	if !ok {
		return false
	}
	var got string
	return vfs.Decode(e.Value, &got) == nil && got == want
}

func TestEveryNodeSeesEveryHW(t *testing.T) {
	for _, size := range []int{3, 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			_, nodes := testCluster(t, size, nil)
			for _, n := range nodes {
				if _, err := n.Store().PutValue("/hw/"+n.Name(), "facts of "+n.Name()); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, 30*time.Second, "every node holds every /hw entry", func() bool {
				for _, n := range nodes {
					for _, m := range nodes {
						if !holds(n, "/hw/"+m.Name(), "facts of "+m.Name()) {
							return false
						}
					}
				}
				return true
			})
		})
	}
}

func TestLargeValueReplicatesOverReliableChannel(t *testing.T) {
	_, nodes := testCluster(t, 4, nil)
	big := make([]byte, 900<<10) // well over any UDP packet
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	if _, err := nodes[0].Store().PutValue("/run/n0/big", string(big)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "every node holds the 900 KiB entry", func() bool {
		for _, n := range nodes {
			if !holds(n, "/run/n0/big", string(big)) {
				return false
			}
		}
		return true
	})
	huge := make([]byte, 2<<20)
	if _, err := nodes[0].Store().Put("/run/n0/huge", huge); err == nil {
		t.Fatal("a 2 MiB value was accepted; want it refused with path and size")
	}
}

func TestPartitionHealsWithoutLoss(t *testing.T) {
	net, nodes := testCluster(t, 6, nil)
	a, b := nodes[:3], nodes[3:]
	addrs := func(ns []*Node) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.GossipAddr())
		}
		return out
	}
	// A shared key every node holds before the cut, deleted on one side
	// during the cut: the other side's stale copy must not undo the
	// tombstone.
	if _, err := nodes[0].Store().PutValue("/lk/shared", "before"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "every node holds /lk/shared", func() bool {
		for _, n := range nodes {
			if !holds(n, "/lk/shared", "before") {
				return false
			}
		}
		return true
	})

	net.Cut(addrs(a), addrs(b))
	waitFor(t, 60*time.Second, "each side sees the other failed", func() bool {
		return countState(a[0], StateFailed) == 3 && countState(b[0], StateFailed) == 3
	})
	for _, n := range nodes {
		for i := 0; i < 20; i++ {
			if _, err := n.Store().PutValue(fmt.Sprintf("/run/%s/w%d", n.Name(), i), n.Name()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := a[1].Store().Delete("/lk/shared"); err != nil {
		t.Fatal(err)
	}
	// Both sides write the same shared key; the later write must win
	// everywhere after the heal.
	if _, err := b[1].Store().PutValue("/lk/contended", "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := a[2].Store().PutValue("/lk/contended", "a"); err != nil {
		t.Fatal(err)
	}
	net.Heal()
	waitFor(t, 60*time.Second, "every write is on every node after the heal", func() bool {
		for _, n := range nodes {
			for _, w := range nodes {
				for i := 0; i < 20; i++ {
					if !holds(n, fmt.Sprintf("/run/%s/w%d", w.Name(), i), w.Name()) {
						return false
					}
				}
			}
			if _, ok := n.Store().Get("/lk/shared"); ok {
				return false
			}
			if !holds(n, "/lk/contended", "a") {
				return false
			}
		}
		return true
	})
	waitFor(t, 30*time.Second, "every node sees every member alive again", func() bool {
		for _, n := range nodes {
			if countState(n, StateAlive) != len(nodes) {
				return false
			}
		}
		return true
	})
}

func TestFutureVersionRefused(t *testing.T) {
	_, nodes := testCluster(t, 3, func(i int, c *Config, o *vfs.Options) {
		if i == 2 {
			o.Now = func() time.Time { return time.Now().Add(time.Hour) }
		}
	})
	if _, err := nodes[2].Store().PutValue("/run/n2/skewed", "from the future"); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[1].Store().PutValue("/run/n1/marker", "now"); err != nil {
		t.Fatal(err)
	}
	// Once n1's later write reached n0, n2's (sent earlier) has had its
	// chance too; it must have been refused.
	waitFor(t, 20*time.Second, "n0 holds n1's marker", func() bool { return holds(nodes[0], "/run/n1/marker", "now") })
	waitFor(t, 20*time.Second, "n2 holds n1's marker", func() bool { return holds(nodes[2], "/run/n1/marker", "now") })
	for _, n := range nodes[:2] {
		if _, ok := n.Store().Get("/run/n2/skewed"); ok {
			t.Errorf("%s accepted a version an hour in the future", n.Name())
		}
	}
}

func TestRestartComesBackAndCatchesUp(t *testing.T) {
	net := NewPartition()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	start := func(i int) *Node {
		return testNode(t, net, fmt.Sprintf("n%d", i), dirs[i], nil)
	}
	nodes := []*Node{start(0), start(1), start(2)}
	defer func() {
		for _, n := range nodes {
			n.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range nodes[1:] {
		if err := n.Join(ctx, []string{nodes[0].GossipAddr()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		if _, err := n.Store().PutValue("/run/"+n.Name()+"/before", "x"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "n2 holds every node's entry", func() bool {
		return holds(nodes[2], "/run/n0/before", "x") && holds(nodes[2], "/run/n1/before", "x")
	})
	if err := nodes[2].Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[0].Store().PutValue("/run/n0/while-away", "y"); err != nil {
		t.Fatal(err)
	}
	nodes[2] = start(2)
	// Its own entry and its replica are back before it talks to anyone.
	for _, p := range []string{"/run/n2/before", "/run/n0/before", "/run/n1/before"} {
		if !holds(nodes[2], p, "x") {
			t.Fatalf("after restart, %s is missing from n2's replica", p)
		}
	}
	if err := nodes[2].Join(ctx, []string{nodes[0].GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "n2 catches up on the write it missed", func() bool {
		return holds(nodes[2], "/run/n0/while-away", "y")
	})
}

func TestCorruptReplicaIsRebuiltFromPeers(t *testing.T) {
	net := NewPartition()
	dir := t.TempDir()
	n0 := testNode(t, net, "n0", "", nil)
	defer n0.Close()
	n1 := testNode(t, net, "n1", dir, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n1.Join(ctx, []string{n0.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	if _, err := n0.Store().PutValue("/run/n0/a", "x"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "n1 holds n0's entry", func() bool { return holds(n1, "/run/n0/a", "x") })
	n1.Leave(time.Second)
	n1.Close()
	corruptFiles(t, dir)
	n1 = testNode(t, net, "n1", dir, nil)
	defer n1.Close()
	if err := n1.Join(ctx, []string{n0.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the rebuilt replica holds n0's entry again", func() bool { return holds(n1, "/run/n0/a", "x") })
}

// corruptFiles overwrites the start of every regular file in dir.
func corruptFiles(tb testing.TB, dir string) {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		f, err := os.OpenFile(dir+"/"+e.Name(), os.O_WRONLY, 0)
		if err != nil {
			tb.Fatal(err)
		}
		garbage := make([]byte, 8192)
		for i := range garbage {
			garbage[i] = 0xA5
		}
		f.WriteAt(garbage, 0)
		f.Close()
		n++
	}
	if n == 0 {
		tb.Fatalf("no replica file in %s to corrupt", dir)
	}
}

// TestStartedMarksALife checks Member.Started: the others see it, and a
// node restarted on its replica starts a life above every version it wrote
// before, even when its wall clock went back.
func TestStartedMarksALife(t *testing.T) {
	net := NewPartition()
	dir := t.TempDir()
	n0 := testNode(t, net, "n0", "", nil)
	t.Cleanup(func() { n0.Close() })
	n1 := testNode(t, net, "n1", dir, nil)
	ctx := context.Background()
	if err := n1.Join(ctx, []string{n0.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	startedOf := func(name string) int64 {
		for _, m := range n0.Members() {
			if m.Name == name && m.State == StateAlive {
				return m.Started
			}
		}
		return 0
	}
	waitFor(t, 30*time.Second, "n0 sees n1's Started", func() bool { return startedOf("n1") > 0 })
	first := startedOf("n1")
	e, err := n1.Store().PutValue("/run/n1/before", "x")
	if err != nil {
		t.Fatal(err)
	}
	if e.Version.Wall < first {
		t.Fatalf("a write of this life has Wall %d below its Started %d", e.Version.Wall, first)
	}
	if err := n1.Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	n1.Close()

	// Back with its wall clock stepped an hour back: its replica's clock
	// still puts the new life above what it wrote before.
	n1 = testNode(t, net, "n1", dir, func(_ *Config, o *vfs.Options) {
		o.Now = func() time.Time { return time.Now().Add(-time.Hour) }
	})
	t.Cleanup(func() { n1.Close() })
	if err := n1.Join(ctx, []string{n0.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "n0 sees n1's new life", func() bool { return startedOf("n1") > e.Version.Wall })
	again, err := n1.Store().PutValue("/run/n1/after", "y")
	if err != nil {
		t.Fatal(err)
	}
	if again.Version.Wall < startedOf("n1") {
		t.Errorf("a write of the new life has Wall %d below its Started %d", again.Version.Wall, startedOf("n1"))
	}
}
