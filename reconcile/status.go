package reconcile

import (
	"maps"
	"time"

	"github.com/ctxos/ctxos/drivers"
)

// Paths this node writes below /run/<node> and /itg/<node>.
const (
	runInstances = "instances" // map[instance id]InstanceStatus
	runProgress  = "progress"  // Progress
	runSteps     = "steps"     // StepsView: the current run's open steps
	runHistory   = "history"   // []Step: the recent window of the journal
	itgPlacement = "placement" // PlacementProblem, by the first in Rank("placement")
)

// InstanceStatus is one instance as this node publishes it in
// /run/<node>/instances, keyed by its driver instance id ("ctx.web.0").
// Other nodes read it to know where instances run (sticky placement) and
// whether what a CTX or MID requires runs.
type InstanceStatus struct {
	Kind string `cbor:"kind" json:"kind"`
	Name string `cbor:"name" json:"name"`
	// Instance is the CTX instance id of the placement ("web.0"); empty
	// for a MID.
	Instance  string        `cbor:"instance,omitempty" json:"instance,omitempty"`
	Driver    string        `cbor:"driver" json:"driver"`
	SpecHash  string        `cbor:"specHash,omitempty" json:"specHash,omitempty"`
	State     drivers.State `cbor:"state" json:"state"`
	Pid       int           `cbor:"pid,omitempty" json:"pid,omitempty"`
	StartedAt time.Time     `cbor:"startedAt,omitzero" json:"startedAt,omitzero"`
	Restarts  int           `cbor:"restarts,omitempty" json:"restarts,omitempty"`
	ExitCode  int           `cbor:"exitCode,omitempty" json:"exitCode,omitempty"`
	Message   string        `cbor:"message,omitempty" json:"message,omitempty"`
	// Healthy is the health check's verdict on a running instance of a
	// CTX that has one: true after threshold passes in a row, false after
	// threshold failures, absent before either or without a check.
	Healthy *bool `cbor:"healthy,omitempty" json:"healthy,omitempty"`
	// Health is the last check's outcome, for status and /itg.
	Health string `cbor:"health,omitempty" json:"health,omitempty"`
}

// States of [Progress].
const (
	// ProgressNoSnapshot: no manifest at /sys/revision yet.
	ProgressNoSnapshot = "no-snapshot"
	// ProgressIncomplete: the manifest names entries this node does not
	// hold yet (or their hash differs); nothing is changed meanwhile.
	ProgressIncomplete = "incomplete"
	// ProgressNotEligible: this node has no props at /hw/<node> yet, so
	// placement cannot count it; nothing is changed meanwhile.
	ProgressNotEligible = "not-eligible"
	// ProgressApplying: steps remain, are running, waiting or retrying.
	ProgressApplying = "applying"
	// ProgressConverged: this node runs its share of the snapshot.
	ProgressConverged = "converged"
)

// StepCounts counts the steps of a run by their latest state.
type StepCounts struct {
	Total   int `cbor:"total" json:"total"`
	Done    int `cbor:"done" json:"done"`
	Failed  int `cbor:"failed" json:"failed"`
	Waiting int `cbor:"waiting" json:"waiting"`
	Running int `cbor:"running" json:"running"`
}

func (c *StepCounts) add(s StepState) {
	c.Total++
	switch s {
	case StepDone:
		c.Done++
	case StepFailed:
		c.Failed++
	case StepWaiting:
		c.Waiting++
	case StepRunning, StepPending:
		c.Running++
	}
}

// Progress is where this node's reconcile stands, published at
// /run/<node>/progress after every pass.
type Progress struct {
	Node       string `cbor:"node" json:"node"`
	Generation uint64 `cbor:"generation" json:"generation"`
	Commit     string `cbor:"commit,omitempty" json:"commit,omitempty"`
	Run        string `cbor:"run,omitempty" json:"run,omitempty"`
	// State is one of the Progress* constants; Message says more.
	State     string `cbor:"state" json:"state"`
	Message   string `cbor:"message,omitempty" json:"message,omitempty"`
	Converged bool   `cbor:"converged" json:"converged"`
	// Steps counts the current run's steps; Resources the same per
	// resource that has steps in the run.
	Steps     StepCounts            `cbor:"steps" json:"steps"`
	Resources map[string]StepCounts `cbor:"resources,omitempty" json:"resources,omitempty"`
	// Instances counts what this node desires and what of it runs.
	Desired int `cbor:"desired" json:"desired"`
	Running int `cbor:"running" json:"running"`
	// Unplaced counts instances of the cluster no node can take.
	Unplaced int `cbor:"unplaced,omitempty" json:"unplaced,omitempty"`
	// Errors holds the last error per resource or problem key while it
	// lasts.
	Errors map[string]string `cbor:"errors,omitempty" json:"errors,omitempty"`
	// Passes counts reconcile passes since the agent started.
	Passes  uint64    `cbor:"passes" json:"passes"`
	Updated time.Time `cbor:"updated" json:"updated"`
}

func (p Progress) clone() Progress {
	p.Resources = maps.Clone(p.Resources)
	p.Errors = maps.Clone(p.Errors)
	return p
}

// sameAs reports whether p and o differ only in their update time and pass
// count, so an idle node does not rewrite (and gossip) the same progress.
func (p Progress) sameAs(o Progress) bool {
	p.Updated, o.Updated = time.Time{}, time.Time{}
	p.Passes, o.Passes = 0, 0
	return p.Node == o.Node && p.Generation == o.Generation && p.Commit == o.Commit && p.Run == o.Run &&
		p.State == o.State && p.Message == o.Message && p.Converged == o.Converged && p.Steps == o.Steps &&
		maps.Equal(p.Resources, o.Resources) && p.Desired == o.Desired && p.Running == o.Running &&
		p.Unplaced == o.Unplaced && maps.Equal(p.Errors, o.Errors)
}

// Problem is what /itg/<node>/<kind>.<name> holds while a CTX or MID is
// not healthy on this node: why, per instance. It is deleted once healthy.
type Problem struct {
	Kind string `cbor:"kind" json:"kind"`
	Name string `cbor:"name" json:"name"`
	// Reason is the first instance's reason, for a one-line status.
	Reason    string            `cbor:"reason" json:"reason"`
	Instances map[string]string `cbor:"instances,omitempty" json:"instances,omitempty"`
}

// PlacementProblem is /itg/<node>/placement: the instances no node can
// take. Only the first of Rank("placement", eligible nodes) writes it, so
// the cluster reports it once.
type PlacementProblem struct {
	Generation uint64     `cbor:"generation" json:"generation"`
	Unplaced   []Unplaced `cbor:"unplaced" json:"unplaced"`
}

// StepsView is /run/<node>/steps: the current run and its steps that are
// not done (running, waiting, failed), at most maxOpenSteps of them.
type StepsView struct {
	Run        string     `cbor:"run" json:"run"`
	Generation uint64     `cbor:"generation" json:"generation"`
	Commit     string     `cbor:"commit,omitempty" json:"commit,omitempty"`
	Counts     StepCounts `cbor:"counts" json:"counts"`
	Open       []Step     `cbor:"open,omitempty" json:"open,omitempty"`
}

const maxOpenSteps = 256
