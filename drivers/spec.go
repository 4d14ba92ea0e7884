package drivers

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Kinds of desired state an instance comes from.
const (
	KindCTX = "ctx"
	KindMID = "mid"
)

// Restart policies. The empty policy means RestartAlways.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

// Defaults a driver applies to fields left zero. They are not written into
// the spec, so a default never changes a spec's hash.
const (
	DefaultBackoffBase = time.Second
	DefaultBackoffMax  = time.Minute
	DefaultStopSignal  = "SIGTERM"
	DefaultStopGrace   = 10 * time.Second
)

// MaxIDLen is the longest instance id: containerd's limit on identifiers, so
// one id works for every backend.
const MaxIDLen = 76

// idRE is containerd's identifier rule narrowed to lower case, which also
// makes an id a valid file name and VFS segment.
var idRE = regexp.MustCompile(`^[a-z0-9]+(?:[._-][a-z0-9]+)*$`)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// Spec is one desired instance on this node. The reconciler builds it from a
// CTX or MID in the snapshot and the placement; a driver uses the fields that
// apply to it and refuses (ErrUnsupported) those it cannot honour.
type Spec struct {
	// ID is deterministic, e.g. "ctx.web.0" or "mid.cache.node1"; it is a
	// file name, a container id and a VFS segment.
	ID   string `json:"id"`
	Kind string `json:"kind"` // KindCTX or KindMID
	Name string `json:"name"` // the CTX or MID name

	Command string            `json:"command,omitempty"` // looked up in PATH when it has no slash
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Dir     string            `json:"dir,omitempty"`  // working directory; "" is the driver's choice
	User    string            `json:"user,omitempty"` // user name or uid; "" is the agent's user
	Image   string            `json:"image,omitempty"`

	Resources Resources         `json:"resources,omitzero"`
	Restart   RestartPolicy     `json:"restart,omitzero"`
	Isolate   bool              `json:"isolate,omitempty"` // own namespaces and cgroup limits
	Ports     map[string]int    `json:"ports,omitempty"`   // name → port
	Mounts    []Mount           `json:"mounts,omitempty"`
	Stop      StopPolicy        `json:"stop,omitzero"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Params are driver-specific settings of a MID (e.g. a Redis role).
	Params map[string]string `json:"params,omitempty"`
}

// Resources are limits; zero means no limit.
type Resources struct {
	CPUMilli    int64 `json:"cpu_milli,omitempty"` // 1000 = one core
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	Pids        int64 `json:"pids,omitempty"`
	GPUs        int   `json:"gpus,omitempty"`
}

// RestartPolicy says when a driver restarts an instance that exited, and how
// long it waits: BackoffBase doubled per quick exit, capped at BackoffMax.
type RestartPolicy struct {
	Policy      string        `json:"policy,omitempty"` // RestartAlways (""), RestartOnFailure, RestartNever
	BackoffBase time.Duration `json:"backoff_base,omitempty"`
	BackoffMax  time.Duration `json:"backoff_max,omitempty"`
}

// Mount binds Source into the instance at Target.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	Type     string `json:"type,omitempty"` // "" is a bind mount
	ReadOnly bool   `json:"read_only,omitempty"`
}

// StopPolicy is how an instance is stopped: Signal, then SIGKILL after Grace.
type StopPolicy struct {
	Signal string        `json:"signal,omitempty"` // e.g. "SIGTERM", "TERM", "SIGINT"
	Grace  time.Duration `json:"grace,omitempty"`
}

// Hash is a deterministic content hash of the spec. Two specs with the same
// hash run the same way; a changed hash means the instance is replaced.
// Empty maps and slices hash like absent ones.
func (s Spec) Hash() string {
	b, err := json.Marshal(s.normalized())
	if err != nil {
		// Every field is a plain value, string, slice or string-keyed map.
		panic(fmt.Sprintf("drivers: marshal spec %s: %v", s.ID, err))
	}
	sum := sha256.Sum256(append([]byte("ctxos.spec.v1\n"), b...))
	return hex.EncodeToString(sum[:16])
}

func (s Spec) normalized() Spec {
	if len(s.Args) == 0 {
		s.Args = nil
	}
	if len(s.Env) == 0 {
		s.Env = nil
	}
	if len(s.Ports) == 0 {
		s.Ports = nil
	}
	if len(s.Mounts) == 0 {
		s.Mounts = nil
	}
	if len(s.Labels) == 0 {
		s.Labels = nil
	}
	if len(s.Params) == 0 {
		s.Params = nil
	}
	return s
}

// RestartMode is Restart.Policy with the default applied.
func (s Spec) RestartMode() string {
	if s.Restart.Policy == "" {
		return RestartAlways
	}
	return s.Restart.Policy
}

// Backoff returns the wait before restart number n (n ≥ 1 counts quick exits
// in a row): BackoffBase·2^(n-1), capped at BackoffMax, with defaults applied.
func (s Spec) Backoff(n int) time.Duration {
	base, max := s.Restart.BackoffBase, s.Restart.BackoffMax
	if base <= 0 {
		base = DefaultBackoffBase
	}
	if max <= 0 {
		max = DefaultBackoffMax
	}
	if max < base {
		max = base
	}
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// StopSignal returns the stop signal with the default applied.
func (s Spec) StopSignal() unix.Signal {
	sig, err := ParseSignal(s.Stop.Signal)
	if err != nil {
		return unix.SIGTERM
	}
	return sig
}

// StopGrace returns the grace period with the default applied.
func (s Spec) StopGrace() time.Duration {
	if s.Stop.Grace <= 0 {
		return DefaultStopGrace
	}
	return s.Stop.Grace
}

// ParseSignal turns "SIGTERM", "TERM" or "" (the default) into a signal.
func ParseSignal(name string) (unix.Signal, error) {
	if name == "" {
		name = DefaultStopSignal
	}
	n := strings.ToUpper(name)
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	sig := unix.SignalNum(n)
	if sig == 0 {
		return 0, fmt.Errorf("unknown signal %q", name)
	}
	return sig, nil
}

// ValidID reports whether id may name an instance: lower-case letters and
// digits in groups joined by single '.', '_' or '-', at most MaxIDLen long.
func ValidID(id string) bool { return len(id) <= MaxIDLen && idRE.MatchString(id) }

// Validate returns an error wrapping ErrInvalidSpec, naming the instance and
// the field, for a spec no driver can run. Driver-specific checks (a command
// for the process driver, an image for containerd) belong to the driver.
func (s Spec) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: instance %q: %s: %s", ErrInvalidSpec, s.ID, field, fmt.Sprintf(format, args...))
	}
	if !ValidID(s.ID) {
		return bad("id", "must be groups of [a-z0-9] joined by single '.', '_' or '-', at most %d characters", MaxIDLen)
	}
	if s.Kind != KindCTX && s.Kind != KindMID {
		return bad("kind", "%q is not %q or %q", s.Kind, KindCTX, KindMID)
	}
	if !nameRE.MatchString(s.Name) {
		return bad("name", "%q must match [a-z0-9][a-z0-9._-]*", s.Name)
	}
	for k := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return bad("env", "variable name %q must be non-empty without '=' or NUL", k)
		}
	}
	if s.Dir != "" && !filepath.IsAbs(s.Dir) {
		return bad("dir", "%q must be an absolute path", s.Dir)
	}
	r := s.Resources
	if r.CPUMilli < 0 || r.MemoryBytes < 0 || r.Pids < 0 || r.GPUs < 0 {
		return bad("resources", "limits must not be negative")
	}
	switch s.Restart.Policy {
	case "", RestartAlways, RestartOnFailure, RestartNever:
	default:
		return bad("restart.policy", "%q is not %q, %q or %q", s.Restart.Policy, RestartAlways, RestartOnFailure, RestartNever)
	}
	if s.Restart.BackoffBase < 0 || s.Restart.BackoffMax < 0 {
		return bad("restart", "backoff must not be negative")
	}
	if s.Restart.BackoffBase > 0 && s.Restart.BackoffMax > 0 && s.Restart.BackoffMax < s.Restart.BackoffBase {
		return bad("restart.backoff_max", "%s is below backoff_base %s", s.Restart.BackoffMax, s.Restart.BackoffBase)
	}
	for name, p := range s.Ports {
		if !nameRE.MatchString(name) {
			return bad("ports", "name %q must match [a-z0-9][a-z0-9._-]*", name)
		}
		if p < 1 || p > 65535 {
			return bad("ports."+name, "%d is not in 1..65535", p)
		}
	}
	for i, m := range s.Mounts {
		if !filepath.IsAbs(m.Target) {
			return bad(fmt.Sprintf("mounts[%d].target", i), "%q must be an absolute path", m.Target)
		}
		if m.Source == "" {
			return bad(fmt.Sprintf("mounts[%d].source", i), "must not be empty")
		}
	}
	if _, err := ParseSignal(s.Stop.Signal); err != nil {
		return bad("stop.signal", "%v", err)
	}
	if s.Stop.Grace < 0 {
		return bad("stop.grace", "must not be negative")
	}
	return nil
}
