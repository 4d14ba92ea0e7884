package drivers

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors shared by every driver. Backends wrap them with the instance id and
// a short context; compare with [errors.Is].
var (
	// ErrInvalidSpec: the spec cannot run as written (a bad field, a
	// duplicate id). Retrying does not help; a new desired state does.
	ErrInvalidSpec = errors.New("invalid spec")
	// ErrInvalidChange: the change is malformed (unknown action, Create or
	// Replace without a spec).
	ErrInvalidChange = errors.New("invalid change")
	// ErrNotFound: the instance a change names does not exist on this node.
	ErrNotFound = errors.New("instance not found")
	// ErrUnsupported: the spec asks for something this driver or this build
	// cannot do (an image on the process driver, isolation without root).
	ErrUnsupported = errors.New("not supported")
	// ErrClosed: the driver was closed.
	ErrClosed = errors.New("driver closed")
)

// Driver observes, plans and applies one kind of software on this node.
//
// Methods are safe for concurrent use. Apply calls for different instance
// ids may run at the same time; a driver serialises calls for the same id.
type Driver interface {
	// Type names the backend ("process", "containerd"); it is the value of
	// the driver field in desired state.
	Type() string

	// Observe returns every instance this driver runs on this node, sorted
	// by id, found from durable records (files, runtime labels) and never
	// from memory alone: a driver built fresh over the same state sees what
	// the previous one started. An instance whose record is damaged is
	// returned with State Failed and the reason in Message rather than
	// hidden. Observe returns an error only when the records cannot be read
	// at all (state dir unreadable, runtime unreachable), ctx is done, or
	// the driver is closed (ErrClosed).
	Observe(ctx context.Context) ([]Instance, error)

	// Plan compares the desired instances with the observed ones and returns
	// the changes that make them match, in the order to apply them. It has
	// no side effects. For each change, [Preview] gives the report Apply
	// returns when the change succeeds. Plan returns an error wrapping
	// ErrInvalidSpec, naming the instance and field, if a desired spec is
	// invalid or an id is desired twice, or ErrUnsupported if the driver
	// cannot run a spec at all; it then returns no changes.
	Plan(ctx context.Context, desired []Spec, observed []Instance) ([]Change, error)

	// Apply makes one change and reports what it did. It is idempotent: it
	// re-observes the one instance first, and a change that is already in
	// effect returns Result "unchanged" with no Changes and starts nothing.
	// On success Result is "changed" and Changes equal Preview(c).Changes.
	// On failure it returns the error and a report with Result "failed" and
	// Err set; it wraps ErrInvalidChange for a malformed change,
	// ErrInvalidSpec or ErrUnsupported for a spec it cannot run, ErrNotFound
	// for Start of an instance that does not exist, ErrClosed after Close.
	// Delete of an instance that does not exist succeeds as "unchanged". A
	// failed Create or Replace leaves no new instance behind, so the next
	// plan proposes it again.
	Apply(ctx context.Context, c Change) (Report, error)

	// Close stops the driver's own goroutines (supervision, event watches)
	// and closes its Events channel. It does not stop the instances: they
	// outlive the agent and the next driver re-adopts them.
	Close() error
}

// EventSource is implemented by drivers whose runtime reports exits, so the
// reconciler hears of drift without polling. The channel is buffered and
// closed by Close; a driver never blocks on it: when the consumer falls
// behind, events are dropped, and the reconciler's periodic resync (Observe)
// covers the gap.
type EventSource interface {
	Events() <-chan Event
}

// Event is a state change a driver saw without being asked: an exit, a
// restart by the restart policy, a backoff.
type Event struct {
	ID       string    `json:"id"`
	State    State     `json:"state"`
	ExitCode int       `json:"exit_code"`
	Message  string    `json:"message,omitempty"`
	Time     time.Time `json:"time"`
}

// Converge observes d, plans against desired and applies every change in
// order, returning one report per change. It stops at the first failure and
// returns the reports so far with the error. The reconciler records each
// change as a step instead; Converge serves `ctxos up`-style one-shot runs
// and tests.
func Converge(ctx context.Context, d Driver, desired []Spec) ([]Report, error) {
	observed, err := d.Observe(ctx)
	if err != nil {
		return nil, fmt.Errorf("observe %s: %w", d.Type(), err)
	}
	changes, err := d.Plan(ctx, desired, observed)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", d.Type(), err)
	}
	reports := make([]Report, 0, len(changes))
	for _, c := range changes {
		r, err := d.Apply(ctx, c)
		reports = append(reports, r)
		if err != nil {
			return reports, fmt.Errorf("apply %s %s: %w", c.Action, c.ID, err)
		}
	}
	return reports, nil
}
