// Package reconcile is the DSM: the per-node state machine that turns the
// desired snapshot into driver steps and drives them until what runs matches
// the repository.
//
// The reconcile loop is level-triggered: from the current snapshot, the live
// members with their props and what the node's drivers observe, it computes a
// [Placement] with [Place] (a pure, deterministic function, so every node gets
// the same answer and runs its own share), plans steps, and executes them. A
// [Run] targets one generation; each [Step] has a deterministic id
// ([StepID]) and is recorded in the [Journal] on disk before it runs and after
// it ends, so an agent that crashes finds its [Journal.Unfinished] steps again
// and re-observes them; drivers are idempotent, so repeating a step is safe.
//
// Work that only one node may do at a time (a primary election, a migration)
// takes a [Lease] in /lk. The preferred holder is chosen by rendezvous
// hashing ([PreferredHolder]), so in the normal case nobody competes. Gossip
// cannot give mutual exclusion under a network partition: two sides may each
// believe they hold the same lease. Safety therefore never rests on the lease
// alone; it comes from idempotent steps and from drivers that check the
// fencing epoch ([Lease.Epoch]) before acting and refuse an older one.
//
// Placement, leases and the journal take plain Go values and a directory, not
// the VFS: the loop reads /hw, /run and /lk and fills them in.
//
// The [Reconciler] is the loop. It reads the manifest at /sys/revision and
// acts only on a complete snapshot (schema.Assemble); the live members
// with props at /hw/<node> are the nodes placement may use; every node's
// /run/<node>/instances says what runs where. It writes, for its own node:
//   - /run/<node>/instances: what its drivers observe, by instance id
//     ([InstanceStatus]), after every pass;
//   - /run/<node>/progress: [Progress], after every pass and about once a
//     second while steps are applied;
//   - /run/<node>/steps: the current run's steps that are not done;
//   - /run/<node>/history: the journal's recent transitions;
//   - /itg/<node>/<kind>.<name>: why a CTX or MID is not healthy here
//     ([Problem]), deleted once it is; /itg/<node>/placement: what no node
//     can take, written by one node only;
//   - /run/<node>/usage: the CPU its instances of autoscaled CTXs use, and,
//     on the node holding a CTX's scaler lease, /lk/scale/<ctx> ([Scale]):
//     the number of instances every node then places ([DesiredScaled];
//     the rule is in scaler.go).
package reconcile

import "errors"

// Errors of package reconcile. Callers compare with errors.Is.
var (
	// ErrInvalidLease is returned for a lease call with an empty key or a
	// [Leases] without a node, store or positive TTL.
	ErrInvalidLease = errors.New("invalid lease request")
	// ErrNotLeaseHolder is returned by [Leases.Release] when this node does
	// not hold the lease.
	ErrNotLeaseHolder = errors.New("not the lease holder")
	// ErrInvalidStep is returned by [Journal.Record] for a step without an
	// id, run or resource, or with an unknown state.
	ErrInvalidStep = errors.New("invalid step")
	// ErrInvalidRun is returned by [Journal.StartRun] for a run without an id.
	ErrInvalidRun = errors.New("invalid run")
	// ErrJournalClosed is returned by writes to a closed [Journal].
	ErrJournalClosed = errors.New("journal closed")
	// ErrInvalidConfig is returned by [New] for a [Config] without a node
	// name, store or journal, or with a store of another node.
	ErrInvalidConfig = errors.New("invalid reconciler config")
	// ErrAlreadyRunning is returned by [Reconciler.Run] while another Run
	// of the same Reconciler is in progress.
	ErrAlreadyRunning = errors.New("reconciler already running")
)
