package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/ctxos/ctxos/cluster/vfs"
)

// Message kinds on the wire: one byte, then a CBOR body.
const (
	msgDelta  byte = 'd' // an entry small enough to gossip: vfs.Entry
	msgNotice byte = 'n' // a large entry exists: notice
	msgWant   byte = 'w' // please send me these entries: want
	msgBatch  byte = 'b' // entries sent over a reliable connection: batch
	msgCatch  byte = 'c' // send me what I lack (after a burst of desired state): pushState
	msgAck    byte = 'a' // a batch that asked for it is applied: ack
)

// catchUpDelay is how long after the last desired-state delta from a
// writer a node asks that writer for what it may have missed. Gossip may
// drop a few of the hundreds of deltas a commit publishes, and a node must
// not wait for the next push/pull (30 s on a LAN) to hold the whole
// snapshot.
const catchUpDelay = 300 * time.Millisecond

// catchUpGap is the least time between two catch-up requests to the same
// peer made because a probe found the stores different.
const catchUpGap = time.Second

// maxQueued bounds the gossip queue, as Serf bounds its own. Gossip sends
// a node's queue at a few dozen messages a second (three packets per
// 200 ms on a LAN), each message many times, so a burst of writes beyond
// this (a node writing alone, a large commit) would stay queued for hours
// at up to a few hundred bytes each; anti-entropy delivers it sooner.
// Prune drops the messages already sent most often, then the oldest.
const maxQueued = 4096

// batchBytes bounds one reliable message (memberlist refuses user messages
// over 20 MiB; a value may be up to 1 MiB, and travels alone then). A
// transfer of many batches sends the next one only when the receiver has
// applied the last, so a receiver holds one batch per sender at a time:
// sent back to back, a 100 000-entry resync had memberlist read and decode
// every batch at once and doubled the receiver's memory.
const batchBytes = 1 << 20

type notice struct {
	Path    string      `cbor:"1,keyasint"`
	Version vfs.Version `cbor:"2,keyasint"`
	Holder  string      `cbor:"3,keyasint"` // a node that holds the value
}

type want struct {
	From  string   `cbor:"1,keyasint"`
	Paths []string `cbor:"2,keyasint"`
}

type batch struct {
	// Announce asks the receiver to announce what it applies, as it does for
	// a large value pulled after a notice; anti-entropy batches do not.
	Announce bool        `cbor:"1,keyasint,omitempty"`
	Entries  []vfs.Entry `cbor:"2,keyasint"`
	// From names the sender. Ack, set on every batch of a transfer but the
	// last, asks the receiver to answer with an ack carrying it once it has
	// applied the batch; the sender waits for that before sending more.
	From string `cbor:"3,keyasint,omitempty"`
	Ack  uint64 `cbor:"4,keyasint,omitempty"`
}

type ack struct {
	Ack uint64 `cbor:"1,keyasint"`
}

// pushState is what a node sends in memberlist's push/pull, and in a
// catch-up request: its name and its digest, never the entries themselves.
type pushState struct {
	Node   string     `cbor:"1,keyasint"`
	Digest vfs.Digest `cbor:"2,keyasint"`
	// Limit, when set, bounds what the answer carries (bytes, counted as
	// send counts them): a request made because a probe found the two
	// stores different is for what gossip missed, not a whole resync.
	Limit int `cbor:"3,keyasint,omitempty"`
	// Reply marks a request made in answer to the peer's own request, which
	// is not answered with a request again.
	Reply bool `cbor:"4,keyasint,omitempty"`
}

// fingerprintTag starts the payload a node adds to its probe acks.
const fingerprintTag byte = 'f'

func encodeMsg(kind byte, body any) ([]byte, error) {
	b, err := vfs.Encode(body)
	if err != nil {
		return nil, err
	}
	return append([]byte{kind}, b...), nil
}

// entryBroadcast is one queued gossip message, named by its path so a newer
// write of the same key replaces the pending one.
type entryBroadcast struct {
	path string
	msg  []byte
}

func (b *entryBroadcast) Name() string    { return b.path }
func (b *entryBroadcast) Message() []byte { return b.msg }
func (b *entryBroadcast) Finished()       {}
func (b *entryBroadcast) Invalidates(other memberlist.Broadcast) bool {
	nb, ok := other.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.path
}

// broadcast queues e for gossip: inline when small, as a notice otherwise.
func (n *Node) broadcast(e vfs.Entry) {
	msg, err := encodeMsg(msgDelta, e)
	if err != nil {
		n.log.Error("encode delta", "path", e.Path, "err", err)
		return
	}
	if len(msg) > n.cfg.InlineLimit {
		msg, err = encodeMsg(msgNotice, notice{Path: e.Path, Version: e.Version, Holder: n.cfg.Name})
		if err != nil {
			n.log.Error("encode notice", "path", e.Path, "err", err)
			return
		}
	}
	n.enqueue(e.Path, msg)
}

// enqueue queues msg for gossip under path, replacing a pending message of
// the same path.
func (n *Node) enqueue(path string, msg []byte) {
	n.queue.QueueBroadcast(&entryBroadcast{path: path, msg: msg})
	if n.queue.NumQueued() > maxQueued {
		n.queue.Prune(maxQueued)
	}
}

// delegate is the memberlist side of replication.
type delegate Node

func (d *delegate) NodeMeta(limit int) []byte {
	n := (*Node)(d)
	b, err := encodeMeta(*n.meta.Load(), limit)
	if err != nil {
		n.log.Error("node metadata", "err", err)
		return nil
	}
	return b
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}

func (d *delegate) NotifyMsg(b []byte) {
	n := (*Node)(d)
	if len(b) == 0 {
		return
	}
	if err := n.handleMsg(b[0], b[1:]); err != nil {
		n.log.Warn("refused a replication message", "kind", string(b[0]), "err", err)
	}
}

func (n *Node) handleMsg(kind byte, body []byte) error {
	switch kind {
	case msgDelta:
		var e vfs.Entry
		if err := vfs.Decode(body, &e); err != nil {
			return fmt.Errorf("decode delta: %w", err)
		}
		applied, err := n.store.MergeOwned(e)
		if err != nil {
			return err
		}
		if applied {
			// Queue it again: memberlist retransmits only from the node
			// that queued a message, a few times, which does not reach
			// every node of a large cluster. The message as received is
			// the one to send (memberlist reuses body's memory).
			msg := make([]byte, 1+len(body))
			msg[0] = msgDelta
			copy(msg[1:], body)
			n.enqueue(e.Path, msg)
			n.catchUpAfter(e)
		}
	case msgNotice:
		var nt notice
		if err := vfs.Decode(body, &nt); err != nil {
			return fmt.Errorf("decode notice: %w", err)
		}
		if err := vfs.ValidatePath(nt.Path); err != nil {
			return err
		}
		if cur, ok := n.store.Get(nt.Path); ok && !cur.Version.Less(nt.Version) {
			return nil
		}
		n.pull(nt)
		n.catchUpAfter(vfs.Entry{Path: nt.Path, Version: nt.Version})
	case msgWant:
		var w want
		if err := vfs.Decode(body, &w); err != nil {
			return fmt.Errorf("decode want: %w", err)
		}
		var entries []vfs.Entry
		for _, p := range w.Paths {
			if e, ok := n.store.Get(p); ok {
				entries = append(entries, e)
			}
		}
		n.goSend(w.From, entries, true)
	case msgBatch:
		var bt batch
		if err := vfs.Decode(body, &bt); err != nil {
			return fmt.Errorf("decode batch: %w", err)
		}
		n.receiving(bt)
		var errs []error
		for _, e := range bt.Entries {
			applied, err := n.store.MergeOwned(e)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if applied && bt.Announce {
				n.pulling.Delete(e.Path)
				n.broadcast(e)
			}
		}
		if bt.Ack != 0 {
			n.sendAck(bt.From, bt.Ack)
		}
		return errors.Join(errs...)
	case msgAck:
		var a ack
		if err := vfs.Decode(body, &a); err != nil {
			return fmt.Errorf("decode ack: %w", err)
		}
		if ch, ok := n.acks.LoadAndDelete(a.Ack); ok {
			close(ch.(chan struct{}))
		}
	case msgCatch:
		var st pushState
		if err := vfs.Decode(body, &st); err != nil {
			return fmt.Errorf("decode catch-up request: %w", err)
		}
		if st.Node == "" || st.Node == n.cfg.Name {
			return nil
		}
		n.answer(st)
		if !st.Reply && n.mayLack(st.Digest) {
			n.requestCatchUp(st.Node, st.Limit, true)
		}
	default:
		return fmt.Errorf("unknown message kind %q", kind)
	}
	return nil
}

// pull asks the holder named in a notice for a large entry over a reliable
// connection; one pull per path is in flight at a time.
func (n *Node) pull(nt notice) {
	if _, busy := n.pulling.LoadOrStore(nt.Path, struct{}{}); busy {
		return
	}
	if !n.spawn(func() {
		defer n.pulling.Delete(nt.Path)
		holders := []string{nt.Holder, nt.Version.Node}
		for _, h := range holders {
			peer := n.liveNode(h)
			if peer == nil || h == n.cfg.Name {
				continue
			}
			msg, err := encodeMsg(msgWant, want{From: n.cfg.Name, Paths: []string{nt.Path}})
			if err != nil {
				return
			}
			if err := n.ml.Load().SendReliable(peer, msg); err != nil {
				n.log.Debug("pull large entry", "path", nt.Path, "from", h, "err", err)
				continue
			}
			return
		}
	}) {
		n.pulling.Delete(nt.Path)
	}
}

// catchUpAfter schedules, for a delta of desired state, a catch-up request
// to its writer once the writer's burst is over (each new delta pushes the
// request back).
func (n *Node) catchUpAfter(e vfs.Entry) {
	segs, err := vfs.Split(e.Path)
	if err != nil || !vfs.IsDesired(segs[0]) {
		return
	}
	writer := e.Version.Node
	if writer == "" || writer == n.cfg.Name {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if t, ok := n.catchUp[writer]; ok {
		t.Reset(catchUpDelay)
		return
	}
	n.catchUp[writer] = time.AfterFunc(catchUpDelay, func() {
		n.mu.Lock()
		delete(n.catchUp, writer)
		n.mu.Unlock()
		if n.ctx.Err() != nil {
			return
		}
		peer := n.liveNode(writer)
		if peer == nil {
			return
		}
		msg, err := encodeMsg(msgCatch, pushState{Node: n.cfg.Name, Digest: n.store.Digest()})
		if err != nil {
			return
		}
		if err := n.ml.Load().SendReliable(peer, msg); err != nil {
			n.log.Debug("catch-up request", "writer", writer, "err", err)
		}
	})
}

func (d *delegate) LocalState(join bool) []byte {
	n := (*Node)(d)
	b, err := vfs.Encode(pushState{Node: n.cfg.Name, Digest: n.store.Digest()})
	if err != nil {
		n.log.Error("encode digest", "err", err)
		return nil
	}
	return b
}

// MergeRemoteState receives a peer's digest during push/pull and sends the
// peer, over a reliable connection, what it lacks. The peer does the same
// with ours, so both ends converge.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	n := (*Node)(d)
	var st pushState
	if err := vfs.Decode(buf, &st); err != nil {
		n.log.Warn("undecodable push/pull state", "err", err)
		return
	}
	if st.Node == "" || st.Node == n.cfg.Name {
		return
	}
	n.answer(pushState{Node: st.Node, Digest: st.Digest})
}

// AckPayload adds this node's store fingerprint to the acks of the probes
// it answers.
func (d *delegate) AckPayload() []byte {
	b := make([]byte, 9)
	b[0] = fingerprintTag
	binary.BigEndian.PutUint64(b[1:], d.store.Fingerprint())
	return b
}

// NotifyPingComplete compares the fingerprint in a probe's ack with this
// node's own. Each node probes one member a second (LAN and local
// profiles), so a write that gossip missed on some node shows within about
// a second, on the node itself or on one that probes it, and a catch-up
// request repairs it; without this only the catch-up loop (every
// CatchUpInterval) and push/pull (every 30 s or more) would. A difference
// that is only a write still in flight costs one small exchange.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, _ time.Duration, payload []byte) {
	n := (*Node)(d)
	if other == nil || len(payload) != 9 || payload[0] != fingerprintTag {
		return
	}
	if binary.BigEndian.Uint64(payload[1:]) == n.store.Fingerprint() {
		return
	}
	n.requestCatchUp(other.Name, batchBytes, false)
}

// mayLack reports whether remote summarises, for some writer, other
// entries than this node holds: a peer's catch-up request whose answer
// alone would not make the two stores equal.
func (n *Node) mayLack(remote vfs.Digest) bool {
	local := n.store.Digest()
	for w, rd := range remote {
		if ld, ok := local[w]; !ok || ld.Count != rd.Count || ld.Sum != rd.Sum {
			return true
		}
	}
	return false
}

// requestCatchUp sends peer this node's digest, in the background; the
// peer answers with what this node lacks, at most limit bytes of it when
// limit > 0. It does nothing while a transfer to this node is in flight
// (the entries asked for are likely on their way) or when a request to the
// same peer went out less than catchUpGap ago.
func (n *Node) requestCatchUp(peer string, limit int, reply bool) {
	now := time.Now()
	n.mu.Lock()
	for _, at := range n.streaming {
		if now.Sub(at) < n.cfg.PullTimeout {
			n.mu.Unlock()
			return
		}
	}
	if now.Sub(n.asked[peer]) < catchUpGap {
		n.mu.Unlock()
		return
	}
	n.asked[peer] = now
	n.mu.Unlock()
	n.spawn(func() {
		node := n.liveNode(peer)
		if node == nil {
			return
		}
		msg, err := encodeMsg(msgCatch, pushState{Node: n.cfg.Name, Digest: n.store.Digest(), Limit: limit, Reply: reply})
		if err != nil {
			return
		}
		if err := n.ml.Load().SendReliable(node, msg); err != nil {
			n.log.Debug("catch-up request", "peer", peer, "err", err)
		}
	})
}

// answer sends peer, in the background, the entries its digest d lacks.
// One transfer to a peer runs at a time: a digest that arrives meanwhile
// (push/pull and a catch-up request can overlap) waits, the newest
// replacing older ones, and is answered when the transfer ends. Answering
// both at once would send most of a large resync twice.
func (n *Node) answer(req pushState) {
	peer := req.Node
	n.mu.Lock()
	if a, busy := n.answering[peer]; busy {
		next := later(a.next, req)
		a.next = &next
		n.mu.Unlock()
		return
	}
	n.answering[peer] = &answering{}
	n.mu.Unlock()
	n.spawn(func() {
		for {
			missing := n.store.Missing(req.Digest)
			if req.Limit > 0 {
				missing = missing[:fitting(missing, req.Limit)]
			}
			if len(missing) > 0 {
				if err := n.send(peer, missing, false); err != nil {
					n.log.Debug("anti-entropy push", "peer", peer, "entries", len(missing), "err", err)
				}
			}
			n.mu.Lock()
			a := n.answering[peer]
			if a.next == nil || n.ctx.Err() != nil {
				delete(n.answering, peer)
				n.mu.Unlock()
				return
			}
			req, a.next = *a.next, nil
			n.mu.Unlock()
		}
	})
}

// answering is an anti-entropy transfer to a peer in flight.
type answering struct {
	next *pushState // the request to answer when it ends; nil: none
}

// later is the request to answer after the transfer in flight, given the
// one already waiting (nil: none) and req, which came after it: req's
// digest, which is newer, with no limit if either had none, so that a
// whole resync asked for is not cut down to the 1 MiB of a probe's
// request that happened to come later.
func later(waiting *pushState, req pushState) pushState {
	if waiting != nil && waiting.Limit == 0 {
		req.Limit = 0
	}
	return req
}

// entrySize is what an entry counts for towards batchBytes and a limit.
func entrySize(e vfs.Entry) int { return len(e.Value) + len(e.Path) + 64 }

// fitting returns how many of entries, from the first, fit in limit bytes;
// at least one, so that a value larger than the limit still travels.
func fitting(entries []vfs.Entry, limit int) int {
	size := 0
	for i, e := range entries {
		size += entrySize(e)
		if size > limit && i > 0 {
			return i
		}
	}
	return len(entries)
}

// receiving notes which peers are in the middle of a transfer to this node
// (a batch asking for an ack has more behind it), so the catch-up loop does
// not ask them for what they are already sending.
func (n *Node) receiving(bt batch) {
	if bt.From == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if bt.Ack != 0 {
		n.streaming[bt.From] = time.Now()
	} else {
		delete(n.streaming, bt.From)
	}
}

// sendAck tells peer that its batch number seq is applied.
func (n *Node) sendAck(peer string, seq uint64) {
	node := n.liveNode(peer)
	if node == nil {
		n.log.Debug("ack to an unknown peer", "peer", peer)
		return
	}
	msg, err := encodeMsg(msgAck, ack{Ack: seq})
	if err != nil {
		return
	}
	if err := n.ml.Load().SendReliable(node, msg); err != nil {
		n.log.Debug("ack batch", "peer", peer, "err", err)
	}
}

func (n *Node) goSend(peer string, entries []vfs.Entry, announce bool) {
	if len(entries) == 0 {
		return
	}
	n.spawn(func() {
		if err := n.send(peer, entries, announce); err != nil {
			n.log.Debug("send entries", "peer", peer, "err", err)
		}
	})
}

// send delivers entries to peer over memberlist's reliable (TCP, and
// encrypted when a key is set) channel, in batches under batchBytes, each
// but the last waiting for the peer's ack (PullTimeout at most).
func (n *Node) send(peer string, entries []vfs.Entry, announce bool) error {
	node := n.liveNode(peer)
	if node == nil {
		return fmt.Errorf("%w %q", ErrUnknownNode, peer)
	}
	ml := n.ml.Load()
	flush := func(es []vfs.Entry, more bool) error {
		bt := batch{Announce: announce, Entries: es, From: n.cfg.Name}
		var acked chan struct{}
		if more {
			bt.Ack = n.ackSeq.Add(1)
			acked = make(chan struct{})
			n.acks.Store(bt.Ack, acked)
			defer n.acks.Delete(bt.Ack)
		}
		msg, err := encodeMsg(msgBatch, bt)
		if err != nil {
			return err
		}
		if err := ml.SendReliable(node, msg); err != nil {
			return err
		}
		if !more {
			return nil
		}
		t := time.NewTimer(n.cfg.PullTimeout)
		defer t.Stop()
		select {
		case <-acked:
			return nil
		case <-n.ctx.Done():
			return n.ctx.Err()
		case <-t.C:
			return fmt.Errorf("%w: %s did not apply a batch of %d entries within %s", ErrNoAck, peer, len(es), n.cfg.PullTimeout)
		}
	}
	for len(entries) > 0 {
		k := fitting(entries, batchBytes)
		if err := flush(entries[:k], k < len(entries)); err != nil {
			return err
		}
		entries = entries[k:]
	}
	return nil
}
