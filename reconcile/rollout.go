package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/schema"
)

// Rollouts: when a CTX's spec changes, its instances on this node are
// replaced at most rollout.maxUnavailable at a time. An instance is
// unavailable while it is desired here and does not run, or runs but its
// CTX has a health check that has not passed threshold times in a row
// since it started. A replace whose turn has not come is recorded as a
// waiting step with the reason; the pass after the replaced instance is
// available (a driver event, a health change or the resync) starts the
// next one.
//
// The bound is per node: nodes do not coordinate, so a CTX spread over N
// nodes may have up to N·maxUnavailable instances down at once
// cluster-wide.
//
// Replacing an instance that is known to be down (not running, or failing
// its check threshold times) costs nothing, so it is always allowed: a
// rollout that fixes a broken CTX (every instance unhealthy) is not
// blocked by the very instances it fixes. An instance whose check has no
// verdict yet (it just started, or the agent just restarted) counts as
// unavailable but is not free to replace: after a restart mid-rollout the
// remaining replaces wait for the checks instead of all starting at once.

// rollout is one pass's count of unavailable instances per CTX, which the
// replaces it admits add to.
type rollout struct {
	max       map[string]int      // CTX name → maxUnavailable
	hasHealth map[string]bool     // CTX name → it has a health check
	down      map[string][]string // CTX name → its unavailable instance ids here, sorted
	known     map[string]bool     // instance ids known to be down (not just unchecked)
}

// newRollout counts the unavailable instances of every CTX desired on this
// node, from what the pass observed and the health results.
func (r *Reconciler) newRollout(ps *passState, ctxs map[string]schema.Ctx) *rollout {
	ro := &rollout{max: map[string]int{}, hasHealth: map[string]bool{}, down: map[string][]string{}, known: map[string]bool{}}
	observed := map[string]drivers.Instance{}
	for _, insts := range ps.observed {
		for _, in := range insts {
			observed[in.ID] = in
		}
	}
	for id, u := range ps.desired.Units {
		if u.Kind != drivers.KindCTX {
			continue
		}
		c := ctxs[u.Name]
		ro.max[u.Name] = max(c.Rollout.MaxUnavailable, 1)
		ro.hasHealth[u.Name] = c.Health != nil
		in, ok := observed[id]
		running := ok && in.State == drivers.Running
		available := running
		if running && c.Health != nil {
			res, _ := r.health.result(id)
			available = res.Healthy != nil && *res.Healthy
			ro.known[id] = res.Healthy != nil && !*res.Healthy
		}
		if !running {
			ro.known[id] = true
		}
		if !available {
			ro.down[u.Name] = append(ro.down[u.Name], id)
		}
	}
	for name := range ro.down {
		slices.Sort(ro.down[name])
	}
	return ro
}

// admit says whether the replace of instance id of CTX name may start now
// and counts it as unavailable if so; otherwise it returns why it waits.
func (ro *rollout) admit(id, name string) string {
	down := ro.down[name]
	if ro.known[id] {
		return ""
	}
	limit := max(ro.max[name], 1)
	if len(down) < limit {
		if !slices.Contains(down, id) {
			ro.down[name] = append(down, id)
		}
		return ""
	}
	what := "run"
	if ro.hasHealth[name] {
		what = "be healthy"
	}
	return fmt.Sprintf("rollout: %d of %d unavailable, waiting for %s to %s", len(down), limit, strings.Join(down, ", "), what)
}

// syncHealth starts and stops the health probes so that every running
// instance desired here whose CTX has a health check has one. A check
// that cannot be parsed is a problem of its CTX.
func (r *Reconciler) syncHealth(ctx context.Context, ps *passState, ctxs map[string]schema.Ctx) {
	checks := map[string]HealthCheck{}
	keys := map[string]string{}
	var targets []healthTarget
	for _, insts := range ps.observed {
		for _, in := range insts {
			u, ok := ps.desired.Units[in.ID]
			if !ok || u.Kind != drivers.KindCTX || in.State != drivers.Running {
				continue
			}
			c := ctxs[u.Name]
			if c.Health == nil {
				continue
			}
			hc, ok := checks[u.Name]
			if !ok {
				var err error
				if hc, err = ParseHealth(*c.Health); err != nil {
					ps.problem(ProblemKey(drivers.KindCTX, u.Name), in.ID, fmt.Sprintf("ctx %s: %v", u.Name, err))
					continue
				}
				b, _ := json.Marshal(c.Health)
				checks[u.Name], keys[u.Name] = hc, string(b)
			}
			targets = append(targets, healthTarget{
				id:       in.ID,
				life:     fmt.Sprintf("%s/%d/%d", in.SpecHash, in.Pid, in.StartedAt.UnixNano()),
				checkKey: keys[u.Name],
				check:    hc,
			})
		}
	}
	r.health.sync(ctx, targets)
}
