// Package containerd is the driver that runs CTX instances as containers on
// containerd and runc.
//
// Every container lives in one containerd namespace (ctxos by default) with
// the instance id as its container id, so a create after a crash or a lost
// reply finds the container it made instead of making a second one. Labels
// (ctxos.instance, ctxos.ctx or ctxos.mid, ctxos.spec-hash) and a container
// extension holding the spec are the only records: Observe lists containers
// by label and their tasks, so a driver built fresh over a running containerd
// adopts what runs without restarting it.
//
// Images come from a registry (pulled once, then used from the local store),
// or from an archive on the node: "oci-archive:/path.tar" or
// "docker-archive:/path.tar", imported and unpacked into the snapshotter
// (overlayfs when the daemon has it, else native). With Config.ImageGC, an
// image no container of the namespace uses any more is removed after a
// delete or replace.
//
// Containers share the host's network, hosts file and resolv.conf; ports in
// the spec are host ports. The task's stdout and stderr go through the shim
// straight to StateDir/logs/<id>/output.log, never through the agent, so a
// workload does not depend on the agent; the driver rotates that file by
// size (copy then truncate, the shim writes with O_APPEND).
//
// While the agent runs, the driver subscribes to the task exit and OOM events
// of its namespace, restarts a container by its restart policy with
// exponential backoff, and reports exits as [drivers.Event]s; an exit caused
// by the memory limit says "OOM killed (memory limit …)". Drift that happens
// while nobody listens (a task killed or deleted, a container removed with
// ctr) shows in the next Observe, and the plan starts or creates it again.
//
// When containerd cannot be reached, Observe and Apply fail within
// Config.DialTimeout with an error wrapping [ErrUnavailable]; the next call
// after the daemon is back reconnects. Containers keep running meanwhile
// (their shims do not need the daemon), and their ids being deterministic, a
// create retried across the outage finds the container instead of making a
// second.
//
// Run one driver per namespace and node: two would both supervise the same
// containers. Their restarts cannot duplicate a container (containerd holds
// one task per container), but they would race.
package containerd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/ctxos/ctxos/drivers"
)

// Type is the driver's name in desired state.
const Type = "containerd"

var (
	_ drivers.Driver      = (*Driver)(nil)
	_ drivers.EventSource = (*Driver)(nil)
)

// Defaults of [Config].
const (
	DefaultSocket    = "/run/containerd/containerd.sock"
	DefaultNamespace = "ctxos"
)

// Errors of the containerd driver; they come wrapped with the instance id,
// the image or the socket.
var (
	// ErrUnavailable: containerd cannot be reached at the configured
	// socket. Retrying after the daemon is back succeeds.
	ErrUnavailable = errors.New("containerd unavailable")
	// ErrImage: the spec's image cannot be found, pulled, imported or
	// unpacked.
	ErrImage = errors.New("image not available")
	// ErrCommandNotFound: the command (or the image's entrypoint) is not in
	// the image.
	ErrCommandNotFound = errors.New("command not found in image")
)

// Labels the driver sets on every container it creates; Observe finds its
// containers by labelInstance.
const (
	labelInstance = "ctxos.instance"
	labelCTX      = "ctxos.ctx"
	labelMID      = "ctxos.mid"
	labelSpecHash = "ctxos.spec-hash"
	labelRestarts = "ctxos.restarts"
	labelExit     = "ctxos.exit-message" // why the last task ended, for Observe after an agent restart
	labelImage    = "ctxos.image"        // on images the driver imported or pulled: eligible for GC
	extSpec       = "ctxos.spec"         // container extension holding the JSON spec
)

// Config configures a Driver. Zero fields take the defaults noted.
type Config struct {
	// Socket is containerd's gRPC socket (DefaultSocket).
	Socket string
	// Namespace is the containerd namespace of every container and image
	// (DefaultNamespace).
	Namespace string
	// StateDir holds logs/<id>/output.log. Required.
	StateDir string
	// Snapshotter unpacks images and holds root filesystems; "" picks
	// overlayfs when containerd has it working, else native.
	Snapshotter string
	// ImageGC removes images no container of the namespace uses after a
	// delete or replace.
	ImageGC bool
	// DialTimeout bounds how long a call waits to learn containerd is
	// unreachable (2s).
	DialTimeout time.Duration
	// PullTimeout bounds a registry pull (5m).
	PullTimeout time.Duration
	// LogMaxBytes is the size at which output.log is rotated (10 MiB).
	LogMaxBytes int64
	// LogKeep is how many rotated files are kept, output.log.1…N (3).
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

// Driver runs containers on containerd. Build it with [New].
type Driver struct {
	cfg    Config
	now    func() time.Time
	log    *slog.Logger
	events chan drivers.Event

	// life orders Close after every operation in flight: operations hold
	// it shared (enter), Close exclusively.
	life     sync.RWMutex
	isClosed bool
	done     chan struct{}
	cancel   context.CancelFunc // ends the event watch
	wg       sync.WaitGroup

	initOnce       sync.Once
	subscribed     chan struct{} // closed once the event watch is live
	subscribedOnce sync.Once
	initErr        error
	client         *containerd.Client
	bg             context.Context // namespaced context of the driver's own goroutines

	snapOnce sync.Once
	snap     string
	snapErr  error

	// images: creates hold it shared from resolving an image until the
	// container that uses it exists; image GC holds it exclusively.
	images sync.RWMutex

	mu       sync.Mutex
	units    map[string]*unit
	fetching map[string]*sync.Mutex // per image name: one import or pull at a time

	// cgroupRoot is where the host's cgroup tree is mounted
	// (/sys/fs/cgroup); tests point it elsewhere to read CPU time through
	// containerd's metrics instead.
	cgroupRoot string

	// haltAfterContainer makes a create stop after the container exists
	// and before its task: tests play an agent that died there.
	haltAfterContainer bool
	// haltAfterTask makes a start stop after the task exists and before it
	// starts.
	haltAfterTask bool
}

// unit is the driver's live view of one instance: what supervision needs
// between events. The durable state is in containerd.
type unit struct {
	id string
	op sync.Mutex // held for a whole operation: an Apply, a restart

	mu         sync.Mutex // guards the fields below
	gen        uint64     // bumped by every start and stop; older exits and timers do nothing
	pid        uint32     // of the task this driver started or saw running
	startedAt  time.Time  // of that task, read from /proc while it ran
	starting   bool       // an Apply is between creating the task and starting it
	backoff    bool       // exited, restart pending
	message    string     // why it is in backoff
	quickExits int
	oom        bool // a /tasks/oom event came for the current task
}

// New returns a driver over cfg. It does not contact containerd: the first
// Observe or Apply connects, and starts the event watch.
func New(cfg Config) (*Driver, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("containerd driver: StateDir is required")
	}
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.PullTimeout <= 0 {
		cfg.PullTimeout = 5 * time.Minute
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
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "logs"), 0o750); err != nil {
		return nil, fmt.Errorf("containerd driver: %w", err)
	}
	return &Driver{
		cfg:    cfg,
		now:    cfg.Now,
		log:    cfg.Logger.With("driver", Type),
		events: make(chan drivers.Event, 256),
		done:   make(chan struct{}),
		units:  map[string]*unit{},

		subscribed: make(chan struct{}),
		cgroupRoot: "/sys/fs/cgroup",
	}, nil
}

// Type returns "containerd".
func (d *Driver) Type() string { return Type }

// Events reports exits, backoffs and restarts of supervised containers.
func (d *Driver) Events() <-chan drivers.Event { return d.events }

// Close stops the event watch, restart timers and log rotation, waits for
// Apply calls in flight and closes Events. Containers keep running; a new
// driver adopts them.
func (d *Driver) Close() error {
	d.life.Lock()
	if d.isClosed {
		d.life.Unlock()
		return nil
	}
	d.isClosed = true
	close(d.done)
	if d.cancel != nil {
		d.cancel()
	}
	d.life.Unlock()
	d.wg.Wait()
	close(d.events)
	if d.client != nil {
		return d.client.Close()
	}
	return nil
}

// enter starts an operation; it reports false once the driver is closed.
// Every true is paired with leave.
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

// connect builds the client once and starts the driver's goroutines; the
// caller is inside enter/leave. grpc dials lazily, so this succeeds whether
// or not containerd runs.
func (d *Driver) connect() error {
	d.initOnce.Do(func() {
		c, err := containerd.New(d.cfg.Socket,
			containerd.WithDefaultNamespace(d.cfg.Namespace),
			containerd.WithTimeout(d.cfg.DialTimeout))
		if err != nil {
			d.initErr = fmt.Errorf("%w: containerd at %s: %v", ErrUnavailable, d.cfg.Socket, err)
			return
		}
		d.client = c
		bg, cancel := context.WithCancel(context.Background())
		d.bg, d.cancel = d.nsCtx(bg), cancel
		d.wg.Add(2)
		go d.watchEvents()
		go d.rotateLoop()
		// Exits between now and a live subscription would go unheard,
		// so the first call waits for it (unless containerd is down).
		t := time.NewTimer(d.cfg.DialTimeout)
		defer t.Stop()
		select {
		case <-d.subscribed:
		case <-t.C:
		}
	})
	return d.initErr
}

// ready connects and checks that containerd's socket accepts connections,
// so a call fails within DialTimeout with ErrUnavailable instead of waiting
// on gRPC's reconnect backoff. After an outage it waits, within
// DialTimeout, for gRPC to reconnect, so the first call after the daemon is
// back goes through.
func (d *Driver) ready(ctx context.Context) (context.Context, error) {
	if err := d.connect(); err != nil {
		return nil, err
	}
	dl := net.Dialer{Timeout: d.cfg.DialTimeout}
	conn, err := dl.DialContext(ctx, "unix", d.cfg.Socket)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: containerd at %s: %v", ErrUnavailable, d.cfg.Socket, err)
	}
	conn.Close()
	if cc, ok := d.client.Conn().(*grpc.ClientConn); ok {
		// After an outage gRPC retries on a backoff of up to DialTimeout;
		// the socket answers again, so wait for that retry rather than
		// fail the call.
		wctx, cancel := context.WithTimeout(ctx, d.cfg.DialTimeout)
		for s := cc.GetState(); s == connectivity.TransientFailure || s == connectivity.Connecting; s = cc.GetState() {
			if !cc.WaitForStateChange(wctx, s) {
				break
			}
		}
		cancel()
	}
	return d.nsCtx(ctx), nil
}

// wrap marks errors that mean containerd went away as ErrUnavailable.
func (d *Driver) wrap(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	if errdefs.IsUnavailable(err) || status.Code(err) == codes.Unavailable {
		return fmt.Errorf("%w: containerd at %s: %v", ErrUnavailable, d.cfg.Socket, err)
	}
	return err
}

// unitOf returns the unit of id, creating it.
func (d *Driver) unitOf(id string) *unit {
	d.mu.Lock()
	defer d.mu.Unlock()
	u, ok := d.units[id]
	if !ok {
		u = &unit{id: id}
		d.units[id] = u
	}
	return u
}

// LogPath returns the file an instance's stdout and stderr go to.
func (d *Driver) LogPath(id string) string {
	return filepath.Join(d.cfg.StateDir, "logs", id, "output.log")
}
