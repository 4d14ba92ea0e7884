package process

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctxos/ctxos/drivers"
)

// waitChild reaps a process this driver started and hands its exit to the
// supervisor.
func (d *Driver) waitChild(u *unit, gen uint64, wait func() (*os.ProcessState, error), exited chan struct{}) {
	// Not in d.wg: wait returns only when the child exits, and Close must
	// not wait for workloads. After Close, exited ignores the exit.
	ps, err := wait()
	close(exited)
	code, msg := exitStatus(ps, err)
	d.exited(u, gen, code, msg)
}

// watchAdopted waits on the pidfd of a process re-adopted after an agent
// restart. It is not our child, so its exit code cannot be known.
func (d *Driver) watchAdopted(u *unit, gen uint64, pidfd int, exited chan struct{}) {
	defer d.wg.Done()
	defer unix.Close(pidfd)
	ok, err := watchExit(pidfd, d.wakeR)
	if err != nil {
		d.log.Error("watch adopted process", "id", u.id, "err", err)
		return
	}
	if !ok {
		return // driver closing
	}
	close(exited)
	d.exited(u, gen, -1, "exit code unknown: adopted from an earlier agent")
}

func exitStatus(ps *os.ProcessState, err error) (int, string) {
	if ps == nil {
		return -1, fmt.Sprintf("wait: %v", err)
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), "killed by signal " + unix.SignalName(ws.Signal())
	}
	return ps.ExitCode(), ""
}

// exited applies the restart policy to an exit of generation gen. A stop or
// a newer start bumps the generation first, so their exits end here.
func (d *Driver) exited(u *unit, gen uint64, code int, detail string) {
	if !d.enter() {
		return
	}
	defer d.leave()
	now := d.now()
	u.mu.Lock()
	if u.gen != gen || u.removed {
		u.mu.Unlock()
		return
	}
	rec := u.rec
	ran := now.Sub(rec.StartedAt)
	spec := rec.Spec
	policy := spec.RestartMode()
	restart := policy == drivers.RestartAlways || (policy == drivers.RestartOnFailure && code != 0)

	how := fmt.Sprintf("exited with code %d after %s", code, ran.Round(time.Millisecond))
	if ran < time.Second {
		how = fmt.Sprintf("exited at once with code %d", code)
	}
	if detail != "" {
		how += " (" + detail + ")"
	}
	rec.ExitCode, rec.Pid, rec.StartTicks = code, 0, 0
	var delay time.Duration
	if restart {
		if ran >= d.cfg.BackoffReset {
			rec.QuickExits = 0
		}
		rec.QuickExits++
		delay = spec.Backoff(rec.QuickExits)
		rec.State = drivers.Backoff
		rec.NextStart = now.Add(delay)
		rec.Message = fmt.Sprintf("%s; restart %d in %s", how, rec.Restarts+1, delay)
	} else {
		rec.State = drivers.Failed
		if code == 0 {
			rec.State = drivers.Exited
		}
		rec.Message = fmt.Sprintf("%s; restart policy %s", how, policy)
	}
	u.rec = rec
	u.mu.Unlock()

	if err := d.writeRecord(rec); err != nil {
		d.log.Error("record exit", "id", u.id, "err", err)
	}
	d.log.Info("exited", "id", u.id, "code", code, "state", rec.State, "message", rec.Message)
	d.emit(drivers.Event{ID: u.id, State: rec.State, ExitCode: code, Message: rec.Message, Time: now})
	if restart {
		d.wg.Add(1)
		go d.restartAfter(u, gen, delay)
	}
}

// restartAfter starts u again after delay unless a change or Close came
// first. A start that fails (the command was removed, say) backs off again.
func (d *Driver) restartAfter(u *unit, gen uint64, delay time.Duration) {
	defer d.wg.Done()
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-d.done:
		return
	}
	if !d.enter() {
		return
	}
	defer d.leave()
	u.op.Lock()
	defer u.op.Unlock()
	u.mu.Lock()
	stale := u.gen != gen || u.removed || u.rec.State != drivers.Backoff
	rec := u.rec
	u.mu.Unlock()
	if stale {
		return
	}
	err := d.start(u, rec.Spec, rec.Restarts+1, rec.QuickExits)
	if err == nil {
		d.log.Info("restarted", "id", u.id, "restarts", rec.Restarts+1, "pid", u.pid())
		d.emit(drivers.Event{ID: u.id, State: drivers.Running, Message: fmt.Sprintf("restart %d", rec.Restarts+1), Time: d.now()})
		return
	}
	rec.QuickExits++
	next := rec.Spec.Backoff(rec.QuickExits)
	rec.State, rec.Pid = drivers.Backoff, 0
	rec.NextStart = d.now().Add(next)
	rec.Message = fmt.Sprintf("restart failed: %v; retry in %s", err, next)
	u.mu.Lock()
	u.rec = rec
	u.mu.Unlock()
	if werr := d.writeRecord(rec); werr != nil {
		d.log.Error("record failed restart", "id", u.id, "err", werr)
	}
	d.log.Warn("restart failed", "id", u.id, "err", err)
	d.emit(drivers.Event{ID: u.id, State: drivers.Backoff, ExitCode: rec.ExitCode, Message: rec.Message, Time: d.now()})
	d.wg.Add(1)
	go d.restartAfter(u, gen, next)
}
