package process_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/drivers/process"
)

const waitFor = 20 * time.Second

// setup returns a driver over a fresh state dir. Every process started for
// ids is killed at cleanup, whatever state the test left the driver in.
func setup(t *testing.T, cfg process.Config, ids ...string) *process.Driver {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	d := newDriver(t, cfg)
	t.Cleanup(func() {
		d.Close()
		// A fresh driver deletes what is left (processes, containers and
		// their cgroups); killing by id backs it up.
		if last, err := process.New(process.Config{StateDir: cfg.StateDir, Logger: discard()}); err == nil {
			if _, err := drivers.Converge(context.Background(), last, nil); err != nil {
				t.Errorf("cleanup: %v", err)
			}
			last.Close()
		}
		for _, id := range ids {
			process.KillInstance(id)
		}
	})
	return d
}

func shSpec(id, script string) drivers.Spec {
	return drivers.Spec{ID: id, Kind: drivers.KindCTX, Name: "test", Command: "sh", Args: []string{"-c", script}}
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

func create(t *testing.T, d *process.Driver, s drivers.Spec) drivers.Report {
	t.Helper()
	r, err := d.Apply(ctxT(t), drivers.Change{ID: s.ID, Action: drivers.Create, Spec: &s})
	if err != nil {
		t.Fatalf("create %s: %v", s.ID, err)
	}
	return r
}

func observeOne(t *testing.T, d *process.Driver, id string) (drivers.Instance, bool) {
	t.Helper()
	obs, err := d.Observe(ctxT(t))
	if err != nil {
		t.Fatalf("Observe: %v", err)
	}
	for _, o := range obs {
		if o.ID == id {
			return o, true
		}
	}
	return drivers.Instance{}, false
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitFor, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

func waitState(t *testing.T, d *process.Driver, id string, want drivers.State) drivers.Instance {
	t.Helper()
	var last drivers.Instance
	eventually(t, id+" in state "+string(want), func() bool {
		last, _ = observeOne(t, d, id)
		return last.State == want
	})
	return last
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	missingDir := filepath.Join(t.TempDir(), "gone")
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := setup(t, process.Config{})
	tests := []struct {
		name    string
		spec    drivers.Spec
		wantErr error
		want    []string // in the error text
	}{
		{"command not found", drivers.Spec{ID: "ctx.bad.cmd", Kind: "ctx", Name: "bad", Command: "ctxos-no-such-command"},
			process.ErrCommandNotFound, []string{"ctxos-no-such-command", "ctx.bad.cmd"}},
		{"not executable", drivers.Spec{ID: "ctx.bad.exec", Kind: "ctx", Name: "bad", Command: plain},
			process.ErrCommandNotFound, []string{plain, "ctx.bad.exec"}},
		{"dir missing", drivers.Spec{ID: "ctx.bad.dir", Kind: "ctx", Name: "bad", Command: "sleep", Args: []string{"1"}, Dir: missingDir},
			process.ErrDirNotFound, []string{missingDir, "ctx.bad.dir"}},
		{"unknown user", drivers.Spec{ID: "ctx.bad.user", Kind: "ctx", Name: "bad", Command: "sleep", User: "ctxos-no-such-user"},
			process.ErrUser, []string{"ctxos-no-such-user", "ctx.bad.user"}},
		{"empty command", drivers.Spec{ID: "ctx.bad.empty", Kind: "ctx", Name: "bad"},
			drivers.ErrInvalidSpec, []string{"command", "ctx.bad.empty"}},
		{"image", drivers.Spec{ID: "ctx.bad.image", Kind: "ctx", Name: "bad", Command: "sleep", Image: "redis:7"},
			drivers.ErrUnsupported, []string{"image", "ctx.bad.image"}},
		{"mounts", drivers.Spec{ID: "ctx.bad.mount", Kind: "ctx", Name: "bad", Command: "sleep", Mounts: []drivers.Mount{{Source: "/tmp", Target: "/data"}}},
			drivers.ErrUnsupported, []string{"mounts", "ctx.bad.mount"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.spec
			r, err := d.Apply(ctxT(t), drivers.Change{ID: s.ID, Action: drivers.Create, Spec: &s})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply = %v, want %v", err, tt.wantErr)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if r.Result != drivers.ResultFailed || r.Err != err.Error() {
				t.Errorf("report = %+v, want failed with the error", r)
			}
			if _, ok := observeOne(t, d, s.ID); ok {
				t.Errorf("a failed create left instance %s behind", s.ID)
			}
		})
	}
}

func TestLockedStateDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	setup(t, process.Config{StateDir: dir})
	if _, err := process.New(process.Config{StateDir: dir}); !errors.Is(err, process.ErrLocked) {
		t.Fatalf("second New on %s = %v, want ErrLocked", dir, err)
	}
	if _, err := process.New(process.Config{}); err == nil {
		t.Fatal("New without StateDir succeeded")
	}
}

func TestEnvDirAndSession(t *testing.T) {
	t.Parallel()
	d := setup(t, process.Config{}, "ctx.env.0")
	dir := t.TempDir()
	s := shSpec("ctx.env.0", `echo "foo=$FOO inst=$CTXOS_INSTANCE pwd=$(pwd)"; exec sleep 1000`)
	s.Env = map[string]string{"FOO": "bar baz"}
	s.Dir = dir
	create(t, d, s)
	stdout, _ := d.LogPaths(s.ID)
	want := "foo=bar baz inst=ctx.env.0 pwd=" + dir + "\n"
	eventually(t, "stdout line", func() bool { return readLog(t, stdout) == want })

	inst := waitState(t, d, s.ID, drivers.Running)
	sid, err := process.Session(inst.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if sid != inst.Pid {
		t.Errorf("session of pid %d = %d, want its own session", inst.Pid, sid)
	}
	if inst.Spec == nil || inst.Spec.Hash() != inst.SpecHash || inst.SpecHash != s.Hash() {
		t.Errorf("observed spec/hash = %v/%s, want %s", inst.Spec, inst.SpecHash, s.Hash())
	}
}

func TestUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("switching user needs root")
	}
	d := setup(t, process.Config{}, "ctx.user.0")
	s := shSpec("ctx.user.0", `echo "uid=$(id -u) home=$HOME"; exec sleep 1000`)
	s.User = "nobody"
	create(t, d, s)
	stdout, _ := d.LogPaths(s.ID)
	eventually(t, "uid line", func() bool { return strings.HasPrefix(readLog(t, stdout), "uid=65534 ") })
}

func TestCredentialNotRoot(t *testing.T) {
	t.Parallel()
	tests := []struct {
		user string
		euid int
		ok   bool
	}{
		{"root", 1000, false},  // another user without root
		{"0", 0, true},         // numeric uid as root
		{"nobody", 0, true},    // named user as root
		{"root", 0, true},      // same user
		{"65534", 65534, true}, // own uid, no switch
		{"ctxos-nobody-at-all", 0, false},
	}
	for _, tt := range tests {
		_, _, err := process.Credential(tt.user, tt.euid)
		if (err == nil) != tt.ok {
			t.Errorf("credential(%q, euid %d) = %v, want ok=%v", tt.user, tt.euid, err, tt.ok)
		}
		if err != nil && (!errors.Is(err, process.ErrUser) || !strings.Contains(err.Error(), tt.user)) {
			t.Errorf("credential(%q, euid %d) = %v, want ErrUser naming the user", tt.user, tt.euid, err)
		}
	}
}

func TestExitAtOnceBacksOff(t *testing.T) {
	t.Parallel()
	d := setup(t, process.Config{}, "ctx.crash.0")
	s := shSpec("ctx.crash.0", `echo boom >&2; exit 3`)
	s.Restart = drivers.RestartPolicy{BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
	create(t, d, s)

	// Delays double from the base per quick exit, up to the max.
	delayRE := regexp.MustCompile(`restart (\d+) in (\S+)$`)
	var delays []time.Duration
	deadline := time.After(waitFor)
	for len(delays) < 6 {
		select {
		case ev := <-d.Events():
			if ev.ID != s.ID || ev.State != drivers.Backoff {
				continue
			}
			if ev.ExitCode != 3 || !strings.Contains(ev.Message, "exited at once with code 3") {
				t.Errorf("backoff event = %+v, want exit code 3 and the reason", ev)
			}
			m := delayRE.FindStringSubmatch(ev.Message)
			if m == nil {
				t.Fatalf("backoff message %q has no delay", ev.Message)
			}
			dl, err := time.ParseDuration(m[2])
			if err != nil {
				t.Fatal(err)
			}
			delays = append(delays, dl)
		case <-deadline:
			t.Fatalf("only %d backoff events: %v", len(delays), delays)
		}
	}
	want := []time.Duration{20, 40, 80, 160, 200, 200}
	for i := range want {
		if delays[i] != want[i]*time.Millisecond {
			t.Errorf("backoff delays = %v, want %v ms", delays, want)
			break
		}
	}
	var inst drivers.Instance
	eventually(t, "backoff visible in Observe", func() bool {
		inst, _ = observeOne(t, d, s.ID)
		return inst.State == drivers.Backoff && inst.Restarts >= 5
	})
	if inst.ExitCode != 3 || !strings.Contains(inst.Message, "exited at once with code 3") {
		t.Errorf("observed %+v, want exit code 3 and the reason in Message", inst)
	}
	_, stderr := d.LogPaths(s.ID)
	if got := strings.Count(readLog(t, stderr), "boom\n"); got < 5 {
		t.Errorf("stderr has %d boom lines, want one per start (≥5)", got)
	}
	// The supervisor owns the restarts: the plan leaves a backoff alone.
	changes, err := d.Plan(ctxT(t), []drivers.Spec{s}, []drivers.Instance{inst})
	if err != nil || len(changes) != 0 {
		t.Errorf("plan during backoff = %v, %v; want no changes", changes, err)
	}
	// Delete stops the restarts.
	if _, err := d.Apply(ctxT(t), drivers.Change{ID: s.ID, Action: drivers.Delete}); err != nil {
		t.Fatal(err)
	}
	if _, ok := observeOne(t, d, s.ID); ok {
		t.Error("instance still observed after delete")
	}
	if n := process.CountRunning(s.ID); n != 0 {
		t.Errorf("%d processes run after delete", n)
	}
}

func TestRestartPolicies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		policy    string
		script    string
		wantState drivers.State
		wantCode  int
	}{
		{drivers.RestartNever, "exit 2", drivers.Failed, 2},
		{drivers.RestartNever, "exit 0", drivers.Exited, 0},
		{drivers.RestartOnFailure, "exit 0", drivers.Exited, 0},
		{drivers.RestartNever, "kill -KILL $$", drivers.Failed, 128 + 9},
	}
	for i, tt := range tests {
		id := "ctx.policy." + string(rune('a'+i))
		d := setup(t, process.Config{}, id)
		s := shSpec(id, tt.script)
		s.Restart.Policy = tt.policy
		create(t, d, s)
		inst := waitState(t, d, id, tt.wantState)
		if inst.ExitCode != tt.wantCode || inst.Restarts != 0 || !strings.Contains(inst.Message, "restart policy "+tt.policy) {
			t.Errorf("%s with %s: %+v, want code %d, no restart, the policy in Message", tt.script, tt.policy, inst, tt.wantCode)
		}
		changes, err := d.Plan(ctxT(t), []drivers.Spec{s}, []drivers.Instance{inst})
		if err != nil || len(changes) != 0 {
			t.Errorf("%s with %s: plan = %v, %v; want nothing", tt.script, tt.policy, changes, err)
		}
	}
}

func TestStopIgnoringTERMIsKilledAfterGrace(t *testing.T) {
	t.Parallel()
	d := setup(t, process.Config{}, "ctx.stubborn.0")
	// The trap has a handler so the shell survives TERM and says so; the
	// sleeps it runs die of TERM (same group) and the loop goes on.
	s := shSpec("ctx.stubborn.0", `trap 'echo got-term' TERM; echo ready; while :; do sleep 0.05; done`)
	s.Stop = drivers.StopPolicy{Grace: 300 * time.Millisecond}
	create(t, d, s)
	stdout, _ := d.LogPaths(s.ID)
	eventually(t, "trap installed", func() bool { return strings.Contains(readLog(t, stdout), "ready") })
	inst := waitState(t, d, s.ID, drivers.Running)

	r, err := d.Apply(ctxT(t), drivers.Change{ID: s.ID, Action: drivers.Delete, Observed: &inst})
	if err != nil || r.Result != drivers.ResultChanged {
		t.Fatalf("delete = %+v, %v", r, err)
	}
	if !strings.Contains(readLog(t, stdout), "got-term") {
		t.Errorf("stdout %q: the process never saw TERM", readLog(t, stdout))
	}
	if err := syscall.Kill(inst.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		// The test process is the parent, and the driver reaped it, so
		// the pid is gone rather than a zombie.
		t.Errorf("kill -0 %d after delete = %v, want ESRCH", inst.Pid, err)
	}
	if n := process.CountRunning(s.ID); n != 0 {
		t.Errorf("%d processes run after delete", n)
	}
}

func TestStopSignal(t *testing.T) {
	t.Parallel()
	d := setup(t, process.Config{}, "ctx.sigint.0")
	s := shSpec("ctx.sigint.0", `trap 'echo got-int; exit 0' INT; echo ready; while :; do sleep 0.05; done`)
	s.Stop = drivers.StopPolicy{Signal: "SIGINT", Grace: 10 * time.Second}
	create(t, d, s)
	stdout, _ := d.LogPaths(s.ID)
	eventually(t, "trap installed", func() bool { return strings.Contains(readLog(t, stdout), "ready") })
	if _, err := d.Apply(ctxT(t), drivers.Change{ID: s.ID, Action: drivers.Delete}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(readLog(t, stdout), "got-int") {
		t.Errorf("stdout %q: the process did not get SIGINT", readLog(t, stdout))
	}
}

func TestLogRotation(t *testing.T) {
	t.Parallel()
	d := setup(t, process.Config{LogMaxBytes: 2000, LogKeep: 2, LogCheckInterval: 5 * time.Millisecond}, "ctx.logs.0")
	line := strings.Repeat("x", 99)
	s := shSpec("ctx.logs.0", `i=0; while :; do i=$((i+1)); echo "`+line+`"; sleep 0.002; done`)
	create(t, d, s)
	stdout, _ := d.LogPaths(s.ID)
	eventually(t, "two rotated files", func() bool {
		_, e1 := os.Stat(stdout + ".1")
		_, e2 := os.Stat(stdout + ".2")
		return e1 == nil && e2 == nil
	})
	// Rotation keeps going without a third file.
	eventually(t, "a rotation after .2 exists", func() bool {
		fi, err := os.Stat(stdout + ".2")
		return err == nil && time.Since(fi.ModTime()) > 0 && readLog(t, stdout+".1") != ""
	})
	if _, err := os.Stat(stdout + ".3"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.3 exists with LogKeep 2", stdout)
	}
	// The child goes on writing into the truncated file from its start (it
	// appends), not at its old offset behind a hole of zero bytes.
	eventually(t, "writes after truncate", func() bool {
		b := readLog(t, stdout)
		return len(b) >= 100 && len(b) < 20000
	})
	for _, p := range []string{stdout, stdout + ".1", stdout + ".2"} {
		b := readLog(t, p)
		if strings.ContainsRune(b, 0) {
			t.Errorf("%s holds NUL bytes: a write landed past the end", p)
		}
		for _, l := range strings.Split(strings.TrimSuffix(b, "\n"), "\n") {
			if l != "" && l != line {
				t.Errorf("%s: unexpected line %q", p, l)
				break
			}
		}
	}
}

func TestAdoptionAfterRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const id = "ctx.adopt.0"
	d1 := setup(t, process.Config{StateDir: dir}, id)
	s := sleepSpec(id, 0)
	s.Restart.BackoffBase = 10 * time.Millisecond
	create(t, d1, s)
	before := waitState(t, d1, id, drivers.Running)
	d1.Close()

	// The record holds the pid and the kernel's start time of the process.
	var rec struct {
		Pid        int    `json:"pid"`
		StartTicks uint64 `json:"start_ticks"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "instances", id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	ticks, err := process.ReadProcStartTicks(before.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Pid != before.Pid || rec.StartTicks != ticks {
		t.Errorf("record pid, start = %d, %d; want %d, %d", rec.Pid, rec.StartTicks, before.Pid, ticks)
	}

	d2 := setup(t, process.Config{StateDir: dir}, id)
	after := waitState(t, d2, id, drivers.Running)
	if after.Pid != before.Pid || after.Restarts != 0 || !after.StartedAt.Equal(before.StartedAt) {
		t.Errorf("adopted %+v, want the same process as %+v", after, before)
	}

	// The adopted process is watched through its pidfd: an exit is seen
	// and the restart policy starts it again.
	if err := syscall.Kill(before.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var restarted drivers.Instance
	eventually(t, "restart of the adopted process", func() bool {
		restarted, _ = observeOne(t, d2, id)
		return restarted.State == drivers.Running && restarted.Pid != before.Pid
	})
	if restarted.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", restarted.Restarts)
	}
	if n := process.CountRunning(id); n != 1 {
		t.Errorf("%d processes run for %s, want 1", n, id)
	}
}

func TestExitedWhileAgentDownIsStartedByPlan(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const id = "ctx.down.0"
	d1 := setup(t, process.Config{StateDir: dir}, id)
	s := sleepSpec(id, 0)
	create(t, d1, s)
	inst := waitState(t, d1, id, drivers.Running)
	d1.Close()
	if err := syscall.Kill(inst.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "process gone", func() bool { return process.CountRunning(id) == 0 })

	d2 := setup(t, process.Config{StateDir: dir}, id)
	got, _ := observeOne(t, d2, id)
	if got.State != drivers.Failed || got.Pid != 0 || !strings.Contains(got.Message, "while no agent supervised it") {
		t.Fatalf("observed %+v, want failed with the reason", got)
	}
	changes, err := d2.Plan(ctxT(t), []drivers.Spec{s}, []drivers.Instance{got})
	if err != nil || len(changes) != 1 || changes[0].Action != drivers.Start {
		t.Fatalf("plan = %v, %v; want one start", changes, err)
	}
	r, err := d2.Apply(ctxT(t), changes[0])
	if err != nil || !equalChanges(r, drivers.Preview(changes[0])) {
		t.Fatalf("start = %+v, %v; want the preview's changes", r, err)
	}
	now := waitState(t, d2, id, drivers.Running)
	if now.Restarts != 1 || process.CountRunning(id) != 1 {
		t.Errorf("after start: %+v, %d running; want restarts 1, one running", now, process.CountRunning(id))
	}
}

func equalChanges(a, b drivers.Report) bool {
	ja, _ := json.Marshal(a.Changes)
	jb, _ := json.Marshal(b.Changes)
	return string(ja) == string(jb)
}

func TestReusedPidIsNotAdopted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const id = "ctx.reuse.0"
	d1 := setup(t, process.Config{StateDir: dir}, id)
	s := sleepSpec(id, 0)
	create(t, d1, s)
	waitState(t, d1, id, drivers.Running)
	d1.Close()
	process.KillInstance(id)
	eventually(t, "process gone", func() bool { return process.CountRunning(id) == 0 })

	// An unrelated process; the record is rewritten to claim its pid with
	// another start time, as if the pid had been reused.
	other := exec.Command("sleep", "1000")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	ticks, err := process.ReadProcStartTicks(other.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "instances", id+".json")
	var rec map[string]any
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	rec["pid"], rec["start_ticks"], rec["state"] = other.Process.Pid, ticks-1, "running"
	if b, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}

	d2 := setup(t, process.Config{StateDir: dir}, id)
	got, _ := observeOne(t, d2, id)
	if got.State != drivers.Failed || got.Pid == other.Process.Pid {
		t.Fatalf("observed %+v: the reused pid %d was adopted", got, other.Process.Pid)
	}
	if _, err := d2.Apply(ctxT(t), drivers.Change{ID: id, Action: drivers.Delete, Observed: &got}); err != nil {
		t.Fatal(err)
	}
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the unrelated process was signalled: %v", err)
	}
}

func TestCorruptRecord(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := setup(t, process.Config{StateDir: dir})
	path := filepath.Join(dir, "instances", "ctx.corrupt.0.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o640); err != nil {
		t.Fatal(err)
	}
	got, ok := observeOne(t, d, "ctx.corrupt.0")
	if !ok || got.State != drivers.Failed || !strings.Contains(got.Message, path) || !strings.Contains(got.Message, "corrupt") {
		t.Fatalf("observed %+v, want failed naming %s", got, path)
	}
	changes, err := d.Plan(ctxT(t), nil, []drivers.Instance{got})
	if err != nil || len(changes) != 1 || changes[0].Action != drivers.Delete {
		t.Fatalf("plan = %v, %v; want a delete", changes, err)
	}
	if _, err := d.Apply(ctxT(t), changes[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("corrupt record still at %s", path)
	}
}
