//go:build e2e

package e2e

import (
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// runningCluster is a 3-host cluster running web with 3 instances
// (spread), converged. It also returns the host a fault should hit: the
// last one running an instance, so the fault always takes instances away.
// (Placed at cluster formation, all 3 may land on one host: see the
// report on the join grace.)
func runningCluster(t *testing.T) (*Cluster, string, *Host) {
	t.Helper()
	repo := newRepo(t, map[string]int{"web": 3})
	c := newCluster(t, 3, repo)
	commit := repo.Git("rev-parse", "HEAD")
	placed, _ := c.waitConverged(t, c.Hosts, map[string]int{"web": 3}, commit, 90*time.Second)
	t.Logf("placement: %s", placed.PerHost())
	var target *Host
	for _, h := range c.Hosts {
		if countOn(placed, h.Name) > 0 {
			target = h
		}
	}
	return c, commit, target
}

// TestHostLoss: a host dies (kill -9 of its agent and workloads, its
// namespace deleted); its instances run again on the other hosts.
func TestHostLoss(t *testing.T) {
	requireHosts(t)
	c, commit, victim := runningCluster(t)
	var survivors []*Host
	for _, h := range c.Hosts {
		if h != victim {
			survivors = append(survivors, h)
		}
	}
	before, beforeOn := c.pids(t), placementOf(t, c)

	start := time.Now()
	victim.lose(t)
	placed, at := c.waitConverged(t, survivors, map[string]int{"web": 3}, commit, 90*time.Second)
	figure(t, "host-loss-to-running-elsewhere", 3, at.Sub(start), fmt.Sprintf("lost=%s instances=%d", victim.Name, countOn(beforeOn, victim.Name)))
	if n := countOn(placed, victim.Name); n != 0 {
		t.Errorf("%d instances still placed on the lost host", n)
	}
	// What ran on the survivors was left alone.
	after := c.pids(t)
	for id, pid := range before {
		if on := beforeOn[id]; on != victim.Name && after[id] != pid {
			t.Errorf("%s on %s restarted: pid %d, now %d", id, on, pid, after[id])
		}
	}
	t.Logf("placement after the loss: %s", placed.PerHost())
}

// TestPartition: one host is cut off for 30 s. Both sides keep running
// what they have; after healing, the cluster converges with no instance
// running twice.
func TestPartition(t *testing.T) {
	requireHosts(t)
	c, commit, cut := runningCluster(t)
	t.Logf("cutting %s off", cut.Name)
	before := c.pids(t)

	cut.setLink(t, false)
	cutAt := time.Now()
	// For the whole partition, every workload that ran before still runs:
	// neither side stops what it has.
	var replaced []string
	if err := poll(30*time.Second, func() (bool, string) {
		for id, pid := range before {
			if !processAlive(pid) {
				t.Fatalf("%s (pid %d) stopped during the partition, %v after the cut", id, pid, time.Since(cutAt))
			}
		}
		return false, "partitioned"
	}); err == nil {
		t.Fatal("the partition poll ended early")
	}
	// The majority may have started copies of the cut host's instances
	// (same instance ids): count processes, not ids.
	for _, w := range markerProcesses(c.Marker) {
		if !slices.Contains(pidSet(before), w.Pid) {
			replaced = append(replaced, fmt.Sprint(w.Pid))
		}
	}
	t.Logf("at the end of the partition %d workload processes run that did not before: pids %v", len(replaced), replaced)

	cut.setLink(t, true)
	healAt := time.Now()
	placed, at := c.waitConverged(t, c.Hosts, map[string]int{"web": 3}, commit, 90*time.Second)
	figure(t, "partition-heal-to-converged", 3, at.Sub(healAt), "partition=30s")
	c.waitMembers(t, c.Hosts, 30*time.Second)
	t.Logf("placement after healing: %s", placed.PerHost())
}

// TestRollingRestart: every agent is stopped (SIGTERM) and started again
// on the same data dir, one at a time. The workloads never all stop, and
// each agent adopts the processes it ran instead of starting new ones.
func TestRollingRestart(t *testing.T) {
	requireHosts(t)
	c, commit, _ := runningCluster(t)
	before := c.pids(t)
	beforePids := pidSet(before)

	// Watch the processes from the outside for the whole restart.
	var (
		mu       sync.Mutex
		minLive  = len(beforePids)
		samples  int
		stopped  []int
		stopScan = make(chan struct{})
		scanDone = make(chan struct{})
	)
	go func() {
		defer close(scanDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopScan:
				return
			case <-tick.C:
			}
			live := 0
			for _, w := range markerProcesses(c.Marker) {
				if slices.Contains(beforePids, w.Pid) {
					live++
				}
			}
			mu.Lock()
			samples++
			minLive = min(minLive, live)
			for _, pid := range beforePids {
				if !processAlive(pid) && !slices.Contains(stopped, pid) {
					stopped = append(stopped, pid)
				}
			}
			mu.Unlock()
		}
	}()

	for i, h := range c.Hosts {
		var join []string
		for j, o := range c.Hosts {
			if j != i {
				join = append(join, o.gossipAddr())
			}
		}
		start := time.Now()
		h.signal(t, syscall.SIGTERM, 30*time.Second)
		h.start(t, join)
		c.waitMembers(t, c.Hosts, 60*time.Second)
		c.waitConverged(t, c.Hosts, map[string]int{"web": 3}, commit, 90*time.Second)
		figure(t, "agent-restart-to-converged", 3, time.Since(start), "host="+h.Name)
	}
	close(stopScan)
	<-scanDone

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d samples of the workloads, at least %d of %d running at every sample", samples, minLive, len(beforePids))
	if minLive == 0 {
		t.Errorf("at some point none of the workloads ran")
	}
	if len(stopped) > 0 {
		t.Errorf("workloads %v stopped during the rolling restart; want every one adopted", stopped)
	}
	after := c.pids(t)
	if fmt.Sprint(pidSet(after)) != fmt.Sprint(beforePids) {
		t.Errorf("instances after the restarts %v, before %v; want the same processes", after, before)
	}
}

func pidSet(m map[string]int) []int {
	var out []int
	for _, pid := range m {
		out = append(out, pid)
	}
	slices.Sort(out)
	return out
}
