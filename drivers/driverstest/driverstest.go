// Package driverstest is the conformance suite every [drivers.Driver] runs:
// applying twice equals applying once, an apply interrupted by a crash
// finishes on the next agent, a restarted agent finds what runs without
// starting it again, deletes are idempotent, a plan's report is the report
// the apply returns, and the CPU time a live instance reports grows with
// the CPU it burns and never goes back.
//
// A backend's test calls [Run] with a [Factory] that builds the driver over
// a state dir with real workloads (processes, containers).
package driverstest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/ctxos/ctxos/drivers"
)

// Factory builds the driver under test and the specs it runs.
type Factory struct {
	// New returns a driver over stateDir. Calling it again with the same
	// dir, after Crash or Close of the previous driver, is the same node
	// after an agent restart. Required.
	New func(tb testing.TB, stateDir string) drivers.Driver

	// Spec returns a valid spec with the given id that runs until stopped.
	// Specs of different variants have different hashes. Required.
	Spec func(id string, variant int) drivers.Spec

	// Crash stops d as if its agent died: its goroutines end and what it
	// holds on the host (locks) is released, with no orderly shutdown. Nil
	// means Close, which fits a driver whose Close writes nothing.
	Crash func(tb testing.TB, d drivers.Driver)

	// Halfway applies c only partly, leaving what an agent that died in the
	// middle of Apply leaves (a workload started, its record not yet
	// complete). Nil means a full Apply: the step ran but the agent died
	// before recording it done.
	Halfway func(ctx context.Context, tb testing.TB, d drivers.Driver, c drivers.Change)

	// Count returns how many workloads run on the host for id, found
	// independently of the driver's records (a /proc scan, a runtime
	// listing), so an orphan the driver lost is still counted. Nil skips
	// those checks.
	Count func(tb testing.TB, id string) int

	// Busy returns a valid spec with the given id that keeps a CPU busy
	// until stopped (a shell loop, say). Nil skips the CPU time check.
	Busy func(id string) drivers.Spec

	// Timeout bounds each wait and each call; 30s if zero.
	Timeout time.Duration
}

// Run runs the conformance suite against f.
func Run(t *testing.T, f Factory) {
	if f.New == nil || f.Spec == nil {
		t.Fatal("driverstest: Factory.New and Factory.Spec are required")
	}
	if f.Timeout == 0 {
		f.Timeout = 30 * time.Second
	}
	cases := []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"ApplyTwiceEqualsOnce", testApplyTwice},
		{"PlanHasNoSideEffects", testPlanNoSideEffects},
		{"PlanReportEqualsApplyReport", testPlanEqualsApply},
		{"ReplaceOnSpecChange", testReplace},
		{"ObserveAfterAgentRestart", testObserveAfterRestart},
		{"ApplyAfterCrashHalfway", testCrashHalfway},
		{"DeleteIsIdempotent", testDeleteTwice},
		{"DeleteAfterAgentRestart", testDeleteAfterRestart},
		{"InvalidSpecs", testInvalidSpecs},
		{"StartMissing", testStartMissing},
		{"ApplyAfterClose", testApplyAfterClose},
		{"CPUTime", testCPUTime},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, f)
			c.fn(t, h)
		})
	}
}

// harness tracks the current driver over one state dir and cleans up every
// workload the case started.
type harness struct {
	f     Factory
	dir   string
	d     drivers.Driver
	alive bool
}

func newHarness(tb testing.TB, f Factory) *harness {
	tb.Helper()
	h := &harness{f: f, dir: tb.TempDir()}
	h.d, h.alive = f.New(tb, h.dir), true
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), f.Timeout)
		defer cancel()
		if !h.alive {
			h.d, h.alive = f.New(tb, h.dir), true
		}
		if _, err := drivers.Converge(ctx, h.d, nil); err != nil {
			tb.Errorf("cleanup: delete every instance: %v", err)
		}
		if err := h.d.Close(); err != nil {
			tb.Errorf("cleanup: close: %v", err)
		}
	})
	return h
}

func (h *harness) ctx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.f.Timeout)
	tb.Cleanup(cancel)
	return ctx
}

// crash ends the current driver as a dead agent would and builds the next.
func (h *harness) restart(tb testing.TB, crash bool) {
	tb.Helper()
	if crash && h.f.Crash != nil {
		h.f.Crash(tb, h.d)
	} else if err := h.d.Close(); err != nil {
		tb.Fatalf("close: %v", err)
	}
	h.alive = false
	h.d, h.alive = h.f.New(tb, h.dir), true
}

func (h *harness) observe(tb testing.TB) []drivers.Instance {
	tb.Helper()
	obs, err := h.d.Observe(h.ctx(tb))
	if err != nil {
		tb.Fatalf("Observe: %v", err)
	}
	return obs
}

func (h *harness) plan(tb testing.TB, desired ...drivers.Spec) []drivers.Change {
	tb.Helper()
	changes, err := h.d.Plan(h.ctx(tb), desired, h.observe(tb))
	if err != nil {
		tb.Fatalf("Plan: %v", err)
	}
	return changes
}

func (h *harness) apply(tb testing.TB, c drivers.Change) drivers.Report {
	tb.Helper()
	r, err := h.d.Apply(h.ctx(tb), c)
	if err != nil {
		tb.Fatalf("Apply %s %s: %v (report %+v)", c.Action, c.ID, err, r)
	}
	return r
}

// converge plans and applies until nothing is left to do, and returns the
// reports of the first round.
func (h *harness) converge(tb testing.TB, desired ...drivers.Spec) []drivers.Report {
	tb.Helper()
	reports, err := drivers.Converge(h.ctx(tb), h.d, desired)
	if err != nil {
		tb.Fatalf("Converge: %v", err)
	}
	if changes := h.plan(tb, desired...); len(changes) != 0 {
		tb.Fatalf("after converge, plan still has %d changes: %v", len(changes), summary(changes))
	}
	return reports
}

// waitRunning polls Observe until id is Running and returns it.
func (h *harness) waitRunning(tb testing.TB, id string) drivers.Instance {
	tb.Helper()
	var last []drivers.Instance
	deadline := time.Now().Add(h.f.Timeout)
	for time.Now().Before(deadline) {
		last = h.observe(tb)
		if inst, ok := find(last, id); ok && inst.State == drivers.Running {
			return inst
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a wait for an event
	}
	tb.Fatalf("instance %s not running within %s; observed %+v", id, h.f.Timeout, last)
	return drivers.Instance{}
}

func (h *harness) wantCount(tb testing.TB, id string, want int) {
	tb.Helper()
	if h.f.Count == nil {
		return
	}
	if got := h.f.Count(tb, id); got != want {
		tb.Errorf("workloads running on the host for %s = %d, want %d", id, got, want)
	}
}

func find(obs []drivers.Instance, id string) (drivers.Instance, bool) {
	for _, o := range obs {
		if o.ID == id {
			return o, true
		}
	}
	return drivers.Instance{}, false
}

func summary(changes []drivers.Change) []string {
	var s []string
	for _, c := range changes {
		s = append(s, string(c.Action)+" "+c.ID+": "+c.Reason)
	}
	return s
}

func wantActions(tb testing.TB, changes []drivers.Change, want ...string) {
	tb.Helper()
	var got []string
	for _, c := range changes {
		got = append(got, string(c.Action)+" "+c.ID)
	}
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("planned %v, want %v", got, want)
	}
}

func testApplyTwice(t *testing.T, h *harness) {
	s := h.f.Spec("ctx.conf.twice", 0)
	changes := h.plan(t, s)
	wantActions(t, changes, "create "+s.ID)

	r1 := h.apply(t, changes[0])
	if r1.Result != drivers.ResultChanged {
		t.Fatalf("first apply result = %q, want %q", r1.Result, drivers.ResultChanged)
	}
	first := h.waitRunning(t, s.ID)

	r2 := h.apply(t, changes[0])
	if r2.Result != drivers.ResultUnchanged || len(r2.Changes) != 0 {
		t.Errorf("second apply = %q with changes %v, want %q and none", r2.Result, r2.Changes, drivers.ResultUnchanged)
	}
	second := h.waitRunning(t, s.ID)
	if first.Pid != second.Pid || !first.StartedAt.Equal(second.StartedAt) {
		t.Errorf("second apply restarted the instance: pid %d→%d, started %s→%s", first.Pid, second.Pid, first.StartedAt, second.StartedAt)
	}
	if got := len(h.observe(t)); got != 1 {
		t.Errorf("observed %d instances, want 1", got)
	}
	h.wantCount(t, s.ID, 1)
	wantActions(t, h.plan(t, s))

	// A whole second converge is also a no-op.
	if reports := h.converge(t, s); len(reports) != 0 {
		t.Errorf("second converge reported %v, want nothing", reports)
	}
}

func testPlanNoSideEffects(t *testing.T, h *harness) {
	a, b := h.f.Spec("ctx.conf.plan.0", 0), h.f.Spec("ctx.conf.plan.1", 0)
	h.converge(t, a)
	before := h.observe(t)
	for range 3 {
		changes := h.plan(t, b)
		wantActions(t, changes, "delete "+a.ID, "create "+b.ID)
	}
	after := h.observe(t)
	// CPU time runs on by itself (a process still starting up); every
	// other field must not change.
	for _, obs := range [][]drivers.Instance{before, after} {
		for i := range obs {
			obs[i].CPUTime = 0
		}
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("plan changed what is observed:\nbefore %+v\nafter  %+v", before, after)
	}
	h.wantCount(t, a.ID, 1)
	h.wantCount(t, b.ID, 0)
}

func testPlanEqualsApply(t *testing.T, h *harness) {
	v0, v1 := h.f.Spec("ctx.conf.salt", 0), h.f.Spec("ctx.conf.salt", 1)
	for _, step := range []struct {
		desired []drivers.Spec
		action  drivers.Action
	}{{[]drivers.Spec{v0}, drivers.Create}, {[]drivers.Spec{v1}, drivers.Replace}, {nil, drivers.Delete}} {
		changes := h.plan(t, step.desired...)
		wantActions(t, changes, string(step.action)+" "+v0.ID)
		preview := drivers.Preview(changes[0])
		if preview.Result != drivers.ResultWouldChange || len(preview.Changes) == 0 {
			t.Fatalf("%s preview = %+v, want %q with changes", step.action, preview, drivers.ResultWouldChange)
		}
		got := h.apply(t, changes[0])
		if got.Result != drivers.ResultChanged {
			t.Fatalf("%s apply result = %q, want %q", step.action, got.Result, drivers.ResultChanged)
		}
		if !reflect.DeepEqual(got.Changes, preview.Changes) {
			t.Errorf("%s: apply changes differ from the plan's\napply %v\nplan  %v", step.action, got.Changes, preview.Changes)
		}
		if got.ID != preview.ID || got.Action != preview.Action {
			t.Errorf("%s: apply report %s %s, plan %s %s", step.action, got.Action, got.ID, preview.Action, preview.ID)
		}
	}
}

func testReplace(t *testing.T, h *harness) {
	v0, v1 := h.f.Spec("ctx.conf.replace", 0), h.f.Spec("ctx.conf.replace", 1)
	if v0.Hash() == v1.Hash() {
		t.Fatal("Factory.Spec variants 0 and 1 have the same hash")
	}
	h.converge(t, v0)
	old := h.waitRunning(t, v0.ID)
	h.converge(t, v1)
	cur := h.waitRunning(t, v1.ID)
	if cur.SpecHash != v1.Hash() {
		t.Errorf("spec hash after replace = %s, want %s", cur.SpecHash, v1.Hash())
	}
	if old.Pid != 0 && cur.Pid == old.Pid {
		t.Errorf("replace kept pid %d", old.Pid)
	}
	h.wantCount(t, v0.ID, 1)
}

func testObserveAfterRestart(t *testing.T, h *harness) {
	s := h.f.Spec("ctx.conf.restart", 0)
	h.converge(t, s)
	before := h.waitRunning(t, s.ID)

	for _, crash := range []bool{false, true} {
		h.restart(t, crash)
		obs := h.observe(t)
		after, ok := find(obs, s.ID)
		if !ok {
			t.Fatalf("after agent restart (crash=%v), %s not observed: %+v", crash, s.ID, obs)
		}
		if after.State != drivers.Running || after.Pid != before.Pid || after.SpecHash != before.SpecHash || after.Restarts != before.Restarts {
			t.Errorf("after agent restart (crash=%v): %+v\nwant the same running instance as %+v", crash, after, before)
		}
		wantActions(t, h.plan(t, s))
		h.wantCount(t, s.ID, 1)
	}
}

func testCrashHalfway(t *testing.T, h *harness) {
	s := h.f.Spec("ctx.conf.halfway", 0)
	changes := h.plan(t, s)
	wantActions(t, changes, "create "+s.ID)
	if h.f.Halfway != nil {
		h.f.Halfway(h.ctx(t), t, h.d, changes[0])
	} else {
		h.apply(t, changes[0])
	}
	h.restart(t, true)

	// The reconciler re-observes a step found running and applies again.
	obs := h.observe(t)
	changes, err := h.d.Plan(h.ctx(t), []drivers.Spec{s}, obs)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	for _, c := range changes {
		h.apply(t, c)
	}
	h.waitRunning(t, s.ID)
	if got := len(h.observe(t)); got != 1 {
		t.Errorf("observed %d instances, want 1", got)
	}
	h.wantCount(t, s.ID, 1)
	wantActions(t, h.plan(t, s))

	// Re-applying the interrupted step itself is harmless too.
	c := drivers.Change{ID: s.ID, Action: drivers.Create, Spec: &s, Reason: "re-applied step"}
	if r := h.apply(t, c); r.Result != drivers.ResultUnchanged {
		t.Errorf("re-applied create = %q, want %q", r.Result, drivers.ResultUnchanged)
	}
	h.wantCount(t, s.ID, 1)
}

func testDeleteTwice(t *testing.T, h *harness) {
	s := h.f.Spec("ctx.conf.delete", 0)
	h.converge(t, s)
	changes := h.plan(t)
	wantActions(t, changes, "delete "+s.ID)
	if r := h.apply(t, changes[0]); r.Result != drivers.ResultChanged {
		t.Errorf("first delete = %q, want %q", r.Result, drivers.ResultChanged)
	}
	if r := h.apply(t, changes[0]); r.Result != drivers.ResultUnchanged {
		t.Errorf("second delete = %q, want %q", r.Result, drivers.ResultUnchanged)
	}
	never := drivers.Change{ID: "ctx.conf.never", Action: drivers.Delete, Reason: "never existed"}
	if r := h.apply(t, never); r.Result != drivers.ResultUnchanged {
		t.Errorf("delete of an unknown id = %q, want %q", r.Result, drivers.ResultUnchanged)
	}
	if obs := h.observe(t); len(obs) != 0 {
		t.Errorf("observed %+v after delete, want nothing", obs)
	}
	h.wantCount(t, s.ID, 0)
}

func testDeleteAfterRestart(t *testing.T, h *harness) {
	s := h.f.Spec("ctx.conf.adopted", 0)
	h.converge(t, s)
	h.restart(t, true)
	h.converge(t)
	if obs := h.observe(t); len(obs) != 0 {
		t.Errorf("observed %+v after delete, want nothing", obs)
	}
	h.wantCount(t, s.ID, 0)
}

func testInvalidSpecs(t *testing.T, h *harness) {
	good := h.f.Spec("ctx.conf.valid", 0)
	badID := h.f.Spec("ctx.conf.valid", 0)
	badID.ID = "Not/An/Id"
	badKind := h.f.Spec("ctx.conf.kind", 0)
	badKind.Kind = "pod"
	for name, desired := range map[string][]drivers.Spec{
		"bad id":    {badID},
		"bad kind":  {badKind},
		"duplicate": {good, good},
	} {
		changes, err := h.d.Plan(h.ctx(t), desired, nil)
		if !errors.Is(err, drivers.ErrInvalidSpec) || len(changes) != 0 {
			t.Errorf("%s: Plan = %v, %v; want no changes and ErrInvalidSpec", name, changes, err)
		}
	}
	c := drivers.Change{ID: badID.ID, Action: drivers.Create, Spec: &badID}
	r, err := h.d.Apply(h.ctx(t), c)
	if !errors.Is(err, drivers.ErrInvalidSpec) || r.Result != drivers.ResultFailed || r.Err == "" {
		t.Errorf("Apply of an invalid spec = %+v, %v; want a failed report and ErrInvalidSpec", r, err)
	}
	r, err = h.d.Apply(h.ctx(t), drivers.Change{ID: good.ID, Action: drivers.Create})
	if !errors.Is(err, drivers.ErrInvalidChange) || r.Result != drivers.ResultFailed {
		t.Errorf("Apply of a create without spec = %+v, %v; want ErrInvalidChange", r, err)
	}
	if obs := h.observe(t); len(obs) != 0 {
		t.Errorf("observed %+v after refused changes, want nothing", obs)
	}
}

func testStartMissing(t *testing.T, h *harness) {
	s := h.f.Spec("ctx.conf.missing", 0)
	r, err := h.d.Apply(h.ctx(t), drivers.Change{ID: s.ID, Action: drivers.Start, Spec: &s})
	if !errors.Is(err, drivers.ErrNotFound) || r.Result != drivers.ResultFailed {
		t.Errorf("Start of a missing instance = %+v, %v; want ErrNotFound", r, err)
	}
	h.wantCount(t, s.ID, 0)
}

func testApplyAfterClose(t *testing.T, h *harness) {
	s := h.f.Spec("ctx.conf.closed", 0)
	d := h.d
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	h.alive = false
	if _, err := d.Apply(h.ctx(t), drivers.Change{ID: s.ID, Action: drivers.Create, Spec: &s}); !errors.Is(err, drivers.ErrClosed) {
		t.Errorf("Apply after Close = %v, want ErrClosed", err)
	}
	if _, err := d.Observe(h.ctx(t)); !errors.Is(err, drivers.ErrClosed) {
		t.Errorf("Observe after Close = %v, want ErrClosed", err)
	}
	h.wantCount(t, s.ID, 0)
}

// busyCPU is the CPU time a busy instance must reach; an idle one started at
// the same time must stay under half of it (starting a process or a
// container costs a few milliseconds, not a hundred).
const busyCPU = 200 * time.Millisecond

func testCPUTime(t *testing.T, h *harness) {
	if h.f.Busy == nil {
		t.Skip("Factory.Busy is nil")
	}
	busy, idle := h.f.Busy("ctx.conf.busy"), h.f.Spec("ctx.conf.idle", 0)
	if m, ok := h.d.(drivers.CPUMeter); ok {
		m.MeasureCPU([]string{busy.ID, idle.ID})
	}
	h.converge(t, busy, idle)
	last := map[string]time.Duration{}
	var got map[string]time.Duration
	deadline := time.Now().Add(h.f.Timeout)
	for {
		got = map[string]time.Duration{}
		for _, inst := range h.observe(t) {
			got[inst.ID] = inst.CPUTime
			if inst.CPUTime < last[inst.ID] {
				t.Fatalf("%s: CPU time went back from %s to %s", inst.ID, last[inst.ID], inst.CPUTime)
			}
			if inst.CPUTime < 0 {
				t.Fatalf("%s: CPU time %s is negative", inst.ID, inst.CPUTime)
			}
		}
		last = got
		if got[busy.ID] >= busyCPU {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("busy instance used %s of CPU within %s, want at least %s", got[busy.ID], h.f.Timeout, busyCPU)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a wait for an event
	}
	t.Logf("CPU time: busy %s, idle %s", got[busy.ID], got[idle.ID])
	if got, limit := got[idle.ID], busyCPU/2; got >= limit {
		t.Errorf("idle instance used %s of CPU while the busy one used %s, want under %s", got, last[busy.ID], limit)
	}
	h.converge(t) // the CPU is shared with the other cases: free it now
}
