package cluster

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrPartitioned is returned when a [Partition] cuts the path to an address.
var ErrPartitioned = errors.New("network partitioned")

// Partition is a fault injector for multi-node tests in one process: every
// node's memberlist transport is wrapped with [Partition.Wrap], and [Cut]
// drops all traffic between two groups of gossip addresses until [Heal].
// It ships in a non-test file, as memberlist's MockNetwork does, so tests in
// other packages can use it too.
type Partition struct {
	mu      sync.RWMutex
	blocked map[[2]string]bool
}

// NewPartition returns a network with nothing cut.
func NewPartition() *Partition { return &Partition{blocked: map[[2]string]bool{}} }

// Cut drops traffic between every address of a and every address of b,
// both ways.
func (p *Partition) Cut(a, b []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			p.blocked[[2]string{x, y}] = true
			p.blocked[[2]string{y, x}] = true
		}
	}
}

// CutOneWay drops traffic from every address of from to every address of
// to, and lets the other direction through: a firewall rule or a route
// broken one way.
func (p *Partition) CutOneWay(from, to []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, x := range from {
		for _, y := range to {
			p.blocked[[2]string{x, y}] = true
		}
	}
}

// Heal restores every cut path.
func (p *Partition) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = map[[2]string]bool{}
}

func (p *Partition) isBlocked(from, to string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.blocked[[2]string{from, to}]
}

// NewLoopbackTransport binds memberlist's UDP and TCP transport on
// 127.0.0.1 with a free port and wraps it in p. It returns the transport
// and its address, for Config.Transport and Config.BindAddr.
func (p *Partition) NewLoopbackTransport() (memberlist.NodeAwareTransport, string, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{"127.0.0.1"}, BindPort: 0})
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", nt.GetAutoBindPort())
	return p.Wrap(addr, nt), addr, nil
}

// Wrap returns inner with p's cuts applied; self is inner's own address.
func (p *Partition) Wrap(self string, inner memberlist.Transport) memberlist.NodeAwareTransport {
	t := &partitionTransport{p: p, self: self, inner: inner, packets: make(chan *memberlist.Packet), done: make(chan struct{})}
	go t.filterPackets()
	return t
}

type partitionTransport struct {
	p       *Partition
	self    string
	inner   memberlist.Transport
	packets chan *memberlist.Packet
	done    chan struct{}
	once    sync.Once
}

func (t *partitionTransport) filterPackets() {
	for {
		select {
		case pkt := <-t.inner.PacketCh():
			if t.p.isBlocked(pkt.From.String(), t.self) {
				continue
			}
			select {
			case t.packets <- pkt:
			case <-t.done:
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *partitionTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *partitionTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.p.isBlocked(t.self, addr) {
		return time.Now(), nil // a lost datagram, not an error
	}
	return t.inner.WriteTo(b, addr)
}

func (t *partitionTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *partitionTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *partitionTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.p.isBlocked(t.self, addr) {
		return nil, fmt.Errorf("dial %s: %w", addr, ErrPartitioned)
	}
	return t.inner.DialTimeout(addr, timeout)
}

func (t *partitionTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *partitionTransport) StreamCh() <-chan net.Conn { return t.inner.StreamCh() }

func (t *partitionTransport) Shutdown() error {
	t.once.Do(func() { close(t.done) })
	// The inner transport's UDP listener may be blocked handing a packet
	// to a channel nobody reads any more; drain it until it has stopped,
	// or its Shutdown waits for ever.
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-t.inner.PacketCh():
			case <-stop:
				return
			}
		}
	}()
	err := t.inner.Shutdown()
	close(stop)
	return err
}
