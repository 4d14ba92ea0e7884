package process

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// stop ends u's process, if one runs: the spec's stop signal to its process
// group, SIGKILL to the group after the grace period. Bumping the generation
// first keeps the supervisor from restarting what we stop. The caller holds
// u.op.
func (d *Driver) stop(ctx context.Context, u *unit) error {
	u.mu.Lock()
	u.gen++
	pid, exited, spec := u.rec.Pid, u.exited, u.rec.Spec
	u.mu.Unlock()
	if pid <= 0 || exited == nil {
		return nil
	}
	select {
	case <-exited:
		// The leader is gone; members it left in its group go too.
		killGroup(pid, unix.SIGKILL)
		return nil
	default:
	}
	// The process leads its own session and group (Setsid), so -pid reaches
	// everything it started that did not leave the group.
	sig := spec.StopSignal()
	signalLive(pid, sig)
	grace := time.NewTimer(spec.StopGrace())
	defer grace.Stop()
	select {
	case <-exited:
		killGroup(pid, unix.SIGKILL)
		return nil
	case <-grace.C:
		d.log.Warn("stop grace period over, killing", "id", u.id, "pid", pid, "signal", unix.SignalName(sig), "grace", spec.StopGrace())
	case <-ctx.Done():
		return fmt.Errorf("stop %s (pid %d): %w", u.id, pid, ctx.Err())
	}
	signalLive(pid, unix.SIGKILL)
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop %s (pid %d) after SIGKILL: %w", u.id, pid, ctx.Err())
	}
}

// killGroup signals process group pgid; a group already gone is fine.
func killGroup(pgid int, sig unix.Signal) {
	unix.Kill(-pgid, sig)
}

// signalLive signals a process not yet seen to exit and its group. The
// process is signalled on its own too because an isolated one is the init
// of its pid namespace and need not lead a group; once it has exited its
// pid may be reused, so only killGroup is safe then.
func signalLive(pid int, sig unix.Signal) {
	unix.Kill(-pid, sig)
	unix.Kill(pid, sig)
}
