package reconcile

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/cluster/props"
	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/drivers/process"
	"github.com/ctxos/ctxos/schema"
)

const waitLimit = 60 * time.Second

func testLogger() *slog.Logger {
	if os.Getenv("CTXOS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// waitUntil polls cond until it holds or the deadline passes; cond returns
// what it saw, for the failure message.
func waitUntil(tb testing.TB, what string, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(waitLimit)
	var last string
	for time.Now().Before(deadline) {
		ok, seen := cond()
		if ok {
			return
		}
		last = seen
		time.Sleep(20 * time.Millisecond) // polling interval, not a wait for an effect
	}
	tb.Fatalf("timed out waiting for %s; last seen: %s", what, last)
}

func newMarker(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return "m" + hex.EncodeToString(b)
}

// markedProcesses returns the pids of live (not zombie) processes whose
// environment holds CTXOS_TEST_MARK=marker, by CTXOS_INSTANCE.
func markedProcesses(marker string) map[string][]int {
	out := map[string][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		vars := strings.Split(string(env), "\x00")
		if !slices.Contains(vars, "CTXOS_TEST_MARK="+marker) {
			continue
		}
		if stat, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
				continue
			}
		}
		inst := ""
		for _, v := range vars {
			if s, ok := strings.CutPrefix(v, "CTXOS_INSTANCE="); ok {
				inst = s
			}
		}
		out[inst] = append(out[inst], pid)
	}
	return out
}

func countMarked(marker string) int {
	n := 0
	for _, pids := range markedProcesses(marker) {
		n += len(pids)
	}
	return n
}

func killMarked(marker string) {
	for _, pids := range markedProcesses(marker) {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// sleepCTX is a process CTX running `sleep secs`, marked for counting.
func sleepCTX(marker string, replicas int, secs string) schema.Ctx {
	return schema.Ctx{
		Runtime: schema.RuntimeProcess, Command: "sleep", Args: []string{secs},
		Env:      map[string]string{"CTXOS_TEST_MARK": marker},
		Replicas: replicas, Restart: schema.RestartAlways,
		Resources: schema.Resources{CPU: 10, Memory: "16Mi"},
		Stop:      schema.Stop{Signal: "SIGTERM", Grace: "5s"},
	}
}

// buildSnapshot encodes ctxs and mids as gitsync exports them.
func buildSnapshot(tb testing.TB, ctxs map[string]schema.Ctx, mids map[string]schema.Mid) *schema.Snapshot {
	tb.Helper()
	snap := &schema.Snapshot{}
	add := func(path string, v any) {
		b, err := schema.Encode(v)
		if err != nil {
			tb.Fatal(err)
		}
		snap.Entries = append(snap.Entries, schema.Entry{Path: path, Value: b})
	}
	for name, c := range ctxs {
		add("/ctx/"+name, c)
	}
	for name, m := range mids {
		add("/mid/"+name, m)
	}
	add(schema.PathSys, schema.Sys{Scheduler: schema.SchedulerConfig{Strategy: schema.StrategyBinpack}})
	slices.SortFunc(snap.Entries, func(a, b schema.Entry) int { return strings.Compare(a.Path, b.Path) })
	snap.Hash = schema.HashEntries(snap.Entries)
	return snap
}

// publish writes snap's entries, deletes desired entries it no longer has,
// then writes the manifest last, as gitsync does. skip names entries left
// out, for an incomplete snapshot.
func publish(tb testing.TB, s *vfs.Store, snap *schema.Snapshot, gen uint64, skip ...string) {
	tb.Helper()
	keep := map[string]bool{}
	for _, e := range snap.Entries {
		keep[e.Path] = true
		if slices.Contains(skip, e.Path) {
			continue
		}
		if _, err := s.Put(e.Path, e.Value); err != nil {
			tb.Fatal(err)
		}
	}
	for _, root := range []string{"/ctx", "/mid"} {
		for _, e := range s.List(root) {
			if !keep[e.Path] {
				if _, err := s.Delete(e.Path); err != nil {
					tb.Fatal(err)
				}
			}
		}
	}
	m := schema.NewManifest(snap, fmt.Sprintf("c%039d", gen), gen)
	b, err := schema.Encode(m)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := s.Put(schema.PathRevision, b); err != nil {
		tb.Fatal(err)
	}
}

func putHW(tb testing.TB, s *vfs.Store, node string, labels map[string]string) {
	tb.Helper()
	hw := props.HW{Labels: labels, Capacity: props.Capacity{CPUMilli: 64000, MemoryBytes: 64 << 30}}
	if _, err := s.PutValue("/hw/"+node, hw); err != nil {
		tb.Fatal(err)
	}
}

// agent is one node's reconciler with a real process driver and journal.
type agent struct {
	name     string
	store    *vfs.Store
	stateDir string
	jdir     string
	drv      *process.Driver
	journal  *Journal
	rec      *Reconciler
	cancel   context.CancelFunc
	done     chan error
}

type agentOpts struct {
	members   func() []cluster.Member
	retryBase time.Duration
	parallel  int
	stateDir  string
	resync    time.Duration // default 2s
	// scalePeriod and scaleDownWindow, when set, configure the scaler.
	scalePeriod, scaleDownWindow time.Duration
}

func startAgent(tb testing.TB, name string, store *vfs.Store, o agentOpts) *agent {
	tb.Helper()
	a := &agent{name: name, store: store, stateDir: o.stateDir, jdir: tb.TempDir()}
	if a.stateDir == "" {
		a.stateDir = tb.TempDir()
	}
	var err error
	a.drv, err = process.New(process.Config{StateDir: a.stateDir, Logger: testLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	a.journal, err = OpenJournal(a.jdir, WithJournalLogger(testLogger()))
	if err != nil {
		tb.Fatal(err)
	}
	if o.resync == 0 {
		o.resync = 2 * time.Second
	}
	a.rec, err = New(Config{
		Node: name, Store: store, Members: o.members,
		Drivers: map[string]drivers.Driver{process.Type: a.drv},
		Journal: a.journal, Resync: o.resync, Parallel: o.parallel,
		RetryBase: o.retryBase, RetryMax: 2 * time.Second,
		MemberPoll:  100 * time.Millisecond,
		ScalePeriod: o.scalePeriod, ScaleDownWindow: o.scaleDownWindow,
		Logger: testLogger(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan error, 1)
	go func() { a.done <- a.rec.Run(ctx) }()
	tb.Cleanup(a.cleanup)
	return a
}

// stop ends the reconciler and closes the driver and journal; the
// processes keep running.
func (a *agent) stop(tb testing.TB) {
	tb.Helper()
	if a.cancel == nil {
		return
	}
	a.cancel()
	if err := <-a.done; err != nil {
		tb.Errorf("Run: %v", err)
	}
	a.cancel = nil
	a.drv.Close()
	a.journal.Close()
}

// cleanup stops the agent and every process its state dir knows.
func (a *agent) cleanup() {
	if a.cancel != nil {
		a.cancel()
		<-a.done
		a.cancel = nil
		a.drv.Close()
		a.journal.Close()
	}
	if d, err := process.New(process.Config{StateDir: a.stateDir, Logger: testLogger()}); err == nil {
		drivers.Converge(context.Background(), d, nil)
		d.Close()
	}
}

func newStore(tb testing.TB, node string) *vfs.Store {
	tb.Helper()
	s, err := vfs.Open(context.Background(), vfs.Options{Node: node, Logger: testLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func progressOf(a *agent) string {
	p := a.rec.Progress()
	return fmt.Sprintf("state=%s msg=%q gen=%d steps=%+v desired=%d running=%d errors=%v", p.State, p.Message, p.Generation, p.Steps, p.Desired, p.Running, p.Errors)
}

// converged waits until a has converged on generation gen with want
// marked processes on the host. It reads /proc only once the loop says it
// converged: scanning a thousand processes' environments in a tight loop
// would take the CPU the benchmarks measure.
func converged(tb testing.TB, a *agent, marker string, gen uint64, want int) {
	tb.Helper()
	waitUntil(tb, fmt.Sprintf("%s converged on generation %d with %d processes", a.name, gen, want), func() (bool, string) {
		p := a.rec.Progress()
		if !p.Converged || p.Generation != gen || p.Desired != want {
			return false, progressOf(a)
		}
		n := countMarked(marker)
		return n == want, fmt.Sprintf("%d processes, %s", n, progressOf(a))
	})
}

func TestLoopOneNode(t *testing.T) {
	marker := newMarker(t)
	t.Cleanup(func() { killMarked(marker) })
	store := newStore(t, "n1")
	putHW(t, store, "n1", nil)
	a := startAgent(t, "n1", store, agentOpts{})

	// Three replicas start.
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"web": sleepCTX(marker, 3, "1000")}, nil), 1)
	converged(t, a, marker, 1, 3)
	var insts map[string]InstanceStatus
	readValue(t, store, "/run/n1/instances", &insts)
	if got, want := sortedNames(insts), []string{"ctx.web.0", "ctx.web.1", "ctx.web.2"}; !slices.Equal(got, want) {
		t.Fatalf("/run/n1/instances = %v, want %v", got, want)
	}
	var prog Progress
	readValue(t, store, "/run/n1/progress", &prog)
	if !prog.Converged || prog.Steps.Done != 3 || prog.Steps.Total != 3 {
		t.Errorf("/run/n1/progress = %+v, want converged with 3 done steps", prog)
	}

	// Scale down: two stop, the lowest index stays.
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"web": sleepCTX(marker, 1, "1000")}, nil), 2)
	converged(t, a, marker, 2, 1)
	if got := sortedNames(markedProcesses(marker)); !slices.Equal(got, []string{"ctx.web.0"}) {
		t.Fatalf("running after scale down: %v, want ctx.web.0", got)
	}

	// Killed by hand: the instance runs again and the drift is seen.
	pid := markedProcesses(marker)["ctx.web.0"][0]
	passes := a.rec.Progress().Passes
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "ctx.web.0 restored with a new pid", func() (bool, string) {
		pids := markedProcesses(marker)["ctx.web.0"]
		p := a.rec.Progress()
		return len(pids) == 1 && pids[0] != pid && p.Converged && p.Passes > passes, fmt.Sprintf("pids %v, %s", pids, progressOf(a))
	})
	waitUntil(t, "the restart published", func() (bool, string) {
		var insts map[string]InstanceStatus
		readValue(t, store, "/run/n1/instances", &insts)
		in := insts["ctx.web.0"]
		return in.Restarts >= 1 && in.State == drivers.Running, fmt.Sprintf("%+v", in)
	})

	// An incomplete snapshot changes nothing.
	pids := markedProcesses(marker)
	next := buildSnapshot(t, map[string]schema.Ctx{"web": sleepCTX(marker, 3, "1000"), "api": sleepCTX(marker, 1, "1001")}, nil)
	publish(t, store, next, 3, "/ctx/api")
	waitUntil(t, "incomplete snapshot reported", func() (bool, string) {
		p := a.rec.Progress()
		return p.State == ProgressIncomplete && p.Generation == 3 && strings.Contains(p.Message, "/ctx/api"), progressOf(a)
	})
	a.rec.Trigger("test")
	waitUntil(t, "another pass", func() (bool, string) {
		p := a.rec.Progress()
		return p.Passes > passes+2, progressOf(a)
	})
	if got := markedProcesses(marker); !mapsEqualPids(got, pids) {
		t.Fatalf("processes changed under an incomplete snapshot: %v, were %v", got, pids)
	}
	// Once complete it applies.
	publish(t, store, next, 3)
	converged(t, a, marker, 3, 4)

	// Removed from Git: everything stops.
	publish(t, store, buildSnapshot(t, nil, nil), 4)
	converged(t, a, marker, 4, 0)
	var problems []vfs.Entry
	for _, e := range store.List("/itg/n1") {
		problems = append(problems, e)
	}
	if len(problems) > 0 {
		t.Errorf("problems left after convergence: %v", problems)
	}

	// Every step of the journal ended.
	if u := a.journal.Unfinished(); len(u) > 0 {
		t.Errorf("unfinished steps: %+v", u)
	}
}

func mapsEqualPids(a, b map[string][]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func readValue(tb testing.TB, s *vfs.Store, path string, v any) {
	tb.Helper()
	e, ok := s.Get(path)
	if !ok {
		tb.Fatalf("%s: no entry", path)
	}
	if err := vfs.Decode(e.Value, v); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
}

func TestLoopRequiresWaits(t *testing.T) {
	marker := newMarker(t)
	t.Cleanup(func() { killMarked(marker) })
	store := newStore(t, "n1")
	putHW(t, store, "n1", nil)
	a := startAgent(t, "n1", store, agentOpts{retryBase: 50 * time.Millisecond})

	// A cannot start, so B (which requires it) waits instead of starting.
	broken := sleepCTX(marker, 1, "1000")
	broken.Command = "ctxos-test-no-such-command"
	b := sleepCTX(marker, 1, "1001")
	b.Requires = []string{"a"}
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"a": broken, "b": b}, nil), 1)
	waitUntil(t, "b waiting for a", func() (bool, string) {
		var v StepsView
		if e, ok := store.Get("/run/n1/steps"); !ok || vfs.Decode(e.Value, &v) != nil {
			return false, "no steps"
		}
		for _, s := range v.Open {
			if s.Resource == "ctx/b.0" && s.State == StepWaiting && s.Error == "waiting for a to run" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", v)
	})
	if n := countMarked(marker); n != 0 {
		t.Fatalf("%d processes run while a cannot start, want 0", n)
	}
	if p := a.rec.Progress(); p.Converged || p.Steps.Waiting != 1 {
		t.Errorf("progress = %s, want not converged with 1 waiting step", progressOf(a))
	}

	// Once a can run, b follows it.
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"a": sleepCTX(marker, 1, "1000"), "b": b}, nil), 2)
	converged(t, a, marker, 2, 2)
	hist, err := a.journal.History(HistoryFilter{Run: a.rec.Progress().Run})
	if err != nil {
		t.Fatal(err)
	}
	aDone, bRunning := -1, -1
	for i, s := range hist {
		if s.Resource == "ctx/a.0" && s.State == StepDone && aDone < 0 {
			aDone = i
		}
		if s.Resource == "ctx/b.0" && s.State == StepRunning && bRunning < 0 {
			bRunning = i
		}
	}
	if aDone < 0 || bRunning < aDone {
		t.Errorf("b started at transition %d, a done at %d; want b after a: %+v", bRunning, aDone, hist)
	}
	// The waiting step of generation 1 ended when generation 2 superseded it.
	old, err := a.journal.History(HistoryFilter{Resource: "ctx/b.0"})
	if err != nil {
		t.Fatal(err)
	}
	if last := old[len(old)-1]; last.State != StepDone {
		t.Errorf("last transition of ctx/b.0 = %+v, want done", last)
	}
	if u := a.journal.Unfinished(); len(u) > 0 {
		t.Errorf("unfinished steps: %+v", u)
	}
}

func TestLoopFailuresReported(t *testing.T) {
	marker := newMarker(t)
	t.Cleanup(func() { killMarked(marker) })
	store := newStore(t, "n1")
	putHW(t, store, "n1", nil)
	const base = 100 * time.Millisecond
	a := startAgent(t, "n1", store, agentOpts{retryBase: base})

	bad := sleepCTX(marker, 1, "1000")
	bad.Command = "ctxos-test-no-such-command"
	crash := sleepCTX(marker, 1, "1000")
	crash.Command, crash.Args = "sh", []string{"-c", "exit 1"}
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"bad": bad, "crash": crash}, nil), 1)

	tests := []struct {
		path string
		want string
	}{
		{"/itg/n1/ctx.bad", "command not found"},
		{"/itg/n1/ctx.crash", "exited at once with code 1"},
	}
	for _, tt := range tests {
		waitUntil(t, tt.path+" says "+tt.want, func() (bool, string) {
			e, ok := store.Get(tt.path)
			if !ok {
				return false, "no entry"
			}
			var p Problem
			if err := vfs.Decode(e.Value, &p); err != nil {
				return false, err.Error()
			}
			return strings.Contains(p.Reason, tt.want), fmt.Sprintf("%+v", p)
		})
	}

	// The failed step is retried, each time after a longer wait.
	var fails []Step
	waitUntil(t, "four failed attempts of ctx/bad.0", func() (bool, string) {
		h, err := a.journal.History(HistoryFilter{Resource: "ctx/bad.0"})
		if err != nil {
			return false, err.Error()
		}
		fails = fails[:0]
		for _, s := range h {
			if s.State == StepFailed {
				fails = append(fails, s)
			}
		}
		return len(fails) >= 4, fmt.Sprintf("%d failed", len(fails))
	})
	for i, s := range fails[:4] {
		if s.Attempt != i+1 {
			t.Errorf("failure %d has attempt %d, want %d", i, s.Attempt, i+1)
		}
		if !strings.Contains(s.Error, "command not found") {
			t.Errorf("failure %d error = %q, want command not found", i, s.Error)
		}
		if i == 0 {
			continue
		}
		if gap, min := s.Started.Sub(fails[i-1].Ended), base<<(i-1); gap < min {
			t.Errorf("attempt %d started %s after the failure before it, want at least %s", i+1, gap, min)
		}
	}

	// Fixed in Git: the problems go away.
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"bad": sleepCTX(marker, 1, "1000")}, nil), 2)
	converged(t, a, marker, 2, 1)
	waitUntil(t, "problems cleared", func() (bool, string) {
		l := store.List("/itg/n1")
		return len(l) == 0, fmt.Sprintf("%d entries", len(l))
	})
}

// TestLoopNewGenerationSupersedes publishes a new generation while the
// first one's steps are being applied: the step in flight finishes, the
// rest of the old run is not applied, and the new one is planned from what
// runs.
func TestLoopNewGenerationSupersedes(t *testing.T) {
	marker := newMarker(t)
	t.Cleanup(func() { killMarked(marker) })
	store := newStore(t, "n1")
	putHW(t, store, "n1", nil)
	first := map[string]schema.Ctx{}
	for i := range 20 {
		first[fmt.Sprintf("w%02d", i)] = sleepCTX(marker, 1, "1000")
	}
	second := map[string]schema.Ctx{"w00": sleepCTX(marker, 1, "1000"), "w19": sleepCTX(marker, 1, "1000")}

	a := &agent{name: "n1", store: store, stateDir: t.TempDir(), jdir: t.TempDir()}
	var err error
	if a.drv, err = process.New(process.Config{StateDir: a.stateDir, Logger: testLogger()}); err != nil {
		t.Fatal(err)
	}
	if a.journal, err = OpenJournal(a.jdir, WithJournalLogger(testLogger())); err != nil {
		t.Fatal(err)
	}
	var once atomic.Bool
	a.rec, err = New(Config{
		Node: "n1", Store: store, Drivers: map[string]drivers.Driver{process.Type: a.drv}, Journal: a.journal,
		Parallel: 1, Logger: testLogger(),
		AfterRecord: func(s Step) {
			// When the first step of generation 1 is done, generation 2
			// arrives; wait until the loop's watch has seen it, so what
			// follows does not depend on timing.
			if s.Generation == 1 && s.State == StepDone && once.CompareAndSwap(false, true) {
				publish(t, store, buildSnapshot(t, second, nil), 2)
				deadline := time.Now().Add(waitLimit)
				for a.rec.newestGen.Load() < 2 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond) // polling; the watch goroutine runs meanwhile
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan error, 1)
	go func() { a.done <- a.rec.Run(ctx) }()
	t.Cleanup(a.cleanup)

	publish(t, store, buildSnapshot(t, first, nil), 1)
	converged(t, a, marker, 2, 2)
	hist, err := a.journal.History(HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	gen1 := 0
	for _, s := range hist {
		if s.Generation == 1 && s.State == StepRunning {
			gen1++
		}
	}
	if gen1 != 1 {
		t.Errorf("%d steps of generation 1 ran after generation 2 arrived, want only the one in flight: %v", gen1, summary(hist))
	}
	if u := a.journal.Unfinished(); len(u) > 0 {
		t.Errorf("unfinished steps: %+v", u)
	}
}

// TestLoopMID runs a process MID on every node and a CTX that requires it.
func TestLoopMID(t *testing.T) {
	marker := newMarker(t)
	t.Cleanup(func() { killMarked(marker) })
	store := newStore(t, "n1")
	putHW(t, store, "n1", nil)
	a := startAgent(t, "n1", store, agentOpts{})
	mid := schema.Mid{Driver: "process", Nodes: schema.Nodes{All: true},
		Params: map[string]any{"command": "sleep", "args": []any{"1005"}, "env": map[string]any{"CTXOS_TEST_MARK": marker}}}
	web := sleepCTX(marker, 1, "1000")
	web.Requires = []string{"tick"}
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"web": web}, map[string]schema.Mid{"tick": mid}), 1)
	converged(t, a, marker, 1, 2)
	var insts map[string]InstanceStatus
	readValue(t, store, "/run/n1/instances", &insts)
	if got, want := insts["mid.tick.n1"], (InstanceStatus{Kind: "mid", Name: "tick", Driver: "process", State: drivers.Running}); got.Kind != want.Kind || got.Name != want.Name || got.Driver != want.Driver || got.State != want.State {
		t.Errorf("mid.tick.n1 = %+v, want %+v", got, want)
	}
	if got := insts["ctx.web.0"]; got.Kind != "ctx" || got.Name != "web" || got.Instance != "web.0" {
		t.Errorf("ctx.web.0 = %+v", got)
	}
	// The MID's step resource is mid/tick.
	h, err := a.journal.History(HistoryFilter{Resource: "mid/tick"})
	if err != nil || len(h) == 0 || h[len(h)-1].State != StepDone {
		t.Errorf("history of mid/tick = %v, %v", h, err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	store := newStore(t, "n1")
	j, err := OpenJournal(t.TempDir(), WithJournalLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no node", Config{Store: store, Journal: j}, "node name"},
		{"bad node", Config{Node: "N/1", Store: store, Journal: j}, "node name"},
		{"no store", Config{Node: "n1", Journal: j}, "no VFS store"},
		{"no journal", Config{Node: "n1", Store: store}, "no journal"},
		{"other store", Config{Node: "n2", Store: store, Journal: j}, `store belongs to node "n1"`},
		{"nil driver", Config{Node: "n1", Store: store, Journal: j, Drivers: map[string]drivers.Driver{"process": nil}}, `driver "process" is nil`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want ErrInvalidConfig saying %q", err, tt.want)
			}
		})
	}
	r, err := New(Config{Node: "n1", Store: store, Journal: j})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitUntil(t, "Run started", func() (bool, string) { return r.running.Load(), "" })
	if err := r.Run(ctx); !errors.Is(err, ErrAlreadyRunning) {
		t.Errorf("second Run = %v, want ErrAlreadyRunning", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

// TestLoopUnplacedReported: an instance no node can take is reported once,
// in /itg/<node>/placement, and the entry goes when it fits again.
func TestLoopUnplacedReported(t *testing.T) {
	marker := newMarker(t)
	t.Cleanup(func() { killMarked(marker) })
	store := newStore(t, "n1")
	putHW(t, store, "n1", nil)
	a := startAgent(t, "n1", store, agentOpts{})
	huge := sleepCTX(marker, 2, "1000")
	huge.Resources.CPU = 999000
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"huge": huge, "ok": sleepCTX(marker, 1, "1000")}, nil), 1)
	converged(t, a, marker, 1, 1)
	var pp PlacementProblem
	readValue(t, store, "/itg/n1/placement", &pp)
	want := []Unplaced{{"huge.0", "no node has 999000m CPU free"}, {"huge.1", "no node has 999000m CPU free"}}
	if pp.Generation != 1 || !slices.Equal(pp.Unplaced, want) {
		t.Errorf("/itg/n1/placement = %+v, want generation 1 with %v", pp, want)
	}
	if p := a.rec.Progress(); p.Unplaced != 2 {
		t.Errorf("progress unplaced = %d, want 2", p.Unplaced)
	}
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"ok": sleepCTX(marker, 1, "1000")}, nil), 2)
	converged(t, a, marker, 2, 1)
	waitUntil(t, "placement problem cleared", func() (bool, string) {
		_, ok := store.Get("/itg/n1/placement")
		return !ok, "still there"
	})
}
