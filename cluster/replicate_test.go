package cluster

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/ctxos/ctxos/cluster/vfs"
)

// TestTransferWaitsForTheReceiversAck sends a transfer of several batches
// to a peer whose acks cannot come back: exactly one batch arrives and the
// sender stops with ErrNoAck, instead of pushing the whole transfer into a
// receiver that may not keep up. Once acks flow again, the same transfer
// delivers everything.
func TestTransferWaitsForTheReceiversAck(t *testing.T) {
	net, nodes := testCluster(t, 2, func(i int, c *Config, o *vfs.Options) {
		c.PullTimeout = time.Second
		c.CatchUpInterval = time.Hour // only this test's transfer moves entries
	})
	from, to := nodes[0], nodes[1]
	value, err := vfs.Encode(strings.Repeat("v", 200))
	if err != nil {
		t.Fatal(err)
	}
	entries := make([]vfs.Entry, 20_000) // about 6 MiB: several batches
	wall := time.Now().UnixNano()
	for i := range entries {
		entries[i] = vfs.Entry{
			Path:    fmt.Sprintf("/run/n0/ack/k%05d", i),
			Value:   value,
			Version: vfs.Version{Wall: wall, Logical: uint32(i), Node: "n0"},
		}
	}
	firstBatch, size := 0, 0
	for _, e := range entries {
		sz := len(e.Value) + len(e.Path) + 64
		if size+sz > batchBytes && firstBatch > 0 {
			break
		}
		firstBatch++
		size += sz
	}
	if firstBatch >= len(entries) {
		t.Fatalf("the test's entries fit in one batch (%d); want several", firstBatch)
	}
	held := func() int { return len(to.Store().List("/run/n0/ack")) }

	net.CutOneWay([]string{to.GossipAddr()}, []string{from.GossipAddr()})
	err = from.send("n1", entries, false)
	if !errors.Is(err, ErrNoAck) {
		t.Fatalf("send to a peer whose acks are cut: err = %v, want ErrNoAck", err)
	}
	// The receiver may still be applying the batch (under load, past the
	// ack timeout); the sender sent no other.
	waitFor(t, 30*time.Second, "the receiver holds the first batch", func() bool { return held() >= firstBatch })
	if got := held(); got != firstBatch {
		t.Fatalf("the receiver holds %d entries after an unacknowledged batch, want exactly the first batch (%d)", got, firstBatch)
	}

	net.Heal()
	waitFor(t, 30*time.Second, "both nodes see each other alive again", func() bool {
		return countState(from, StateAlive) == 2 && countState(to, StateAlive) == 2
	})
	if err := from.send("n1", entries, false); err != nil {
		t.Fatalf("send once acks flow: %v", err)
	}
	waitFor(t, 30*time.Second, "the receiver holds every entry", func() bool { return held() == len(entries) })
}

// TestProbeFingerprintRepairsWhatGossipMissed gives one node an entry that
// gossip never carries (merged into its store alone) with the catch-up
// loop and push/pull out of the way: the other nodes get it because the
// fingerprint in a probe's ack differs from their own.
func TestProbeFingerprintRepairsWhatGossipMissed(t *testing.T) {
	_, nodes := testCluster(t, 3, func(i int, c *Config, o *vfs.Options) {
		c.CatchUpInterval = time.Hour
		c.profile = func() *memberlist.Config {
			mc := memberlist.DefaultLocalConfig()
			mc.PushPullInterval = time.Hour
			return mc
		}
	})
	value, err := vfs.Encode("missed by gossip")
	if err != nil {
		t.Fatal(err)
	}
	e := vfs.Entry{Path: "/run/n9/missed", Value: value, Version: vfs.Version{Wall: time.Now().UnixNano(), Node: "n9"}}
	if applied, err := nodes[0].Store().Merge(e); err != nil || !applied {
		t.Fatalf("merge = %v, %v", applied, err)
	}
	waitFor(t, 30*time.Second, "every node holds the entry", func() bool {
		for _, n := range nodes {
			if !holds(n, e.Path, "missed by gossip") {
				return false
			}
		}
		return true
	})
	waitFor(t, 30*time.Second, "every fingerprint agrees", func() bool {
		return nodes[1].Store().Fingerprint() == nodes[0].Store().Fingerprint() &&
			nodes[2].Store().Fingerprint() == nodes[0].Store().Fingerprint()
	})
}

func TestFitting(t *testing.T) {
	entry := func(valueLen int) vfs.Entry {
		return vfs.Entry{Path: "/run/n0/x", Value: make([]byte, valueLen)}
	}
	small := entry(100) // counts 100 + 9 + 64 = 173 bytes
	tests := []struct {
		name    string
		entries []vfs.Entry
		limit   int
		want    int
	}{
		{"none", nil, 1000, 0},
		{"all fit", []vfs.Entry{small, small}, 1000, 2},
		{"exactly the limit", []vfs.Entry{small, small, small}, 346, 2},
		{"one over", []vfs.Entry{small, small, small}, 345, 1},
		{"a first entry over the limit still goes", []vfs.Entry{entry(5000), small}, 1000, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fitting(tt.entries, tt.limit); got != tt.want {
				t.Errorf("fitting = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestLaterRequest(t *testing.T) {
	newer := vfs.Digest{"n1": {Count: 2}}
	tests := []struct {
		name    string
		waiting *pushState
		req     pushState
		want    pushState
	}{
		{"none waiting", nil, pushState{Node: "a", Digest: newer, Limit: batchBytes}, pushState{Node: "a", Digest: newer, Limit: batchBytes}},
		{"a limited one replaces a limited one", &pushState{Node: "a", Limit: batchBytes}, pushState{Node: "a", Digest: newer, Limit: batchBytes}, pushState{Node: "a", Digest: newer, Limit: batchBytes}},
		{"an unlimited one waiting stays unlimited", &pushState{Node: "a"}, pushState{Node: "a", Digest: newer, Limit: batchBytes}, pushState{Node: "a", Digest: newer}},
		{"an unlimited one replaces a limited one", &pushState{Node: "a", Limit: batchBytes}, pushState{Node: "a", Digest: newer}, pushState{Node: "a", Digest: newer}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := later(tt.waiting, tt.req)
			if got.Limit != tt.want.Limit || got.Node != tt.want.Node || len(got.Digest) != len(tt.want.Digest) {
				t.Errorf("later = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestCloseWhileReceiving closes a node while a peer keeps sending it
// catch-up requests, each of which starts a transfer in the background:
// Close waits for those and returns, and (under -race) no goroutine is
// added while it waits.
func TestCloseWhileReceiving(t *testing.T) {
	_, nodes := testCluster(t, 2, nil)
	from, to := nodes[0], nodes[1]
	for i := range 50 {
		if _, err := to.Store().PutValue(fmt.Sprintf("/run/n1/k%d", i), i); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := encodeMsg(msgCatch, pushState{Node: "n0", Digest: vfs.Digest{}})
	if err != nil {
		t.Fatal(err)
	}
	peer := from.liveNode("n1")
	if peer == nil {
		t.Fatal("n0 does not know n1")
	}
	stop := make(chan struct{})
	sent := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				sent <- n
				return
			default:
			}
			if from.ml.Load().SendReliable(peer, msg) == nil {
				n++
			}
		}
	}()
	waitFor(t, 30*time.Second, "n0 holds n1's entries", func() bool { return len(from.Store().List("/run/n1")) == 50 })
	closed := make(chan error, 1)
	go func() { closed <- to.Close() }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return while a peer kept sending")
	}
	close(stop)
	if n := <-sent; n == 0 {
		t.Fatal("no catch-up request was sent")
	}
}
