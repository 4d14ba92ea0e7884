package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// rawNode is the baseline the replication benchmarks compare against: a
// bare memberlist.Delegate that gossips opaque messages through a
// TransmitLimitedQueue and queues a message again the first time it
// receives it, as Serf does and as Node does for a delta it applies.
// Without the re-queueing a broadcast does not reach every node of a large
// cluster, so it would not be a fair baseline. It keeps no store: the first
// 8 bytes of a message are its id, the rest is padding of the size of a
// real delta.
type rawNode struct {
	ml      *memberlist.Memberlist
	queue   *memberlist.TransmitLimitedQueue
	seen    sync.Map // id → struct{}
	arrived func(id uint64)
}

// rawBroadcast is one queued baseline message, named by its id as an
// entryBroadcast is named by its path.
type rawBroadcast struct {
	name string
	msg  []byte
}

func (b *rawBroadcast) Name() string    { return b.name }
func (b *rawBroadcast) Message() []byte { return b.msg }
func (b *rawBroadcast) Finished()       {}
func (b *rawBroadcast) Invalidates(other memberlist.Broadcast) bool {
	nb, ok := other.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}

// broadcast sends msg from this node: it counts as received here, then
// spreads by gossip.
func (r *rawNode) broadcast(msg []byte) {
	r.NotifyMsg(msg)
}

func (r *rawNode) NodeMeta(limit int) []byte { return nil }

func (r *rawNode) NotifyMsg(b []byte) {
	if len(b) < 8 {
		return
	}
	id := binary.BigEndian.Uint64(b)
	if _, dup := r.seen.LoadOrStore(id, struct{}{}); dup {
		return
	}
	// memberlist reuses b after NotifyMsg returns.
	r.queue.QueueBroadcast(&rawBroadcast{name: strconv.FormatUint(id, 10), msg: bytes.Clone(b)})
	if r.arrived != nil {
		r.arrived(id)
	}
}

func (r *rawNode) GetBroadcasts(overhead, limit int) [][]byte {
	return r.queue.GetBroadcasts(overhead, limit)
}

func (r *rawNode) LocalState(join bool) []byte            { return nil }
func (r *rawNode) MergeRemoteState(buf []byte, join bool) {}

// startRawNode starts a baseline node on tr with memberlist's LAN profile,
// the profile DefaultConfig uses.
func startRawNode(tb testing.TB, name string, tr *countingTransport, addr string, arrived func(uint64)) *rawNode {
	tb.Helper()
	host, port, err := splitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	mc.Transport = tr
	mc.LogOutput = io.Discard
	r := &rawNode{arrived: arrived}
	r.queue = &memberlist.TransmitLimitedQueue{
		NumNodes: func() int {
			if r.ml != nil {
				return r.ml.NumMembers()
			}
			return 1
		},
		RetransmitMult: mc.RetransmitMult,
	}
	mc.Delegate = r
	ml, err := memberlist.Create(mc)
	if err != nil {
		tb.Fatal(err)
	}
	r.ml = ml
	return r
}

// countingTransport is memberlist's UDP/TCP transport on loopback, counting
// what this node sends: UDP payload bytes and packets, and bytes written on
// TCP streams it dialled or accepted (push/pull, reliable messages, both
// directions of an exchange count at the side that writes).
type countingTransport struct {
	inner   *memberlist.NetTransport
	udp     atomic.Int64
	packets atomic.Int64
	tcp     atomic.Int64
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
}

var _ memberlist.NodeAwareTransport = (*countingTransport)(nil)

// newCountingTransport binds 127.0.0.1 on a free port and returns the
// transport and its address.
func newCountingTransport(tb testing.TB) (*countingTransport, string) {
	tb.Helper()
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0})
	if err != nil {
		tb.Fatal(err)
	}
	t := &countingTransport{inner: nt, streams: make(chan net.Conn), done: make(chan struct{})}
	go t.forwardStreams()
	return t, fmt.Sprintf("127.0.0.1:%d", nt.GetAutoBindPort())
}

func (t *countingTransport) forwardStreams() {
	for {
		select {
		case c := <-t.inner.StreamCh():
			select {
			case t.streams <- &countingConn{Conn: c, n: &t.tcp}:
			case <-t.done:
				c.Close()
				return
			}
		case <-t.done:
			return
		}
	}
}

// sent returns the bytes sent so far by UDP and by TCP, and UDP packets.
func (t *countingTransport) sent() (udp, tcp, packets int64) {
	return t.udp.Load(), t.tcp.Load(), t.packets.Load()
}

func (t *countingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.udp.Add(int64(len(b)))
	t.packets.Add(1)
	return t.inner.WriteTo(b, addr)
}

func (t *countingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *countingTransport) PacketCh() <-chan *memberlist.Packet { return t.inner.PacketCh() }

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := t.inner.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &t.tcp}, nil
}

func (t *countingTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *countingTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *countingTransport) Shutdown() error {
	t.once.Do(func() { close(t.done) })
	return t.inner.Shutdown()
}

// countingConn counts the bytes written on a TCP stream.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// rawCluster starts size baseline nodes in the gossip phases ph (nil: new
// random ones), joined through the first one, and waits until every node
// counts every member.
func rawCluster(tb testing.TB, size int, ph *phases, arrived func(node int, id uint64)) ([]*rawNode, []*countingTransport) {
	tb.Helper()
	nodes := make([]*rawNode, size)
	trs := make([]*countingTransport, size)
	tb.Cleanup(func() {
		for _, r := range nodes {
			if r != nil {
				r.ml.Shutdown()
			}
		}
	})
	if ph == nil {
		ph = newPhases(size)
	}
	for i := range nodes {
		tr, addr := newCountingTransport(tb)
		trs[i] = tr
		ph.wait(i)
		nodes[i] = startRawNode(tb, fmt.Sprintf("r%d", i), tr, addr, func(id uint64) { arrived(i, id) })
	}
	seed := nodes[0].ml.LocalNode().Address()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, r := range nodes[1:] {
		for {
			_, err := r.ml.Join([]string{seed})
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				tb.Fatalf("join the baseline cluster: %v", err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	waitMembers(tb, size, func(i int) int { return nodes[i].ml.NumMembers() })
	return nodes, trs
}
