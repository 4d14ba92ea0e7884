package drivers

import "time"

// State is where an instance is in its life.
type State string

const (
	// Starting: the driver has begun to start the instance and has not yet
	// seen it run.
	Starting State = "starting"
	// Running: the instance runs.
	Running State = "running"
	// Backoff: the instance exited and the driver restarts it after a wait,
	// by its restart policy; Message says why it exited and when the next
	// start is.
	Backoff State = "backoff"
	// Exited: the instance ended with exit code 0 and nobody restarts it
	// (restart policy, or it ended while no agent supervised it).
	Exited State = "exited"
	// Failed: the instance ended with a non-zero code, was killed, or could
	// not be read; nobody restarts it.
	Failed State = "failed"
)

// Instance is what a driver observes of one instance on this node.
type Instance struct {
	ID       string `json:"id"`
	SpecHash string `json:"spec_hash"` // Spec.Hash of the spec it runs; "" if unknown
	// Spec is the spec the instance was started from, when the driver
	// records it; plans use it to show field-level changes.
	Spec      *Spec          `json:"spec,omitempty"`
	State     State          `json:"state"`
	Pid       int            `json:"pid,omitempty"`
	StartedAt time.Time      `json:"started_at,omitzero"`
	ExitCode  int            `json:"exit_code"`         // of the last exit; -1 when unknown (a signal, or exited unsupervised)
	Restarts  int            `json:"restarts"`          // starts by the restart policy since the instance was created
	Message   string         `json:"message,omitempty"` // why it is in State, for /itg
	Ports     map[string]int `json:"ports,omitempty"`
	// CPUTime is the CPU time (user + system) the instance's processes have
	// used since it started, as the runtime accounts it; 0 when unknown, or
	// for a driver that is a CPUMeter, for an instance it was not asked to
	// measure. A running instance that is measured and idle may read 0 too
	// (less than a clock tick). The reconciler turns two readings into a
	// rate for the scaler.
	CPUTime time.Duration `json:"cpu_time,omitempty"`
}

// CPUMeter is implemented by a driver whose CPU readings cost enough that
// it takes them only for the instances it is asked about: after
// MeasureCPU(ids), Observe fills CPUTime for those ids only (none before
// the first call). The reconciler asks for the instances the scaler needs.
type CPUMeter interface {
	MeasureCPU(ids []string)
}

// Live reports whether the instance runs or will run without a new change.
func (i Instance) Live() bool {
	return i.State == Running || i.State == Starting || i.State == Backoff
}

// WantsStart reports whether spec's restart policy asks to start inst again:
// it ended (Exited or Failed) and nobody supervises it any more — after an
// agent restart, say. A supervised instance that exits goes to Backoff and is
// restarted by its driver, so plans never fight the supervisor.
func WantsStart(spec Spec, inst Instance) bool {
	if inst.State != Exited && inst.State != Failed {
		return false
	}
	switch spec.RestartMode() {
	case RestartAlways:
		return true
	case RestartOnFailure:
		return inst.State == Failed || inst.ExitCode != 0
	default:
		return false
	}
}
