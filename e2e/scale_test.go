//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// autoscaledCTX is a CTX of 1 to 3 instances aiming at 50% of 100
// millicores each, spread over the hosts; busy instances burn a core,
// idle ones sleep (as the cluster's other workloads, with its marker).
func (r *Repo) autoscaledCTX(busy bool) string {
	command, args := `"/bin/sleep"`, fmt.Sprintf("[%q]", r.Marker)
	if busy {
		command, args = `"/bin/sh"`, `["-c", "while :; do :; done"]`
	}
	return fmt.Sprintf(`package config

ctx: burn: {
	command: %s
	args: %s
	autoscale: {min: 1, max: 3, targetCPU: 50}
	resources: {
		cpu:    100
		memory: "16Mi"
	}
	placement: strategy: "spread"
	stop: {signal: "SIGKILL", grace: "1s"}
}
`, command, args)
}

// TestAutoscale: an autoscaled CTX whose instance burns a core grows to
// its max over the hosts, decided by one of them; made idle, it shrinks
// back to its min once the scale-down window (3 s here) has passed.
func TestAutoscale(t *testing.T) {
	requireHosts(t)
	const hosts = 3
	repo := newRepo(t, nil)
	c := newCluster(t, hosts, repo)
	c.waitConverged(t, c.Hosts, nil, repo.Git("rev-parse", "HEAD"), 60*time.Second)

	running := func(want int) func() (bool, string) {
		return func() (bool, string) {
			n, per := 0, []string{}
			for _, h := range c.Hosts {
				v, err := h.view()
				if err != nil {
					return false, err.Error()
				}
				k := 0
				for _, in := range v.running() {
					if in.Name == "burn" {
						k++
					}
				}
				n += k
				per = append(per, fmt.Sprintf("%s:%d", h.Name, k))
			}
			return n == want, strings.Join(per, " ")
		}
	}
	files := repo.files(nil)
	files["ctx/burn.cue"] = repo.autoscaledCTX(true)
	repo.Write(files)
	repo.Commit("add burn, autoscaled")
	start := time.Now()
	c.pushAndSync(t)
	waitFor(t, 90*time.Second, "3 burn instances over the hosts", running(3))
	figure(t, "autoscale-up-1-to-3", hosts, time.Since(start), "period=1s")
	out, _, code := c.Hosts[0].ctxos("status")
	if code != 0 || !strings.Contains(out, "burn: 3 instances") {
		t.Errorf("ctxos status (exit %d) does not show the decision:\n%s", code, out)
	}

	files["ctx/burn.cue"] = repo.autoscaledCTX(false)
	repo.Write(files)
	repo.Commit("burn goes idle")
	start = time.Now()
	c.pushAndSync(t)
	waitFor(t, 90*time.Second, "burn back to 1 idle instance", running(1))
	figure(t, "autoscale-down-3-to-1", hosts, time.Since(start), "window=3s")
}
