package process_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/drivers/process"
)

func TestParseProcStat(t *testing.T) {
	t.Parallel()
	// Fields 3…22 of proc(5), then the rest of a real line.
	const tail = " S 10 11 12 0 -1 4194560 100 0 0 0 7 3 20 1 20 0 1 0 98765 2260992 130 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	tests := []struct {
		name       string
		line       string
		ppid, sid  int
		cpu, start uint64
		wantErr    string // in the error text; "" for none
	}{
		{"plain", "42 (sleep)" + tail, 10, 12, 7 + 3 + 20 + 1, 98765, ""},
		{"spaces and parens in the name", "42 (a b) (c))" + tail, 10, 12, 31, 98765, ""},
		{"no trailing newline", "42 (sleep)" + strings.TrimSuffix(tail, "\n"), 10, 12, 31, 98765, ""},
		{"no command field", "42 sleep S 1 2 3", 0, 0, 0, 0, "no command field"},
		{"truncated", "42 (sleep) S 10 11 12 0 -1 4194560 100 0 0 0 7 3", 0, 0, 0, 0, "15 fields, want at least 22"},
		{"not a number", "42 (sleep) S x" + tail[5:], 0, 0, 0, 0, `field 4: "x" is not a number`},
		{"negative cutime", strings.Replace("42 (sleep)"+tail, " 20 1 20", " -20 1 20", 1), 0, 0, 0, 0, `field 16: "-20" is not a number`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ppid, sid, cpu, start, err := process.ParseProcStat([]byte(tc.line))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ppid != tc.ppid || sid != tc.sid || cpu != tc.cpu || start != tc.start {
				t.Errorf("got ppid %d session %d cpu %d start %d, want %d %d %d %d", ppid, sid, cpu, start, tc.ppid, tc.sid, tc.cpu, tc.start)
			}
		})
	}
}

// TestCPUTimeCountsDescendants: the CPU a workload burns counts wherever in
// its process tree it burns it, and an idle instance beside it stays low.
func TestCPUTimeCountsDescendants(t *testing.T) {
	const busyCPU = 200 * time.Millisecond
	tests := []struct {
		name   string
		script string
	}{
		{"the shell itself", "while :; do :; done"},
		{"a child of the shell", "trap 'exit 0' TERM; yes > /dev/null & wait"},
		{"a grandchild", "trap 'exit 0' TERM; sh -c 'yes > /dev/null; :' & wait"},
		{"short-lived children the shell reaps", "while :; do sh -c 'i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done'; done"},
	}
	const idleID = "ctx.cpu.idle"
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const busyID = "ctx.cpu.busy"
			d := setup(t, process.Config{}, busyID, idleID)
			d.MeasureCPU([]string{busyID, idleID})
			idle := sleepSpec(idleID, 0)
			create(t, d, idle)
			create(t, d, shSpec(busyID, tc.script))
			var busy, still drivers.Instance
			eventually(t, "busy instance at "+busyCPU.String()+" of CPU", func() bool {
				prev := busy.CPUTime
				busy, _ = observeOne(t, d, busyID)
				still, _ = observeOne(t, d, idleID)
				if busy.CPUTime < prev {
					t.Fatalf("CPU time went back from %s to %s", prev, busy.CPUTime)
				}
				return busy.CPUTime >= busyCPU
			})
			if busy.State != drivers.Running {
				t.Errorf("busy instance is %s: %s", busy.State, busy.Message)
			}
			if still.CPUTime >= busyCPU/4 {
				t.Errorf("idle instance used %s, want under %s", still.CPUTime, busyCPU/4)
			}
		})
	}
}

// TestCPUTimeOnlyWhileLive: an instance that ended reports no CPU time,
// whatever it used while it ran.
func TestCPUTimeOnlyWhileLive(t *testing.T) {
	t.Parallel()
	const id = "ctx.cpu.ended"
	d := setup(t, process.Config{}, id)
	d.MeasureCPU([]string{id})
	s := shSpec(id, "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done")
	s.Restart.Policy = drivers.RestartNever
	create(t, d, s)
	inst := waitState(t, d, id, drivers.Exited)
	if inst.CPUTime != 0 {
		t.Errorf("exited instance reports CPU time %s, want 0", inst.CPUTime)
	}
}

// TestCPUTimeOnlyWhenAsked: Observe reads the CPU time of the instances
// MeasureCPU named, and of no other (reading it costs a pass over /proc).
func TestCPUTimeOnlyWhenAsked(t *testing.T) {
	const asked, other = "ctx.cpu.asked", "ctx.cpu.other"
	d := setup(t, process.Config{}, asked, other)
	d.MeasureCPU([]string{asked})
	create(t, d, shSpec(asked, "while :; do :; done"))
	create(t, d, shSpec(other, "while :; do :; done"))
	var in, out drivers.Instance
	eventually(t, "the measured instance at 100ms of CPU", func() bool {
		in, _ = observeOne(t, d, asked)
		out, _ = observeOne(t, d, other)
		return in.CPUTime >= 100*time.Millisecond
	})
	if out.State != drivers.Running || out.CPUTime != 0 {
		t.Errorf("instance not asked about: %s with CPU time %s, want running with 0", out.State, out.CPUTime)
	}
}
