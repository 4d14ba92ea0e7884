package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/ctxos/ctxos/cluster/vfs"
)

// The benchmarks below run whole clusters of real memberlist nodes on
// loopback, on DefaultConfig (memberlist's LAN profile: gossip every
// 200 ms to 3 nodes, probe every second, push/pull every 30 s scaled up
// with the cluster size). One iteration is a whole experiment and takes
// seconds to minutes, so run them with -benchtime=1x; all of them take
// about ten minutes:
//
//	go test ./cluster/ -run '^$' -bench . -benchtime=1x -timeout 40m

// benchValue returns a CBOR byte string of size bytes in all, of random
// content so that memberlist's compression does not flatter the numbers.
func benchValue(tb testing.TB, size int) []byte {
	tb.Helper()
	for n := size; n > 0; n-- {
		raw := make([]byte, n)
		rand.Read(raw)
		b, err := vfs.Encode(raw)
		if err != nil {
			tb.Fatal(err)
		}
		if len(b) == size {
			return b
		}
	}
	tb.Fatalf("no CBOR byte string of %d bytes", size)
	return nil
}

// lanCluster starts size Nodes (in-memory stores) on DefaultConfig over
// counting loopback transports, in the gossip phases ph (nil: new random
// ones), joins them through the first one and waits
// until every node counts every member. onChange, if set, is every store's
// OnChange hook, told which node it runs on.
func lanCluster(tb testing.TB, size int, ph *phases, onChange func(node int, e vfs.Entry, local bool)) ([]*Node, []*countingTransport) {
	tb.Helper()
	nodes := make([]*Node, size)
	trs := make([]*countingTransport, size)
	tb.Cleanup(func() {
		for _, n := range nodes {
			if n != nil {
				n.Close()
			}
		}
	})
	quiet := slog.New(slog.DiscardHandler)
	if ph == nil {
		ph = newPhases(size)
	}
	for i := range nodes {
		tr, addr := newCountingTransport(tb)
		trs[i] = tr
		ph.wait(i)
		cfg := DefaultConfig()
		cfg.Name = fmt.Sprintf("n%d", i)
		cfg.BindAddr = addr
		cfg.Transport = tr
		cfg.Logger = quiet
		opts := vfs.Options{Logger: quiet}
		if onChange != nil {
			opts.OnChange = func(e vfs.Entry, local bool) { onChange(i, e, local) }
		}
		n, err := Start(context.Background(), cfg, opts)
		if err != nil {
			tb.Fatal(err)
		}
		nodes[i] = n
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range nodes[1:] {
		if err := n.Join(ctx, []string{nodes[0].GossipAddr()}); err != nil {
			tb.Fatal(err)
		}
	}
	counts := func(i int) int { return nodes[i].ml.Load().NumMembers() }
	waitMembers(tb, size, counts)
	return nodes, trs
}

// phases spreads the start times of a cluster's nodes over one gossip
// interval in random order. memberlist's gossip ticker starts when the node
// does (its "stagger" delays only the first tick), so nodes created in a
// tight loop gossip in lockstep: every hop then waits a whole interval
// instead of half of one on average, as it does in a real cluster whose
// nodes started at unrelated times.
type phases struct {
	at    []time.Duration // offset of node i within the interval
	start time.Time
}

func newPhases(size int) *phases {
	p := &phases{at: make([]time.Duration, size), start: time.Now()}
	for i := range p.at {
		p.at[i] = time.Duration(mrand.Int64N(int64(gossipInterval)))
	}
	slices.Sort(p.at)
	return p
}

// again starts the same layout over at the next interval boundary, so a
// second cluster gossips in the same phases as the first, node for node:
// with few nodes, one layout can be luckier than another for a whole run.
func (p *phases) again() {
	elapsed := time.Since(p.start)
	p.start = p.start.Add((elapsed/gossipInterval + 1) * gossipInterval)
}

// wait returns at node i's start time.
func (p *phases) wait(i int) {
	if d := time.Until(p.start.Add(p.at[i])); d > 0 {
		time.Sleep(d) // the start phase itself, not a wait for a condition
	}
}

// gossipInterval is the LAN profile's, which DefaultConfig uses.
var gossipInterval = memberlist.DefaultLANConfig().GossipInterval

// randomGap pauses for a random part of a gossip interval, so that a write
// lands at a random point of its writer's interval rather than just after
// the tick that completed the previous write.
func randomGap() {
	time.Sleep(time.Duration(mrand.Int64N(int64(gossipInterval))))
}

// waitMembers waits until count(i) is size for every node i; on timeout it
// says how many nodes counted how many members.
func waitMembers(tb testing.TB, size int, count func(i int) int) {
	tb.Helper()
	// Gossip misses a node now and then; push/pull repairs membership
	// within one interval after memberlist's initial stagger.
	limit := pushPullInterval(memberlist.DefaultLANConfig().PushPullInterval, size) + time.Minute
	deadline := time.Now().Add(limit)
	for {
		hist := map[int]int{}
		for i := range size {
			hist[count(i)]++
		}
		if hist[size] == size {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %s, the nodes do not all count %d members: members counted → nodes: %v", limit, size, hist)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// probe times one write until every node of a cluster holds it.
type probe struct {
	start time.Time
	left  atomic.Int64
	took  atomic.Int64 // nanoseconds, set when left reaches 0
	done  chan struct{}
}

func newProbe(holders int) *probe {
	p := &probe{start: time.Now(), done: make(chan struct{})}
	p.left.Store(int64(holders))
	return p
}

// arrive counts one more holder; it runs in a store's OnChange hook or a
// delegate's NotifyMsg, so it must not block.
func (p *probe) arrive() {
	if p.left.Add(-1) == 0 {
		p.took.Store(int64(time.Since(p.start)))
		close(p.done)
	}
}

// probes maps what a write is known by (a path, a baseline id) to its probe.
type probes struct{ m sync.Map }

func (ps *probes) arrive(key any) {
	if p, ok := ps.m.Load(key); ok {
		p.(*probe).arrive()
	}
}

// wait returns how long p took to reach every holder, or an error naming
// how many held it at the deadline.
func (p *probe) wait(limit time.Duration, holders int, what string) (time.Duration, error) {
	select {
	case <-p.done:
		return time.Duration(p.took.Load()), nil
	case <-time.After(limit):
		return 0, fmt.Errorf("%s: %d of %d nodes held it after %s", what, holders-int(p.left.Load()), holders, limit)
	}
}

// percentile is the nearest-rank percentile q (0 < q ≤ 1) of sorted ds.
func percentile(ds []time.Duration, q float64) time.Duration {
	i := int(float64(len(ds))*q+0.999999) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// cpuTime is the CPU time this process used so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// convergenceWrites is how many timed writes each side makes per cluster
// size, after convergenceWarmup untimed ones (they let the join traffic
// drain from memberlist's own queues).
const (
	convergenceWrites = 100
	convergenceWarmup = 5
)

// BenchmarkConvergence times a 200-byte write on one node until every node
// of a cluster of N holds it (each store's OnChange hook counts it), for
// Node's replication and, in the same run, for the rawNode baseline: a bare
// memberlist delegate that broadcasts a message of the same length and
// queues it again on first receipt. Both clusters run at once and the
// writes alternate between them (which one goes first alternates too), so
// both see the same load of the shared machine; node i of both gossips in
// the same phase. The writer rotates over the nodes. Reported: p50 and p99
// of each, and ours/raw. With 100 writes p99 is the second slowest (with 30
// it was the slowest, and the ratio of two maxima swung by ±20% from run
// to run on identical code). Gossip misses a node now and then (each node
// sends a message RetransmitMult·⌈log10(N+1)⌉ times to random nodes):
// ours-by-antientropy counts our writes that reached the last node only by
// anti-entropy (after 10 s; they are in the percentiles, with their real
// time), raw-missed the baseline messages that never reached every node
// (left out of its percentiles, which flatters the baseline).
func BenchmarkConvergence(b *testing.B) {
	for _, size := range []int{3, 10, 50, 100} {
		b.Run(fmt.Sprintf("N=%d", size), func(b *testing.B) {
			for range b.N {
				benchConvergence(b, size)
			}
		})
	}
}

func benchConvergence(b *testing.B, size int) {
	var ps probes
	ph := newPhases(size)
	nodes, _ := lanCluster(b, size, ph, func(_ int, e vfs.Entry, _ bool) { ps.arrive(e.Path) })
	ph.again()
	raws, _ := rawCluster(b, size, ph, func(_ int, id uint64) { ps.arrive(id) })

	// Gossip is done with a write within a few seconds. A node it missed
	// gets the write from anti-entropy at a push/pull, within one
	// interval plus memberlist's initial stagger; the baseline has no
	// anti-entropy, so a node it missed never gets the message.
	const gossipLimit = 10 * time.Second
	oursLimit := pushPullInterval(memberlist.DefaultLANConfig().PushPullInterval, size) + 40*time.Second
	var ours, raw []time.Duration
	oursLate, rawMissed := 0, 0
	writeOurs := func(i int, w *Node, path string, v []byte) {
		p := newProbe(size)
		ps.m.Store(path, p)
		p.start = time.Now()
		if _, err := w.Store().Put(path, v); err != nil {
			b.Fatal(err)
		}
		took, err := p.wait(oursLimit, size, "ours "+path)
		if err != nil {
			b.Fatal(err)
		}
		if i >= convergenceWarmup {
			ours = append(ours, took)
			if took > gossipLimit {
				oursLate++
			}
		}
	}
	writeRaw := func(i int, r *rawNode, msgLen int) {
		id := uint64(i + 1)
		msg := make([]byte, msgLen)
		rand.Read(msg)
		binary.BigEndian.PutUint64(msg, id)
		p := newProbe(size)
		ps.m.Store(id, p)
		p.start = time.Now()
		r.broadcast(msg)
		took, err := p.wait(gossipLimit, size, fmt.Sprintf("raw message %d", id))
		if i < convergenceWarmup {
			return
		}
		if err != nil {
			b.Log(err)
			rawMissed++
			return
		}
		raw = append(raw, took)
	}

	cpu0, wall0 := cpuTime(), time.Now()
	b.ResetTimer()
	for i := range convergenceWarmup + convergenceWrites {
		w := nodes[i%size]
		path := fmt.Sprintf("/run/%s/conv/w%d", w.Name(), i)
		v := benchValue(b, 200)
		n := deltaLen(b, w.Name(), path, v)
		if i%2 == 0 {
			randomGap()
			writeOurs(i, w, path, v)
			randomGap()
			writeRaw(i, raws[i%size], n)
		} else {
			randomGap()
			writeRaw(i, raws[i%size], n)
			randomGap()
			writeOurs(i, w, path, v)
		}
	}
	b.StopTimer()
	cpu := float64(cpuTime()-cpu0) / float64(time.Since(wall0))

	if len(raw) == 0 {
		b.Fatalf("the baseline missed a node with every one of its %d messages", rawMissed)
	}
	slices.Sort(ours)
	slices.Sort(raw)
	if testing.Verbose() {
		b.Logf("ours, sorted: %v\nraw, sorted: %v", ours, raw)
	}
	o50, o99 := percentile(ours, 0.50), percentile(ours, 0.99)
	r50, r99 := percentile(raw, 0.50), percentile(raw, 0.99)
	b.ReportMetric(ms(o50), "ours-p50-ms")
	b.ReportMetric(ms(o99), "ours-p99-ms")
	b.ReportMetric(ms(r50), "raw-p50-ms")
	b.ReportMetric(ms(r99), "raw-p99-ms")
	b.ReportMetric(float64(o50)/float64(r50), "p50-ratio")
	b.ReportMetric(float64(o99)/float64(r99), "p99-ratio")
	b.ReportMetric(cpu, "cpu-cores")
	b.ReportMetric(float64(oursLate), "ours-by-antientropy")
	b.ReportMetric(float64(rawMissed), "raw-missed")
}

// deltaLen is the length of the gossip message that carries a write of v
// at path by writer, for the baseline's message of the same write. The
// version's logical part is small, which CBOR encodes in one byte whatever
// it is.
func deltaLen(tb testing.TB, writer, path string, v []byte) int {
	tb.Helper()
	e := vfs.Entry{Path: path, Value: v, Version: vfs.Version{Wall: time.Now().UnixNano(), Node: writer}}
	msg, err := encodeMsg(msgDelta, e)
	if err != nil {
		tb.Fatal(err)
	}
	return len(msg)
}

// bandwidth is what the nodes of a cluster sent between two readings.
type bandwidth struct {
	udp, tcp, packets int64
	at                time.Time
}

func readBandwidth(trs []*countingTransport) bandwidth {
	bw := bandwidth{at: time.Now()}
	for _, t := range trs {
		u, c, p := t.sent()
		bw.udp += u
		bw.tcp += c
		bw.packets += p
	}
	return bw
}

// report writes per-node rates since from under prefix.
func (bw bandwidth) report(b *testing.B, from bandwidth, nodes int, prefix string) {
	secs := bw.at.Sub(from.at).Seconds() * float64(nodes)
	b.ReportMetric(float64(bw.udp-from.udp)/secs, prefix+"-udp-B/s/node")
	b.ReportMetric(float64(bw.tcp-from.tcp)/secs, prefix+"-tcp-B/s/node")
	b.ReportMetric(float64(bw.packets-from.packets)/secs, prefix+"-pkts/s/node")
}

// Bandwidth benchmark shape: cluster size, measuring window, load.
const (
	bandwidthNodes   = 50
	bandwidthKeys    = 10 // keys per node, overwritten in turn
	bandwidthDrainBy = 3 * time.Minute
)

// BenchmarkGossipBandwidth measures what one node of a 50-node cluster
// sends per second, by UDP (gossip and probes, payload bytes) and by TCP
// (push/pull with its digest, anti-entropy batches): idle, then while the
// cluster takes 10 and then 100 writes/s of 200-byte values (each node
// overwriting its own 10 keys in turn, like status updates). After each
// load it reports how long until every node held the last version of
// every key (drain-s) and what share did when the writes stopped
// (held-at-end): whether gossip kept up or anti-entropy had to finish the
// job. Each window lasts one push/pull interval (60 s at this size) and
// starts once memberlist's push/pull stagger (up to 30 s) is over, so it
// holds exactly one push/pull started by each node. It takes about 5
// minutes.
func BenchmarkGossipBandwidth(b *testing.B) {
	for range b.N {
		benchGossipBandwidth(b)
	}
}

func benchGossipBandwidth(b *testing.B) {
	size := bandwidthNodes
	lan := memberlist.DefaultLANConfig()
	window := pushPullInterval(lan.PushPullInterval, size)
	created := time.Now()
	nodes, trs := lanCluster(b, size, nil, nil)

	// The join leaves memberlist's queues full of alive messages; idle
	// means they have drained, when only probes (a ping and an ack per
	// node and second) are left.
	prev := readBandwidth(trs)
	waitFor(b, 2*time.Minute, "the join traffic drains", func() bool {
		cur := readBandwidth(trs)
		secs := cur.at.Sub(prev.at).Seconds()
		if secs < 1 {
			return false
		}
		rate := float64(cur.packets-prev.packets) / secs / float64(size)
		prev = cur
		return rate < 3
	})
	if d := time.Until(created.Add(lan.PushPullInterval)); d > 0 {
		time.Sleep(d) // memberlist's push/pull stagger, not a condition
	}

	b.ResetTimer()
	idle0 := readBandwidth(trs)
	time.Sleep(window) // the measuring window
	readBandwidth(trs).report(b, idle0, size, "idle")

	value := benchValue(b, 200)
	for _, rate := range []int{10, 100} {
		prefix := fmt.Sprintf("w%d", rate)
		last := map[string]vfs.Entry{}
		tick := time.NewTicker(time.Second / time.Duration(rate))
		load0 := readBandwidth(trs)
		cpu0 := cpuTime()
		writes := 0
		for end := time.Now().Add(window); time.Now().Before(end); writes++ {
			<-tick.C
			n := nodes[writes%size]
			path := fmt.Sprintf("/sum/%s/k%d", n.Name(), (writes/size)%bandwidthKeys)
			e, err := n.Store().Put(path, value)
			if err != nil {
				b.Fatal(err)
			}
			last[path] = e
		}
		tick.Stop()
		load1 := readBandwidth(trs)
		load1.report(b, load0, size, prefix)
		secs := load1.at.Sub(load0.at)
		b.ReportMetric(float64(writes)/secs.Seconds(), prefix+"-writes/s")
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(secs), prefix+"-cpu-cores")

		held := func() int {
			c := 0
			for _, n := range nodes {
				for path, want := range last {
					if got, ok := n.Store().Get(path); ok && got.Version == want.Version {
						c++
					}
				}
			}
			return c
		}
		want := len(nodes) * len(last)
		b.ReportMetric(float64(held())/float64(want), prefix+"-held-at-end")
		waitFor(b, bandwidthDrainBy, "every node holds the last version of every key", func() bool { return held() == want })
		b.ReportMetric(time.Since(load1.at).Seconds(), prefix+"-drain-s")
	}
	b.StopTimer()
}

// pushPullInterval is memberlist's push/pull period for a cluster of size
// (its pushPullScale): the base interval, one more per doubling above 32
// nodes.
func pushPullInterval(base time.Duration, size int) time.Duration {
	mult := 1
	for n := 32; n < size; n *= 2 {
		mult++
	}
	return time.Duration(mult) * base
}

// Environment of the child process of BenchmarkNodeMemory100k.
const (
	memChildEnv = "CTXOS_BENCH_MEM_CHILD" // "local" or "replicated"
	memPeerEnv  = "CTXOS_BENCH_MEM_PEER"  // gossip address of the node holding the entries
	// memProfileEnv names a directory where each child writes its
	// allocation profile, mem-<mode>.pprof, to find what the RSS is made of.
	memProfileEnv = "CTXOS_BENCH_MEM_PROFILE"
	memEntries    = 100_000
	memValue      = 200
)

// BenchmarkNodeMemory100k measures the resident memory of one agent-like
// Node (bbolt-backed store, LAN profile) holding 100 000 entries of 200
// bytes. It runs in a fresh process (this test binary, re-executed) so
// that nothing else the benchmarks allocated counts. Two ways to get the
// entries: "local", the node writes them itself with no peer (every write
// is also queued for gossip); "replicated", a peer in this process holds
// them and the measured node joins it and receives them by anti-entropy,
// once with the Go runtime's defaults and once with a soft memory limit
// (GOMEMLIMIT) of 100 MiB, as an agent may set. rss-MB is VmRSS after a
// GC, as a running agent shows it; peak-rss-MB is VmHWM; freed-rss-MB is
// VmRSS after debug.FreeOSMemory, what the runtime returns over time;
// rss-file-MB is the part mapped from files (bbolt's mmap).
func BenchmarkNodeMemory100k(b *testing.B) {
	if mode := os.Getenv(memChildEnv); mode != "" {
		memChild(b, mode, os.Getenv(memPeerEnv))
		return
	}
	for _, c := range []struct{ name, mode, memLimit string }{
		{"local", "local", ""},
		{"replicated", "replicated", ""},
		{"replicated/GOMEMLIMIT=100MiB", "replicated", "100MiB"},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				peer := ""
				if c.mode == "replicated" {
					peer = memPeer(b)
				}
				memParent(b, c.mode, peer, c.memLimit)
			}
		})
	}
}

// memPeer starts a node in this process holding the entries and returns
// its gossip address.
func memPeer(b *testing.B) string {
	b.Helper()
	tr, addr := newCountingTransport(b)
	cfg := DefaultConfig()
	cfg.Name = "src"
	cfg.BindAddr = addr
	cfg.Transport = tr
	cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := Start(context.Background(), cfg, vfs.Options{Logger: cfg.Logger})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Close() })
	v := benchValue(b, memValue)
	for i := range memEntries {
		if _, err := n.Store().Put(fmt.Sprintf("/run/src/mem/k%06d", i), v); err != nil {
			b.Fatal(err)
		}
	}
	return n.GossipAddr()
}

// memParent runs the child process and reports what it measured.
func memParent(b *testing.B, mode, peer, memLimit string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	args := []string{"-test.run=^$", "-test.bench=^BenchmarkNodeMemory100k$", "-test.benchtime=1x"}
	if dir := os.Getenv(memProfileEnv); dir != "" {
		args = append(args, "-test.memprofile="+dir+"/mem-"+mode+memLimit+".pprof")
	}
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), memChildEnv+"="+mode, memPeerEnv+"="+peer)
	if memLimit != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+memLimit)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("memory child (%s): %v\n%s\n%s", mode, err, out, stderr.Bytes())
	}
	found := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "ctxos-mem ")
		if !ok {
			continue
		}
		for _, kv := range strings.Fields(rest) {
			k, v, _ := strings.Cut(kv, "=")
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("memory child line %q: %v", sc.Text(), err)
			}
			b.ReportMetric(f, k)
			found = true
		}
	}
	if !found {
		b.Fatalf("memory child (%s) printed no measurement:\n%s\n%s", mode, out, stderr.Bytes())
	}
}

// memChild is the measured process: one node, filled one way or the other,
// printing one "ctxos-mem" line of metrics.
func memChild(b *testing.B, mode, peer string) {
	quiet := slog.New(slog.DiscardHandler)
	tr, addr := newCountingTransport(b)
	cfg := DefaultConfig()
	cfg.Name = "n1"
	cfg.BindAddr = addr
	cfg.Transport = tr
	cfg.Logger = quiet
	dir := b.TempDir()
	n, err := Start(context.Background(), cfg, vfs.Options{Dir: dir, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	start := time.Now()
	switch mode {
	case "local":
		v := benchValue(b, memValue)
		for i := range memEntries {
			if _, err := n.Store().Put(fmt.Sprintf("/run/n1/mem/k%06d", i), v); err != nil {
				b.Fatal(err)
			}
		}
	case "replicated":
		ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
		defer cancel()
		if err := n.Join(ctx, []string{peer}); err != nil {
			b.Fatal(err)
		}
		waitFor(b, 2*time.Minute, "the node holds every entry of its peer", func() bool { return n.Store().Len() >= memEntries })
	default:
		b.Fatalf("%s=%q: want local or replicated", memChildEnv, mode)
	}
	fill := time.Since(start)
	if err := n.Store().Flush(b.Context()); err != nil {
		b.Fatal(err)
	}
	if got := n.Store().Len(); got != memEntries {
		b.Fatalf("the node holds %d entries, want %d", got, memEntries)
	}
	runtime.GC()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	st := procStatus(b)
	debug.FreeOSMemory()
	freed := procStatus(b)
	mb := func(v int64) float64 { return float64(v) / (1 << 20) }
	var db int64
	files, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range files {
		if info, err := f.Info(); err == nil && info.Mode().IsRegular() {
			db += info.Size()
		}
	}
	fmt.Printf("ctxos-mem rss-MB=%.1f rss-file-MB=%.1f peak-rss-MB=%.1f freed-rss-MB=%.1f heap-MB=%.1f alloc-MB=%.1f db-MB=%.1f queued=%d fill-s=%.2f\n",
		mb(st["VmRSS"]), mb(st["RssFile"]), mb(st["VmHWM"]), mb(freed["VmRSS"]),
		mb(int64(mem.HeapInuse)), mb(int64(mem.TotalAlloc)), mb(db), n.queue.NumQueued(), fill.Seconds())
}

// procStatus reads the memory lines of /proc/self/status (VmRSS, VmHWM,
// RssAnon, RssFile, ...), in bytes.
func procStatus(tb testing.TB) map[string]int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skipf("no /proc/self/status: %v", err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, rest, ok := strings.Cut(line, ":")
		rest = strings.TrimSpace(rest)
		if !ok || !strings.HasSuffix(rest, " kB") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(rest, " kB"), 10, 64)
		if err != nil {
			tb.Fatalf("/proc/self/status line %q: %v", line, err)
		}
		out[k] = kb << 10
	}
	if out["VmRSS"] == 0 {
		tb.Fatal("no VmRSS in /proc/self/status")
	}
	return out
}
