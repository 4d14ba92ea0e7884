package containerd_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/drivers"
	ctrd "github.com/ctxos/ctxos/drivers/containerd"
)

func ctxT(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func converge(tb testing.TB, d drivers.Driver, desired ...drivers.Spec) []drivers.Report {
	tb.Helper()
	reports, err := drivers.Converge(ctxT(tb), d, desired)
	if err != nil {
		tb.Fatalf("Converge: %v (reports %+v)", err, reports)
	}
	return reports
}

func observe(tb testing.TB, d drivers.Driver) []drivers.Instance {
	tb.Helper()
	obs, err := d.Observe(ctxT(tb))
	if err != nil {
		tb.Fatalf("Observe: %v", err)
	}
	return obs
}

func find(obs []drivers.Instance, id string) (drivers.Instance, bool) {
	for _, o := range obs {
		if o.ID == id {
			return o, true
		}
	}
	return drivers.Instance{}, false
}

// waitState polls Observe until id is in state want and returns it.
func waitState(tb testing.TB, d drivers.Driver, id string, want drivers.State) drivers.Instance {
	tb.Helper()
	var inst drivers.Instance
	waitFor(tb, id+" "+string(want), 30*time.Second, func() (bool, string) {
		var ok bool
		inst, ok = find(observe(tb, d), id)
		return ok && inst.State == want, fmt.Sprintf("%+v", inst)
	})
	return inst
}

func actions(changes []drivers.Change) []string {
	var out []string
	for _, c := range changes {
		out = append(out, string(c.Action)+" "+c.ID)
	}
	return out
}

func plan(tb testing.TB, d drivers.Driver, desired ...drivers.Spec) []string {
	tb.Helper()
	changes, err := d.Plan(ctxT(tb), desired, observe(tb, d))
	if err != nil {
		tb.Fatalf("Plan: %v", err)
	}
	return actions(changes)
}

func ctr(tb testing.TB, dm *daemon, ns string, args ...string) string {
	tb.Helper()
	out, err := exec.Command("/usr/bin/ctr", append([]string{"-a", dm.socket, "-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		tb.Fatalf("ctr %v: %v: %s", args, err, out)
	}
	return string(out)
}

// shellSpec runs script under sh in the busybox image.
func shellSpec(id, script string) drivers.Spec {
	return drivers.Spec{
		ID: id, Kind: drivers.KindCTX, Name: "test", Image: "oci-archive:" + archiveOf("oci"),
		Command: "sh", Args: []string{"-c", script},
		Stop: drivers.StopPolicy{Grace: 5 * time.Second},
	}
}

// TestReplicasReplaceAndCrash is the driver's whole story on one CTX: three
// replicas from an OCI archive run as three containers, a new command
// replaces each, and after the agent dies without closing its driver a new
// driver adopts them: ctr lists exactly the desired containers.
func TestReplicasReplaceAndCrash(t *testing.T) {
	dm := requireContainerd(t)
	const ns = "ctxos-replicas"
	state := t.TempDir()
	d1 := openDriver(t, dm, ctrd.Config{StateDir: state, Namespace: ns})
	specs := func(script string) []drivers.Spec {
		var out []drivers.Spec
		for i := range 3 {
			s := shellSpec(fmt.Sprintf("ctx.web.%d", i), script)
			s.Name = "web"
			out = append(out, s)
		}
		return out
	}
	v1 := specs("trap 'exit 0' TERM; sleep 1001 & wait")
	if got := len(converge(t, d1, v1...)); got != 3 {
		t.Fatalf("first converge made %d changes, want 3", got)
	}
	want := []string{"ctx.web.0", "ctx.web.1", "ctx.web.2"}
	if got := dm.containerIDs(t, ns); !reflect.DeepEqual(got, want) {
		t.Fatalf("ctr c ls = %v, want %v", got, want)
	}
	c, cctx := dm.client(t, ns)
	for i, id := range want {
		ct, err := c.LoadContainer(cctx, id)
		if err != nil {
			t.Fatal(err)
		}
		labels, err := ct.Labels(cctx)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range map[string]string{"ctxos.ctx": "web", "ctxos.instance": id, "ctxos.spec-hash": v1[i].Hash()} {
			if labels[k] != v {
				t.Errorf("%s label %s = %q, want %q", id, k, labels[k], v)
			}
		}
	}
	before := map[string]int{}
	for _, id := range want {
		before[id] = waitState(t, d1, id, drivers.Running).Pid
	}

	v2 := specs("trap 'exit 0' TERM; sleep 1002 & wait")
	reports := converge(t, d1, v2...)
	var got []string
	for _, r := range reports {
		got = append(got, string(r.Action)+" "+r.ID+" "+r.Result)
		if _, ok := r.Changes["args"]; !ok {
			t.Errorf("replace report of %s has no args change: %v", r.ID, r.Changes)
		}
	}
	wantReports := []string{"replace ctx.web.0 changed", "replace ctx.web.1 changed", "replace ctx.web.2 changed"}
	if !reflect.DeepEqual(got, wantReports) {
		t.Fatalf("replace reports = %v, want %v", got, wantReports)
	}
	running := map[string]drivers.Instance{}
	for _, id := range want {
		inst := waitState(t, d1, id, drivers.Running)
		if inst.Pid == before[id] {
			t.Errorf("%s kept pid %d across replace", id, inst.Pid)
		}
		if inst.SpecHash != v2[0].Hash() && inst.SpecHash != v2[1].Hash() && inst.SpecHash != v2[2].Hash() {
			t.Errorf("%s spec hash %s is not a v2 hash", id, inst.SpecHash)
		}
		running[id] = inst
	}

	// The agent dies: d1 is dropped without Close. A new driver over the
	// same state adopts what runs.
	d2 := newDriver(t, dm, ctrd.Config{StateDir: state, Namespace: ns})
	for _, id := range want {
		inst, ok := find(observe(t, d2), id)
		if !ok || inst.State != drivers.Running || inst.Pid != running[id].Pid || !inst.StartedAt.Equal(running[id].StartedAt) {
			t.Errorf("after crash, %s = %+v, want the running %+v", id, inst, running[id])
		}
	}
	if got := plan(t, d2, v2...); len(got) != 0 {
		t.Errorf("plan after crash = %v, want nothing", got)
	}
	if got := dm.containerIDs(t, ns); !reflect.DeepEqual(got, want) {
		t.Errorf("ctr c ls after crash = %v, want %v", got, want)
	}
	// Scale down to one replica through the new driver.
	converge(t, d2, v2[0])
	if got, want := dm.containerIDs(t, ns), []string{"ctx.web.0"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ctr c ls after scale down = %v, want %v", got, want)
	}
	converge(t, d2)
	d1.Close()
}

func TestImageSources(t *testing.T) {
	dm := requireContainerd(t)
	const ns = "ctxos-images"
	d := newDriver(t, dm, ctrd.Config{Namespace: ns})
	// A registry reference that is already in the store runs without
	// network: import the archive under that name with ctr first.
	ctr(t, dm, ns, "images", "import", "--index-name", "docker.io/library/busybox:ctxos-local", busyboxArchive(t, "oci"))
	// An archive whose file name is no valid image reference.
	odd := filepath.Join(t.TempDir(), "My Image+1.TAR")
	b, err := os.ReadFile(busyboxArchive(t, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(odd, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, image string }{
		{"oci-archive", "oci-archive:" + busyboxArchive(t, "oci")},
		{"docker-archive", "docker-archive:" + busyboxArchive(t, "docker")},
		{"registry ref in store", "busybox:ctxos-local"},
		{"odd archive name", "oci-archive:" + odd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := shellSpec("ctx.img."+strings.ReplaceAll(strings.ReplaceAll(tc.name, " ", "-"), "-", ""), "trap 'exit 0' TERM; sleep 1000 & wait")
			s.Image = tc.image
			converge(t, d, s)
			waitState(t, d, s.ID, drivers.Running)
			converge(t, d)
		})
	}
	snap, err := d.Snapshotter(ctxT(t))
	if err != nil || (snap != "overlayfs" && snap != "native") {
		t.Errorf("snapshotter = %q, %v; want overlayfs or native", snap, err)
	}
}

func TestBadImages(t *testing.T) {
	dm := requireContainerd(t)
	const ns = "ctxos-badimages"
	d := newDriver(t, dm, ctrd.Config{Namespace: ns})
	missing := filepath.Join(t.TempDir(), "nope.tar")
	for _, tc := range []struct {
		name, image string
		want        []string // in the error
	}{
		{"registry unreachable", "registry.invalid/ctxos/nothing:1", []string{"registry.invalid/ctxos/nothing:1", "pull"}},
		{"oci-archive missing", "oci-archive:" + missing, []string{missing, "does not exist"}},
		{"docker-archive missing", "docker-archive:" + missing, []string{missing, "does not exist"}},
		{"corrupt archive", "oci-archive:" + corruptArchive(t), []string{"import oci-archive"}},
		{"directory as archive", "oci-archive:" + t.TempDir(), []string{"not a regular file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := shellSpec("ctx.bad.image", "sleep 1000")
			s.Image = tc.image
			start := time.Now()
			_, err := drivers.Converge(ctxT(t), d, []drivers.Spec{s})
			took := time.Since(start)
			if !errors.Is(err, ctrd.ErrImage) {
				t.Fatalf("Converge = %v, want ErrImage", err)
			}
			for _, w := range append(tc.want, `"ctx.bad.image"`) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			t.Logf("failed after %s: %v", took.Round(time.Millisecond), err)
			if obs := observe(t, d); len(obs) != 0 {
				t.Errorf("a failed create left %+v", obs)
			}
			if got := dm.containerIDs(t, ns); len(got) != 0 {
				t.Errorf("ctr c ls after a failed create = %v, want none", got)
			}
		})
	}
}

func TestInvalidSpecs(t *testing.T) {
	dm := requireContainerd(t)
	d := newDriver(t, dm, ctrd.Config{Namespace: "ctxos-invalid"})
	base := shellSpec("ctx.invalid.0", "sleep 1")
	for _, tc := range []struct {
		name  string
		edit  func(*drivers.Spec)
		want  error
		field string
	}{
		{"no image", func(s *drivers.Spec) { s.Image = "" }, drivers.ErrInvalidSpec, "image"},
		{"relative archive", func(s *drivers.Spec) { s.Image = "oci-archive:rel/x.tar" }, drivers.ErrInvalidSpec, "image"},
		{"bad reference", func(s *drivers.Spec) { s.Image = "UPPER/Case::x" }, drivers.ErrInvalidSpec, "image"},
		{"gpus", func(s *drivers.Spec) { s.Resources.GPUs = 1 }, drivers.ErrUnsupported, "resources.gpus"},
		{"mount type", func(s *drivers.Spec) { s.Mounts = []drivers.Mount{{Source: "srv:/x", Target: "/x", Type: "nfs"}} }, drivers.ErrUnsupported, "mounts[0].type"},
		{"relative bind", func(s *drivers.Spec) { s.Mounts = []drivers.Mount{{Source: "data", Target: "/x"}} }, drivers.ErrInvalidSpec, "mounts[0].source"},
		{"reserved label", func(s *drivers.Spec) { s.Labels = map[string]string{"ctxos.instance": "x"} }, drivers.ErrInvalidSpec, "labels.ctxos.instance"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			tc.edit(&s)
			changes, err := d.Plan(ctxT(t), []drivers.Spec{s}, nil)
			if !errors.Is(err, tc.want) || len(changes) != 0 || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("Plan = %v, %v; want no changes and %v naming %s", actions(changes), err, tc.want, tc.field)
			}
			r, err := d.Apply(ctxT(t), drivers.Change{ID: s.ID, Action: drivers.Create, Spec: &s})
			if !errors.Is(err, tc.want) || r.Result != drivers.ResultFailed {
				t.Errorf("Apply = %+v, %v; want failed with %v", r, err, tc.want)
			}
		})
	}
	// A bind mount whose source is missing is found at apply time.
	s := base
	s.Mounts = []drivers.Mount{{Source: filepath.Join(t.TempDir(), "gone"), Target: "/data"}}
	_, err := d.Apply(ctxT(t), drivers.Change{ID: s.ID, Action: drivers.Create, Spec: &s})
	if !errors.Is(err, drivers.ErrInvalidSpec) || !strings.Contains(err.Error(), "mounts[0].source") {
		t.Errorf("Apply with a missing bind source = %v, want ErrInvalidSpec naming mounts[0].source", err)
	}
	if obs := observe(t, d); len(obs) != 0 {
		t.Errorf("refused specs left %+v", obs)
	}
}

func TestCommandNotInImage(t *testing.T) {
	dm := requireContainerd(t)
	const ns = "ctxos-nocmd"
	d := newDriver(t, dm, ctrd.Config{Namespace: ns})
	s := shellSpec("ctx.nocmd.0", "")
	s.Command, s.Args = "memcached", []string{"-p", "11211"}
	_, err := drivers.Converge(ctxT(t), d, []drivers.Spec{s})
	if !errors.Is(err, ctrd.ErrCommandNotFound) {
		t.Fatalf("Converge = %v, want ErrCommandNotFound", err)
	}
	for _, w := range []string{`"memcached"`, `"ctx.nocmd.0"`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %s", err, w)
		}
	}
	if got := dm.containerIDs(t, ns); len(got) != 0 {
		t.Errorf("ctr c ls after a failed create = %v, want none", got)
	}
	// The plan proposes the create again.
	if got, want := plan(t, d, s), []string{"create ctx.nocmd.0"}; !reflect.DeepEqual(got, want) {
		t.Errorf("plan after failure = %v, want %v", got, want)
	}
}

// TestContainerSpec checks what the container sees: args, env, user,
// working dir, mounts, the host's network, limits.
func TestContainerSpec(t *testing.T) {
	dm := requireContainerd(t)
	d := newDriver(t, dm, ctrd.Config{Namespace: "ctxos-spec"})
	host := t.TempDir()
	if err := os.Chmod(host, 0o777); err != nil {
		t.Fatal(err)
	}
	ro := t.TempDir()
	if err := os.WriteFile(filepath.Join(ro, "in"), []byte("from host"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := shellSpec("ctx.spec.0", `echo "user=$(id -u) dir=$(pwd) greeting=$GREETING image=$FROM_IMAGE inst=$CTXOS_INSTANCE"; `+
		`cat /ro/in; echo; echo written > /data/out; echo scratch > /scratch/x && echo tmpfs-ok; `+
		`if echo no > /ro/in 2>/dev/null; then echo ro-writable; else echo ro-ok; fi; `+
		`echo ifs=$(grep -c : /proc/net/dev); trap 'exit 0' TERM; sleep 1000 & wait`)
	s.Env = map[string]string{"GREETING": "hello"}
	s.User, s.Dir = "nobody", "/tmp"
	s.Mounts = []drivers.Mount{
		{Source: host, Target: "/data"},
		{Source: ro, Target: "/ro", ReadOnly: true},
		{Source: "tmpfs", Target: "/scratch", Type: "tmpfs"},
	}
	s.Resources = drivers.Resources{CPUMilli: 500, MemoryBytes: 64 << 20, Pids: 50}
	s.Ports = map[string]int{"http": 8080}
	converge(t, d, s)
	inst := waitState(t, d, s.ID, drivers.Running)
	if !reflect.DeepEqual(inst.Ports, s.Ports) {
		t.Errorf("Ports = %v, want %v", inst.Ports, s.Ports)
	}
	logPath := d.LogPath(s.ID)
	var out string
	waitFor(t, "container output", 20*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(logPath)
		out = string(b)
		return strings.Contains(out, "ifs="), out
	})
	for _, w := range []string{
		"user=65534 dir=/tmp greeting=hello image=yes inst=ctx.spec.0",
		"from host", "tmpfs-ok", "ro-ok",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	for _, tc := range []struct{ v1, v2, want string }{
		{"memory/ctxos-spec/ctx.spec.0/memory.limit_in_bytes", "ctxos-spec/ctx.spec.0/memory.max", fmt.Sprint(64 << 20)},
		{"pids/ctxos-spec/ctx.spec.0/pids.max", "ctxos-spec/ctx.spec.0/pids.max", "50"},
		{"cpu/ctxos-spec/ctx.spec.0/cpu.cfs_quota_us", "ctxos-spec/ctx.spec.0/cpu.max", "50000"},
		{"cpu/ctxos-spec/ctx.spec.0/cpu.shares", "", "512"},
	} {
		got, err := cgroupValue(tc.v1, tc.v2)
		if err != nil || !strings.HasPrefix(got, tc.want) {
			t.Errorf("cgroup %s = %q, %v; want %s", tc.v1, got, err, tc.want)
		}
	}
	b, err := os.ReadFile(filepath.Join(host, "out"))
	if err != nil || string(b) != "written\n" {
		t.Errorf("bind mount: host file = %q, %v", b, err)
	}
	// Host networking: the container sees the host's interfaces.
	hostIfs, _ := os.ReadFile("/proc/net/dev")
	if n := strings.Count(string(hostIfs), ":"); !strings.Contains(out, fmt.Sprintf("ifs=%d\n", n)) {
		t.Errorf("container sees another network than the host's %d interfaces:\n%s", n, out)
	}
}

// cgroupValue reads a cgroup file of the host's cgroup v1 hierarchy, or its
// v2 equivalent ("" skips a file v2 does not have).
func cgroupValue(v1, v2 string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", v1))
	if errors.Is(err, os.ErrNotExist) && v2 != "" {
		b, err = os.ReadFile(filepath.Join("/sys/fs/cgroup", v2))
	} else if errors.Is(err, os.ErrNotExist) {
		return "512 (no such file on cgroup v2)", nil
	}
	return strings.TrimSpace(string(b)), err
}

// TestImageEntrypoint: without a command the image's entrypoint and cmd
// run; args alone replace the image's cmd.
func TestImageEntrypoint(t *testing.T) {
	dm := requireContainerd(t)
	d := newDriver(t, dm, ctrd.Config{Namespace: "ctxos-entry"})
	plain := shellSpec("ctx.entry.0", "")
	plain.Command, plain.Args = "", nil
	withArgs := shellSpec("ctx.entry.1", "")
	withArgs.Command, withArgs.Args = "", []string{"echo args-ran; trap 'exit 0' TERM; sleep 1000 & wait"}
	converge(t, d, plain, withArgs)
	waitState(t, d, plain.ID, drivers.Running)
	waitFor(t, "args output", 20*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(d.LogPath(withArgs.ID))
		return strings.Contains(string(b), "args-ran"), string(b)
	})
}

func TestLogsRotate(t *testing.T) {
	dm := requireContainerd(t)
	d := newDriver(t, dm, ctrd.Config{Namespace: "ctxos-logs", LogMaxBytes: 4096, LogKeep: 2, LogCheckInterval: time.Hour})
	s := shellSpec("ctx.logs.0", `i=0; while :; do i=$((i+1)); echo "line $i: the quick brown fox jumps over the lazy dog, again and again and again"; sleep 0.01; done`)
	converge(t, d, s)
	path := d.LogPath(s.ID)
	for round := 1; round <= 3; round++ {
		waitFor(t, "log grows past the limit", 30*time.Second, func() (bool, string) {
			fi, err := os.Stat(path)
			return err == nil && fi.Size() >= 4096, fmt.Sprint(fi, err)
		})
		d.RotateLogs()
	}
	for _, p := range []string{path + ".1", path + ".2"} {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), "line ") {
			t.Errorf("rotated %s = %d bytes, %v", p, len(b), err)
		}
	}
	if _, err := os.Stat(path + ".3"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.3 exists beyond LogKeep 2", path)
	}
	// The shim goes on appending to the truncated file, from its start.
	waitFor(t, "writes after rotation", 30*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(path)
		return len(b) > 0 && b[0] != 0 && strings.Contains(string(b), "line "), fmt.Sprintf("%d bytes", len(b))
	})
}

func TestImageGC(t *testing.T) {
	dm := requireContainerd(t)
	for _, tc := range []struct {
		gc   bool
		want int // images left after the last container is gone
	}{{true, 0}, {false, 1}} {
		t.Run(fmt.Sprintf("gc=%v", tc.gc), func(t *testing.T) {
			ns := fmt.Sprintf("ctxos-gc-%v", tc.gc)
			d := newDriver(t, dm, ctrd.Config{Namespace: ns, ImageGC: tc.gc})
			a := shellSpec("ctx.gc.0", "trap 'exit 0' TERM; sleep 1000 & wait")
			b := shellSpec("ctx.gc.1", "trap 'exit 0' TERM; sleep 1000 & wait")
			converge(t, d, a, b)
			converge(t, d, a) // b goes; a still uses the image
			if imgs, err := d.ImageNames(ctxT(t)); err != nil || len(imgs) != 1 {
				t.Fatalf("images while in use = %v, %v; want one", imgs, err)
			}
			converge(t, d)
			imgs, err := d.ImageNames(ctxT(t))
			if err != nil || len(imgs) != tc.want {
				t.Errorf("images after the last delete = %v, %v; want %d", imgs, err, tc.want)
			}
			// The image comes back when wanted again.
			converge(t, d, a)
			waitState(t, d, a.ID, drivers.Running)
			converge(t, d)
		})
	}
}

func TestRestartPolicy(t *testing.T) {
	dm := requireContainerd(t)
	d := newDriver(t, dm, ctrd.Config{Namespace: "ctxos-restart"})
	fast := drivers.RestartPolicy{BackoffBase: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond}

	always := shellSpec("ctx.restart.always", "sleep 0.2; exit 3")
	always.Restart = fast
	converge(t, d, always)
	waitFor(t, "two supervised restarts", 30*time.Second, func() (bool, string) {
		inst, _ := find(observe(t, d), always.ID)
		return inst.Restarts >= 2, fmt.Sprintf("%+v", inst)
	})
	var sawBackoff, sawRunning bool
	waitFor(t, "backoff and restart events", 10*time.Second, func() (bool, string) {
		for {
			select {
			case ev := <-d.Events():
				if ev.ID == always.ID && ev.State == drivers.Backoff && ev.ExitCode == 3 && strings.Contains(ev.Message, "exited with code 3") {
					sawBackoff = true
				}
				if ev.ID == always.ID && ev.State == drivers.Running {
					sawRunning = true
				}
				continue
			default:
			}
			break
		}
		return sawBackoff && sawRunning, fmt.Sprintf("backoff %v running %v", sawBackoff, sawRunning)
	})
	if got := plan(t, d, always); len(got) != 0 {
		t.Errorf("plan while supervised = %v, want nothing (the driver restarts it)", got)
	}
	converge(t, d)

	never := shellSpec("ctx.restart.never", "exit 4")
	never.Restart = drivers.RestartPolicy{Policy: drivers.RestartNever}
	converge(t, d, never)
	inst := waitState(t, d, never.ID, drivers.Failed)
	if inst.ExitCode != 4 || inst.Restarts != 0 || !strings.Contains(inst.Message, "exited with code 4") {
		t.Errorf("never: %+v, want failed with code 4 and no restart", inst)
	}
	if got := plan(t, d, never); len(got) != 0 {
		t.Errorf("plan for an ended never-restart instance = %v, want nothing", got)
	}
	// A new agent reads why it ended from the container's labels.
	waitFor(t, "exit event (sent after the exit is recorded)", 10*time.Second, func() (bool, string) {
		select {
		case ev := <-d.Events():
			return ev.ID == never.ID && ev.State == drivers.Failed, fmt.Sprintf("%+v", ev)
		default:
			return false, "no event"
		}
	})
	d2 := newDriver(t, dm, ctrd.Config{Namespace: "ctxos-restart"})
	inst2, _ := find(observe(t, d2), never.ID)
	if inst2.State != drivers.Failed || !strings.Contains(inst2.Message, "restart policy never") {
		t.Errorf("after agent restart: %+v, want the recorded exit message", inst2)
	}
	converge(t, d)
}

// TestDrift: changes made behind ctxos's back show in Observe and the plan
// repairs them.
func TestDrift(t *testing.T) {
	dm := requireContainerd(t)
	const ns = "ctxos-drift"
	d := newDriver(t, dm, ctrd.Config{Namespace: ns})
	s := shellSpec("ctx.drift.0", "trap 'exit 0' TERM; sleep 1000 & wait")
	s.Restart = drivers.RestartPolicy{Policy: drivers.RestartOnFailure, BackoffBase: 50 * time.Millisecond}

	for _, tc := range []struct {
		name   string
		drift  func()
		plan   []string
		before drivers.State
	}{
		{"task deleted", func() { ctr(t, dm, ns, "tasks", "delete", "--force", s.ID) }, []string{"start " + s.ID}, drivers.Failed},
		{"container deleted", func() {
			ctr(t, dm, ns, "tasks", "delete", "--force", s.ID)
			ctr(t, dm, ns, "containers", "delete", s.ID)
		}, []string{"create " + s.ID}, ""},
		{"exited 0 under on-failure", func() { ctr(t, dm, ns, "tasks", "kill", "-s", "TERM", s.ID) }, nil, drivers.Exited},
	} {
		t.Run(tc.name, func(t *testing.T) {
			converge(t, d, s)
			waitState(t, d, s.ID, drivers.Running)
			tc.drift()
			if tc.before != "" {
				waitState(t, d, s.ID, tc.before)
			} else {
				waitFor(t, "container gone", 10*time.Second, func() (bool, string) {
					_, ok := find(observe(t, d), s.ID)
					return !ok, "still observed"
				})
			}
			if got := plan(t, d, s); !reflect.DeepEqual(got, tc.plan) {
				t.Fatalf("plan = %v, want %v", got, tc.plan)
			}
			if tc.plan != nil {
				converge(t, d, s)
				waitState(t, d, s.ID, drivers.Running)
			}
			converge(t, d)
		})
	}

	// A container with ctxos labels that is not desired is deleted.
	converge(t, d, s)
	if got := plan(t, d); !reflect.DeepEqual(got, []string{"delete " + s.ID}) {
		t.Errorf("plan without desired = %v, want the delete", got)
	}
	converge(t, d)

	// A supervised task killed from outside is restarted by the driver.
	s.Restart.Policy = drivers.RestartAlways
	converge(t, d, s)
	first := waitState(t, d, s.ID, drivers.Running)
	ctr(t, dm, ns, "tasks", "kill", "-s", "KILL", s.ID)
	waitFor(t, "restart after a kill", 30*time.Second, func() (bool, string) {
		inst, _ := find(observe(t, d), s.ID)
		return inst.State == drivers.Running && inst.Pid != first.Pid && inst.Restarts == 1, fmt.Sprintf("%+v", inst)
	})
	converge(t, d)
}

func TestOOMKill(t *testing.T) {
	dm := requireContainerd(t)
	d := newDriver(t, dm, ctrd.Config{Namespace: "ctxos-oom"})
	s := shellSpec("ctx.oom.0", "dd if=/dev/zero of=/dev/null bs=128M count=1")
	s.Resources.MemoryBytes = 16 << 20
	s.Restart.Policy = drivers.RestartNever
	converge(t, d, s)
	inst := waitState(t, d, s.ID, drivers.Failed)
	want := "OOM killed (memory limit 16 MiB)"
	if inst.ExitCode != 137 || !strings.Contains(inst.Message, want) {
		t.Errorf("instance = %+v, want exit 137 and %q", inst, want)
	}
	var ev drivers.Event
	waitFor(t, "OOM event", 10*time.Second, func() (bool, string) {
		select {
		case ev = <-d.Events():
		default:
		}
		return ev.ID == s.ID, fmt.Sprintf("%+v", ev)
	})
	if ev.State != drivers.Failed || !strings.Contains(ev.Message, want) {
		t.Errorf("event = %+v, want failed with %q", ev, want)
	}
	converge(t, d)
}

// TestContainerdRestart stops containerd under a running driver: calls fail
// fast with ErrUnavailable, and once containerd is back the driver finds
// the same containers (their shims kept them running), creates none twice
// and hears exits again.
func TestContainerdRestart(t *testing.T) {
	dm := startContainerd(t)
	const ns = "ctxos-outage"
	d := newDriver(t, dm, ctrd.Config{Namespace: ns, DialTimeout: 500 * time.Millisecond})
	s := shellSpec("ctx.outage.0", "trap 'exit 0' TERM; sleep 1000 & wait")
	s.Image = "oci-archive:" + busyboxArchive(t, "oci")
	s.Restart.BackoffBase = 50 * time.Millisecond
	converge(t, d, s)
	before := waitState(t, d, s.ID, drivers.Running)

	dm.kill()
	start := time.Now()
	_, err := d.Observe(ctxT(t))
	t.Logf("Observe with containerd down failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, ctrd.ErrUnavailable) || !strings.Contains(err.Error(), "containerd at "+dm.socket) {
		t.Errorf("Observe = %v, want ErrUnavailable naming the socket", err)
	}
	other := shellSpec("ctx.outage.1", "sleep 1000")
	if r, err := d.Apply(ctxT(t), drivers.Change{ID: other.ID, Action: drivers.Create, Spec: &other}); !errors.Is(err, ctrd.ErrUnavailable) || r.Result != drivers.ResultFailed {
		t.Errorf("Apply = %+v, %v; want failed with ErrUnavailable", r, err)
	}

	if err := dm.start(); err != nil {
		t.Fatal(err)
	}
	var after drivers.Instance
	waitFor(t, "observe after containerd is back", 30*time.Second, func() (bool, string) {
		obs, err := d.Observe(ctxT(t))
		if err != nil {
			return false, err.Error()
		}
		after, _ = find(obs, s.ID)
		return after.State == drivers.Running, fmt.Sprintf("%+v", obs)
	})
	if after.Pid != before.Pid {
		t.Errorf("pid after containerd restart = %d, want %d (the same task)", after.Pid, before.Pid)
	}
	if reports := converge(t, d, s); len(reports) != 0 {
		t.Errorf("converge after containerd restart = %+v, want nothing", reports)
	}
	if got := dm.containerIDs(t, ns); !reflect.DeepEqual(got, []string{s.ID}) {
		t.Errorf("ctr c ls = %v, want only %s", got, s.ID)
	}
	// The event watch subscribed again: a kill is seen and restarted.
	ctr(t, dm, ns, "tasks", "kill", "-s", "KILL", s.ID)
	waitFor(t, "restart after the kill", 30*time.Second, func() (bool, string) {
		inst, _ := find(observe(t, d), s.ID)
		return inst.State == drivers.Running && inst.Pid != before.Pid, fmt.Sprintf("%+v", inst)
	})
	converge(t, d)
}

func TestStopPolicy(t *testing.T) {
	dm := requireContainerd(t)
	d := newDriver(t, dm, ctrd.Config{Namespace: "ctxos-stop"})
	for _, tc := range []struct {
		name, script string
		stop         drivers.StopPolicy
		log          string // what the container wrote on the way out
	}{
		{"custom signal", `trap 'echo got-usr1; exit 0' USR1; echo ready; sleep 1000 & wait`, drivers.StopPolicy{Signal: "USR1", Grace: 10 * time.Second}, "got-usr1"},
		{"ignored signal, killed after grace", `trap 'echo ignoring-term' TERM; echo ready; while :; do sleep 1 & wait; done`, drivers.StopPolicy{Grace: 200 * time.Millisecond}, "ignoring-term"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := shellSpec("ctx.stop.0", tc.script)
			s.Stop = tc.stop
			converge(t, d, s)
			waitFor(t, "ready", 20*time.Second, func() (bool, string) {
				b, _ := os.ReadFile(d.LogPath(s.ID))
				return strings.Contains(string(b), "ready"), string(b)
			})
			converge(t, d)
			b, _ := os.ReadFile(d.LogPath(s.ID))
			if !strings.Contains(string(b), tc.log) {
				t.Errorf("log after stop lacks %q:\n%s", tc.log, b)
			}
			if got := dm.containerIDs(t, "ctxos-stop"); len(got) != 0 {
				t.Errorf("ctr c ls after delete = %v", got)
			}
			os.Remove(d.LogPath(s.ID))
		})
	}
}

// TestTaskCreatedNeverStarted: an agent that died between creating the task
// and starting it leaves a created task; the next plan starts it.
func TestTaskCreatedNeverStarted(t *testing.T) {
	dm := requireContainerd(t)
	const ns = "ctxos-halftask"
	state := t.TempDir()
	d1 := openDriver(t, dm, ctrd.Config{Namespace: ns, StateDir: state})
	s := shellSpec("ctx.half.0", "trap 'exit 0' TERM; sleep 1000 & wait")
	if err := d1.ApplyHalfwayTask(ctxT(t), drivers.Change{ID: s.ID, Action: drivers.Create, Spec: &s}); err != nil {
		t.Fatal(err)
	}
	d1.Close()
	d2 := newDriver(t, dm, ctrd.Config{Namespace: ns, StateDir: state})
	inst, _ := find(observe(t, d2), s.ID)
	if inst.State != drivers.Failed || !strings.Contains(inst.Message, "never started") {
		t.Errorf("observed %+v, want failed: never started", inst)
	}
	if got, want := plan(t, d2, s), []string{"start " + s.ID}; !reflect.DeepEqual(got, want) {
		t.Fatalf("plan = %v, want %v", got, want)
	}
	converge(t, d2, s)
	waitState(t, d2, s.ID, drivers.Running)
	if got := dm.running(t, ns, s.ID); got != 1 {
		t.Errorf("running tasks = %d, want 1", got)
	}
	converge(t, d2)
}
