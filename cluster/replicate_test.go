package cluster

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

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
