package process

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ctxos/ctxos/drivers"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// start launches spec's process for u and records it. The record is written
// (state Starting, with a fresh start id) before the process starts and
// again with its pid after, so a crash in between leaves a record the next
// driver resolves by the start id in the process's environment. The caller
// holds u.op. On error nothing runs.
func (d *Driver) start(u *unit, spec drivers.Spec, restarts, quickExits int) error {
	startID, err := newStartID()
	if err != nil {
		return err
	}
	cmd, err := d.command(spec, startID)
	if err != nil {
		return err
	}
	stdout, stderr, err := d.openLogs(spec.ID)
	if err != nil {
		return err
	}
	defer stdout.Close()
	defer stderr.Close()
	// Handing the files themselves to the child (not a pipe) is what lets
	// a workload outlive the agent: nothing it writes passes through us.
	cmd.Stdout, cmd.Stderr = stdout, stderr

	rec := record{
		ID: spec.ID, SpecHash: spec.Hash(), Spec: spec, StartID: startID,
		State: drivers.Starting, Restarts: restarts, QuickExits: quickExits,
	}
	if err := d.writeRecord(rec); err != nil {
		return err
	}
	u.mu.Lock()
	u.present, u.rec = true, rec
	u.mu.Unlock()

	var proc launched
	if spec.Isolate {
		proc, err = d.launchIsolated(spec, cmd)
	} else {
		proc, err = launchHost(cmd)
	}
	if err != nil {
		return fmt.Errorf("instance %q: start %s: %w", spec.ID, cmd.Path, err)
	}
	if d.haltAfterLaunch {
		go proc.wait() // as init would reap it once the agent is gone
		return nil
	}
	pid := proc.pid
	st, err := readProcStat(pid)
	if err != nil {
		// The process is ours and already gone.
		proc.wait()
		return fmt.Errorf("instance %q: read start time of pid %d: %w", spec.ID, pid, err)
	}
	rec.Pid, rec.StartTicks, rec.StartedAt, rec.State = pid, st.startTicks, d.now(), drivers.Running
	if err := d.writeRecord(rec); err != nil {
		// Without a record the process would be unknown to the next
		// agent: stop it rather than leave an orphan.
		signalLive(pid, unix.SIGKILL)
		proc.wait()
		return err
	}
	exited := make(chan struct{})
	u.mu.Lock()
	u.gen++
	gen := u.gen
	u.rec, u.exited = rec, exited
	u.mu.Unlock()

	go d.waitChild(u, gen, proc.wait, exited)
	return nil
}

// launched is a started process: its host pid and how to reap it.
type launched struct {
	pid  int
	wait func() (*os.ProcessState, error)
}

func launchHost(cmd *exec.Cmd) (launched, error) {
	if err := cmd.Start(); err != nil {
		return launched{}, err
	}
	return launched{pid: cmd.Process.Pid, wait: func() (*os.ProcessState, error) {
		err := cmd.Wait()
		return cmd.ProcessState, err
	}}, nil
}

// command builds the exec.Cmd for spec, refusing a missing command,
// directory or user with an error naming the instance and what is missing.
func (d *Driver) command(spec drivers.Spec, startID string) (*exec.Cmd, error) {
	env := map[string]string{"PATH": os.Getenv("PATH")}
	if env["PATH"] == "" {
		env["PATH"] = defaultPath
	}
	if h := os.Getenv("HOME"); h != "" {
		env["HOME"] = h
	}
	var cred *syscall.Credential
	if spec.User != "" {
		c, home, err := credential(spec.User, d.euid)
		if err != nil {
			return nil, fmt.Errorf("instance %q: %w", spec.ID, err)
		}
		cred = c
		env["HOME"], env["USER"], env["LOGNAME"] = home, spec.User, spec.User
	}
	for k, v := range spec.Env {
		env[k] = v
	}
	env[envInstance], env[envStartID] = spec.ID, startID

	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: instance %q: dir %q does not exist or is not a directory", ErrDirNotFound, spec.ID, dir)
	}
	path, err := lookPath(spec.Command, env["PATH"], dir)
	if err != nil {
		return nil, fmt.Errorf("%w: instance %q: command %q: %v", ErrCommandNotFound, spec.ID, spec.Command, err)
	}

	cmd := &exec.Cmd{Path: path, Args: append([]string{spec.Command}, spec.Args...), Dir: dir}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	// Its own session: a Ctrl-C or SIGHUP aimed at the agent's terminal does
	// not reach it, and the session is one process group to signal on stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cred}
	return cmd, nil
}

// lookPath finds command as exec.LookPath does, but in the PATH the process
// will have, and relative to its working directory when command has a slash.
func lookPath(command, pathEnv, dir string) (string, error) {
	if strings.Contains(command, "/") {
		p := command
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := executable(p); err != nil {
			return "", err
		}
		return p, nil
	}
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, command)
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in PATH %s", pathEnv)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// credential returns the uid and gids to run as name (a user name or a
// numeric uid) and its home directory. Only root can switch; for any other
// agent user, name must be the agent's own user and no switch happens.
func credential(name string, euid int) (*syscall.Credential, string, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if !errors.As(err, &unknown) {
			return nil, "", fmt.Errorf("%w %q: %v", ErrUser, name, err)
		}
		if _, nerr := strconv.Atoi(name); nerr != nil {
			return nil, "", fmt.Errorf("%w %q: no such user", ErrUser, name)
		}
		if u, err = user.LookupId(name); err != nil {
			// A bare uid without a passwd entry is fine for a process.
			u = &user.User{Uid: name, Gid: name, HomeDir: "/"}
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, "", fmt.Errorf("%w %q: uid %q: %v", ErrUser, name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, "", fmt.Errorf("%w %q: gid %q: %v", ErrUser, name, u.Gid, err)
	}
	if euid != 0 {
		if int(uid) != euid {
			return nil, "", fmt.Errorf("%w %q: the agent runs as uid %d and only root can run processes as another user", ErrUser, name, euid)
		}
		return nil, u.HomeDir, nil
	}
	var groups []uint32
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				groups = append(groups, uint32(n))
			}
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}, u.HomeDir, nil
}

func newStartID() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("start id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// load reads u's record the first time the driver meets the instance and
// re-adopts its process: the pid must be alive AND have the recorded start
// time, otherwise the pid was reused and the process is not ours. The caller
// holds u.op.
func (d *Driver) load(u *unit) {
	u.mu.Lock()
	loaded := u.loaded
	u.mu.Unlock()
	if loaded {
		return
	}
	rec, err := d.readRecord(u.id)
	switch {
	case errors.Is(err, os.ErrNotExist):
		u.mu.Lock()
		u.loaded, u.present = true, false
		u.mu.Unlock()
		return
	case err != nil:
		u.mu.Lock()
		u.loaded, u.present = true, true
		u.rec = record{ID: u.id, State: drivers.Failed, ExitCode: -1, Message: err.Error()}
		u.mu.Unlock()
		d.log.Error("unreadable instance record", "id", u.id, "err", err)
		return
	}

	changed := false
	if rec.State == drivers.Starting && rec.Pid == 0 {
		// The previous agent stopped between starting the process and
		// recording its pid: look for it by its start id.
		pid, ticks, ferr := findByStartID(rec.StartID)
		if rec.Spec.Isolate {
			// The container's state knows its init even before it has
			// exec'd the command (and so before it carries the start id).
			if p, t, ok := d.containerInit(u.id); ok {
				pid, ticks, ferr = p, t, nil
			}
		}
		if ferr == nil {
			rec.Pid, rec.StartTicks, rec.State, rec.StartedAt = pid, ticks, drivers.Running, d.now()
			rec.Message = "found by start id after an interrupted start"
		} else {
			rec.State, rec.ExitCode = drivers.Failed, -1
			rec.Message = "start interrupted: the agent stopped before the process started"
		}
		changed = true
	}
	var pidfd = -1
	if rec.Pid > 0 && (rec.State == drivers.Running || rec.State == drivers.Starting) {
		pidfd = openPidfd(rec.Pid, rec.StartTicks)
		if pidfd < 0 {
			// Gone, or the pid now belongs to another process (its start
			// time differs): either way not ours to watch or signal.
			rec.State, rec.ExitCode = drivers.Failed, -1
			rec.Message = fmt.Sprintf("process %d exited while no agent supervised it (exit code unknown)", rec.Pid)
			rec.Pid, rec.StartTicks = 0, 0
			changed = true
		} else if rec.State != drivers.Running {
			rec.State, changed = drivers.Running, true
		}
	}
	if rec.State == drivers.Backoff {
		// Nobody counts down the backoff of a stopped agent; the plan
		// starts the instance again by its restart policy.
		rec.State = drivers.Failed
		if rec.ExitCode == 0 {
			rec.State = drivers.Exited
		}
		rec.Message = "agent stopped during backoff: " + rec.Message
		changed = true
	}
	if changed {
		if err := d.writeRecord(rec); err != nil {
			d.log.Error("update record on adoption", "id", u.id, "err", err)
		}
	}
	u.mu.Lock()
	u.loaded, u.present, u.rec = true, true, rec
	if pidfd >= 0 {
		u.gen++
		gen := u.gen
		exited := make(chan struct{})
		u.exited = exited
		d.wg.Add(1)
		go d.watchAdopted(u, gen, pidfd, exited)
	}
	u.mu.Unlock()
	if pidfd >= 0 {
		d.log.Info("adopted", "id", u.id, "pid", rec.Pid)
	}
}

// openPidfd returns a pidfd for pid if it is the process that started at
// ticks, or -1. The start time is checked after opening: the pidfd pins the
// process, so a pid reused in between cannot slip through.
func openPidfd(pid int, ticks uint64) int {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1
	}
	if !alive(pid, ticks) {
		unix.Close(fd)
		return -1
	}
	return fd
}
