//go:build cgo

package process

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // runs before the Go runtime in "runc init"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"golang.org/x/sys/unix"

	"github.com/ctxos/ctxos/drivers"
)

// libcontainer starts a container's init by running /proc/self/exe with the
// argument "init" and its sync pipe in the environment: any binary that
// imports this package becomes that init when so called. The environment
// check keeps `ctxos init` the CLI command.
func init() {
	if len(os.Args) > 1 && os.Args[1] == "init" && os.Getenv("_LIBCONTAINER_INITPIPE") != "" {
		libcontainer.Init()
	}
}

// isolateSupported: this build carries libcontainer's nsenter (cgo).
const isolateSupported = true

const cpuPeriod = 100000 // µs; CPUMilli becomes a quota of this period

func (d *Driver) containerRoot() string { return filepath.Join(d.cfg.StateDir, "runc") }

// launchIsolated runs cmd as the init of a libcontainer container: its own
// mount, pid, uts and ipc namespaces, the host's root read-only, a private
// /proc, /dev and /tmp, and cgroup limits for memory, CPU and pids. The
// network stays the host's, like a plain process.
func (d *Driver) launchIsolated(spec drivers.Spec, cmd *exec.Cmd) (launched, error) {
	if d.euid != 0 {
		return launched{}, fmt.Errorf("%w: isolate: true needs the agent to run as root", drivers.ErrUnsupported)
	}
	d.destroyContainer(spec.ID) // a container left by an earlier start
	cfg, err := d.containerConfig(spec)
	if err != nil {
		return launched{}, err
	}
	c, err := libcontainer.Create(d.containerRoot(), spec.ID, cfg)
	if err != nil {
		return launched{}, fmt.Errorf("create container: %w", err)
	}
	p := &libcontainer.Process{
		Args:   cmd.Args,
		Env:    cmd.Env,
		Cwd:    cmd.Dir,
		Stdout: cmd.Stdout,
		Stderr: cmd.Stderr,
		Init:   true,
	}
	p.Args[0] = cmd.Path
	if cr := cmd.SysProcAttr.Credential; cr != nil {
		p.UID, p.GID = int(cr.Uid), int(cr.Gid)
		for _, g := range cr.Groups {
			p.AdditionalGroups = append(p.AdditionalGroups, int(g))
		}
	}
	if err := c.Run(p); err != nil {
		c.Destroy()
		return launched{}, fmt.Errorf("run container: %w", err)
	}
	pid, err := p.Pid()
	if err != nil {
		c.Destroy()
		return launched{}, fmt.Errorf("container pid: %w", err)
	}
	// Run returns once the init is told to exec; wait until it has, so
	// that "running" means the command runs and carries its start id.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || strings.Contains(string(env), envStartID+"=") {
			break // gone (the supervisor sees the exit) or exec'd
		}
	}
	return launched{pid: pid, wait: func() (*os.ProcessState, error) {
		ps, err := p.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			ps, err = ee.ProcessState, nil
		}
		return ps, err
	}}, nil
}

// destroyContainer removes the container of id and its cgroups, if any. A
// container still running is one the records lost (an interrupted start):
// it is killed so that exactly one instance runs.
func (d *Driver) destroyContainer(id string) {
	c, err := libcontainer.Load(d.containerRoot(), id)
	if err != nil {
		return
	}
	if st, err := c.Status(); err == nil && st != libcontainer.Stopped {
		if err := c.Signal(unix.SIGKILL); err != nil {
			d.log.Warn("kill container", "id", id, "err", err)
		}
		for range 500 { // up to 5s for the kernel to tear the namespace down
			if st, err := c.Status(); err != nil || st == libcontainer.Stopped {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := c.Destroy(); err != nil {
		d.log.Warn("destroy container", "id", id, "err", err)
	}
}

// containerInit returns the host pid and start ticks of id's container
// init if the container runs: how an interrupted isolated start is found.
func (d *Driver) containerInit(id string) (int, uint64, bool) {
	c, err := libcontainer.Load(d.containerRoot(), id)
	if err != nil {
		return 0, 0, false
	}
	st, err := c.State()
	if err != nil || !alive(st.InitProcessPid, st.InitProcessStartTime) {
		return 0, 0, false
	}
	return st.InitProcessPid, st.InitProcessStartTime, true
}

// hostHidden are the top-level host directories a container gets its own
// of instead of the host's.
var hostHidden = map[string]bool{"proc": true, "sys": true, "dev": true, "tmp": true, "run": true, "lost+found": true}

// containerConfig builds the container: the rootfs is an empty directory
// under the state dir (the host's / cannot be pivoted into itself) with
// every top-level host directory bound into it read-only, and top-level
// symlinks (a merged /usr's /bin -> usr/bin) copied.
func (d *Driver) containerConfig(spec drivers.Spec) (*configs.Config, error) {
	rootfs := filepath.Join(d.cfg.StateDir, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	entries, err := os.ReadDir("/")
	if err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	var binds []*configs.Mount
	for _, e := range entries {
		name := e.Name()
		if hostHidden[name] {
			continue
		}
		host := "/" + name
		if e.Type()&os.ModeSymlink != 0 {
			target, err := os.Readlink(host)
			if err != nil {
				return nil, fmt.Errorf("rootfs: %w", err)
			}
			link := filepath.Join(rootfs, name)
			if cur, err := os.Readlink(link); err != nil || cur != target {
				os.Remove(link)
				if err := os.Symlink(target, link); err != nil {
					return nil, fmt.Errorf("rootfs: %w", err)
				}
			}
			continue
		}
		if !e.IsDir() {
			continue
		}
		binds = append(binds, &configs.Mount{Source: host, Destination: host, Device: "bind",
			Flags: unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY})
	}
	if spec.Dir != "" && spec.Dir != "/" {
		// The working directory stays writable, wherever it is.
		binds = append(binds, &configs.Mount{Source: spec.Dir, Destination: spec.Dir, Device: "bind",
			Flags: unix.MS_BIND | unix.MS_REC})
	}

	// No device cgroup rules: their manager needs an eBPF library this
	// module does not carry. /dev is a fresh tmpfs holding only the allowed
	// device nodes, and mknod is not among the capabilities.
	res := &cgroups.Resources{}
	if spec.Resources.MemoryBytes > 0 {
		res.Memory = spec.Resources.MemoryBytes
	}
	if spec.Resources.CPUMilli > 0 {
		res.CpuPeriod = cpuPeriod
		res.CpuQuota = spec.Resources.CPUMilli * cpuPeriod / 1000
	}
	if spec.Resources.Pids > 0 {
		pids := spec.Resources.Pids
		res.PidsLimit = &pids
	}
	const mntFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
		"CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_AUDIT_WRITE"}
	cfg := &configs.Config{
		Rootfs:     rootfs,
		Readonlyfs: true,
		Hostname:   spec.ID,
		Namespaces: configs.Namespaces{
			{Type: configs.NEWNS}, {Type: configs.NEWPID}, {Type: configs.NEWUTS}, {Type: configs.NEWIPC},
		},
		Capabilities:  &configs.Capabilities{Bounding: caps, Effective: caps, Permitted: caps},
		Cgroups:       &cgroups.Cgroup{Path: "/ctxos/" + spec.ID, Resources: res},
		Devices:       specconv.AllowedDevices,
		MaskPaths:     []string{"/proc/kcore", "/sys/firmware"},
		ReadonlyPaths: []string{"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"},
		Mounts: []*configs.Mount{
			{Source: "proc", Destination: "/proc", Device: "proc", Flags: mntFlags},
			{Source: "tmpfs", Destination: "/dev", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_STRICTATIME, Data: "mode=755"},
			{Source: "devpts", Destination: "/dev/pts", Device: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620"},
			{Source: "shm", Destination: "/dev/shm", Device: "tmpfs", Flags: mntFlags, Data: "mode=1777,size=65536k"},
			{Source: "tmpfs", Destination: "/tmp", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777"},
		},
		NoNewKeyring: true,
	}
	cfg.Mounts = append(cfg.Mounts, binds...)
	for _, m := range spec.Mounts {
		flags := unix.MS_BIND | unix.MS_REC
		if m.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		typ := m.Type
		if typ == "" {
			typ = "bind"
		}
		cfg.Mounts = append(cfg.Mounts, &configs.Mount{Source: m.Source, Destination: m.Target, Device: typ, Flags: flags})
	}
	return cfg, nil
}
