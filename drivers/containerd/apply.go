package containerd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/ctxos/ctxos/drivers"
)

// current is what containerd holds for one instance: the container record,
// the spec it was created from, and its task (nil if it has none).
type current struct {
	c       containers.Container
	spec    *drivers.Spec
	specErr error
	task    *tasktypes.Process
}

func (cur *current) hash() string { return cur.c.Labels[labelSpecHash] }

func (cur *current) restarts() int {
	n, _ := strconv.Atoi(cur.c.Labels[labelRestarts])
	return n
}

func (d *Driver) nsCtx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, d.cfg.Namespace)
}

// decodeCurrent reads the spec extension of a container record.
func decodeCurrent(c containers.Container, p *tasktypes.Process) *current {
	cur := &current{c: c, task: p}
	ext, ok := c.Extensions[extSpec]
	if !ok || ext == nil {
		cur.specErr = fmt.Errorf("container %q has no %s extension", c.ID, extSpec)
		return cur
	}
	var s drivers.Spec
	if err := json.Unmarshal(ext.GetValue(), &s); err != nil {
		cur.specErr = fmt.Errorf("container %q: decode %s extension: %v", c.ID, extSpec, err)
		return cur
	}
	cur.spec = &s
	return cur
}

// load returns what containerd holds for id, or nil if there is no
// container.
func (d *Driver) load(ctx context.Context, id string) (*current, error) {
	c, err := d.client.ContainerService().Get(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, d.wrap(fmt.Errorf("instance %q: get container: %w", id, err))
	}
	if c.Labels[labelInstance] == "" {
		return nil, fmt.Errorf("%w: instance %q: container %s in namespace %s was not made by ctxos (no %s label)",
			drivers.ErrInvalidSpec, id, id, d.cfg.Namespace, labelInstance)
	}
	resp, err := d.client.TaskService().Get(ctx, &tasks.GetRequest{ContainerID: id})
	if err != nil {
		if errdefs.IsNotFound(errgrpc.ToNative(err)) {
			return decodeCurrent(c, nil), nil
		}
		return nil, d.wrap(fmt.Errorf("instance %q: get task: %w", id, err))
	}
	return decodeCurrent(c, resp.Process), nil
}

// Observe returns every container of the namespace that carries the
// ctxos.instance label, with its task's state. A container whose spec
// record cannot be read is returned Failed with the reason. A running
// task's CPUTime is its cgroup's CPU usage, read through containerd's task
// metrics (one call for all tasks); 0 when those cannot be read. It returns
// an error wrapping ErrUnavailable when containerd cannot be reached.
func (d *Driver) Observe(ctx context.Context) ([]drivers.Instance, error) {
	if !d.enter() {
		return nil, drivers.ErrClosed
	}
	defer d.leave()
	ctx, err := d.ready(ctx)
	if err != nil {
		return nil, err
	}
	cs, err := d.client.ContainerService().List(ctx, `labels."`+labelInstance+`"`)
	if err != nil {
		return nil, d.wrap(fmt.Errorf("list containers: %w", err))
	}
	resp, err := d.client.TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		return nil, d.wrap(fmt.Errorf("list tasks: %w", err))
	}
	procs := make(map[string]*tasktypes.Process, len(resp.Tasks))
	for _, p := range resp.Tasks {
		procs[p.ID] = p
	}
	out := make([]drivers.Instance, 0, len(cs))
	var running []string
	for _, c := range cs {
		inst := d.instance(decodeCurrent(c, procs[c.ID]))
		if inst.State == drivers.Running {
			running = append(running, inst.ID)
		}
		out = append(out, inst)
	}
	if len(running) > 0 {
		cpu, err := d.cpuTimes(ctx, running)
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			// The instances are known; only their CPU time is not.
			d.log.Warn("read CPU time of running tasks", "err", err)
		}
		for i := range out {
			out[i].CPUTime = cpu[out[i].ID]
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// instance turns what containerd holds into what the reconciler sees,
// overlaid with what supervision knows (a pending restart).
func (d *Driver) instance(cur *current) drivers.Instance {
	inst := drivers.Instance{
		ID:       cur.c.ID,
		SpecHash: cur.hash(),
		Spec:     cur.spec,
		Restarts: cur.restarts(),
		ExitCode: -1,
	}
	if cur.spec != nil && len(cur.spec.Ports) > 0 {
		inst.Ports = make(map[string]int, len(cur.spec.Ports))
		for k, v := range cur.spec.Ports {
			inst.Ports[k] = v
		}
	}
	if cur.specErr != nil {
		inst.State, inst.Message = drivers.Failed, "damaged record: "+cur.specErr.Error()
		return inst
	}
	u := d.unitOf(cur.c.ID)
	u.mu.Lock()
	backoff, message, starting := u.backoff, u.message, u.starting
	u.mu.Unlock()
	p := cur.task
	switch {
	case p == nil && starting:
		inst.State = drivers.Starting
	case p == nil:
		inst.State = drivers.Failed
		inst.Message = "container has no task (deleted or never started)"
	case p.Status == tasktypes.Status_RUNNING || p.Status == tasktypes.Status_PAUSED || p.Status == tasktypes.Status_PAUSING:
		inst.State, inst.Pid = drivers.Running, int(p.Pid)
		inst.ExitCode = 0
		// From /proc: the same for every observation of one process,
		// whichever driver made it (boot time has 1s resolution).
		inst.StartedAt = procStartTime(int(p.Pid))
		u.mu.Lock()
		if u.pid != p.Pid {
			// Adopted: remember roughly when it started for the exit
			// message.
			u.pid, u.startedAt = p.Pid, inst.StartedAt
		}
		u.mu.Unlock()
		if p.Status != tasktypes.Status_RUNNING {
			inst.Message = "task is " + strings.ToLower(p.Status.String())
		}
	case p.Status == tasktypes.Status_CREATED && starting:
		inst.State, inst.Pid = drivers.Starting, int(p.Pid)
	case p.Status == tasktypes.Status_CREATED:
		inst.State = drivers.Failed
		inst.Message = "task created but never started (the agent stopped halfway)"
	case p.Status == tasktypes.Status_STOPPED:
		inst.ExitCode = int(p.ExitStatus)
		switch {
		case backoff:
			inst.State, inst.Message = drivers.Backoff, message
		case p.ExitStatus == 0:
			inst.State = drivers.Exited
		default:
			inst.State = drivers.Failed
		}
		if inst.Message == "" {
			inst.Message = cur.c.Labels[labelExit]
		}
		if inst.Message == "" {
			// The exit handler has not recorded it yet, or no driver
			// listened: the cgroup, alive until the task is deleted,
			// still tells an OOM kill.
			inst.Message = fmt.Sprintf("exited with code %d", p.ExitStatus)
			if d.cgroupOOM(cur.c.ID) {
				inst.Message = fmt.Sprintf("OOM killed (memory limit %s); %s", formatBytes(cur.spec.Resources.MemoryBytes), inst.Message)
			}
		}
	default:
		inst.State = drivers.Failed
		inst.Message = "task state " + strings.ToLower(p.Status.String())
	}
	return inst
}

// live reports whether the instance runs or will run without a new change.
func (d *Driver) live(cur *current) bool {
	return cur != nil && d.instance(cur).Live()
}

// Plan returns [drivers.PlanChanges] after checking each desired spec runs
// on this driver: an error wraps ErrInvalidSpec (no image, a bad mount) or
// ErrUnsupported (GPUs, a mount type other than bind or tmpfs).
func (d *Driver) Plan(ctx context.Context, desired []drivers.Spec, observed []drivers.Instance) ([]drivers.Change, error) {
	for _, s := range desired {
		if err := checkSpec(s); err != nil {
			return nil, err
		}
	}
	return drivers.PlanChanges(desired, observed)
}

// checkSpec refuses what this driver cannot run, naming the field.
func checkSpec(s drivers.Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	bad := func(sentinel error, field, format string, args ...any) error {
		return fmt.Errorf("%w: instance %q: %s: %s", sentinel, s.ID, field, fmt.Sprintf(format, args...))
	}
	if s.Image == "" {
		return bad(drivers.ErrInvalidSpec, "image", "must not be empty: the containerd driver runs images")
	}
	if _, _, err := parseImage(s.Image); err != nil {
		return bad(drivers.ErrInvalidSpec, "image", "%v", err)
	}
	if s.Resources.GPUs > 0 {
		return bad(drivers.ErrUnsupported, "resources.gpus", "the containerd driver does not pass GPUs to containers")
	}
	for i, m := range s.Mounts {
		switch m.Type {
		case "", "bind":
			if !strings.HasPrefix(m.Source, "/") {
				return bad(drivers.ErrInvalidSpec, fmt.Sprintf("mounts[%d].source", i), "%q must be an absolute host path for a bind mount", m.Source)
			}
		case "tmpfs":
		default:
			return bad(drivers.ErrUnsupported, fmt.Sprintf("mounts[%d].type", i), "%q is not bind or tmpfs", m.Type)
		}
	}
	for k := range s.Labels {
		if strings.HasPrefix(k, "ctxos.") {
			return bad(drivers.ErrInvalidSpec, "labels."+k, "the ctxos. prefix is reserved for the driver's own labels")
		}
	}
	return nil
}

// Apply makes one change, keeping the contract of [drivers.Driver.Apply].
// Create and Replace of a container that runs the spec's hash, Start of one
// that runs or waits in backoff, and Delete of a missing one report
// "unchanged". A stop sends the spec's stop signal and SIGKILL to every
// process of the container after its grace period.
func (d *Driver) Apply(ctx context.Context, c drivers.Change) (drivers.Report, error) {
	r, err := d.apply(ctx, c)
	if err != nil {
		d.log.Warn("apply failed", "id", c.ID, "action", c.Action, "err", err)
		return c.Fail(err), err
	}
	return r, nil
}

func (d *Driver) apply(ctx context.Context, c drivers.Change) (drivers.Report, error) {
	if !d.enter() {
		return drivers.Report{}, drivers.ErrClosed
	}
	defer d.leave()
	if err := c.Check(); err != nil {
		return drivers.Report{}, err
	}
	if c.Spec != nil {
		if err := checkSpec(*c.Spec); err != nil {
			return drivers.Report{}, err
		}
	}
	ctx, err := d.ready(ctx)
	if err != nil {
		return drivers.Report{}, err
	}
	u := d.unitOf(c.ID)
	u.op.Lock()
	defer u.op.Unlock()
	cur, err := d.load(ctx, c.ID)
	if err != nil {
		return drivers.Report{}, err
	}

	switch c.Action {
	case drivers.Delete:
		if cur == nil {
			return c.Noop("not present"), nil
		}
		if err := d.remove(ctx, u, cur); err != nil {
			return drivers.Report{}, err
		}
		d.log.Info("deleted", "id", c.ID)
		d.collectImages(ctx)
		return c.Done(), nil

	case drivers.Create, drivers.Replace:
		hash := c.Spec.Hash()
		if cur != nil && cur.hash() == hash && d.live(cur) {
			return c.Noop(fmt.Sprintf("already %s with spec hash %s", d.instance(cur).State, hash)), nil
		}
		if cur != nil {
			if err := d.remove(ctx, u, cur); err != nil {
				return drivers.Report{}, err
			}
		}
		if err := d.create(ctx, u, *c.Spec); err != nil {
			return drivers.Report{}, err
		}
		d.log.Info("started", "id", c.ID, "action", c.Action)
		if cur != nil {
			d.collectImages(ctx)
		}
		return c.Done(), nil

	case drivers.Start:
		if cur == nil {
			return drivers.Report{}, fmt.Errorf("%w: %s", drivers.ErrNotFound, c.ID)
		}
		if d.live(cur) {
			return c.Noop("already " + string(d.instance(cur).State)), nil
		}
		if cur.hash() != c.Spec.Hash() {
			return drivers.Report{}, fmt.Errorf("%w: start %q: it was created from spec hash %s, the change carries %s; plan again",
				drivers.ErrInvalidChange, c.ID, cur.hash(), c.Spec.Hash())
		}
		if err := d.restart(ctx, u, cur, *c.Spec); err != nil {
			return drivers.Report{}, err
		}
		d.log.Info("started", "id", c.ID, "action", c.Action)
		return c.Done(), nil
	}
	return drivers.Report{}, fmt.Errorf("%w: %q: unknown action %q", drivers.ErrInvalidChange, c.ID, c.Action)
}

// procStartTime is when pid started, from /proc: deterministic, so two
// observations of one process agree and a restarted process differs.
func procStartTime(pid int) time.Time {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return time.Time{}
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return time.Time{}
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return time.Time{}
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return time.Time{}
	}
	bt := bootTime()
	if bt.IsZero() {
		return time.Time{}
	}
	// USER_HZ is 100 on every Linux architecture Go supports.
	return bt.Add(time.Duration(ticks) * 10 * time.Millisecond)
}

func bootTime() time.Time {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil {
				return time.Unix(n, 0)
			}
		}
	}
	return time.Time{}
}
