package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/drivers/process"
	"github.com/ctxos/ctxos/schema"
)

// Environment of the crash child: the test binary re-executed to run one
// agent over a data dir, killing itself with SIGKILL after the Nth journal
// record when CTXOS_CRASH_AFTER is set.
const (
	envCrashDir    = "CTXOS_CRASH_DIR"
	envCrashAfter  = "CTXOS_CRASH_AFTER"
	envCrashMarker = "CTXOS_CRASH_MARKER"
)

// crashPhases are the snapshots the child converges on, in order: the
// second scales a down, changes c's args (a replace) and adds d, the third
// removes b, so the crash points cover create, waiting, delete and replace
// steps and runs that supersede each other.
func crashPhases(marker string) []map[string]schema.Ctx {
	b := sleepCTX(marker, 2, "1001")
	b.Requires = []string{"a"}
	return []map[string]schema.Ctx{
		{"a": sleepCTX(marker, 2, "1000"), "b": b, "c": sleepCTX(marker, 2, "1002")},
		{"a": sleepCTX(marker, 1, "1000"), "b": b, "c": sleepCTX(marker, 2, "1003"), "d": sleepCTX(marker, 1, "1004")},
		{"a": sleepCTX(marker, 1, "1000"), "c": sleepCTX(marker, 2, "1003"), "d": sleepCTX(marker, 1, "1004")},
	}
}

// TestCrashChild is the child's body; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(envCrashDir)
	if dir == "" {
		t.Skip("runs only as the child of TestCrashRecovery")
	}
	if err := crashChild(t, dir, os.Getenv(envCrashMarker), os.Getenv(envCrashAfter)); err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

func crashChild(t *testing.T, dir, marker, after string) error {
	crashAt, _ := strconv.Atoi(after)
	store, err := vfs.Open(context.Background(), vfs.Options{Node: "n1", Logger: testLogger()})
	if err != nil {
		return err
	}
	defer store.Close()
	putHW(t, store, "n1", nil)
	drv, err := process.New(process.Config{StateDir: filepath.Join(dir, "process"), Logger: testLogger()})
	if err != nil {
		return err
	}
	j, err := OpenJournal(filepath.Join(dir, "journal"), WithJournalLogger(testLogger()))
	if err != nil {
		return err
	}
	var records atomic.Int64
	rec, err := New(Config{
		Node: "n1", Store: store, Drivers: map[string]drivers.Driver{process.Type: drv}, Journal: j,
		Resync: time.Second, RetryBase: 50 * time.Millisecond, Logger: testLogger(),
		AfterRecord: func(Step) {
			if records.Add(1) == int64(crashAt) {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- rec.Run(ctx) }()

	phaseFile := filepath.Join(dir, "phase")
	phase := 0
	if b, err := os.ReadFile(phaseFile); err == nil {
		phase, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	phases := crashPhases(marker)
	for ; phase < len(phases); phase++ {
		gen := uint64(phase + 1)
		publish(t, store, buildSnapshot(t, phases[phase], nil), gen)
		deadline := time.Now().Add(waitLimit)
		for {
			p := rec.Progress()
			if p.Converged && p.Generation == gen {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("phase %d did not converge: %+v", phase, p)
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
		if err := os.WriteFile(phaseFile+".tmp", []byte(strconv.Itoa(phase+1)), 0o600); err != nil {
			return err
		}
		if err := os.Rename(phaseFile+".tmp", phaseFile); err != nil {
			return err
		}
	}
	cancel()
	if err := <-done; err != nil {
		return err
	}
	drv.Close()
	return j.Close()
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary 40 times")
	}
	marker := newMarker(t)
	t.Cleanup(func() { killMarked(marker) })
	want := []string{"ctx.a.0", "ctx.c.0", "ctx.c.1", "ctx.d.0"}
	crashes := 0
	for n := 1; n <= 40; n++ {
		dir := t.TempDir()
		crashed := runChild(t, dir, marker, n)
		if crashed {
			crashes++
			if ok := runChildClean(t, dir, marker); !ok {
				t.Fatalf("crash after record %d: restarted agent did not converge", n)
			}
		}
		checkCrashRun(t, n, crashed, dir, marker, want)
		cleanupDir(t, dir)
		if countMarked(marker) != 0 {
			t.Fatalf("crash after record %d: processes left after cleanup: %v", n, markedProcesses(marker))
		}
		if !crashed {
			break // every record boundary of the scenario is covered
		}
	}
	if crashes < 20 {
		t.Errorf("crashed at %d step boundaries, want at least 20", crashes)
	}
	t.Logf("killed at %d record boundaries", crashes)
}

// runChild runs the child with a crash after record n and reports whether
// it was killed (false: it converged without reaching record n).
func runChild(t *testing.T, dir, marker string, n int) bool {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashDir+"="+dir, envCrashMarker+"="+marker, envCrashAfter+"="+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
		t.Fatalf("child (crash after %d): %v\n%s", n, err, out)
	}
	if err != nil {
		t.Fatalf("child (crash after %d): %v\n%s", n, err, out)
	}
	return false
}

func runChildClean(t *testing.T, dir, marker string) bool {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashDir+"="+dir, envCrashMarker+"="+marker)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("restarted child: %v\n%s", err, out)
		return false
	}
	return true
}

// checkCrashRun asserts what a crash must never cost: the final state runs
// each desired instance exactly once, every step in the journal ended,
// each running transition has its final one, and generation 2's changes
// are all recorded done.
func checkCrashRun(t *testing.T, n int, crashed bool, dir, marker string, want []string) {
	t.Helper()
	procs := markedProcesses(marker)
	if got := sortedNames(procs); !slices.Equal(got, want) {
		t.Fatalf("crash after record %d: instances %v, want %v", n, got, want)
	}
	for id, pids := range procs {
		if len(pids) != 1 {
			t.Fatalf("crash after record %d: %s runs %d times (pids %v)", n, id, len(pids), pids)
		}
	}
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", procs["ctx.c.0"][0])); err != nil || !strings.Contains(string(cmdline), "1003") {
		t.Errorf("crash after record %d: ctx.c.0 runs %q, want the replaced args 1003", n, cmdline)
	}

	j, err := OpenJournal(filepath.Join(dir, "journal"), WithJournalLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if u := j.Unfinished(); len(u) > 0 {
		t.Errorf("crash after record %d: unfinished steps %+v", n, u)
	}
	hist, err := j.History(HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if crashed && len(hist) < n {
		t.Errorf("crash after record %d: history has %d transitions: %v", n, len(hist), summary(hist))
	}
	open := map[string]Step{}
	for _, s := range hist {
		if s.State.Final() {
			delete(open, s.ID)
		} else {
			open[s.ID] = s
		}
	}
	for id, s := range open {
		t.Errorf("crash after record %d: step %s (%s %s) last %s, never ended", n, id, s.Action, s.Resource, s.State)
	}
	// Each change of generation 2 was carried out by a step that ended
	// done. A replace cut short by the crash may be finished by a start of
	// the instance it left behind, so the resource counts, not the action.
	done := map[string]bool{}
	for _, s := range hist {
		if s.Generation == 2 && s.State == StepDone {
			done[s.Resource] = true
		}
	}
	for _, w := range []string{"ctx/a.1", "ctx/c.0", "ctx/c.1", "ctx/d.0"} {
		if !done[w] {
			t.Errorf("crash after record %d: no done step for %s in generation 2; history %v", n, w, summary(hist))
		}
	}
	for _, s := range hist {
		if s.Generation == 3 && s.State == StepDone && s.Action == string(drivers.Delete) {
			done["3 "+s.Resource] = true
		}
	}
	if !done["3 ctx/b.0"] || !done["3 ctx/b.1"] {
		t.Errorf("crash after record %d: b not deleted in generation 3; history %v", n, summary(hist))
	}
}

func summary(hist []Step) []string {
	var out []string
	for _, s := range hist {
		out = append(out, fmt.Sprintf("g%d %s %s %s#%d", s.Generation, s.Action, s.Resource, s.State, s.Attempt))
	}
	return out
}

// cleanupDir stops every process the data dir's driver knows.
func cleanupDir(t *testing.T, dir string) {
	t.Helper()
	d, err := process.New(process.Config{StateDir: filepath.Join(dir, "process"), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := drivers.Converge(context.Background(), d, nil); err != nil {
		t.Fatal(err)
	}
}
