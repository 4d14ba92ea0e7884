package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/ctxos/ctxos/cluster/vfs"
)

// Sentinel errors of package cluster.
var (
	ErrNoName      = errors.New("node name is required")
	ErrJoin        = errors.New("no join address answered")
	ErrUnknownNode = errors.New("unknown node")
	ErrNoAck       = errors.New("no ack")
)

// departedRetention is how long a failed or departed member stays in the
// member list so `ctxos status` can show it.
const departedRetention = 24 * time.Hour

// Node is this machine's membership in the cluster and the owner of its VFS
// replica. Create it with [Start]; stop it with [Node.Leave] then
// [Node.Close].
type Node struct {
	cfg   Config
	log   *slog.Logger
	store *vfs.Store
	ml    atomic.Pointer[memberlist.Memberlist]
	queue *memberlist.TransmitLimitedQueue
	meta  atomic.Pointer[Meta]
	// keyring is memberlist's, shared with it; nil without encryption.
	keyring *memberlist.Keyring

	mu       sync.Mutex
	departed map[string]Member // failed or left members, by name
	joined   map[string]time.Time
	catchUp  map[string]*time.Timer // writer → pending catch-up request
	live     map[string]memberlist.Node
	// answering holds the anti-entropy transfers in flight, by peer.
	answering map[string]*answering
	// asked holds when this node last asked each peer for a catch-up.
	asked map[string]time.Time
	// closing is set by Close before it waits for the goroutines (spawn).
	closing bool
	// streaming holds, per peer sending this node a transfer, when its
	// last batch that has more behind it arrived.
	streaming map[string]time.Time

	pulling sync.Map // path → struct{}: a large-value pull in flight
	acks    sync.Map // batch number → chan struct{} closed by its ack
	ackSeq  atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start opens the VFS replica described by storeOpts (its Node is set to
// cfg.Name) and starts gossiping on cfg.BindAddr. It does not join anyone:
// call [Node.Join].
func Start(ctx context.Context, cfg Config, storeOpts vfs.Options) (*Node, error) {
	if cfg.Name == "" {
		return nil, ErrNoName
	}
	if !vfs.ValidSegment(cfg.Name) {
		return nil, fmt.Errorf("node name %q must match [a-z0-9][a-z0-9._-]*", cfg.Name)
	}
	if cfg.InlineLimit <= 0 {
		cfg.InlineLimit = DefaultConfig().InlineLimit
	}
	if cfg.PullTimeout <= 0 {
		cfg.PullTimeout = DefaultConfig().PullTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	n := &Node{
		cfg:      cfg,
		log:      logger.With("node", cfg.Name),
		departed: map[string]Member{},
		joined:   map[string]time.Time{},
		catchUp:  map[string]*time.Timer{},
		live:     map[string]memberlist.Node{},

		answering: map[string]*answering{},
		asked:     map[string]time.Time{},
		streaming: map[string]time.Time{},
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.meta.Store(&Meta{API: cfg.APIAddr, Labels: cfg.Labels, Roles: cfg.Roles})

	storeOpts.Node = cfg.Name
	if storeOpts.Logger == nil {
		storeOpts.Logger = n.log
	}
	userHook := storeOpts.OnChange
	storeOpts.OnChange = func(e vfs.Entry, local bool) {
		if local {
			n.broadcast(e)
		}
		if userHook != nil {
			userHook(e, local)
		}
	}
	store, err := vfs.Open(ctx, storeOpts)
	if err != nil {
		n.cancel()
		return nil, err
	}
	n.store = store
	m := *n.meta.Load()
	m.Started = store.StartEpoch()
	n.meta.Store(&m)

	mc, err := cfg.memberlistConfig()
	if err != nil {
		store.Close()
		n.cancel()
		return nil, err
	}
	n.queue = &memberlist.TransmitLimitedQueue{
		NumNodes: func() int {
			if ml := n.ml.Load(); ml != nil {
				return ml.NumMembers()
			}
			return 1
		},
		RetransmitMult: mc.RetransmitMult,
	}
	n.keyring = mc.Keyring
	mc.Delegate = (*delegate)(n)
	mc.Ping = (*delegate)(n)
	mc.Events = (*events)(n)
	mc.Logger = nil
	mc.LogOutput = slogWriter{n.log}
	ml, err := memberlist.Create(mc)
	if err != nil {
		store.Close()
		n.cancel()
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.BindAddr, err)
	}
	n.ml.Store(ml)
	n.wg.Add(1)
	go n.reconnectLoop()
	n.wg.Add(1)
	go n.catchUpLoop()
	return n, nil
}

// catchUpLoop sends this node's digest to one random live member every
// CatchUpInterval; the member answers with what this node lacks.
func (n *Node) catchUpLoop() {
	defer n.wg.Done()
	every := n.cfg.CatchUpInterval
	if every <= 0 {
		every = DefaultConfig().CatchUpInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		var peers []string
		n.mu.Lock()
		for name := range n.live {
			if name != n.cfg.Name {
				peers = append(peers, name)
			}
		}
		n.mu.Unlock()
		if len(peers) > 0 {
			n.requestCatchUp(peers[rand.IntN(len(peers))], 0, false)
		}
	}
}

// reconnectLoop tries, every ReconnectInterval, to join one member that
// failed (not one that left on purpose), as Serf does: after a partition
// heals this is how the two sides find each other again.
func (n *Node) reconnectLoop() {
	defer n.wg.Done()
	every := n.cfg.ReconnectInterval
	if every <= 0 {
		every = DefaultConfig().ReconnectInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	next := 0
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		var failed []Member
		for _, m := range n.Members() {
			if m.State == StateFailed {
				failed = append(failed, m)
			}
		}
		if len(failed) == 0 {
			continue
		}
		m := failed[next%len(failed)]
		next++
		if _, err := n.ml.Load().Join([]string{m.Name + "/" + m.Addr}); err == nil {
			n.log.Info("reconnected to a failed member", "member", m.Name)
		}
	}
}

// Store is this node's VFS replica.
func (n *Node) Store() *vfs.Store { return n.store }

// Name is this node's name.
func (n *Node) Name() string { return n.cfg.Name }

// GossipAddr is the address other nodes join through.
func (n *Node) GossipAddr() string {
	ln := n.ml.Load().LocalNode()
	return net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
}

// SetAPI changes the API address announced to the other nodes, for a node
// whose API listener was bound after Start (port 0).
func (n *Node) SetAPI(addr string) error {
	m := *n.meta.Load()
	m.API = addr
	n.meta.Store(&m)
	return n.ml.Load().UpdateNode(5 * time.Second)
}

// Join joins the cluster through any of addrs, trying again every
// Config.JoinRetry until one answers or ctx ends. With no addresses the node
// is a cluster of one, which is not an error.
func (n *Node) Join(ctx context.Context, addrs []string) error {
	if len(addrs) == 0 {
		return nil
	}
	wait := n.cfg.JoinRetry
	if wait <= 0 {
		wait = time.Second
	}
	var lastErr error
	for attempt := 1; ; attempt++ {
		got, err := n.ml.Load().Join(addrs)
		if got > 0 {
			n.log.Info("joined the cluster", "through", addrs, "answered", got)
			return nil
		}
		lastErr = err
		if attempt == 1 {
			n.log.Warn("join failed, retrying", "addrs", addrs, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%v): %v", ErrJoin, addrs, lastErr)
		case <-time.After(wait):
		}
	}
}

// Leave tells the cluster this node is going away, waiting up to timeout
// for the message to spread, so the others see "left" instead of "failed".
func (n *Node) Leave(timeout time.Duration) error {
	m := *n.meta.Load()
	m.Leaving = true
	n.meta.Store(&m)
	if err := n.ml.Load().UpdateNode(timeout); err != nil {
		n.log.Warn("announce leave", "err", err)
	}
	return n.ml.Load().Leave(timeout)
}

// Close stops gossip and closes the VFS replica. It does not announce a
// leave; call Leave first for a graceful exit.
func (n *Node) Close() error {
	n.cancel()
	err := n.ml.Load().Shutdown()
	// memberlist's stream handlers may still be delivering a message that
	// starts a goroutine: none may be added once Wait has begun.
	n.mu.Lock()
	n.closing = true
	n.mu.Unlock()
	n.wg.Wait()
	if cerr := n.store.Close(); err == nil {
		err = cerr
	}
	return err
}

// spawn runs f in a goroutine that Close waits for, unless Close has begun
// (it then reports false and f does not run). Work started from memberlist's
// callbacks goes through it: they may run while Close waits.
func (n *Node) spawn(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closing {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// Members lists every node this node knows of: the live ones, and failed
// or departed ones for a day. It reads this node's own copy of the member
// list, kept by the event delegate: the nodes memberlist's Members returns
// are shared with memberlist, which changes them without a lock readers
// can take.
func (n *Node) Members() []Member {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Member, 0, len(n.live)+len(n.departed))
	for _, m := range n.live {
		out = append(out, n.memberLocked(m))
	}
	for name, m := range n.departed {
		if _, ok := n.live[name]; ok {
			continue
		}
		if now.Sub(m.Since) > departedRetention {
			delete(n.departed, name)
			continue
		}
		out = append(out, m)
	}
	sortMembers(out)
	return out
}

// Member returns one member by name.
func (n *Node) Member(name string) (Member, bool) {
	for _, m := range n.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

func (n *Node) memberLocked(m memberlist.Node) Member {
	meta, err := decodeMeta(m.Meta)
	if err != nil {
		n.log.Warn("undecodable node metadata", "member", m.Name, "err", err)
	}
	return Member{
		Name:   m.Name,
		Addr:   net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))),
		API:    meta.API,
		State:  StateAlive,
		Labels: meta.Labels,
		Roles:  meta.Roles,
		Since:  n.joined[m.Name],

		Started: meta.Started,
	}
}

// liveNode returns a copy of a live member's memberlist node, to address
// reliable messages to it.
func (n *Node) liveNode(name string) *memberlist.Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	m, ok := n.live[name]
	if !ok {
		return nil
	}
	return &m
}

// copyNode copies what this package reads of a memberlist node; memberlist
// calls the event delegate with its node lock held, so the copy is
// consistent.
func copyNode(m *memberlist.Node) memberlist.Node {
	c := *m
	c.Addr = append(net.IP(nil), m.Addr...)
	c.Meta = append([]byte(nil), m.Meta...)
	return c
}

// events receives memberlist's membership changes.
type events Node

func (e *events) NotifyJoin(m *memberlist.Node) {
	n := (*Node)(e)
	c := copyNode(m)
	n.mu.Lock()
	n.joined[m.Name] = time.Now()
	n.live[m.Name] = c
	delete(n.departed, m.Name)
	n.mu.Unlock()
	if m.Name != n.cfg.Name {
		n.log.Info("member joined", "member", m.Name, "addr", m.Address())
	}
}

func (e *events) NotifyLeave(m *memberlist.Node) {
	n := (*Node)(e)
	c := copyNode(m)
	n.mu.Lock()
	mem := n.memberLocked(c)
	mem.Since = time.Now()
	mem.State = StateFailed
	if meta, err := decodeMeta(c.Meta); err == nil && meta.Leaving {
		mem.State = StateLeft
	}
	delete(n.live, m.Name)
	n.departed[m.Name] = mem
	n.mu.Unlock()
	n.log.Info("member gone", "member", m.Name, "state", mem.State)
}

func (e *events) NotifyUpdate(m *memberlist.Node) {
	n := (*Node)(e)
	c := copyNode(m)
	n.mu.Lock()
	if _, ok := n.live[m.Name]; ok {
		n.live[m.Name] = c
	}
	n.mu.Unlock()
}

// slogWriter turns memberlist's log lines into slog records.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := string(p)
	msg = strings.TrimRight(msg, "\n")
	level := slog.LevelDebug
	switch {
	case strings.Contains(msg, "[ERR]"):
		level = slog.LevelError
	case strings.Contains(msg, "[WARN]"):
		level = slog.LevelWarn
	}
	w.log.Log(context.Background(), level, msg, "component", "memberlist")
	return len(p), nil
}
