package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/cluster/props"
	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/schema"
)

// Defaults of [Config].
const (
	DefaultResync        = 10 * time.Second
	DefaultParallel      = 4
	DefaultRetryBase     = time.Second
	DefaultRetryMax      = time.Minute
	DefaultHistoryWindow = 100
	DefaultMemberPoll    = time.Second
	DefaultJoinGrace     = 30 * time.Second
	DefaultShutdownGrace = 15 * time.Second
)

// Config configures a [Reconciler].
type Config struct {
	// Node is this node's name; it writes /run/<Node> and /itg/<Node>.
	Node string
	// Store is this node's VFS replica.
	Store *vfs.Store
	// Members lists the cluster's members (cluster.Node.Members). Nil
	// means a cluster of this node alone.
	Members func() []cluster.Member
	// Drivers by name: a CTX's runtime or a MID's driver ("process").
	Drivers map[string]drivers.Driver
	// Journal records every step on disk.
	Journal *Journal
	// Resync is the period of a pass nothing triggered (default 10s).
	Resync time.Duration
	// Parallel bounds the steps applied at once (default 4).
	Parallel int
	// RetryBase and RetryMax bound the exponential backoff of a failed
	// step, per resource (default 1s and 1m).
	RetryBase, RetryMax time.Duration
	// HistoryWindow is how many recent transitions /run/<node>/history
	// holds (default 100).
	HistoryWindow int
	// JoinGrace is how long after a member joins its /run/<node>/instances
	// from before the join is ignored, waiting for a fresh one (default
	// 30s). Past it, a member whose clock lags is believed anyway.
	JoinGrace time.Duration
	// ShutdownGrace is how long steps in flight may go on once Run's
	// context ends (default 15s, above the default stop grace of 10s).
	ShutdownGrace time.Duration
	// MemberPoll is how often membership is compared for changes
	// (default 1s); cluster.Node has no change callback.
	MemberPoll time.Duration
	// ScalePeriod is how often the scaler measures and decides (default
	// 15s); ScaleDownWindow how long a lower number of instances must be
	// recommended before the scaler stops instances (default 5m). See
	// scaler.go.
	ScalePeriod, ScaleDownWindow time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
	// Logger receives the loop's logs (slog.Default()).
	Logger *slog.Logger
	// AfterRecord, when set, is called after each step transition is in
	// the journal. Crash tests kill the process there.
	AfterRecord func(Step)
}

// Reconciler is the DSM of one node: it runs passes that turn the snapshot
// in force into this node's share of instances, through its drivers,
// recording every step in the journal and publishing status to the VFS.
//
// A pass is level-triggered: it reads everything it needs afresh (manifest,
// snapshot, members, /hw, /run of the live nodes, what the drivers
// observe), so a missed trigger only delays it until the next one or the
// periodic resync. Triggers that arrive while a pass runs collapse into one
// more pass.
//
// Unplaced instances go to /itg/<node>/placement on one node only, the first
// of Rank("placement", eligible nodes), so `ctxos status` lists them once;
// the others delete their own entry.
type Reconciler struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	trigger   chan struct{}
	reason    atomic.Pointer[string]
	newestGen atomic.Uint64 // generation of the newest manifest seen by the watch
	running   atomic.Bool
	// republish makes the next pass write /run/<node>/instances even when
	// unchanged (the member list changed).
	republish atomic.Bool
	started   time.Time // when Run began

	// mu guards progress and published, and attempts, retries and waiting
	// while a pass applies steps in parallel.
	mu       sync.Mutex
	progress Progress

	// State of the pass goroutine (and of its step goroutines, under mu).
	run        Run
	attempts   map[string]int    // step id → last attempt in the run
	retries    map[string]*retry // resource → backoff after a failed step
	waiting    map[string]Step   // step id → open waiting step
	published  map[string][]byte // path → last value this loop wrote
	itgKeys    map[string]bool   // /itg/<node>/ keys this loop wrote
	lastPub    Progress          // last progress written
	records    atomic.Uint64     // transitions recorded since start
	histPub    uint64            // records count at the last history publish
	passes     uint64            // passes run
	cleanedItg bool              // stale /itg entries of an earlier agent removed
	wakeAt     time.Time         // earliest retry due

	lastMid atomic.Pointer[time.Time] // last publishDuring, from step goroutines

	// The scaler's state (scaler.go), in the pass goroutine.
	cpuSeen    map[string]cpuReading // driver instance id → last CPU reading
	usageAt    time.Time             // last /run/<node>/usage
	scaledAt   time.Time             // last scaler round
	scaleRecs  map[string][]scaleRec // CTX → recommendations in the window
	scaleSince map[string]time.Time  // CTX → since when this node holds its lease

	health *healthProbes // health checks of running instances (rollout.go)
}

type retry struct {
	failures int
	next     time.Time
	reason   string
}

// New checks cfg and returns a Reconciler; [Reconciler.Run] starts it.
func New(cfg Config) (*Reconciler, error) {
	switch {
	case cfg.Node == "" || !vfs.ValidSegment(cfg.Node):
		return nil, fmt.Errorf("%w: node name %q must be a VFS segment", ErrInvalidConfig, cfg.Node)
	case cfg.Store == nil:
		return nil, fmt.Errorf("%w: no VFS store", ErrInvalidConfig)
	case cfg.Journal == nil:
		return nil, fmt.Errorf("%w: no journal", ErrInvalidConfig)
	case cfg.Store.Node() != cfg.Node:
		return nil, fmt.Errorf("%w: store belongs to node %q, not %q", ErrInvalidConfig, cfg.Store.Node(), cfg.Node)
	}
	for name, d := range cfg.Drivers {
		if d == nil {
			return nil, fmt.Errorf("%w: driver %q is nil", ErrInvalidConfig, name)
		}
	}
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = DefaultParallel
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax < cfg.RetryBase {
		cfg.RetryMax = max(DefaultRetryMax, cfg.RetryBase)
	}
	if cfg.HistoryWindow <= 0 {
		cfg.HistoryWindow = DefaultHistoryWindow
	}
	if cfg.JoinGrace <= 0 {
		cfg.JoinGrace = DefaultJoinGrace
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.MemberPoll <= 0 {
		cfg.MemberPoll = DefaultMemberPoll
	}
	if cfg.ScalePeriod <= 0 {
		cfg.ScalePeriod = DefaultScalePeriod
	}
	if cfg.ScaleDownWindow <= 0 {
		cfg.ScaleDownWindow = DefaultScaleDownWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Reconciler{
		cfg:       cfg,
		log:       cfg.Logger.With("node", cfg.Node, "component", "reconcile"),
		now:       cfg.Now,
		trigger:   make(chan struct{}, 1),
		attempts:  map[string]int{},
		retries:   map[string]*retry{},
		waiting:   map[string]Step{},
		published: map[string][]byte{},
		itgKeys:   map[string]bool{},
	}
	r.progress = Progress{Node: cfg.Node, State: ProgressNoSnapshot}
	r.health = newHealthProbes(r.log, func(id string) { r.Trigger("health " + id) })
	return r, nil
}

// Trigger asks for a pass. It never blocks: triggers that arrive before
// the pass starts collapse into one.
func (r *Reconciler) Trigger(reason string) {
	r.reason.Store(&reason)
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Progress returns where the loop stands (a copy).
func (r *Reconciler) Progress() Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.progress.clone()
}

// Run finishes the steps a crash left unfinished, then runs passes until
// ctx ends, when it returns nil. It returns an error if the journal cannot
// be written at start, and ErrAlreadyRunning when called twice.
func (r *Reconciler) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer r.running.Store(false)
	r.started = r.now()
	if err := r.recover(ctx); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	defer r.health.stop()
	for _, prefix := range []string{"/sys", "/ctx", "/mid", "/hw", "/run", strings.TrimSuffix(scalePrefix, "/")} {
		ch := r.cfg.Store.Watch(ctx, prefix)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.watch(ch)
		}()
	}
	for name, d := range r.cfg.Drivers {
		if es, ok := d.(drivers.EventSource); ok {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.driverEvents(ctx, name, es.Events())
			}()
		}
	}
	if r.cfg.Members != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.pollMembers(ctx)
		}()
	}

	resync := time.NewTimer(0) // first pass at once
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.trigger:
		case <-resync.C:
		}
		r.pass(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := r.cfg.Resync
		if r.scaleRecs != nil {
			// Autoscaled CTXs: measure and decide every ScalePeriod.
			wait = min(wait, r.cfg.ScalePeriod)
		}
		if !r.wakeAt.IsZero() {
			wait = min(wait, max(r.wakeAt.Sub(r.now()), time.Millisecond))
		}
		resync.Reset(wait)
	}
}

// watch turns VFS changes into triggers. Our own /run writes are not
// inputs, so they are skipped (else every publish would cause a pass);
// another node's /run/<node>/instances is.
func (r *Reconciler) watch(ch <-chan vfs.Event) {
	own := "/run/" + r.cfg.Node + "/"
	for ev := range ch {
		p := ev.Entry.Path
		if !ev.Resync {
			if strings.HasPrefix(p, "/run/") && (strings.HasPrefix(p, own) || !strings.HasSuffix(p, "/"+runInstances)) {
				continue
			}
			if p == schema.PathRevision && !ev.Entry.Deleted {
				var m schema.Manifest
				if schema.Decode(ev.Entry.Value, &m) == nil {
					for {
						cur := r.newestGen.Load()
						if m.Generation <= cur || r.newestGen.CompareAndSwap(cur, m.Generation) {
							break
						}
					}
				}
			}
		}
		r.Trigger("vfs " + p)
	}
}

func (r *Reconciler) driverEvents(ctx context.Context, name string, ch <-chan drivers.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			r.log.Debug("driver event", "driver", name, "id", ev.ID, "state", ev.State, "message", ev.Message)
			r.Trigger("driver " + name + " " + ev.ID + " " + string(ev.State))
		}
	}
}

func (r *Reconciler) pollMembers(ctx context.Context) {
	t := time.NewTicker(r.cfg.MemberPoll)
	defer t.Stop()
	last := strings.Join(r.liveMembers(), ",")
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if cur := strings.Join(r.liveMembers(), ","); cur != last {
			last = cur
			// Write our instances afresh: a member that just joined
			// ignores entries older than its join for JoinGrace, and an
			// idle node would otherwise never write them again.
			r.republish.Store(true)
			r.Trigger("members " + cur)
		}
	}
}

// liveMembers returns the sorted names of the alive members; this node is
// always one.
func (r *Reconciler) liveMembers() []string {
	names := []string{r.cfg.Node}
	since, _ := r.liveSince()
	for name := range since {
		names = append(names, name)
	}
	sort.Strings(names)
	return slices.Compact(names)
}

// liveSince maps the alive members to when this node saw them join, and
// to the VFS clock at the start of their current life (cluster.Member's
// Started).
func (r *Reconciler) liveSince() (since map[string]time.Time, started map[string]int64) {
	since, started = map[string]time.Time{}, map[string]int64{}
	if r.cfg.Members != nil {
		for _, m := range r.cfg.Members() {
			if m.State == cluster.StateAlive {
				since[m.Name], started[m.Name] = m.Since, m.Started
			}
		}
	}
	return since, started
}

// recordStep writes a transition to the journal and counts it.
func (r *Reconciler) recordStep(s Step) error {
	if err := r.cfg.Journal.Record(s); err != nil {
		return err
	}
	r.records.Add(1)
	if r.cfg.AfterRecord != nil {
		r.cfg.AfterRecord(s)
	}
	return nil
}

// recover gives every step a crash left unfinished its final transition:
// the instance is observed again and the step is done if its effect is in
// place, failed otherwise (the first pass then plans it again). Drivers
// are idempotent, so whatever the step did halfway is safe to repeat.
func (r *Reconciler) recover(ctx context.Context) error {
	run, steps := r.cfg.Journal.Current()
	r.run = run
	for _, s := range steps {
		r.attempts[s.ID] = max(r.attempts[s.ID], s.Attempt)
	}
	unfinished := r.cfg.Journal.Unfinished()
	if len(unfinished) == 0 {
		return nil
	}
	observed := map[string]drivers.Instance{}
	var observeErr []string
	for name, d := range r.cfg.Drivers {
		insts, err := d.Observe(ctx)
		if err != nil {
			observeErr = append(observeErr, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		for _, in := range insts {
			observed[in.ID] = in
		}
	}
	for _, s := range unfinished {
		final := s
		final.Ended = r.now()
		final.Error = ""
		var rep drivers.Report
		id := ""
		if len(s.Report) > 0 && vfs.Decode(s.Report, &rep) == nil {
			id = rep.ID
		}
		inst, found := observed[id]
		switch {
		case s.State == StepWaiting || s.State == StepPending:
			final.State, final.Error = StepFailed, "agent restarted before the step ran; planned again"
		case id == "":
			final.State, final.Error = StepFailed, "agent restarted during the step and its instance is unknown; planned again"
		case len(observeErr) > 0 && !found:
			final.State, final.Error = StepFailed, "agent restarted during the step; observe failed ("+strings.Join(observeErr, "; ")+"); planned again"
		case s.Action == string(drivers.Delete) && !found:
			final.State = StepDone
		case s.Action != string(drivers.Delete) && found && inst.Live() && (rep.Changes["spec_hash"].New == nil || rep.Changes["spec_hash"].New == inst.SpecHash):
			final.State = StepDone
		default:
			final.State, final.Error = StepFailed, "agent restarted during the step, which had not taken effect; planned again"
		}
		if final.State == StepDone {
			// What a plan would have shown is what the step did.
			final.Report = s.Report
		}
		r.log.Info("finishing a step left unfinished by a restart", "step", s.ID, "resource", s.Resource, "action", s.Action, "state", final.State, "reason", final.Error)
		if err := r.recordStep(final); err != nil {
			return fmt.Errorf("recover step %s: %w", s.ID, err)
		}
	}
	return nil
}

// passState is what one pass learned, for the publications at its end.
type passState struct {
	gen      uint64
	commit   string
	snap     *schema.Snapshot
	desired  *Desired
	nodes    []Node
	observed map[string][]drivers.Instance // by driver
	problems map[string]map[string]string  // problem key → instance/resource → reason
	state    string
	message  string
	skipped  int // changes held back by backoff or a wait
	// unseen are the /hw and /run/<node>/instances entries of live members
	// this node has not received yet. Until it has (or JoinGrace has
	// passed since the member joined), it creates nothing: placement on a
	// partial view would start instances that run elsewhere already, or
	// pile them on the nodes it happens to know.
	unseen   []string
	progress bool
	// others is what the other live members publish running, by node and
	// driver instance id (their /run/<node>/instances), for rollouts.
	others map[string]map[string]InstanceStatus
	// scaled are snap's autoscaled CTXs, decoded once for the scaler.
	scaled map[string]schema.Ctx
}

func (ps *passState) problem(key, what, reason string) {
	if ps.problems[key] == nil {
		ps.problems[key] = map[string]string{}
	}
	ps.problems[key][what] = reason
}

// pass is one level-triggered reconcile: read, place, plan, apply, publish.
func (r *Reconciler) pass(ctx context.Context) {
	r.passes++
	if rs := r.reason.Load(); rs != nil {
		r.log.Debug("pass", "reason", *rs)
	}
	ps := &passState{problems: map[string]map[string]string{}, observed: map[string][]drivers.Instance{}}
	defer r.finishPass(ctx, ps)

	// 1. The snapshot in force.
	e, ok := r.cfg.Store.Get(schema.PathRevision)
	if !ok {
		ps.state, ps.message = ProgressNoSnapshot, "no desired state synced yet ("+schema.PathRevision+" is empty)"
		return
	}
	var m schema.Manifest
	if err := schema.Decode(e.Value, &m); err != nil {
		ps.state, ps.message = ProgressIncomplete, fmt.Sprintf("%s: %v", schema.PathRevision, err)
		return
	}
	ps.gen, ps.commit = m.Generation, m.Commit
	snap, err := schema.Assemble(m, func(p string) ([]byte, bool) {
		e, ok := r.cfg.Store.Get(p)
		return e.Value, ok
	})
	if err != nil {
		ps.state, ps.message = ProgressIncomplete, err.Error()
		return
	}
	ps.snap = snap
	ps.scaled = autoscaled(snap)
	if err := r.startRun(m); err != nil {
		ps.state, ps.message = ProgressApplying, "journal: "+err.Error()
		return
	}

	// 2. Eligible nodes and where instances run now.
	since, started := r.liveSince()
	live := r.liveMembers()
	ps.nodes = r.eligibleNodes(live)
	if !slices.ContainsFunc(ps.nodes, func(n Node) bool { return n.Name == r.cfg.Node }) {
		ps.state, ps.message = ProgressNotEligible, "waiting for this node's props at /hw/"+r.cfg.Node
		return
	}
	observeOK := map[string]bool{}
	for name, d := range r.cfg.Drivers {
		insts, err := d.Observe(ctx)
		if err != nil {
			ps.problem("driver."+name, name, "observe: "+err.Error())
			continue
		}
		ps.observed[name] = insts
		observeOK[name] = true
	}
	others := r.readInstances(live, since, started)
	ps.others = others
	now := r.now()
	for _, name := range live {
		if name == r.cfg.Node || now.Sub(laterOf(since[name], r.started)) >= r.cfg.JoinGrace {
			continue
		}
		_, hasRun := others[name]
		hasHW := slices.ContainsFunc(ps.nodes, func(n Node) bool { return n.Name == name })
		switch {
		case !hasHW:
			ps.unseen = append(ps.unseen, "/hw/"+name)
		case !hasRun:
			ps.unseen = append(ps.unseen, "/run/"+name+"/"+runInstances)
		}
	}
	current, running := r.currentPlacement(others, ps.observed)

	// 3. Placement and this node's share, with the scaler's decisions.
	scales := r.readScales()
	eligible := make([]string, len(ps.nodes))
	for i, n := range ps.nodes {
		eligible[i] = n.Name
	}
	r.runScaler(ps.scaled, eligible, live, scales)
	d, err := DesiredScaled(snap, r.cfg.Node, ps.nodes, current, scales)
	if err != nil {
		ps.state, ps.message = ProgressIncomplete, fmt.Sprintf("commit %.12s: %v", m.Commit, err)
		return
	}
	ps.desired = d
	for key, reason := range d.Problems {
		ps.problem(key, key, reason)
	}
	if ctxs, err := snap.Ctxs(); err == nil {
		r.syncHealth(ctx, ps, ctxs)
	}

	// 4. Plan per driver and turn changes into steps.
	jobs := r.planJobs(ctx, ps, observeOK, running)
	if len(jobs) > 0 {
		r.execute(ctx, ps, jobs)
	}
}

// startRun begins the run of manifest m's generation if it is not the
// current one: open waiting steps of the old run are closed, backoffs
// reset (a new desired state may fix what failed).
func (r *Reconciler) startRun(m schema.Manifest) error {
	id := fmt.Sprintf("%d-%.12s", m.Generation, m.Commit)
	if r.run.ID == id {
		return nil
	}
	for _, sid := range sortedNames(r.waiting) {
		s := r.waiting[sid]
		s.State, s.Ended = StepFailed, r.now()
		s.Error = fmt.Sprintf("superseded by generation %d before it ran", m.Generation)
		if err := r.recordStep(s); err != nil {
			return err
		}
	}
	run := Run{ID: id, Generation: m.Generation, Commit: m.Commit, Started: r.now().UTC()}
	if err := r.cfg.Journal.StartRun(run); err != nil {
		return err
	}
	r.log.Info("new run", "run", id, "generation", m.Generation, "commit", m.Commit)
	r.run = run
	r.attempts = map[string]int{}
	r.retries = map[string]*retry{}
	r.waiting = map[string]Step{}
	return nil
}

// eligibleNodes are the live members with props at /hw/<name>.
func (r *Reconciler) eligibleNodes(live []string) []Node {
	var out []Node
	for _, name := range live {
		e, ok := r.cfg.Store.Get("/hw/" + name)
		if !ok {
			continue
		}
		var hw props.HW
		if err := vfs.Decode(e.Value, &hw); err != nil {
			r.log.Warn("unreadable props; node left out of placement", "member", name, "err", err)
			continue
		}
		n := Node{Name: name, Labels: hw.Labels, CPUMilli: hw.Capacity.CPUMilli, MemoryBytes: hw.Capacity.MemoryBytes, GPUs: hw.Capacity.GPUs}
		if hw.Capacity.GPUs > 0 {
			n.Devices = []string{DeviceGPU}
		}
		out = append(out, n)
	}
	return out
}

// readInstances reads /run/<node>/instances of the other live nodes. When
// a node (re)joins after this loop started, an entry it wrote before the
// join, less than JoinGrace ago, is what a previous life of that node
// left: its processes may be gone, and believing it would move instances
// back to a node that does not run them. Such a node counts as not seen
// until it publishes afresh. (Members already there when this loop
// started are believed: to a node that just came back, everyone else
// "joined" at its own join, and their entries are current.) An entry
// written in the member's current life (a Wall at or above its Started) is
// believed at once, however late this node saw the member join: in a
// cluster forming, a member often publishes before the others hear of it.
func (r *Reconciler) readInstances(live []string, since map[string]time.Time, started map[string]int64) map[string]map[string]InstanceStatus {
	out := map[string]map[string]InstanceStatus{}
	now := r.now()
	for _, name := range live {
		if name == r.cfg.Node {
			continue
		}
		e, ok := r.cfg.Store.Get("/run/" + name + "/" + runInstances)
		if !ok {
			continue
		}
		thisLife := started[name] > 0 && e.Version.Wall >= started[name]
		if joined := since[name]; !thisLife && joined.After(r.started) && e.Version.Wall < joined.UnixNano() && now.Sub(joined) < r.cfg.JoinGrace {
			continue
		}
		var m map[string]InstanceStatus
		if err := vfs.Decode(e.Value, &m); err != nil {
			r.log.Warn("unreadable instances of a member", "member", name, "err", err)
			continue
		}
		out[name] = m
	}
	return out
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// runningSet holds, per kind and name, whether an instance runs anywhere.
type runningSet map[string]bool

func (rs runningSet) has(kind, name string) bool { return rs[kind+"/"+name] }

// currentPlacement builds the placement that runs now from the live
// instances of every live node, this one's from what its drivers observe.
// When views differed for a moment and two nodes run the same instance,
// the copy that started first is the one placement keeps ([Dedupe] with
// that choice): every node picks the same one, and a node that comes back
// does not take back instances that moved while it was away.
func (r *Reconciler) currentPlacement(others map[string]map[string]InstanceStatus, observed map[string][]drivers.Instance) (Placement, runningSet) {
	type copyOf struct {
		node    string
		started time.Time
		running bool
	}
	copies := map[string][]copyOf{}
	running := runningSet{}
	add := func(node string, st InstanceStatus) {
		if st.State == drivers.Running {
			running[st.Kind+"/"+st.Name] = true
		}
		live := st.State == drivers.Running || st.State == drivers.Starting || st.State == drivers.Backoff
		if st.Kind == drivers.KindCTX && st.Instance != "" && live {
			copies[st.Instance] = append(copies[st.Instance], copyOf{node, st.StartedAt, st.State == drivers.Running})
		}
	}
	for node, insts := range others {
		for _, st := range insts {
			add(node, st)
		}
	}
	for drv, insts := range observed {
		for _, in := range insts {
			add(r.cfg.Node, r.statusOf(drv, in))
		}
	}
	current := Placement{}
	runningOn := map[string][]string{}
	keep := Placement{}
	for inst, cs := range copies {
		if len(cs) == 1 {
			current[inst] = cs[0].node
			continue
		}
		nodes := make([]string, 0, len(cs))
		for _, c := range cs {
			nodes = append(nodes, c.node)
		}
		runningOn[inst] = nodes
		// The copy kept: a running one over one starting or in backoff
		// (a node back from a crash may hold a dead instance's record
		// in backoff, with an old start time), then the one that started
		// first, then the higher-ranked node.
		best := copyOf{node: Rank(inst, nodes)[0]}
		for _, c := range cs {
			if c.node == best.node {
				best = c
			}
		}
		for _, c := range cs {
			switch {
			case c.running != best.running:
				if c.running {
					best = c
				}
			case !c.started.IsZero() && (best.started.IsZero() || c.started.Before(best.started)):
				best = c
			}
		}
		keep[inst] = best.node
	}
	stop := Dedupe(runningOn, keep)
	for inst, nodes := range runningOn {
		for _, n := range nodes {
			if !slices.Contains(stop[n], inst) {
				current[inst] = n
			}
		}
	}
	if l := stop[r.cfg.Node]; len(l) > 0 {
		r.log.Info("instances also run elsewhere; this copy stops", "instances", l)
	}
	return current, running
}

// statusOf is what this node publishes of an observed instance.
func (r *Reconciler) statusOf(drv string, in drivers.Instance) InstanceStatus {
	st := InstanceStatus{Driver: drv, SpecHash: in.SpecHash, State: in.State, Pid: in.Pid, StartedAt: in.StartedAt,
		Restarts: in.Restarts, ExitCode: in.ExitCode, Message: in.Message}
	if res, ok := r.health.resultFor(in); ok && in.State == drivers.Running {
		st.Healthy, st.Health = res.Healthy, res.Message
	}
	if in.Spec != nil {
		st.Kind, st.Name = in.Spec.Kind, in.Spec.Name
	}
	kind, rest, _ := strings.Cut(ResourceOf(in.ID, r.cfg.Node), "/")
	if st.Kind == "" {
		st.Kind = kind
	}
	if kind == drivers.KindCTX {
		st.Instance = rest
		if st.Name == "" {
			if name, _, err := ParseInstanceID(rest); err == nil {
				st.Name = name
			}
		}
	} else if st.Name == "" {
		st.Name = rest
	}
	return st
}

// job is one change to apply as a step.
type job struct {
	step   Step
	change drivers.Change
	driver drivers.Driver
}

// planJobs plans every driver and returns the steps to apply now. Changes
// held back by a requirement become waiting steps; those in backoff are
// skipped until due.
func (r *Reconciler) planJobs(ctx context.Context, ps *passState, observeOK map[string]bool, running runningSet) []job {
	d := ps.desired
	now := r.now()
	r.wakeAt = time.Time{}
	for drvName := range d.Specs {
		if _, ok := r.cfg.Drivers[drvName]; !ok {
			for _, s := range d.Specs[drvName] {
				u := d.Units[s.ID]
				ps.problem(ProblemKey(u.Kind, u.Name), s.ID, fmt.Sprintf("no %s driver on node %s", drvName, r.cfg.Node))
			}
		}
	}
	ctxs, _ := ps.snap.Ctxs()
	mids, _ := ps.snap.Mids()
	ro := r.newRollout(ps, ctxs)
	planned := map[string]bool{}
	var jobs []job
	for _, drvName := range sortedNames(r.cfg.Drivers) {
		if !observeOK[drvName] {
			continue
		}
		drv := r.cfg.Drivers[drvName]
		specs := d.Specs[drvName]
		changes, err := drv.Plan(ctx, specs, ps.observed[drvName])
		if err != nil {
			// One bad spec must not block the others: find it, report
			// it, and plan without it.
			var ok []drivers.Spec
			for _, s := range specs {
				if _, err := drv.Plan(ctx, []drivers.Spec{s}, nil); err != nil {
					u := d.Units[s.ID]
					ps.problem(ProblemKey(u.Kind, u.Name), s.ID, err.Error())
					d.Keep[ProblemKey(u.Kind, u.Name)] = true
					continue
				}
				ok = append(ok, s)
			}
			changes, err = drv.Plan(ctx, ok, ps.observed[drvName])
			if err != nil {
				ps.problem("driver."+drvName, drvName, "plan: "+err.Error())
				continue
			}
		}
		for _, c := range changes {
			u, desired := d.Units[c.ID]
			resource := u.Resource
			if !desired {
				resource = ResourceOf(c.ID, r.cfg.Node)
				if c.Action == drivers.Delete && d.Keep[problemKeyOf(resource)] {
					continue
				}
			}
			step := Step{
				ID:         StepID(ps.gen, resource, string(c.Action)),
				Run:        r.run.ID,
				Generation: ps.gen,
				Resource:   resource,
				Action:     string(c.Action),
			}
			if rep, err := vfs.Encode(drivers.Preview(c)); err == nil {
				step.Report = rep
			}
			if rt := r.retries[resource]; rt != nil && now.Before(rt.next) {
				ps.skipped++
				if r.wakeAt.IsZero() || rt.next.Before(r.wakeAt) {
					r.wakeAt = rt.next
				}
				continue
			}
			if c.Action == drivers.Create && len(ps.unseen) > 0 {
				ps.skipped++
				continue
			}
			if c.Action != drivers.Delete && len(u.Requires) > 0 {
				if why := unmet(u.Requires, ctxs, mids, running); why != "" {
					planned[step.ID] = true
					ps.skipped++
					r.markWaiting(step, why)
					continue
				}
			}
			if c.Action == drivers.Replace && u.Kind == drivers.KindCTX {
				if why := ro.admit(c.ID, u.Name); why != "" {
					planned[step.ID] = true
					ps.skipped++
					r.markWaiting(step, why)
					continue
				}
			}
			planned[step.ID] = true
			jobs = append(jobs, job{step: step, change: c, driver: drv})
		}
	}
	// Waiting steps that are no longer planned (the instance moved, the
	// requirement is gone) end here, so none stays open.
	for _, id := range sortedNames(r.waiting) {
		if planned[id] {
			continue
		}
		s := r.waiting[id]
		delete(r.waiting, id)
		s.State, s.Ended, s.Error = StepFailed, r.now(), "no longer planned on this node"
		if err := r.recordStep(s); err != nil {
			r.log.Error("record step", "step", s.ID, "err", err)
		}
	}
	return jobs
}

// unmet says which required CTX or MID has no running instance anywhere,
// or "" when all run.
func unmet(requires []string, ctxs map[string]schema.Ctx, mids map[string]schema.Mid, running runningSet) string {
	var missing []string
	for _, name := range requires {
		_, isCtx := ctxs[name]
		_, isMid := mids[name]
		switch {
		case isCtx && running.has(drivers.KindCTX, name), isMid && running.has(drivers.KindMID, name):
		case !isCtx && !isMid:
			missing = append(missing, name+" (not in the desired state)")
		default:
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return "waiting for " + strings.Join(missing, ", ") + " to run"
}

// markWaiting records step as waiting with why, unless it already is.
func (r *Reconciler) markWaiting(step Step, why string) {
	if w, ok := r.waiting[step.ID]; ok && w.Error == why {
		return
	}
	step.State, step.Error = StepWaiting, why
	step.Attempt = r.attempts[step.ID] + 1
	r.attempts[step.ID] = step.Attempt
	if err := r.recordStep(step); err != nil {
		r.log.Error("record step", "step", step.ID, "err", err)
		return
	}
	r.waiting[step.ID] = step
}

// execute applies jobs with bounded concurrency: deletes first (they free
// resources), then the rest. A job is skipped, not recorded, when a newer
// generation has arrived meanwhile: the next pass plans it afresh.
func (r *Reconciler) execute(ctx context.Context, ps *passState, jobs []job) {
	var deletes, others []job
	for _, j := range jobs {
		if j.change.Action == drivers.Delete {
			deletes = append(deletes, j)
		} else {
			others = append(others, j)
		}
	}
	// Steps that started finish even when the agent stops: a step cut off
	// halfway is safe (the journal has it running), but one that ends
	// leaves a cleaner history. ShutdownGrace bounds the wait.
	stepCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stopAfter := context.AfterFunc(ctx, func() { time.AfterFunc(r.cfg.ShutdownGrace, cancel) })
	defer stopAfter()
	var mu sync.Mutex
	for _, group := range [][]job{deletes, others} {
		sem := make(chan struct{}, r.cfg.Parallel)
		var wg sync.WaitGroup
		for _, j := range group {
			if ctx.Err() != nil || r.newestGen.Load() > ps.gen {
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if ctx.Err() != nil || r.newestGen.Load() > ps.gen {
					return
				}
				ok := r.apply(stepCtx, j)
				mu.Lock()
				ps.progress = ps.progress || ok
				mu.Unlock()
				r.publishDuring(ps)
			}()
		}
		wg.Wait()
	}
}

// apply runs one step: recorded running, applied, recorded done or failed.
// It reports whether the step succeeded.
func (r *Reconciler) apply(ctx context.Context, j job) bool {
	s := j.step
	r.mu.Lock()
	s.Attempt = r.attempts[s.ID] + 1
	r.attempts[s.ID] = s.Attempt
	delete(r.waiting, s.ID)
	r.mu.Unlock()
	s.State, s.Started = StepRunning, r.now()
	if err := r.recordStep(s); err != nil {
		r.log.Error("record step; not applying it", "step", s.ID, "err", err)
		return false
	}
	rep, err := j.driver.Apply(ctx, j.change)
	s.Ended = r.now()
	if b, eerr := vfs.Encode(rep); eerr == nil {
		s.Report = b
	}
	r.mu.Lock()
	if err != nil {
		s.State, s.Error = StepFailed, err.Error()
		rt := r.retries[s.Resource]
		if rt == nil {
			rt = &retry{}
			r.retries[s.Resource] = rt
		}
		rt.failures++
		delay := r.cfg.RetryBase
		for i := 1; i < rt.failures && delay < r.cfg.RetryMax; i++ {
			delay *= 2
		}
		delay = min(delay, r.cfg.RetryMax)
		rt.next = s.Ended.Add(delay)
		rt.reason = fmt.Sprintf("%s failed: %v; retry %d in %s", s.Action, err, rt.failures+1, delay)
		if r.wakeAt.IsZero() || rt.next.Before(r.wakeAt) {
			r.wakeAt = rt.next
		}
	} else {
		s.State = StepDone
		delete(r.retries, s.Resource)
	}
	r.mu.Unlock()
	if err != nil {
		r.log.Warn("step failed", "step", s.ID, "resource", s.Resource, "action", s.Action, "attempt", s.Attempt, "err", err)
	} else {
		r.log.Debug("step done", "step", s.ID, "resource", s.Resource, "action", s.Action, "result", rep.Result)
	}
	if rerr := r.recordStep(s); rerr != nil {
		r.log.Error("record step", "step", s.ID, "err", rerr)
	}
	return err == nil
}

// publishDuring refreshes /run/<node>/progress and history at most once a
// second while a long pass applies steps, so `ctxos up` shows it move.
func (r *Reconciler) publishDuring(ps *passState) {
	now := r.now()
	last := r.lastMid.Load()
	if last != nil && now.Sub(*last) < time.Second {
		return
	}
	if !r.lastMid.CompareAndSwap(last, &now) {
		return
	}
	r.mu.Lock()
	p := r.progress.clone()
	r.mu.Unlock()
	run, steps := r.cfg.Journal.Current()
	p.Steps, p.Resources = countSteps(steps)
	p.Run, p.State, p.Message, p.Converged, p.Updated = run.ID, ProgressApplying, "applying steps", false, now.UTC()
	r.put("/run/"+r.cfg.Node+"/"+runProgress, p)
	r.put("/run/"+r.cfg.Node+"/"+runHistory, r.cfg.Journal.Recent(r.cfg.HistoryWindow))
}

func countSteps(steps []Step) (StepCounts, map[string]StepCounts) {
	var total StepCounts
	per := map[string]StepCounts{}
	for _, s := range steps {
		total.add(s.State)
		c := per[s.Resource]
		c.add(s.State)
		per[s.Resource] = c
	}
	return total, per
}

// finishPass observes again and publishes what the pass leaves: instances,
// progress, steps, history and problems. It runs whatever the pass did.
func (r *Reconciler) finishPass(ctx context.Context, ps *passState) {
	if ctx.Err() != nil {
		return
	}
	node := r.cfg.Node
	r.measureCPU(ps)
	// What runs now. When the pass stopped early it may not have
	// observed, so observe here whatever it did.
	observed := map[string][]drivers.Instance{}
	observeOK := true
	for name, d := range r.cfg.Drivers {
		insts, err := d.Observe(ctx)
		if err != nil {
			observeOK = false
			ps.problem("driver."+name, name, "observe: "+err.Error())
			continue
		}
		observed[name] = insts
	}
	statuses := map[string]InstanceStatus{}
	for drv, insts := range observed {
		for _, in := range insts {
			statuses[in.ID] = r.statusOf(drv, in)
		}
	}
	if observeOK {
		if r.republish.Swap(false) {
			r.forget("/run/" + node + "/" + runInstances)
		}
		r.put("/run/"+node+"/"+runInstances, statuses)
		r.publishUsage(ps.scaled, observed)
	}

	p := Progress{Node: node, Generation: ps.gen, Commit: ps.commit, Run: r.run.ID, State: ps.state, Message: ps.message,
		Passes: r.passes, Updated: r.now().UTC()}
	run, steps := r.cfg.Journal.Current()
	if run.ID == r.run.ID {
		p.Steps, p.Resources = countSteps(steps)
	}
	if d := ps.desired; d != nil {
		p.Unplaced = len(d.Unplaced)
		// Unhealthy desired instances and failing resources are problems.
		for id, u := range d.Units {
			p.Desired++
			st, ok := statuses[id]
			switch {
			case ok && st.State == drivers.Running:
				p.Running++
				if st.Healthy != nil && !*st.Healthy {
					ps.problem(ProblemKey(u.Kind, u.Name), id, "unhealthy: "+st.Health)
				}
			case ok && st.Message != "":
				ps.problem(ProblemKey(u.Kind, u.Name), id, string(st.State)+": "+st.Message)
			}
		}
		r.mu.Lock()
		for res, rt := range r.retries {
			ps.problem(problemKeyOf(res), res, rt.reason)
		}
		r.mu.Unlock()
		// Converged: nothing left to change here, everything desired runs.
		converged := ps.skipped == 0 && len(r.waiting) == 0 && len(ps.problems) == 0 && p.Running == p.Desired && observeOK
		if converged {
			for name, drv := range r.cfg.Drivers {
				changes, err := drv.Plan(ctx, d.Specs[name], observed[name])
				if err != nil || len(changes) > 0 {
					converged = false
					break
				}
			}
		}
		p.Converged = converged
		switch {
		case converged:
			p.State, p.Message = ProgressConverged, fmt.Sprintf("%d instances run", p.Running)
		case len(ps.unseen) > 0:
			p.State, p.Message = ProgressApplying, "waiting for "+strings.Join(ps.unseen, ", ")+" before creating instances"
		case len(r.waiting) > 0:
			p.State, p.Message = ProgressApplying, fmt.Sprintf("%d steps waiting", len(r.waiting))
		default:
			p.State, p.Message = ProgressApplying, fmt.Sprintf("%d of %d instances run", p.Running, p.Desired)
		}
		r.publishPlacement(ps)
		if ps.progress && !converged {
			// Something changed: a waiting step may now run.
			r.Trigger("progress")
		}
	}
	if len(ps.problems) > 0 {
		p.Errors = map[string]string{}
		for key, m := range ps.problems {
			whats := sortedNames(m)
			p.Errors[key] = m[whats[0]]
			if len(whats) > 1 {
				p.Errors[key] += fmt.Sprintf(" (and %d more)", len(whats)-1)
			}
		}
	}
	r.mu.Lock()
	r.progress = p
	r.mu.Unlock()
	if !p.sameAs(r.lastPub) {
		r.put("/run/"+node+"/"+runProgress, p)
		r.lastPub = p
	}
	r.publishSteps(steps, run)
	if n := r.records.Load(); n != r.histPub {
		r.put("/run/"+node+"/"+runHistory, r.cfg.Journal.Recent(r.cfg.HistoryWindow))
		r.histPub = n
	}
	r.publishProblems(ps)
}

func (r *Reconciler) publishSteps(steps []Step, run Run) {
	v := StepsView{Run: run.ID, Generation: run.Generation, Commit: run.Commit}
	v.Counts, _ = countSteps(steps)
	for _, s := range steps {
		if s.State != StepDone && len(v.Open) < maxOpenSteps {
			s.Report = nil
			v.Open = append(v.Open, s)
		}
	}
	r.put("/run/"+r.cfg.Node+"/"+runSteps, v)
}

// publishPlacement writes the unplaced instances to /itg/<node>/placement
// when this node is the one that reports them.
func (r *Reconciler) publishPlacement(ps *passState) {
	names := make([]string, len(ps.nodes))
	for i, n := range ps.nodes {
		names[i] = n.Name
	}
	path := "/itg/" + r.cfg.Node + "/" + itgPlacement
	if PreferredHolder(itgPlacement, names) == r.cfg.Node && len(ps.desired.Unplaced) > 0 {
		r.put(path, PlacementProblem{Generation: ps.gen, Unplaced: ps.desired.Unplaced})
		return
	}
	r.del(path)
}

// publishProblems writes /itg/<node>/<kind>.<name> for every CTX or MID
// with a problem and deletes the entries of those now healthy, including
// those an earlier agent left.
func (r *Reconciler) publishProblems(ps *passState) {
	prefix := "/itg/" + r.cfg.Node + "/"
	if !r.cleanedItg {
		r.cleanedItg = true
		for _, e := range r.cfg.Store.List(strings.TrimSuffix(prefix, "/")) {
			if key := strings.TrimPrefix(e.Path, prefix); key != itgPlacement && !strings.Contains(key, "/") && isProblemKey(key) {
				r.itgKeys[key] = true
			}
		}
	}
	seen := map[string]bool{}
	for key, m := range ps.problems {
		if !vfs.ValidSegment(key) {
			continue
		}
		kind, name, _ := strings.Cut(key, ".")
		pr := Problem{Kind: kind, Name: name, Instances: m}
		for _, what := range sortedNames(m) {
			pr.Reason = m[what]
			break
		}
		seen[key] = true
		r.itgKeys[key] = true
		r.put(prefix+key, pr)
	}
	for key := range r.itgKeys {
		if !seen[key] {
			r.del(prefix + key)
			delete(r.itgKeys, key)
		}
	}
}

func isProblemKey(key string) bool {
	for _, p := range []string{drivers.KindCTX + ".", drivers.KindMID + ".", "driver."} {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// put writes v at path when its encoding differs from what this loop last
// wrote there, so an idle node does not gossip.
// forget makes the next put of path write even an unchanged value.
func (r *Reconciler) forget(path string) {
	r.mu.Lock()
	delete(r.published, path)
	r.mu.Unlock()
}

func (r *Reconciler) put(path string, v any) {
	b, err := vfs.Encode(v)
	if err != nil {
		r.log.Error("encode", "path", path, "err", err)
		return
	}
	r.mu.Lock()
	same := bytes.Equal(r.published[path], b)
	r.mu.Unlock()
	if same {
		if _, ok := r.cfg.Store.Get(path); ok {
			return
		}
	}
	if _, err := r.cfg.Store.Put(path, b); err != nil {
		if !errors.Is(err, vfs.ErrClosed) {
			r.log.Error("publish", "path", path, "err", err)
		}
		return
	}
	r.mu.Lock()
	r.published[path] = b
	r.mu.Unlock()
}

func (r *Reconciler) del(path string) {
	if _, ok := r.cfg.Store.Get(path); !ok {
		return
	}
	if _, err := r.cfg.Store.Delete(path); err != nil && !errors.Is(err, vfs.ErrClosed) {
		r.log.Error("delete", "path", path, "err", err)
	}
	r.mu.Lock()
	delete(r.published, path)
	r.mu.Unlock()
}
