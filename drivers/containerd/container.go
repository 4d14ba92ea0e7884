package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	tasktypes "github.com/containerd/containerd/api/types/task"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/ctxos/ctxos/drivers"
)

// storedSpec is the container extension that records the spec, so Observe
// can show field-level diffs and supervision knows the restart policy of a
// container it adopted. Label values are capped at 4 KiB; an extension is
// not.
type storedSpec struct{ drivers.Spec }

func init() {
	typeurl.Register(&storedSpec{}, "github.com/ctxos/ctxos/drivers/containerd", "Spec")
}

// MarshalJSON keeps the extension's bytes exactly drivers.Spec's JSON.
func (s *storedSpec) MarshalJSON() ([]byte, error) { return json.Marshal(s.Spec) }

// UnmarshalJSON is MarshalJSON's inverse.
func (s *storedSpec) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &s.Spec) }

const envInstance = "CTXOS_INSTANCE"

// create makes the container of spec and starts its task. On error it
// leaves no container behind. The caller holds u.op.
func (d *Driver) create(ctx context.Context, u *unit, spec drivers.Spec) error {
	snap, err := d.snapshotter(ctx)
	if err != nil {
		return err
	}
	// Hold the image against GC until a container refers to it.
	d.images.RLock()
	img, err := d.image(ctx, spec, snap)
	if err != nil {
		d.images.RUnlock()
		return err
	}
	if err := checkMountSources(spec); err != nil {
		d.images.RUnlock()
		return err
	}
	labels := map[string]string{}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	labels[labelInstance] = spec.ID
	labels[labelSpecHash] = spec.Hash()
	if spec.Kind == drivers.KindMID {
		labels[labelMID] = spec.Name
	} else {
		labels[labelCTX] = spec.Name
	}
	opts := []containerd.NewContainerOpts{
		containerd.WithImage(img),
		containerd.WithSnapshotter(snap),
		containerd.WithNewSnapshot(spec.ID, img),
		containerd.WithNewSpec(specOpts(spec, img)...),
		containerd.WithContainerLabels(labels),
		containerd.WithContainerExtension(extSpec, &storedSpec{spec}),
	}
	c, err := d.client.NewContainer(ctx, spec.ID, opts...)
	if errdefs.IsAlreadyExists(err) && strings.Contains(err.Error(), "snapshot") {
		// The container was removed outside ctxos without its snapshot
		// (ctr c rm without cleanup): the snapshot is ours by its key.
		if rerr := d.client.SnapshotService(snap).Remove(ctx, spec.ID); rerr == nil || errdefs.IsNotFound(rerr) {
			c, err = d.client.NewContainer(ctx, spec.ID, opts...)
		}
	}
	d.images.RUnlock()
	if err != nil {
		return d.wrap(fmt.Errorf("instance %q: create container: %w", spec.ID, err))
	}
	u.mu.Lock()
	u.quickExits = 0 // a new container starts its backoff afresh
	u.mu.Unlock()
	if d.haltAfterContainer {
		return nil
	}
	if err := d.startTask(ctx, u, c, spec); err != nil {
		if derr := c.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup); derr != nil && !errdefs.IsNotFound(derr) {
			d.log.Error("delete container after failed start", "id", spec.ID, "err", derr)
		}
		return err
	}
	return nil
}

// startTask creates and starts c's task, its output going straight from the
// shim to the log file. On error no task is left.
func (d *Driver) startTask(ctx context.Context, u *unit, c containerd.Container, spec drivers.Spec) error {
	logPath := d.LogPath(spec.ID)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o750); err != nil {
		return fmt.Errorf("instance %q: logs: %w", spec.ID, err)
	}
	if err := d.rotateIfLarge(logPath); err != nil {
		d.log.Warn("rotate log", "path", logPath, "err", err)
	}
	u.mu.Lock()
	u.gen++
	u.starting, u.backoff, u.message, u.oom = true, false, "", false
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.starting = false
		u.mu.Unlock()
	}()
	t, err := c.NewTask(ctx, cio.LogFile(logPath))
	if err != nil {
		return d.wrap(taskError(spec, "create task", err))
	}
	if d.haltAfterTask {
		return nil
	}
	if err := t.Start(ctx); err != nil {
		if _, derr := t.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill); derr != nil && !errdefs.IsNotFound(derr) {
			d.log.Error("delete task after failed start", "id", spec.ID, "err", derr)
		}
		return d.wrap(taskError(spec, "start task", err))
	}
	u.mu.Lock()
	u.pid, u.startedAt = t.Pid(), d.now()
	u.mu.Unlock()
	return nil
}

// taskError names the command when runc could not find it in the image.
func taskError(spec drivers.Spec, step string, err error) error {
	msg := err.Error()
	if strings.Contains(msg, "executable file not found") || strings.Contains(msg, "no such file or directory") && strings.Contains(msg, "exec") {
		what := "the image's entrypoint"
		if spec.Command != "" {
			what = fmt.Sprintf("command %q", spec.Command)
		}
		return fmt.Errorf("%w: instance %q: %s is not in image %s: %v", ErrCommandNotFound, spec.ID, what, spec.Image, err)
	}
	return fmt.Errorf("instance %q: %s: %w", spec.ID, step, err)
}

// restart starts the task of an existing container again, counting the
// restart in its labels. The caller holds u.op.
func (d *Driver) restart(ctx context.Context, u *unit, cur *current, spec drivers.Spec) error {
	c, err := d.client.LoadContainer(ctx, cur.c.ID)
	if err != nil {
		return d.wrap(fmt.Errorf("instance %q: load container: %w", spec.ID, err))
	}
	if cur.task != nil && cur.task.Status == tasktypes.Status_CREATED {
		// A task the previous agent created and never started.
		t, err := c.Task(ctx, nil)
		if err == nil {
			err = t.Start(ctx)
		}
		if err == nil {
			u.mu.Lock()
			u.gen++
			u.pid, u.backoff, u.message, u.oom = t.Pid(), false, "", false
			u.startedAt = d.now()
			u.mu.Unlock()
			return nil
		}
		d.log.Warn("start created task; replacing it", "id", spec.ID, "err", err)
	}
	if cur.task != nil {
		if err := d.deleteTask(ctx, c); err != nil {
			return err
		}
	}
	if _, err := c.SetLabels(ctx, map[string]string{
		labelRestarts: strconv.Itoa(cur.restarts() + 1),
		labelExit:     "",
	}); err != nil {
		return d.wrap(fmt.Errorf("instance %q: count restart: %w", spec.ID, err))
	}
	return d.startTask(ctx, u, c, spec)
}

// deleteTask removes c's task, killing what still runs in it.
func (d *Driver) deleteTask(ctx context.Context, c containerd.Container) error {
	t, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return d.wrap(fmt.Errorf("instance %q: load task: %w", c.ID(), err))
	}
	if _, err := t.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		return d.wrap(fmt.Errorf("instance %q: delete task: %w", c.ID(), err))
	}
	return nil
}

// remove stops cur's task (stop signal, SIGKILL after the grace period) and
// deletes the container with its snapshot. The caller holds u.op.
func (d *Driver) remove(ctx context.Context, u *unit, cur *current) error {
	u.mu.Lock()
	u.gen++ // an exit from here on is ours, not one to restart
	u.backoff, u.message, u.pid = false, "", 0
	u.mu.Unlock()
	id := cur.c.ID
	c, err := d.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return d.wrap(fmt.Errorf("instance %q: load container: %w", id, err))
	}
	if cur.task != nil && cur.task.Status != tasktypes.Status_STOPPED {
		spec := drivers.Spec{}
		if cur.spec != nil {
			spec = *cur.spec
		}
		if err := d.stopTask(ctx, c, spec); err != nil {
			return err
		}
	}
	if cur.task != nil {
		if err := d.deleteTask(ctx, c); err != nil {
			return err
		}
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return d.wrap(fmt.Errorf("instance %q: delete container: %w", id, err))
	}
	return nil
}

// stopTask sends the stop signal, waits the grace period for the task to
// exit, then kills every process of the container.
func (d *Driver) stopTask(ctx context.Context, c containerd.Container, spec drivers.Spec) error {
	t, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return d.wrap(fmt.Errorf("instance %q: load task: %w", c.ID(), err))
	}
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	exited, err := t.Wait(waitCtx)
	if err != nil {
		return d.wrap(fmt.Errorf("instance %q: wait task: %w", c.ID(), err))
	}
	if err := t.Kill(ctx, spec.StopSignal()); err != nil && !errdefs.IsNotFound(err) {
		return d.wrap(fmt.Errorf("instance %q: signal %s: %w", c.ID(), spec.StopSignal(), err))
	}
	grace := time.NewTimer(spec.StopGrace())
	defer grace.Stop()
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-grace.C:
	}
	d.log.Info("stop grace period over; killing", "id", c.ID(), "grace", spec.StopGrace())
	if err := t.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return d.wrap(fmt.Errorf("instance %q: SIGKILL: %w", c.ID(), err))
	}
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// specOpts builds the OCI runtime spec of s on top of the image's config.
func specOpts(s drivers.Spec, img containerd.Image) []oci.SpecOpts {
	var opts []oci.SpecOpts
	if s.Command != "" {
		opts = append(opts, oci.WithImageConfig(img), oci.WithProcessArgs(append([]string{s.Command}, s.Args...)...))
	} else if len(s.Args) > 0 {
		opts = append(opts, oci.WithImageConfigArgs(img, s.Args))
	} else {
		opts = append(opts, oci.WithImageConfig(img))
	}
	env := make([]string, 0, len(s.Env)+1)
	for k, v := range s.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	env = append(env, envInstance+"="+s.ID)
	opts = append(opts, oci.WithEnv(env))
	if s.User != "" {
		opts = append(opts, oci.WithUser(s.User))
	}
	if s.Dir != "" {
		opts = append(opts, oci.WithProcessCwd(s.Dir))
	}
	if host, err := os.Hostname(); err == nil {
		opts = append(opts, oci.WithHostname(host))
	}
	opts = append(opts,
		oci.WithHostNamespace(specs.NetworkNamespace),
		oci.WithHostHostsFile,
		oci.WithHostResolvconf,
	)
	if r := s.Resources; r.CPUMilli > 0 {
		// 1024 shares is one core; the quota caps use at CPUMilli/1000 cores.
		const period = 100000
		opts = append(opts,
			oci.WithCPUShares(uint64(max(2, r.CPUMilli*1024/1000))),
			oci.WithCPUCFS(r.CPUMilli*period/1000, period))
	}
	if r := s.Resources; r.MemoryBytes > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(r.MemoryBytes)), withMemorySwap(r.MemoryBytes))
	}
	if r := s.Resources; r.Pids > 0 {
		opts = append(opts, oci.WithPidsLimit(r.Pids))
	}
	if len(s.Mounts) > 0 {
		opts = append(opts, oci.WithMounts(ociMounts(s.Mounts)))
	}
	return opts
}

// withMemorySwap sets swap equal to the memory limit, so the limit is a
// limit and not a slow path to swap; runc skips it where swap accounting is
// off.
func withMemorySwap(limit int64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux != nil && s.Linux.Resources != nil && s.Linux.Resources.Memory != nil && swapAccounting() {
			s.Linux.Resources.Memory.Swap = &limit
		}
		return nil
	}
}

// swapAccounting reports whether the host's memory cgroup accounts swap:
// cgroup v1 with memsw files, or cgroup v2 alone.
func swapAccounting() bool {
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil {
		_, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
		return err == nil
	}
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

func ociMounts(ms []drivers.Mount) []specs.Mount {
	out := make([]specs.Mount, 0, len(ms))
	for _, m := range ms {
		rw := "rw"
		if m.ReadOnly {
			rw = "ro"
		}
		switch m.Type {
		case "tmpfs":
			out = append(out, specs.Mount{Destination: m.Target, Type: "tmpfs", Source: "tmpfs",
				Options: []string{"nosuid", "nodev", "mode=1777", rw}})
		default:
			out = append(out, specs.Mount{Destination: m.Target, Type: "bind", Source: m.Source,
				Options: []string{"rbind", rw}})
		}
	}
	return out
}

// checkMountSources fails with the field's name when a bind mount's source
// does not exist on the host; runc's own error would not name it.
func checkMountSources(s drivers.Spec) error {
	for i, m := range s.Mounts {
		if m.Type == "tmpfs" {
			continue
		}
		if _, err := os.Stat(m.Source); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: instance %q: mounts[%d].source: %s does not exist on the host", drivers.ErrInvalidSpec, s.ID, i, m.Source)
		}
	}
	return nil
}
