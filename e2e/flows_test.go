//go:build e2e

package e2e

import (
	"fmt"
	"testing"
	"time"
)

// pushAndSync pushes main and asks the syncing host to sync now, as the
// Git server's webhook would; it fails the test unless the commit is
// taken into force.
func (c *Cluster) pushAndSync(t testing.TB) {
	t.Helper()
	c.Repo.Push("main")
	if out, code := c.sync(); code != 0 {
		t.Fatalf("ctxos sync: exit %d: %s", code, out)
	}
}

// TestPushScaleDelete: a CTX pushed to Git runs where placement put it, a
// changed replica count is applied, a deleted CTX is pruned everywhere.
func TestPushScaleDelete(t *testing.T) {
	for _, hosts := range []int{3, 5} {
		t.Run(fmt.Sprintf("hosts=%d", hosts), func(t *testing.T) {
			requireHosts(t)
			repo := newRepo(t, nil)
			c := newCluster(t, hosts, repo)
			first := repo.Git("rev-parse", "HEAD")
			c.waitConverged(t, c.Hosts, nil, first, 60*time.Second)

			// A new CTX, one instance per host (spread).
			repo.Write(repo.files(map[string]int{"web": hosts}))
			commit := repo.Commit("add web")
			start := time.Now()
			c.pushAndSync(t)
			placed, at := c.waitConverged(t, c.Hosts, map[string]int{"web": hosts}, commit, 60*time.Second)
			figure(t, "push-to-converged", hosts, at.Sub(start), fmt.Sprintf("instances=%d", hosts))
			for _, h := range c.Hosts {
				if got := countOn(placed, h.Name); got != 1 {
					t.Errorf("spread of %d instances on %d hosts: %s runs %d, want 1 (%s)", hosts, hosts, h.Name, got, placed.PerHost())
				}
			}
			before := c.pids(t)

			// Two more replicas: the running ones stay where they are.
			repo.Write(repo.files(map[string]int{"web": hosts + 2}))
			commit = repo.Commit("scale web")
			start = time.Now()
			c.pushAndSync(t)
			placed, at = c.waitConverged(t, c.Hosts, map[string]int{"web": hosts + 2}, commit, 60*time.Second)
			figure(t, "scale-to-converged", hosts, at.Sub(start), fmt.Sprintf("instances=%d", hosts+2))
			after := c.pids(t)
			for id, pid := range before {
				if after[id] != pid {
					t.Errorf("scale up restarted or moved %s: pid %d, now %d", id, pid, after[id])
				}
			}
			t.Logf("placement after scale: %s", placed.PerHost())

			// Deleted from Git: pruned everywhere.
			repo.Write(map[string]string{"ctx/web.cue": ""})
			commit = repo.Commit("remove web")
			start = time.Now()
			c.pushAndSync(t)
			_, at = c.waitConverged(t, c.Hosts, nil, commit, 60*time.Second)
			figure(t, "delete-to-pruned", hosts, at.Sub(start), "")
			if left := markerProcesses(repo.Marker); len(left) != 0 {
				t.Errorf("workloads left after delete: %v", left)
			}
		})
	}
}

func countOn(p Placement, host string) int {
	n := 0
	for _, h := range p {
		if h == host {
			n++
		}
	}
	return n
}

// pids returns instance id → pid over every live host's report.
func (c *Cluster) pids(t testing.TB) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, h := range c.Live() {
		v, err := h.view()
		if err != nil {
			t.Fatal(err)
		}
		for id, in := range v.running() {
			out[id] = in.Pid
		}
	}
	return out
}
