package containerd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/typeurl/v2"

	"github.com/ctxos/ctxos/drivers"
)

const (
	topicExit = "/tasks/exit"
	topicOOM  = "/tasks/oom"
	topicPing = "/ctxos/subscribed" // the driver's own event, see watchEvents
)

// watchEvents follows the exit and OOM events of the namespace for as long
// as the driver lives, subscribing again after containerd went away. Events
// sent while nobody listened are lost; Observe sees their result, and a
// sweep after each subscription restarts what the restart policy wants.
func (d *Driver) watchEvents() {
	defer d.wg.Done()
	filters := []string{
		fmt.Sprintf(`namespace==%s,topic==%q`, d.cfg.Namespace, topicExit),
		fmt.Sprintf(`namespace==%s,topic==%q`, d.cfg.Namespace, topicOOM),
		fmt.Sprintf(`namespace==%s,topic==%q`, d.cfg.Namespace, topicPing),
	}
	wait := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithCancel(d.bg)
		envs, errs := d.client.EventService().Subscribe(ctx, filters...)
		// containerd does not acknowledge a subscription; an event we
		// publish ourselves and receive proves it is live.
		// The server registers the subscription some time after Subscribe
		// returns, so ping until one comes back.
		nonce := fmt.Sprintf("%p-%d", d, d.now().UnixNano())
		pinged := make(chan struct{})
		go d.ping(ctx, nonce, pinged)
		healthy := d.follow(envs, errs, nonce, func() {
			close(pinged)
			d.subscribedOnce.Do(func() { close(d.subscribed) })
			d.sweep(ctx)
		})
		cancel()
		if healthy {
			wait = 100 * time.Millisecond
		}
		select {
		case <-d.done:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// ping publishes the subscription ping every 20ms until it came back
// (pinged is closed) or ctx ends.
func (d *Driver) ping(ctx context.Context, nonce string, pinged <-chan struct{}) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if err := d.client.EventService().Publish(ctx, topicPing, &apievents.TaskOOM{ContainerID: nonce}); err != nil && ctx.Err() == nil {
			d.log.Debug("publish subscription ping", "err", err)
		}
		select {
		case <-pinged:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// follow handles events until the subscription ends; it reports whether
// any event came through, to reset the resubscribe backoff. When our own
// ping with nonce arrives, the subscription is live and it calls live.
func (d *Driver) follow(envs <-chan *events.Envelope, errs <-chan error, nonce string, live func()) bool {
	got := false
	for {
		select {
		case <-d.done:
			return got
		case err := <-errs:
			if err != nil && d.bg.Err() == nil {
				d.log.Debug("event subscription ended", "err", err)
			}
			return got
		case env := <-envs:
			if env == nil {
				return got
			}
			got = true
			v, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				d.log.Warn("decode event", "topic", env.Topic, "err", err)
				continue
			}
			switch ev := v.(type) {
			case *apievents.TaskExit:
				if ev.ID != ev.ContainerID {
					continue // an exec'd process, not the task
				}
				d.wg.Add(1)
				go d.exited(ev.ContainerID, ev.Pid, ev.ExitStatus)
			case *apievents.TaskOOM:
				if env.Topic == topicPing {
					if ev.ContainerID == nonce && live != nil {
						live()
						live = nil
					}
					continue
				}
				u := d.unitOf(ev.ContainerID)
				u.mu.Lock()
				u.oom = true
				u.mu.Unlock()
			}
		}
	}
}

// sweep hands to exited every stopped task whose restart policy wants it
// running and that nobody restarts yet: exits that happened while the
// driver was not subscribed (containerd restarting, no agent running).
func (d *Driver) sweep(ctx context.Context) {
	if !d.enter() {
		return
	}
	defer d.leave()
	cs, err := d.client.ContainerService().List(ctx, `labels."`+labelInstance+`"`)
	if err != nil {
		return
	}
	resp, err := d.client.TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		return
	}
	stopped := map[string]*tasktypes.Process{}
	for _, p := range resp.Tasks {
		if p.Status == tasktypes.Status_STOPPED {
			stopped[p.ID] = p
		}
	}
	for _, c := range cs {
		p, ok := stopped[c.ID]
		if !ok {
			continue
		}
		cur := decodeCurrent(c, p)
		if cur.spec == nil || !wantsRestart(*cur.spec, p.ExitStatus) {
			continue
		}
		u := d.unitOf(c.ID)
		u.mu.Lock()
		pending := u.backoff
		u.mu.Unlock()
		if !pending {
			d.log.Info("exit missed while unsubscribed", "id", c.ID, "code", p.ExitStatus)
			d.wg.Add(1)
			go d.exited(c.ID, p.Pid, p.ExitStatus)
		}
	}
}

func wantsRestart(spec drivers.Spec, code uint32) bool {
	policy := spec.RestartMode()
	return policy == drivers.RestartAlways || (policy == drivers.RestartOnFailure && code != 0)
}

// exited applies the restart policy to an exit of the task with pid. An
// exit the driver caused (a stop), or one of a task that has since been
// replaced, finds another pid or no container and ends here.
func (d *Driver) exited(id string, pid, code uint32) {
	defer d.wg.Done()
	if !d.enter() {
		return
	}
	defer d.leave()
	u := d.unitOf(id)
	u.op.Lock()
	defer u.op.Unlock()
	ctx, cancel := context.WithTimeout(d.bg, 30*time.Second)
	defer cancel()
	cur, err := d.load(ctx, id)
	if err != nil || cur == nil || cur.spec == nil {
		return
	}
	if cur.task == nil || cur.task.Pid != pid || cur.task.Status != tasktypes.Status_STOPPED {
		return
	}
	now := d.now()
	spec := *cur.spec
	started := u.started()
	u.mu.Lock()
	oom := u.oom || d.cgroupOOM(id)
	gen := u.gen
	u.mu.Unlock()

	how := fmt.Sprintf("exited with code %d", code)
	if !started.IsZero() {
		how += " after " + now.Sub(started).Round(time.Millisecond).String()
	}
	if oom {
		how = fmt.Sprintf("OOM killed (memory limit %s); %s", formatBytes(spec.Resources.MemoryBytes), how)
	}
	policy := spec.RestartMode()
	restart := wantsRestart(spec, code)
	ev := drivers.Event{ID: id, ExitCode: int(code), Time: now}
	var delay time.Duration
	u.mu.Lock()
	if restart {
		if !started.IsZero() && now.Sub(started) >= d.cfg.BackoffReset {
			u.quickExits = 0
		}
		u.quickExits++
		delay = spec.Backoff(u.quickExits)
		u.backoff = true
		u.message = fmt.Sprintf("%s; restart %d in %s", how, cur.restarts()+1, delay)
		ev.State, ev.Message = drivers.Backoff, u.message
	} else {
		ev.State = drivers.Failed
		if code == 0 {
			ev.State = drivers.Exited
		}
		ev.Message = fmt.Sprintf("%s; restart policy %s", how, policy)
	}
	u.mu.Unlock()

	// The label keeps why it ended for an Observe after an agent restart.
	if c, err := d.client.LoadContainer(ctx, id); err == nil {
		if _, err := c.SetLabels(ctx, map[string]string{labelExit: truncate(ev.Message, 1000)}); err != nil {
			d.log.Warn("record exit", "id", id, "err", err)
		}
	}
	d.log.Info("exited", "id", id, "code", code, "state", ev.State, "message", ev.Message)
	d.emit(ev)
	if restart {
		d.wg.Add(1)
		go d.restartAfter(u, gen, delay)
	}
}

// started is when u's current task started, as recorded while it ran: the
// exit handler runs after the process is reaped and /proc has forgotten it.
func (u *unit) started() time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.startedAt
}

// restartAfter starts u's task again after delay unless a change, a newer
// start or Close came first. A start that fails backs off again.
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
	stale := u.gen != gen || !u.backoff
	u.mu.Unlock()
	if stale {
		return
	}
	ctx, cancel := context.WithTimeout(d.bg, 60*time.Second)
	defer cancel()
	cur, err := d.load(ctx, u.id)
	if err == nil && (cur == nil || cur.spec == nil || cur.task == nil || cur.task.Status != tasktypes.Status_STOPPED) {
		// Deleted, damaged, or started by someone else meanwhile. A task
		// deleted from outside is left to the plan, which starts it
		// again as a change the reconciler records.
		u.mu.Lock()
		u.backoff = false
		u.mu.Unlock()
		return
	}
	if err == nil {
		err = d.restart(ctx, u, cur, *cur.spec)
	}
	if err == nil {
		d.log.Info("restarted", "id", u.id, "restarts", cur.restarts()+1)
		d.emit(drivers.Event{ID: u.id, State: drivers.Running, Message: fmt.Sprintf("restart %d", cur.restarts()+1), Time: d.now()})
		return
	}
	spec := drivers.Spec{}
	if cur != nil && cur.spec != nil {
		spec = *cur.spec
	}
	u.mu.Lock()
	u.quickExits++
	next := spec.Backoff(u.quickExits)
	u.backoff = true
	u.message = fmt.Sprintf("restart failed: %v; retry in %s", err, next)
	msg, gen := u.message, u.gen
	u.mu.Unlock()
	d.log.Warn("restart failed", "id", u.id, "err", err)
	d.emit(drivers.Event{ID: u.id, State: drivers.Backoff, Message: msg, Time: d.now()})
	d.wg.Add(1)
	go d.restartAfter(u, gen, next)
}

// cgroupOOM reports whether the kernel's OOM killer struck in id's memory
// cgroup, which still exists while the stopped task is not deleted: the
// event can be missed (no subscriber at that moment), the counter cannot.
func (d *Driver) cgroupOOM(id string) bool {
	for _, f := range []struct{ path, key string }{
		{filepath.Join("/sys/fs/cgroup/memory", d.cfg.Namespace, id, "memory.oom_control"), "oom_kill"}, // v1
		{filepath.Join("/sys/fs/cgroup", d.cfg.Namespace, id, "memory.events"), "oom_kill"},             // v2
	} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, f.key+" "); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
					return true
				}
			}
		}
	}
	return false
}

func formatBytes(n int64) string {
	switch {
	case n <= 0:
		return "none"
	case n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
