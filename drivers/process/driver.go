// Package process is the driver for host processes supervised by the agent.
//
// A process runs in its own session, with stdout and stderr appended straight
// to files under the state dir (never a pipe through the agent), so it lives
// on when the agent stops or crashes. Each instance has a durable record,
// StateDir/instances/<id>.json, holding its pid and the process start time;
// a new driver over the same state dir re-adopts a process whose pid and
// start time both match, without restarting it. While the agent runs, the
// driver watches every process (wait for its children, pidfd for adopted
// ones), restarts it by its restart policy with exponential backoff, and
// reports exits as [drivers.Event]s.
//
// With root and isolate: true, a process runs as the init of a runc
// libcontainer container: its own mount, pid, uts and ipc namespaces, the
// host's directories bound read-only into an empty rootfs, a private /proc,
// /dev and /tmp, the host's network, and cgroup limits for memory, CPU and
// pids. Any binary importing this package can serve as the container's init
// (libcontainer re-executes /proc/self/exe init); building it needs cgo.
package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctxos/ctxos/drivers"
)

// Type is the driver's name in desired state.
const Type = "process"

var (
	_ drivers.Driver      = (*Driver)(nil)
	_ drivers.EventSource = (*Driver)(nil)
)

// Errors of the process driver; they come wrapped with the instance id.
var (
	// ErrCommandNotFound: the spec's command is not in PATH or not
	// executable. Installing it makes a retry succeed.
	ErrCommandNotFound = errors.New("command not found")
	// ErrDirNotFound: the spec's working directory does not exist.
	ErrDirNotFound = errors.New("working directory not found")
	// ErrUser: the spec's user does not exist, or the agent is not root and
	// the user is not the agent's.
	ErrUser = errors.New("cannot run as user")
	// ErrLocked: another process driver holds the state dir.
	ErrLocked = errors.New("state dir is in use by another process driver")
	// ErrCorruptRecord: an instance record cannot be decoded.
	ErrCorruptRecord = errors.New("corrupt instance record")
)

// Environment variables the driver sets in every process it starts.
const (
	envInstance = "CTXOS_INSTANCE"
	envStartID  = "CTXOS_START_ID"
)

// Config configures a Driver. Zero fields take the defaults noted.
type Config struct {
	// StateDir holds instances/ (records), logs/ and the lock. Required.
	StateDir string
	// LogMaxBytes is the size at which a log file is rotated (10 MiB).
	LogMaxBytes int64
	// LogKeep is how many rotated files are kept per log, <name>.log.1…N (3).
	LogKeep int
	// LogCheckInterval is how often log sizes are checked (10s).
	LogCheckInterval time.Duration
	// BackoffReset: a run that lasts this long resets the backoff (10s).
	BackoffReset time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
	// Logger receives the driver's logs (slog.Default()).
	Logger *slog.Logger
}

// Driver runs host processes. Build it with [New].
type Driver struct {
	cfg    Config
	now    func() time.Time
	log    *slog.Logger
	euid   int
	lock   *os.File
	events chan drivers.Event

	// life orders Close after every operation in flight: operations hold
	// it shared (see enter), Close exclusively. Lock order: life, unit.op,
	// unit.mu, mu.
	life     sync.RWMutex
	isClosed bool
	done     chan struct{} // closed by Close
	wakeR    int           // read end of a pipe closed by Close: wakes pidfd pollers
	wakeW    int
	wg       sync.WaitGroup // goroutines Close waits for

	mu    sync.Mutex
	units map[string]*unit

	measured atomic.Pointer[map[string]bool] // ids whose CPUTime Observe reads

	// haltAfterLaunch makes start return right after the process starts,
	// before its pid is recorded: tests use it to play an agent that died
	// there.
	haltAfterLaunch bool
}

// unit is the driver's live view of one instance.
type unit struct {
	id string
	// op is held for a whole operation on the instance: an Apply, the
	// first load of its record, a restart by the supervisor.
	op sync.Mutex

	mu      sync.Mutex // guards the fields below
	loaded  bool       // the record was read and the process re-adopted
	present bool       // a record exists
	removed bool       // deleted: a new unit replaces this one in d.units
	rec     record
	gen     uint64        // bumped at every start and stop; older watchers and timers do nothing
	exited  chan struct{} // closed when the current process has exited; nil if none ran
}

// New returns a driver over cfg.StateDir, creating its directories, and
// takes the state dir's lock: it returns an error wrapping ErrLocked if
// another driver holds it. It starts nothing; instances are found by
// Observe.
func New(cfg Config) (*Driver, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("process driver: StateDir is required")
	}
	if cfg.LogMaxBytes <= 0 {
		cfg.LogMaxBytes = 10 << 20
	}
	if cfg.LogKeep <= 0 {
		cfg.LogKeep = 3
	}
	if cfg.LogCheckInterval <= 0 {
		cfg.LogCheckInterval = 10 * time.Second
	}
	if cfg.BackoffReset <= 0 {
		cfg.BackoffReset = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, dir := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, "instances"), filepath.Join(cfg.StateDir, "logs")} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("process driver: %w", err)
		}
	}
	lockPath := filepath.Join(cfg.StateDir, "lock")
	lock, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("process driver: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, lockPath)
		}
		return nil, fmt.Errorf("process driver: lock %s: %w", lockPath, err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		lock.Close()
		return nil, fmt.Errorf("process driver: pipe: %w", err)
	}
	d := &Driver{
		cfg:    cfg,
		now:    cfg.Now,
		log:    cfg.Logger.With("driver", Type),
		euid:   os.Geteuid(),
		lock:   lock,
		events: make(chan drivers.Event, 256),
		done:   make(chan struct{}),
		wakeR:  p[0],
		wakeW:  p[1],
		units:  map[string]*unit{},
	}
	d.wg.Add(1)
	go d.rotateLoop()
	return d, nil
}

// Type returns "process".
func (d *Driver) Type() string { return Type }

// Events reports exits, backoffs and restarts of supervised processes.
func (d *Driver) Events() <-chan drivers.Event { return d.events }

// LogPaths returns the files an instance's stdout and stderr go to.
func (d *Driver) LogPaths(id string) (stdout, stderr string) {
	dir := filepath.Join(d.cfg.StateDir, "logs", id)
	return filepath.Join(dir, "stdout.log"), filepath.Join(dir, "stderr.log")
}

// Close stops supervision, releases the state dir and closes Events. The
// processes keep running; a new driver re-adopts them.
// It waits for Apply calls in flight.
func (d *Driver) Close() error {
	d.life.Lock()
	if d.isClosed {
		d.life.Unlock()
		return nil
	}
	d.isClosed = true
	close(d.done)
	unix.Close(d.wakeW)
	d.life.Unlock()
	d.wg.Wait()
	unix.Close(d.wakeR)
	close(d.events)       // every emit runs inside enter/leave, so none is left
	return d.lock.Close() // releases the flock
}

// enter starts an operation that may write records or emit events; it
// reports false once the driver is closed. Every true is paired with leave.
func (d *Driver) enter() bool {
	d.life.RLock()
	if d.isClosed {
		d.life.RUnlock()
		return false
	}
	return true
}

func (d *Driver) leave() { d.life.RUnlock() }

// emit sends ev without blocking; callers are inside enter/leave.
func (d *Driver) emit(ev drivers.Event) {
	select {
	case d.events <- ev:
	default:
		d.log.Warn("event dropped: consumer is behind", "id", ev.ID, "state", ev.State)
	}
}

// lockUnit returns the unit of id with its op lock held, its record loaded.
func (d *Driver) lockUnit(id string) *unit {
	for {
		d.mu.Lock()
		u, ok := d.units[id]
		if !ok {
			u = &unit{id: id}
			d.units[id] = u
		}
		d.mu.Unlock()
		u.op.Lock()
		u.mu.Lock()
		removed := u.removed
		u.mu.Unlock()
		if removed {
			u.op.Unlock()
			continue
		}
		d.load(u)
		return u
	}
}

// Observe returns the instances that have a record in the state dir. The
// first time it sees an instance it re-adopts its process if the pid and
// start time in the record match a live process, and watches it from then
// on; a record whose process is gone is reported Failed with the reason,
// for the plan to start it again. A running instance's CPUTime is read
// from the kernel at each call (see cpuTimes) when MeasureCPU asked for it
// (reading the host's process tree costs about 12 µs a process); it is 0
// otherwise and when it cannot be read. It returns an error only if the records directory cannot be read or
// ctx is done.
// MeasureCPU sets the instances whose CPUTime Observe reads from now on
// (drivers.CPUMeter).
func (d *Driver) MeasureCPU(ids []string) {
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	d.measured.Store(&set)
}

func (d *Driver) Observe(ctx context.Context) ([]drivers.Instance, error) {
	if !d.enter() {
		return nil, drivers.ErrClosed
	}
	defer d.leave()
	ids, err := d.recordIDs()
	if err != nil {
		return nil, err
	}
	out := make([]drivers.Instance, 0, len(ids))
	var probes []cpuProbe
	measured := d.measured.Load()
	add := func(r record) { // the caller holds u.mu
		if (r.State == drivers.Running || r.State == drivers.Starting) && r.Pid > 0 && measured != nil && (*measured)[r.ID] {
			probes = append(probes, cpuProbe{out: len(out), id: r.ID, pid: r.Pid, startTicks: r.StartTicks, isolated: r.Spec.Isolate})
		}
		out = append(out, r.instance())
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d.mu.Lock()
		u := d.units[id]
		d.mu.Unlock()
		if u != nil {
			u.mu.Lock()
			if u.loaded {
				if u.present {
					add(u.rec)
				}
				u.mu.Unlock()
				continue
			}
			u.mu.Unlock()
		}
		u = d.lockUnit(id)
		u.mu.Lock()
		if u.present {
			add(u.rec)
		}
		u.mu.Unlock()
		u.op.Unlock()
	}
	for i, t := range cpuTimes(probes) {
		out[probes[i].out].CPUTime = t
	}
	return out, nil
}

// Plan returns [drivers.PlanChanges] after checking each desired spec runs
// on this driver: an error wraps ErrInvalidSpec (no command) or
// ErrUnsupported (an image; isolation without root; mounts without
// isolation).
func (d *Driver) Plan(ctx context.Context, desired []drivers.Spec, observed []drivers.Instance) ([]drivers.Change, error) {
	for _, s := range desired {
		if err := d.checkSpec(s); err != nil {
			return nil, err
		}
	}
	return drivers.PlanChanges(desired, observed)
}

// checkSpec refuses what this driver cannot run. Resource limits without
// isolation are accepted and not enforced: placement uses them. Isolation
// and mounts need root.
func (d *Driver) checkSpec(s drivers.Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.Command == "" {
		return fmt.Errorf("%w: instance %q: command: must not be empty", drivers.ErrInvalidSpec, s.ID)
	}
	if s.Image != "" {
		return fmt.Errorf("%w: instance %q: image: the process driver runs host commands; images need the containerd driver", drivers.ErrUnsupported, s.ID)
	}
	if s.Isolate && !isolateSupported {
		return fmt.Errorf("%w: instance %q: isolate: true is not supported by this build (built without cgo)", drivers.ErrUnsupported, s.ID)
	}
	if s.Isolate && d.euid != 0 {
		return fmt.Errorf("%w: instance %q: isolate: true needs the agent to run as root (it runs as uid %d)", drivers.ErrUnsupported, s.ID, d.euid)
	}
	if len(s.Mounts) > 0 && !s.Isolate {
		return fmt.Errorf("%w: instance %q: mounts: need isolate: true", drivers.ErrUnsupported, s.ID)
	}
	return nil
}

// Apply makes one change, keeping the contract of [drivers.Driver.Apply].
// Create and Replace of an instance that already runs the spec's hash, Start
// of one that runs or is in backoff, and Delete of a missing one report
// "unchanged". A stop sends the spec's stop signal to the process group and
// SIGKILL after its grace period; if ctx ends first, Apply returns ctx's
// error and the process may still run (applying again finishes the stop).
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
		if err := d.checkSpec(*c.Spec); err != nil {
			return drivers.Report{}, err
		}
	}
	u := d.lockUnit(c.ID)
	defer u.op.Unlock()
	u.mu.Lock()
	present, rec := u.present, u.rec
	u.mu.Unlock()
	live := present && rec.instance().Live()

	switch c.Action {
	case drivers.Delete:
		if !present {
			return c.Noop("not present"), nil
		}
		if err := d.stop(ctx, u); err != nil {
			return drivers.Report{}, err
		}
		if rec.Spec.Isolate {
			d.destroyContainer(c.ID)
		}
		if err := d.removeRecord(c.ID); err != nil {
			return drivers.Report{}, err
		}
		u.mu.Lock()
		u.present, u.removed = false, true
		u.mu.Unlock()
		d.mu.Lock()
		if d.units[c.ID] == u {
			delete(d.units, c.ID)
		}
		d.mu.Unlock()
		d.log.Info("deleted", "id", c.ID)
		return c.Done(), nil

	case drivers.Create, drivers.Replace:
		hash := c.Spec.Hash()
		if live && rec.SpecHash == hash {
			return c.Noop(fmt.Sprintf("already %s with spec hash %s", rec.State, hash)), nil
		}
		if present {
			if err := d.stop(ctx, u); err != nil {
				return drivers.Report{}, err
			}
		}
		if err := d.start(u, *c.Spec, 0, 0); err != nil {
			// A failed start leaves no instance, so the next plan
			// proposes a Create again.
			if rerr := d.removeRecord(c.ID); rerr != nil {
				d.log.Error("remove record after failed start", "id", c.ID, "err", rerr)
			}
			u.mu.Lock()
			u.present = false
			u.mu.Unlock()
			return drivers.Report{}, err
		}
		d.log.Info("started", "id", c.ID, "action", c.Action, "pid", u.pid())
		return c.Done(), nil

	case drivers.Start:
		if !present {
			return drivers.Report{}, fmt.Errorf("%w: %s", drivers.ErrNotFound, c.ID)
		}
		if live {
			return c.Noop("already " + string(rec.State)), nil
		}
		if rec.SpecHash != c.Spec.Hash() {
			return drivers.Report{}, fmt.Errorf("%w: start %q: it was created from spec hash %s, the change carries %s; plan again",
				drivers.ErrInvalidChange, c.ID, rec.SpecHash, c.Spec.Hash())
		}
		if err := d.start(u, *c.Spec, rec.Restarts+1, rec.QuickExits); err != nil {
			u.mu.Lock()
			u.rec.State, u.rec.Message = drivers.Failed, "start failed: "+err.Error()
			failed := u.rec
			u.mu.Unlock()
			if werr := d.writeRecord(failed); werr != nil {
				d.log.Error("record failed start", "id", c.ID, "err", werr)
			}
			return drivers.Report{}, err
		}
		d.log.Info("started", "id", c.ID, "action", c.Action, "pid", u.pid())
		return c.Done(), nil
	}
	return drivers.Report{}, fmt.Errorf("%w: %q: unknown action %q", drivers.ErrInvalidChange, c.ID, c.Action)
}

func (u *unit) pid() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.rec.Pid
}
