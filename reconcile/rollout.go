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
// The bound also holds across the cluster, without a coordinator: the
// instances of a CTX, in index order, form waves of maxUnavailable, and an
// instance is replaced only once every instance of the earlier waves runs
// the new spec and is available, as its node reports it in
// /run/<node>/instances (this node's own as observed). Every node computes
// the same waves from the same placement, so nodes replace one wave at a
// time, in order, whichever nodes its instances are on. An instance on a
// node that reports nothing (it is gone) holds the next waves back until
// placement moves it and it starts with the new spec elsewhere.
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
	// turn, when set, says why an instance of a CTX must wait for the
	// earlier waves of the cluster-wide rollout ("" when it need not).
	turn func(id, name string) string
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
			res, _ := r.health.resultFor(in)
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
	w := &waves{r: r, ps: ps, ctxs: ctxs, updated: map[string]bool{}}
	ro.turn = w.turn
	return ro
}

// waves is the cluster-wide order of one pass's rollouts.
type waves struct {
	r       *Reconciler
	ps      *passState
	ctxs    map[string]schema.Ctx
	order   map[string][]string // CTX name → its placed instance ids by index
	updated map[string]bool     // instance id → runs the new spec, available
}

// turn says why instance id (a driver instance id) of CTX name must wait
// for earlier waves, or "" when every instance of them is updated.
func (w *waves) turn(id, name string) string {
	if w.order == nil {
		w.order = map[string][]string{}
		idx := map[string]int{}
		for inst := range w.ps.desired.Placement {
			n, i, err := ParseInstanceID(inst)
			if err == nil {
				w.order[n] = append(w.order[n], inst)
				idx[inst] = i
			}
		}
		for _, ids := range w.order {
			slices.SortFunc(ids, func(a, b string) int { return idx[a] - idx[b] })
		}
	}
	order := w.order[name]
	pos := slices.Index(order, strings.TrimPrefix(id, drivers.KindCTX+"."))
	if pos < 0 {
		return ""
	}
	k := max(w.ctxs[name].Rollout.MaxUnavailable, 1)
	var behind []string
	for _, inst := range order[:pos/k*k] {
		if !w.isUpdated(name, inst) {
			behind = append(behind, inst)
		}
	}
	if len(behind) == 0 {
		return ""
	}
	what := "run the new spec"
	if w.ctxs[name].Health != nil {
		what += " and be healthy"
	}
	return fmt.Sprintf("rollout: waiting for %s, earlier in the cluster-wide rollout, to %s", strings.Join(behind, ", "), what)
}

// isUpdated reports whether instance inst of CTX name runs the spec the
// snapshot asks for and is available, where it is placed.
func (w *waves) isUpdated(name, inst string) bool {
	if v, ok := w.updated[inst]; ok {
		return v
	}
	c := w.ctxs[name]
	ok := false
	if _, i, err := ParseInstanceID(inst); err == nil {
		if spec, err := ctxSpec(name, c, i); err == nil {
			st, seen := w.status(inst)
			ok = seen && st.State == drivers.Running && st.SpecHash == spec.Hash() &&
				(c.Health == nil || st.Healthy != nil && *st.Healthy)
		}
	}
	w.updated[inst] = ok
	return ok
}

// status is instance inst as its node reports it; this node's own as its
// drivers observed it this pass.
func (w *waves) status(inst string) (InstanceStatus, bool) {
	id := CTXSpecID(inst)
	node := w.ps.desired.Placement[inst]
	if node != w.r.cfg.Node {
		st, ok := w.ps.others[node][id]
		return st, ok
	}
	for drv, insts := range w.ps.observed {
		for _, in := range insts {
			if in.ID == id {
				return w.r.statusOf(drv, in), true
			}
		}
	}
	return InstanceStatus{}, false
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
		if ro.turn != nil {
			if why := ro.turn(id, name); why != "" {
				return why
			}
		}
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
				life:     healthLife(in),
				checkKey: keys[u.Name],
				check:    hc,
			})
		}
	}
	r.health.sync(ctx, targets)
}
