package schema

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/fxamacker/cbor/v2"
)

// Config is the whole desired state of one commit, as CUE evaluates it with
// every default filled in.
type Config struct {
	Ctx map[string]Ctx `cbor:"ctx" json:"ctx"`
	Mid map[string]Mid `cbor:"mid" json:"mid"`
	Ztb Ztb            `cbor:"ztb" json:"ztb"`
	Sys Sys            `cbor:"sys" json:"sys"`
}

// Runtimes of a CTX.
const (
	RuntimeProcess    = "process"
	RuntimeContainerd = "containerd"
)

// Ctx is an execution context (/ctx/<name>): a container or host process
// that runs as Replicas instances, or as many as Autoscale chooses.
type Ctx struct {
	Runtime   string            `cbor:"runtime" json:"runtime"`
	Image     string            `cbor:"image,omitempty" json:"image,omitempty"`
	Command   string            `cbor:"command,omitempty" json:"command,omitempty"`
	Args      []string          `cbor:"args" json:"args"`
	Env       map[string]string `cbor:"env" json:"env"`
	Dir       string            `cbor:"dir,omitempty" json:"dir,omitempty"`
	User      string            `cbor:"user,omitempty" json:"user,omitempty"`
	Isolate   bool              `cbor:"isolate" json:"isolate"`
	Replicas  int               `cbor:"replicas" json:"replicas"`
	Autoscale *Autoscale        `cbor:"autoscale,omitempty" json:"autoscale,omitempty"`
	Resources Resources         `cbor:"resources" json:"resources"`
	Ports     map[string]int    `cbor:"ports" json:"ports"`
	Placement Placement         `cbor:"placement" json:"placement"`
	Health    *Health           `cbor:"health,omitempty" json:"health,omitempty"`
	Restart   string            `cbor:"restart" json:"restart"`
	Mounts    []Mount           `cbor:"mounts" json:"mounts"`
	Rollout   Rollout           `cbor:"rollout" json:"rollout"`
	Stop      Stop              `cbor:"stop" json:"stop"`
	Requires  []string          `cbor:"requires" json:"requires"`
}

// Autoscale lets the scaler choose the number of instances between Min and
// Max, aiming at TargetCPU percent of the requested CPU on average. When it
// is set, Ctx.Replicas is 0 and means nothing.
type Autoscale struct {
	Min       int `cbor:"min" json:"min"`
	Max       int `cbor:"max" json:"max"`
	TargetCPU int `cbor:"targetCPU" json:"targetCPU"`
}

// Resources one instance asks for.
type Resources struct {
	CPU    int    `cbor:"cpu" json:"cpu"` // millicores
	Memory string `cbor:"memory" json:"memory"`
	GPU    int    `cbor:"gpu" json:"gpu"`
}

// MemoryBytes is Memory in bytes.
func (r Resources) MemoryBytes() (int64, error) { return MemoryBytes(r.Memory) }

// Strategies of placement.
const (
	StrategyBinpack = "binpack"
	StrategySpread  = "spread"
)

// Placement constrains and orders the nodes an instance may run on.
type Placement struct {
	Strategy string            `cbor:"strategy" json:"strategy"`
	Nodes    map[string]string `cbor:"nodes" json:"nodes"`     // label → required value
	Devices  []string          `cbor:"devices" json:"devices"` // device kinds required
}

// Health is a health check: exactly one of TCP, HTTP or Exec is set.
type Health struct {
	TCP       *TCPCheck  `cbor:"tcp,omitempty" json:"tcp,omitempty"`
	HTTP      *HTTPCheck `cbor:"http,omitempty" json:"http,omitempty"`
	Exec      *ExecCheck `cbor:"exec,omitempty" json:"exec,omitempty"`
	Interval  string     `cbor:"interval" json:"interval"`
	Timeout   string     `cbor:"timeout" json:"timeout"`
	Threshold int        `cbor:"threshold" json:"threshold"`
}

// TCPCheck passes when a TCP connection to Port opens.
type TCPCheck struct {
	Port int `cbor:"port" json:"port"`
}

// HTTPCheck passes when GET Path on Port answers 2xx or 3xx.
type HTTPCheck struct {
	Port int    `cbor:"port" json:"port"`
	Path string `cbor:"path" json:"path"`
}

// ExecCheck passes when Command exits 0.
type ExecCheck struct {
	Command []string `cbor:"command" json:"command"`
}

// Restart policies.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

// Mount is a bind mount of Source, or a tmpfs, at Target.
type Mount struct {
	Type     string `cbor:"type" json:"type"` // "bind" or "tmpfs"
	Source   string `cbor:"source,omitempty" json:"source,omitempty"`
	Target   string `cbor:"target" json:"target"`
	Readonly bool   `cbor:"readonly" json:"readonly"`
}

// Rollout bounds how many instances may be down at once while changing.
type Rollout struct {
	MaxUnavailable int `cbor:"maxUnavailable" json:"maxUnavailable"`
}

// Stop is how an instance is stopped: Signal, then a kill after Grace.
type Stop struct {
	Signal string `cbor:"signal" json:"signal"`
	Grace  string `cbor:"grace" json:"grace"` // Go duration
}

// Mid is a bare-metal service deployment (/mid/<name>).
type Mid struct {
	Driver   string         `cbor:"driver" json:"driver"`
	Nodes    Nodes          `cbor:"nodes" json:"nodes"`
	Params   map[string]any `cbor:"params" json:"params"`
	Requires []string       `cbor:"requires" json:"requires"`
}

// DecodeParams decodes m.Params into v, the driver's own parameter type
// (such as [ProcessParams]).
func (m Mid) DecodeParams(v any) error {
	b, err := encMode.Marshal(m.Params)
	if err != nil {
		return fmt.Errorf("encode params: %w", err)
	}
	return Decode(b, v)
}

// Nodes chooses the nodes of a MID: exactly one of All, Selector or Count.
type Nodes struct {
	All      bool              `cbor:"all,omitempty" json:"all,omitempty"`
	Selector map[string]string `cbor:"selector,omitempty" json:"selector,omitempty"`
	Count    int               `cbor:"count,omitempty" json:"count,omitempty"`
}

// ProcessParams are the params of a MID whose driver is "process".
type ProcessParams struct {
	Command string            `cbor:"command" json:"command"`
	Args    []string          `cbor:"args" json:"args"`
	Env     map[string]string `cbor:"env" json:"env"`
	Dir     string            `cbor:"dir,omitempty" json:"dir,omitempty"`
	User    string            `cbor:"user,omitempty" json:"user,omitempty"`
	Restart string            `cbor:"restart" json:"restart"`
}

// Ztb is the zero trust bridge policy (/ztb/policy).
type Ztb struct {
	Default string `cbor:"default" json:"default"` // "deny" or "allow"
	Allow   []Rule `cbor:"allow" json:"allow"`
}

// Rule allows traffic from one CTX or MID to another.
type Rule struct {
	From string `cbor:"from" json:"from"`
	To   string `cbor:"to" json:"to"`
	// Port limits the rule to one port of To; the zero PortRef means every
	// port.
	Port PortRef `cbor:"port,omitempty" json:"port,omitempty"`
}

// PortRef is a port number or the name of a port of the target.
type PortRef struct {
	Number int
	Name   string
}

// IsZero reports whether p names no port (used by omitempty).
func (p PortRef) IsZero() bool { return p.Number == 0 && p.Name == "" }

func (p PortRef) String() string {
	if p.Name != "" {
		return p.Name
	}
	return strconv.Itoa(p.Number)
}

// MarshalJSON writes a number or a string, as in CUE.
func (p PortRef) MarshalJSON() ([]byte, error) {
	if p.Name != "" {
		return json.Marshal(p.Name)
	}
	return json.Marshal(p.Number)
}

// UnmarshalJSON reads a number or a string.
func (p *PortRef) UnmarshalJSON(b []byte) error {
	*p = PortRef{}
	if err := json.Unmarshal(b, &p.Number); err == nil {
		return nil
	}
	return json.Unmarshal(b, &p.Name)
}

// MarshalCBOR writes a number or a string, as in CUE.
func (p PortRef) MarshalCBOR() ([]byte, error) {
	if p.Name != "" {
		return encMode.Marshal(p.Name)
	}
	return encMode.Marshal(p.Number)
}

// UnmarshalCBOR reads a number or a string.
func (p *PortRef) UnmarshalCBOR(b []byte) error {
	*p = PortRef{}
	if err := cbor.Unmarshal(b, &p.Number); err == nil {
		return nil
	}
	return cbor.Unmarshal(b, &p.Name)
}

// Sys holds cluster-wide settings (/sys/config).
type Sys struct {
	Sync      SyncConfig      `cbor:"sync" json:"sync"`
	Scheduler SchedulerConfig `cbor:"scheduler" json:"scheduler"`
	Gossip    GossipConfig    `cbor:"gossip" json:"gossip"`
	History   HistoryConfig   `cbor:"history" json:"history"`
}

// SyncConfig: how often gitsync polls.
type SyncConfig struct {
	Interval string `cbor:"interval" json:"interval"`
}

// SchedulerConfig: the default placement strategy.
type SchedulerConfig struct {
	Strategy string `cbor:"strategy" json:"strategy"`
}

// GossipConfig: memberlist timing profile, "lan", "wan" or "local".
type GossipConfig struct {
	Profile string `cbor:"profile" json:"profile"`
}

// HistoryConfig: how long step history is kept, as a Go duration.
type HistoryConfig struct {
	Retention string `cbor:"retention" json:"retention"`
}
