package containerd

import (
	"context"
	"sort"

	"github.com/ctxos/ctxos/drivers"
)

// ApplyHalfway applies c up to the point where the container exists and
// its task does not: where an agent that died inside Apply leaves things.
func (d *Driver) ApplyHalfway(ctx context.Context, c drivers.Change) error {
	d.haltAfterContainer = true
	defer func() { d.haltAfterContainer = false }()
	_, err := d.Apply(ctx, c)
	return err
}

// ApplyHalfwayTask applies c up to the point where the task exists and has
// not started.
func (d *Driver) ApplyHalfwayTask(ctx context.Context, c drivers.Change) error {
	d.haltAfterTask = true
	defer func() { d.haltAfterTask = false }()
	_, err := d.Apply(ctx, c)
	return err
}

// ImageNames lists the images of the driver's namespace.
func (d *Driver) ImageNames(ctx context.Context) ([]string, error) {
	imgs, err := d.client.ImageService().List(d.nsCtx(ctx))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(imgs))
	for _, im := range imgs {
		out = append(out, im.Name)
	}
	sort.Strings(out)
	return out, nil
}

// Snapshotter is the snapshotter the driver picked.
func (d *Driver) Snapshotter(ctx context.Context) (string, error) {
	ctx, err := d.ready(ctx)
	if err != nil {
		return "", err
	}
	return d.snapshotter(ctx)
}

// ReadCPUTimeFromMetrics makes the driver ask containerd for every task's
// CPU time instead of reading cgroup files.
func (d *Driver) ReadCPUTimeFromMetrics() { d.cgroupRoot = "/nonexistent-cgroup-root" }
