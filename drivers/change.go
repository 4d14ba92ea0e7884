package drivers

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
)

// Action is what a change does to one instance.
type Action string

const (
	Create  Action = "create"  // start an instance that does not exist
	Replace Action = "replace" // stop the instance and start it from a new spec
	Delete  Action = "delete"  // stop the instance and forget it
	Start   Action = "start"   // start again an instance that ended, same spec
)

// Results of a [Report].
const (
	ResultChanged     = "changed"
	ResultUnchanged   = "unchanged"
	ResultFailed      = "failed"
	ResultWouldChange = "would-change"
)

// Change is one step a plan proposes. Spec is set for Create, Replace and
// Start; Observed is set for Replace, Delete and Start.
type Change struct {
	ID       string    `json:"id"`
	Action   Action    `json:"action"`
	Spec     *Spec     `json:"spec,omitempty"`
	Observed *Instance `json:"observed,omitempty"`
	Reason   string    `json:"reason"`
}

// Report is what a change did (or, from [Preview], would do), in Salt's
// shape: the fields that change with old and new values, and the result.
type Report struct {
	ID      string                 `json:"id"`
	Action  Action                 `json:"action"`
	Changes map[string]FieldChange `json:"changes,omitempty"`
	Result  string                 `json:"result"` // ResultChanged, ResultUnchanged, ResultFailed, ResultWouldChange
	Comment string                 `json:"comment,omitempty"`
	Err     string                 `json:"error,omitempty"`
}

// FieldChange is one field's old and new value; nil is absent.
type FieldChange struct {
	Old any `json:"old"`
	New any `json:"new"`
}

// Check returns an error wrapping ErrInvalidChange if c lacks what its
// action needs.
func (c Change) Check() error {
	switch c.Action {
	case Create, Replace, Start:
		if c.Spec == nil {
			return fmt.Errorf("%w: %s %q: no spec", ErrInvalidChange, c.Action, c.ID)
		}
		if c.Spec.ID != c.ID {
			return fmt.Errorf("%w: %s %q: spec is for %q", ErrInvalidChange, c.Action, c.ID, c.Spec.ID)
		}
	case Delete:
	default:
		return fmt.Errorf("%w: %q: unknown action %q", ErrInvalidChange, c.ID, c.Action)
	}
	if c.ID == "" {
		return fmt.Errorf("%w: %s: no instance id", ErrInvalidChange, c.Action)
	}
	return nil
}

// Preview returns the report a plan shows for c. A driver's Apply returns
// the same Changes, with Result "changed", when c succeeds from the observed
// state it was planned against; that is what makes a dry run trustworthy.
func Preview(c Change) Report {
	r := Report{ID: c.ID, Action: c.Action, Result: ResultWouldChange, Comment: c.Reason}
	ch := map[string]FieldChange{}
	var oldState any
	if c.Observed != nil {
		oldState = string(c.Observed.State)
	}
	switch c.Action {
	case Create:
		if c.Spec != nil {
			ch = DiffSpecs(nil, c.Spec)
			ch["spec_hash"] = FieldChange{nil, c.Spec.Hash()}
		}
		ch["state"] = FieldChange{nil, string(Running)}
	case Replace:
		if c.Spec != nil && c.Observed != nil {
			if c.Observed.Spec != nil {
				ch = DiffSpecs(c.Observed.Spec, c.Spec)
			}
			ch["spec_hash"] = FieldChange{emptyNil(c.Observed.SpecHash), c.Spec.Hash()}
		}
		if oldState != string(Running) {
			ch["state"] = FieldChange{oldState, string(Running)}
		}
	case Start:
		ch["state"] = FieldChange{oldState, string(Running)}
	case Delete:
		ch["state"] = FieldChange{oldState, nil}
		if c.Observed != nil {
			ch["spec_hash"] = FieldChange{emptyNil(c.Observed.SpecHash), nil}
		}
	}
	r.Changes = ch
	return r
}

func emptyNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Done returns Preview(c) as the report of a successful Apply.
func (c Change) Done() Report {
	r := Preview(c)
	r.Result = ResultChanged
	return r
}

// Noop returns the report of an Apply that found c already in effect.
func (c Change) Noop(comment string) Report {
	return Report{ID: c.ID, Action: c.Action, Result: ResultUnchanged, Comment: comment}
}

// Fail returns the report of an Apply that failed with err.
func (c Change) Fail(err error) Report {
	return Report{ID: c.ID, Action: c.Action, Result: ResultFailed, Comment: c.Reason, Err: err.Error()}
}

// DiffSpecs returns the fields that differ between old and new, by flat
// names ("command", "env.PORT", "resources.memory_bytes"); a nil spec has no
// fields. Durations are shown as strings ("1m0s").
func DiffSpecs(old, new *Spec) map[string]FieldChange {
	a, b := flatten(old), flatten(new)
	out := map[string]FieldChange{}
	for k, v := range b {
		if w, ok := a[k]; !ok || !reflect.DeepEqual(v, w) {
			out[k] = FieldChange{a[k], v}
		}
	}
	for k, v := range a {
		if _, ok := b[k]; !ok {
			out[k] = FieldChange{v, nil}
		}
	}
	return out
}

func flatten(s *Spec) map[string]any {
	m := map[string]any{}
	if s == nil {
		return m
	}
	put := func(k string, v any, zero bool) {
		if !zero {
			m[k] = v
		}
	}
	put("kind", s.Kind, s.Kind == "")
	put("name", s.Name, s.Name == "")
	put("command", s.Command, s.Command == "")
	put("args", slices.Clone(s.Args), len(s.Args) == 0)
	for k, v := range s.Env {
		m["env."+k] = v
	}
	put("dir", s.Dir, s.Dir == "")
	put("user", s.User, s.User == "")
	put("image", s.Image, s.Image == "")
	put("resources.cpu_milli", s.Resources.CPUMilli, s.Resources.CPUMilli == 0)
	put("resources.memory_bytes", s.Resources.MemoryBytes, s.Resources.MemoryBytes == 0)
	put("resources.pids", s.Resources.Pids, s.Resources.Pids == 0)
	put("resources.gpus", s.Resources.GPUs, s.Resources.GPUs == 0)
	put("restart.policy", s.Restart.Policy, s.Restart.Policy == "")
	put("restart.backoff_base", s.Restart.BackoffBase.String(), s.Restart.BackoffBase == 0)
	put("restart.backoff_max", s.Restart.BackoffMax.String(), s.Restart.BackoffMax == 0)
	put("isolate", s.Isolate, !s.Isolate)
	for k, v := range s.Ports {
		m["ports."+k] = v
	}
	if len(s.Mounts) > 0 {
		ms := make([]string, len(s.Mounts))
		for i, mt := range s.Mounts {
			ms[i] = fmt.Sprintf("%s:%s", mt.Source, mt.Target)
			if mt.Type != "" {
				ms[i] += ":" + mt.Type
			}
			if mt.ReadOnly {
				ms[i] += ":ro"
			}
		}
		m["mounts"] = ms
	}
	put("stop.signal", s.Stop.Signal, s.Stop.Signal == "")
	put("stop.grace", s.Stop.Grace.String(), s.Stop.Grace == 0)
	for k, v := range s.Labels {
		m["labels."+k] = v
	}
	for k, v := range s.Params {
		m["params."+k] = v
	}
	return m
}

// PlanChanges is the plan every driver can share: match desired and observed
// by id; a missing instance is created, one with another spec hash is
// replaced, one that ended and whose restart policy wants it running (see
// [WantsStart]) is started, one not desired is deleted. Changes come in the
// order deletes, replaces, creates, starts (deletes first free resources),
// each group sorted by id. It returns an error wrapping ErrInvalidSpec for
// an invalid spec or an id desired twice.
func PlanChanges(desired []Spec, observed []Instance) ([]Change, error) {
	want := make(map[string]Spec, len(desired))
	for _, s := range desired {
		if err := s.Validate(); err != nil {
			return nil, err
		}
		if _, dup := want[s.ID]; dup {
			return nil, fmt.Errorf("%w: instance %q: id: desired twice", ErrInvalidSpec, s.ID)
		}
		want[s.ID] = s
	}
	have := make(map[string]Instance, len(observed))
	for _, o := range observed {
		have[o.ID] = o
	}
	var deletes, replaces, creates, starts []Change
	for id, o := range have {
		if _, ok := want[id]; !ok {
			o := o
			deletes = append(deletes, Change{ID: id, Action: Delete, Observed: &o, Reason: "not desired on this node"})
		}
	}
	for id, s := range want {
		s := s
		o, ok := have[id]
		switch {
		case !ok:
			creates = append(creates, Change{ID: id, Action: Create, Spec: &s, Reason: "desired, not running"})
		case o.SpecHash != s.Hash():
			replaces = append(replaces, Change{ID: id, Action: Replace, Spec: &s, Observed: &o,
				Reason: fmt.Sprintf("spec changed (hash %s → %s)", orNone(o.SpecHash), s.Hash())})
		case WantsStart(s, o):
			reason := fmt.Sprintf("%s (exit code %d), restart policy %s", o.State, o.ExitCode, s.RestartMode())
			if o.Message != "" {
				reason += ": " + o.Message
			}
			starts = append(starts, Change{ID: id, Action: Start, Spec: &s, Observed: &o, Reason: reason})
		}
	}
	var out []Change
	for _, g := range [][]Change{deletes, replaces, creates, starts} {
		sort.Slice(g, func(i, j int) bool { return g[i].ID < g[j].ID })
		out = append(out, g...)
	}
	return out, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
