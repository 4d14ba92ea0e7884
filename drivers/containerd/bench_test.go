package containerd_test

import (
	"fmt"
	"os/exec"
	"sync"
	"testing"

	"github.com/ctxos/ctxos/drivers"
	ctrd "github.com/ctxos/ctxos/drivers/containerd"
)

const benchNS = "ctxos-bench"

const benchScript = "trap 'exit 0' TERM; sleep 1000 & wait"

// benchSetup returns a driver in the bench namespace and the name of the
// test image, imported and unpacked by the driver before timing starts.
func benchSetup(b *testing.B) (*ctrd.Driver, *daemon, string) {
	b.Helper()
	dm := requireContainerd(b)
	d := newDriver(b, dm, ctrd.Config{Namespace: benchNS, Logger: discard()})
	warm := shellSpec("ctx.bench.warm", benchScript)
	converge(b, d, warm)
	imgs, err := d.ImageNames(ctxT(b))
	if err != nil || len(imgs) != 1 {
		b.Fatalf("images after warm-up = %v, %v; want one", imgs, err)
	}
	converge(b, d)
	return d, dm, imgs[0]
}

// ctrRun is `ctr run -d` of the same image, command and host network as
// the driver's containers.
func ctrRun(b *testing.B, dm *daemon, image, id string) {
	out, err := exec.Command("/usr/bin/ctr", "-a", dm.socket, "-n", benchNS, "run", "-d", "--net-host",
		image, id, "sh", "-c", benchScript).CombinedOutput()
	if err != nil {
		b.Fatalf("ctr run %s: %v: %s", id, err, out)
	}
}

func ctrRemove(b *testing.B, dm *daemon, ids ...string) {
	for _, id := range ids {
		for _, args := range [][]string{{"tasks", "kill", "-s", "KILL", id}, {"tasks", "delete", "--force", id}, {"containers", "delete", id}} {
			exec.Command("/usr/bin/ctr", append([]string{"-a", dm.socket, "-n", benchNS}, args...)...).Run()
		}
	}
}

// BenchmarkCreateToRunning times one container from Apply(Create) to a
// running task, against `ctr run -d` of the same already imported image.
func BenchmarkCreateToRunning(b *testing.B) {
	d, dm, image := benchSetup(b)
	b.Run("driver", func(b *testing.B) {
		s := shellSpec("ctx.bench.0", benchScript)
		create := drivers.Change{ID: s.ID, Action: drivers.Create, Spec: &s}
		del := drivers.Change{ID: s.ID, Action: drivers.Delete}
		ctx := b.Context()
		for b.Loop() {
			if r, err := d.Apply(ctx, create); err != nil || r.Result != drivers.ResultChanged {
				b.Fatalf("create: %+v, %v", r, err)
			}
			b.StopTimer()
			if _, err := d.Apply(ctx, del); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run("ctr", func(b *testing.B) {
		for b.Loop() {
			ctrRun(b, dm, image, "ctr-bench-0")
			b.StopTimer()
			ctrRemove(b, dm, "ctr-bench-0")
			b.StartTimer()
		}
	})
}

// BenchmarkStart100 starts 100 containers on one node: the driver with 8
// Applies at a time, against 100 sequential `ctr run -d`.
func BenchmarkStart100(b *testing.B) {
	d, dm, image := benchSetup(b)
	const n, parallel = 100, 8
	b.Run(fmt.Sprintf("driver-parallel-%d", parallel), func(b *testing.B) {
		ctx := b.Context()
		specs := make([]drivers.Spec, n)
		for i := range specs {
			specs[i] = shellSpec(fmt.Sprintf("ctx.bench.%d", i), benchScript)
		}
		apply := func(changes []drivers.Change) {
			sem := make(chan struct{}, parallel)
			var wg sync.WaitGroup
			errs := make(chan error, len(changes))
			for _, c := range changes {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					if _, err := d.Apply(ctx, c); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
		}
		for b.Loop() {
			var creates, deletes []drivers.Change
			for i := range specs {
				creates = append(creates, drivers.Change{ID: specs[i].ID, Action: drivers.Create, Spec: &specs[i]})
				deletes = append(deletes, drivers.Change{ID: specs[i].ID, Action: drivers.Delete})
			}
			apply(creates)
			b.StopTimer()
			if obs := observe(b, d); len(obs) != n {
				b.Fatalf("observed %d containers, want %d", len(obs), n)
			}
			apply(deletes)
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/100-containers")
	})
	b.Run("ctr-sequential", func(b *testing.B) {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("ctr-bench-%d", i)
		}
		for b.Loop() {
			for _, id := range ids {
				ctrRun(b, dm, image, id)
			}
			b.StopTimer()
			if got := len(dm.containerIDs(b, benchNS)); got != n {
				b.Fatalf("ctr c ls shows %d containers, want %d", got, n)
			}
			ctrRemove(b, dm, ids...)
			b.StartTimer()
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/100-containers")
	})
}

// BenchmarkObserve is the reconciler's steady pass over n running
// containers: list containers and tasks, and read each running task's CPU
// usage from its shim.
func BenchmarkObserve(b *testing.B) {
	d, _, _ := benchSetup(b)
	for _, n := range []int{10, 50} {
		b.Run(fmt.Sprintf("containers=%d", n), func(b *testing.B) {
			specs := make([]drivers.Spec, n)
			for i := range specs {
				specs[i] = shellSpec(fmt.Sprintf("ctx.bench.%d", i), benchScript)
			}
			converge(b, d, specs...)
			b.Cleanup(func() { converge(b, d) })
			ctx := b.Context()
			for b.Loop() {
				obs, err := d.Observe(ctx)
				if err != nil || len(obs) != n {
					b.Fatalf("observed %d, %v", len(obs), err)
				}
			}
		})
	}
}
