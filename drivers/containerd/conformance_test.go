package containerd_test

import (
	"context"
	"testing"
	"time"

	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/drivers/containerd"
	"github.com/ctxos/ctxos/drivers/driverstest"
)

func TestConformance(t *testing.T) {
	dm := requireContainerd(t)
	const ns = "ctxos-conf"
	image := "oci-archive:" + busyboxArchive(t, "oci")
	driverstest.Run(t, driverstest.Factory{
		New: func(tb testing.TB, dir string) drivers.Driver {
			tb.Helper()
			return openDriver(tb, dm, containerd.Config{StateDir: dir, Namespace: ns})
		},
		Spec: func(id string, variant int) drivers.Spec {
			return sleepSpec(id, image, variant)
		},
		Halfway: func(ctx context.Context, tb testing.TB, d drivers.Driver, c drivers.Change) {
			tb.Helper()
			if err := d.(*containerd.Driver).ApplyHalfway(ctx, c); err != nil {
				tb.Fatalf("ApplyHalfway: %v", err)
			}
		},
		Count: func(tb testing.TB, id string) int { return dm.running(tb, ns, id) },
		Busy: func(id string) drivers.Spec {
			s := sleepSpec(id, image, 0)
			// The loop runs in a child of the container's init: the
			// cgroup counts it.
			s.Args = []string{"-c", "trap 'exit 0' TERM; while :; do :; done & wait"}
			return s
		},
	})
}

// sleepSpec runs a shell that sleeps; variants differ in the sleep length.
// The shell exits on TERM (a pid 1 without a handler would ignore it), so a
// stop is quick.
func sleepSpec(id, image string, variant int) drivers.Spec {
	return drivers.Spec{
		ID: id, Kind: drivers.KindCTX, Name: "conf", Image: image,
		Command: "sh", Args: []string{"-c", "trap 'exit 0' TERM; sleep " + []string{"1000", "2000", "3000"}[variant%3] + " & wait"},
		Stop: drivers.StopPolicy{Grace: 5 * time.Second},
	}
}
