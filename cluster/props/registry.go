package props

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"
	"unicode"
)

var (
	// ErrBadLabel is returned by [DefaultRegistry] for a node label with an
	// empty key, or with a key or value holding spaces or control characters.
	ErrBadLabel = errors.New("bad node label")
	// ErrTimeout is recorded for a collector that did not return within
	// the registry's timeout.
	ErrTimeout = errors.New("collector timed out")
)

// DefaultTimeout bounds one collector's call when Options.Timeout is zero.
// It is generous because its purpose is to survive a hung filesystem or
// driver, not to police slow ones.
const DefaultTimeout = 10 * time.Second

// A PropsCollector fills in part of a node's facts.
type PropsCollector interface {
	// Name identifies the collector in HW.Errors. It is unique within a
	// registry.
	Name() string
	// CollectProps sets the facts it knows in hw, a zero HW owned by this
	// call; the registry merges what was set into the result (non-zero
	// scalars and structs replace, slices append, maps merge), even when
	// an error is returned, so a collector may report part of its facts
	// with the error for the rest. It should return when ctx is done; if
	// it does not, the registry stops waiting after its timeout and
	// ignores whatever the call sets later. Calls to one collector may be
	// concurrent when Props is.
	CollectProps(ctx context.Context, hw *HW) error
}

// A StatusCollector fills in part of a node's status.
type StatusCollector interface {
	// Name identifies the collector in Status.Errors. It is unique within
	// a registry.
	Name() string
	// CollectStatus sets the values it knows in s, a zero Status owned by
	// this call, with the same rules as [PropsCollector.CollectProps]. A
	// collector that reports rates keeps its previous sample and must
	// guard it against concurrent calls.
	CollectStatus(ctx context.Context, s *Status) error
}

// Options configures [NewRegistry] and [DefaultRegistry]. The zero value
// is usable.
type Options struct {
	// Labels are the node's labels, copied into HW.Labels.
	Labels map[string]string
	// GPUs finds accelerators; nil means [NVML].
	GPUs GPUSource
	// Timeout bounds each collector's call; zero means DefaultTimeout.
	Timeout time.Duration
	// CPUWindow is how long the first CPU sample measures, since it has
	// no previous sample to compare with; zero means DefaultCPUWindow,
	// negative means report 0% on the first sample.
	CPUWindow time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives debug messages; nil means slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.CPUWindow == 0 {
		o.CPUWindow = DefaultCPUWindow
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.GPUs == nil {
		o.GPUs = NewNVML(o.Logger)
	}
	return o
}

// Registry runs an ordered list of collectors. Its methods are safe for
// concurrent use.
type Registry struct {
	timeout time.Duration
	now     func() time.Time
	log     *slog.Logger

	mu     sync.Mutex
	props  []PropsCollector
	status []StatusCollector
	names  map[string]bool // "p:"+name or "s:"+name
}

// NewRegistry returns a registry without collectors.
func NewRegistry(opts Options) *Registry {
	opts = opts.withDefaults()
	return &Registry{timeout: opts.Timeout, now: opts.Now, log: opts.Logger, names: map[string]bool{}}
}

// DefaultRegistry returns a registry holding every built-in collector:
// props "cpu", "memory", "disk", "network", "os", "gpu", "labels" and status
// "cpu", "load", "memory", "disk", "diskio", "netio", "uptime".
func DefaultRegistry(opts Options) (*Registry, error) {
	if err := checkLabels(opts.Labels); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	r := NewRegistry(opts)
	r.AddProps(CPUProps{})
	r.AddProps(MemoryProps{})
	r.AddProps(DiskProps{})
	r.AddProps(NetworkProps{})
	r.AddProps(OSProps{})
	r.AddProps(GPUProps{Source: opts.GPUs})
	r.AddProps(LabelProps(maps.Clone(opts.Labels)))
	r.AddStatus(&CPUStatus{Window: opts.CPUWindow})
	r.AddStatus(LoadStatus{})
	r.AddStatus(MemoryStatus{})
	r.AddStatus(DiskStatus{})
	r.AddStatus(&DiskIOStatus{Now: opts.Now})
	r.AddStatus(&NetIOStatus{Now: opts.Now})
	r.AddStatus(UptimeStatus{})
	return r, nil
}

func checkLabels(labels map[string]string) error {
	bad := func(s string) bool {
		return strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
	}
	for k, v := range labels {
		switch {
		case k == "":
			return fmt.Errorf("%w: label with value %q has an empty key", ErrBadLabel, v)
		case bad(k):
			return fmt.Errorf("%w: label key %q holds a space or control character", ErrBadLabel, k)
		case bad(v):
			return fmt.Errorf("%w: label %q: value %q holds a space or control character", ErrBadLabel, k, v)
		}
	}
	return nil
}

// AddProps appends c to the props collectors. It panics if c's name is
// empty or already taken by a props collector, as two collectors with one
// name would hide each other's errors.
func (r *Registry) AddProps(c PropsCollector) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.claim("props", c.Name())
	r.props = append(r.props, c)
}

// AddStatus appends c to the status collectors, with the same rule on
// names as AddProps.
func (r *Registry) AddStatus(c StatusCollector) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.claim("status", c.Name())
	r.status = append(r.status, c)
}

func (r *Registry) claim(kind, name string) {
	if name == "" {
		panic(fmt.Sprintf("props: %s collector with an empty name", kind))
	}
	key := kind + ":" + name
	if r.names[key] {
		panic(fmt.Sprintf("props: two %s collectors named %q", kind, name))
	}
	r.names[key] = true
}

// Props runs every props collector in order and returns the merged facts,
// canonical (collections sorted) and with Capacity derived. A collector's
// failure is recorded in HW.Errors and the others still run; the error is
// non-nil only when ctx ends, and then the facts are partial.
func (r *Registry) Props(ctx context.Context) (HW, error) {
	r.mu.Lock()
	cs := append([]PropsCollector(nil), r.props...)
	r.mu.Unlock()

	var hw HW
	for _, c := range cs {
		var part HW
		finished, err := r.run(ctx, c.Name(), func(ctx context.Context) error { return c.CollectProps(ctx, &part) })
		if finished {
			mergeHW(&hw, part)
		}
		if err := ctx.Err(); err != nil {
			return hw, fmt.Errorf("collect props: %w", err)
		}
		if err != nil {
			if hw.Errors == nil {
				hw.Errors = map[string]string{}
			}
			hw.Errors[c.Name()] = err.Error()
		}
	}
	hw.canonical()
	hw.Capacity = capacityOf(hw)
	return hw, nil
}

// Status runs every status collector in order and returns the merged
// status, with Time set to the registry's clock at the start. Errors
// follow the rules of Props.
func (r *Registry) Status(ctx context.Context) (Status, error) {
	r.mu.Lock()
	cs := append([]StatusCollector(nil), r.status...)
	r.mu.Unlock()

	s := Status{Time: r.now()}
	for _, c := range cs {
		var part Status
		finished, err := r.run(ctx, c.Name(), func(ctx context.Context) error { return c.CollectStatus(ctx, &part) })
		if finished {
			mergeStatus(&s, part)
		}
		if err := ctx.Err(); err != nil {
			return s, fmt.Errorf("collect status: %w", err)
		}
		if err != nil {
			if s.Errors == nil {
				s.Errors = map[string]string{}
			}
			s.Errors[c.Name()] = err.Error()
		}
	}
	return s, nil
}

// run calls collect in its own goroutine so that a collector stuck in a
// system call (statfs on a dead NFS mount, a wedged GPU driver) costs one
// timeout instead of the node's whole status. finished is false when the
// call was abandoned: its output must not be read, it may still be written.
func (r *Registry) run(ctx context.Context, name string, collect func(context.Context) error) (finished bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("collector %s panicked: %v", name, p)
			}
		}()
		done <- collect(cctx)
	}()
	select {
	case err := <-done:
		if err != nil {
			r.log.Debug("collector failed", "collector", name, "err", err)
		}
		return true, err
	case <-cctx.Done():
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		r.log.Warn("collector timed out", "collector", name, "timeout", r.timeout)
		return false, fmt.Errorf("%w after %s", ErrTimeout, r.timeout)
	}
}
