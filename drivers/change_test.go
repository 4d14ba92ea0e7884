package drivers

import (
	"errors"
	"reflect"
	"testing"
)

func spec(id string, args ...string) Spec {
	return Spec{ID: id, Kind: KindCTX, Name: "web", Command: "sleep", Args: args}
}

func TestPlanChanges(t *testing.T) {
	t.Parallel()
	a, b, c := spec("ctx.web.0", "1"), spec("ctx.web.1", "1"), spec("ctx.web.2", "1")
	never := spec("ctx.web.3", "1")
	never.Restart.Policy = RestartNever
	onFail := spec("ctx.web.4", "1")
	onFail.Restart.Policy = RestartOnFailure
	onFail5 := spec("ctx.web.5", "1")
	onFail5.Restart.Policy = RestartOnFailure
	changed := spec("ctx.web.1", "2")
	tests := []struct {
		name     string
		desired  []Spec
		observed []Instance
		want     []string // "action id"
	}{
		{"nothing", nil, nil, nil},
		{"create", []Spec{b, a}, nil, []string{"create ctx.web.0", "create ctx.web.1"}},
		{"in sync", []Spec{a}, []Instance{{ID: a.ID, SpecHash: a.Hash(), State: Running}}, nil},
		{"backoff is the supervisor's", []Spec{a}, []Instance{{ID: a.ID, SpecHash: a.Hash(), State: Backoff}}, nil},
		{"replace", []Spec{changed}, []Instance{{ID: b.ID, SpecHash: b.Hash(), State: Running}}, []string{"replace ctx.web.1"}},
		{"delete", nil, []Instance{{ID: c.ID, SpecHash: c.Hash(), State: Running}}, []string{"delete ctx.web.2"}},
		{"start exited always", []Spec{a}, []Instance{{ID: a.ID, SpecHash: a.Hash(), State: Exited}}, []string{"start ctx.web.0"}},
		{"never stays", []Spec{never}, []Instance{{ID: never.ID, SpecHash: never.Hash(), State: Failed, ExitCode: 1}}, nil},
		{"on-failure after 0", []Spec{onFail}, []Instance{{ID: onFail.ID, SpecHash: onFail.Hash(), State: Exited}}, nil},
		{"on-failure after 1", []Spec{onFail5}, []Instance{{ID: onFail5.ID, SpecHash: onFail5.Hash(), State: Failed, ExitCode: 1}}, []string{"start ctx.web.5"}},
		{"order", []Spec{a, changed, {ID: "ctx.web.9", Kind: KindCTX, Name: "web"}},
			[]Instance{{ID: b.ID, SpecHash: b.Hash(), State: Running}, {ID: c.ID, State: Running}, {ID: a.ID, SpecHash: a.Hash(), State: Exited}},
			[]string{"delete ctx.web.2", "replace ctx.web.1", "create ctx.web.9", "start ctx.web.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changes, err := PlanChanges(tt.desired, tt.observed)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range changes {
				if err := c.Check(); err != nil {
					t.Errorf("planned change fails Check: %v", err)
				}
				got = append(got, string(c.Action)+" "+c.ID)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPlanChangesBadInput(t *testing.T) {
	t.Parallel()
	a := spec("ctx.web.0")
	bad := spec("ctx.web.1")
	bad.Kind = ""
	for name, desired := range map[string][]Spec{"duplicate": {a, a}, "invalid": {a, bad}} {
		if got, err := PlanChanges(desired, nil); !errors.Is(err, ErrInvalidSpec) || got != nil {
			t.Errorf("%s: PlanChanges = %v, %v; want nil, ErrInvalidSpec", name, got, err)
		}
	}
}

func TestPreview(t *testing.T) {
	t.Parallel()
	old := spec("ctx.web.0", "1")
	old.Env = map[string]string{"A": "1", "B": "2"}
	nw := spec("ctx.web.0", "2")
	nw.Env = map[string]string{"A": "1", "C": "3"}
	obs := Instance{ID: old.ID, SpecHash: old.Hash(), Spec: &old, State: Running}
	r := Preview(Change{ID: old.ID, Action: Replace, Spec: &nw, Observed: &obs, Reason: "spec changed"})
	want := map[string]FieldChange{
		"args":      {[]string{"1"}, []string{"2"}},
		"env.B":     {"2", nil},
		"env.C":     {nil, "3"},
		"spec_hash": {old.Hash(), nw.Hash()},
	}
	if !reflect.DeepEqual(r.Changes, want) {
		t.Errorf("replace changes = %v, want %v", r.Changes, want)
	}
	if r.Result != ResultWouldChange || r.Comment != "spec changed" {
		t.Errorf("result, comment = %q, %q", r.Result, r.Comment)
	}

	r = Preview(Change{ID: old.ID, Action: Create, Spec: &old})
	for _, k := range []string{"command", "args", "env.A", "kind", "name", "spec_hash", "state"} {
		if _, ok := r.Changes[k]; !ok {
			t.Errorf("create preview lacks %q: %v", k, r.Changes)
		}
	}
	r = Preview(Change{ID: old.ID, Action: Delete, Observed: &obs})
	if got, want := r.Changes["state"], (FieldChange{"running", nil}); !reflect.DeepEqual(got, want) {
		t.Errorf("delete state = %v, want %v", got, want)
	}
	c := Change{ID: old.ID, Action: Start, Spec: &old, Observed: &Instance{ID: old.ID, State: Exited}}
	if got, want := c.Done().Changes, Preview(c).Changes; !reflect.DeepEqual(got, want) || c.Done().Result != ResultChanged {
		t.Errorf("Done changes = %v, want %v", got, want)
	}
}

func TestChangeCheck(t *testing.T) {
	t.Parallel()
	s := spec("ctx.web.0")
	other := spec("ctx.web.1")
	tests := []struct {
		name string
		c    Change
		ok   bool
	}{
		{"create", Change{ID: s.ID, Action: Create, Spec: &s}, true},
		{"delete", Change{ID: s.ID, Action: Delete}, true},
		{"create without spec", Change{ID: s.ID, Action: Create}, false},
		{"spec for another id", Change{ID: s.ID, Action: Replace, Spec: &other}, false},
		{"unknown action", Change{ID: s.ID, Action: "explode"}, false},
		{"no id", Change{Action: Delete}, false},
	}
	for _, tt := range tests {
		err := tt.c.Check()
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidChange)) {
			t.Errorf("%s: Check() = %v", tt.name, err)
		}
	}
}
