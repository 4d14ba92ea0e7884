package reconcile

import (
	"math"
	"strings"
	"time"

	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/schema"
)

// The scaler moves an autoscaled CTX between autoscale.min and max so that
// its instances use targetCPU percent of the CPU they request, on average.
//
// Every node measures the CPU its own instances of autoscaled CTXs use
// (two driver readings of CPUTime, ScalePeriod or more apart) and
// publishes it in /run/<node>/usage. For each autoscaled CTX one node, the
// holder of the lease scale.<ctx> (/lk/lease/scale.<ctx>, first taken by
// the first of Rank over the eligible members), adds up what its instances
// use and writes the number of instances to /lk/scale/<ctx>. Every node
// places that many ([DesiredScaled]), so placement stays one computation
// with the same inputs everywhere.
//
// The rule is the one Kubernetes' horizontal pod autoscaler uses: enough
// instances that the total use is targetCPU percent of their requests, with
// a 10% tolerance; growing at most to double (or by 4) per period, at once;
// shrinking only to the highest number recommended over ScaleDownWindow,
// and only when every instance has reported, so a short lull or an
// instance just started does not stop instances that are needed again a
// minute later.

// Paths of the scaler.
const (
	runUsage    = "usage"       // /run/<node>/usage: map[CTX instance id]CPU millicores
	scalePrefix = "/lk/scale/"  // /lk/scale/<ctx>: Scale
	leasePrefix = "/lk/lease/"  // /lk/lease/<key>: Lease
	scaleLease  = "scale."      // lease key prefix, then the CTX name
	scaleClean  = "scale-clean" // Rank key of the node that deletes stale decisions
)

// Defaults of the scaler's settings in Config.
const (
	DefaultScalePeriod     = 15 * time.Second
	DefaultScaleDownWindow = 5 * time.Minute
	// scaleTolerance is how far from the target the average may be before
	// the scaler acts.
	scaleTolerance = 0.1
)

// Scale is the scaler's decision for one autoscaled CTX, at
// /lk/scale/<ctx>.
type Scale struct {
	Replicas int `cbor:"replicas" json:"replicas"`
	// CPUPercent is the average CPU use the decision saw, in percent of
	// the requested CPU, over Reporting instances.
	CPUPercent int       `cbor:"cpuPercent" json:"cpuPercent"`
	Reporting  int       `cbor:"reporting" json:"reporting"`
	By         string    `cbor:"by" json:"by"`
	Epoch      uint64    `cbor:"epoch" json:"epoch"` // of the lease By held
	At         time.Time `cbor:"at" json:"at"`
}

// cpuReading is one CPUTime reading of a driver instance.
type cpuReading struct {
	cpu     time.Duration
	at      time.Time
	started time.Time // the instance's StartedAt: a restart resets its CPU time
}

// scaleRec is one recommendation, for the scale-down window.
type scaleRec struct {
	at   time.Time
	want int
}

// vfsLeases keeps leases in /lk/lease/<key>.
type vfsLeases struct{ store *vfs.Store }

func (v vfsLeases) GetLease(key string) (Lease, bool) {
	e, ok := v.store.Get(leasePrefix + key)
	if !ok || e.Deleted {
		return Lease{}, false
	}
	var l Lease
	if err := vfs.Decode(e.Value, &l); err != nil {
		return Lease{}, false
	}
	return l, true
}

func (v vfsLeases) PutLease(key string, l Lease) error {
	_, err := v.store.PutValue(leasePrefix+key, l)
	return err
}

// autoscaled returns snap's autoscaled CTXs by name, nil when there
// are none or the CTXs cannot be decoded.
func autoscaled(snap *schema.Snapshot) map[string]schema.Ctx {
	if snap == nil {
		return nil
	}
	ctxs, err := snap.Ctxs()
	if err != nil {
		return nil
	}
	var out map[string]schema.Ctx
	for name, c := range ctxs {
		if c.Autoscale != nil {
			if out == nil {
				out = map[string]schema.Ctx{}
			}
			out[name] = c
		}
	}
	return out
}

// measureCPU tells the drivers that are CPUMeters which of this node's
// instances the scaler needs readings of: those of autoscaled CTXs. Before
// a pass has placed anything it keeps what it said last.
func (r *Reconciler) measureCPU(ps *passState) {
	if ps.desired == nil && ps.snap != nil {
		return
	}
	var ids []string
	if ps.desired != nil {
		for id, u := range ps.desired.Units {
			if _, ok := ps.scaled[u.Name]; ok && u.Kind == drivers.KindCTX {
				ids = append(ids, id)
			}
		}
	}
	for _, d := range r.cfg.Drivers {
		if m, ok := d.(drivers.CPUMeter); ok {
			m.MeasureCPU(ids)
		}
	}
}

// publishUsage writes /run/<node>/usage: the CPU each running instance of
// an autoscaled CTX on this node used since the previous reading, when
// ScalePeriod has passed since then. Without such instances it removes
// the entry.
func (r *Reconciler) publishUsage(scaled map[string]schema.Ctx, observed map[string][]drivers.Instance) {
	path := "/run/" + r.cfg.Node + "/" + runUsage
	if len(scaled) == 0 {
		r.cpuSeen = nil
		r.del(path)
		return
	}
	now := r.now()
	if !r.usageAt.IsZero() && now.Sub(r.usageAt) < r.cfg.ScalePeriod {
		return
	}
	r.usageAt = now
	usage := map[string]int64{}
	seen := map[string]cpuReading{}
	for _, insts := range observed {
		for _, in := range insts {
			kind, rest, _ := strings.Cut(ResourceOf(in.ID, r.cfg.Node), "/")
			// A running instance's CPUTime of 0 is a reading too: an idle
			// process uses less than a clock tick. (Both CTX runtimes
			// measure it.)
			if kind != drivers.KindCTX || in.State != drivers.Running {
				continue
			}
			name, _, err := ParseInstanceID(rest)
			if _, ok := scaled[name]; err != nil || !ok {
				continue
			}
			cur := cpuReading{cpu: in.CPUTime, at: now, started: in.StartedAt}
			seen[in.ID] = cur
			prev, ok := r.cpuSeen[in.ID]
			if !ok || !prev.started.Equal(cur.started) || cur.cpu < prev.cpu || !now.After(prev.at) {
				continue
			}
			usage[rest] = int64(cur.cpu-prev.cpu) * 1000 / int64(now.Sub(prev.at))
		}
	}
	r.cpuSeen = seen
	r.put(path, usage)
}

// readScales returns the scaler's decisions, by CTX.
func (r *Reconciler) readScales() map[string]int {
	out := map[string]int{}
	for _, e := range r.cfg.Store.List(strings.TrimSuffix(scalePrefix, "/")) {
		var s Scale
		if e.Deleted || vfs.Decode(e.Value, &s) != nil {
			continue
		}
		out[strings.TrimPrefix(e.Path, scalePrefix)] = s.Replicas
	}
	return out
}

// readUsage gathers /run/<member>/usage of the live members.
func (r *Reconciler) readUsage(live []string) map[string]int64 {
	out := map[string]int64{}
	for _, name := range live {
		e, ok := r.cfg.Store.Get("/run/" + name + "/" + runUsage)
		if !ok {
			continue
		}
		var u map[string]int64
		if err := vfs.Decode(e.Value, &u); err != nil {
			r.log.Warn("unreadable usage of a member", "member", name, "err", err)
			continue
		}
		for id, milli := range u {
			out[id] = milli
		}
	}
	return out
}

// runScaler decides, every ScalePeriod, the number of instances of each
// autoscaled CTX whose lease this node holds. eligible are the nodes that
// may hold a lease (those placement counts), live every live member.
func (r *Reconciler) runScaler(scaled map[string]schema.Ctx, eligible, live []string, scales map[string]int) {
	// Whether there are autoscaled CTXs is known at every pass, round or
	// not: it sets the loop's pace (a pass every ScalePeriod), and a CTX
	// that just became autoscaled must not wait for the resync.
	switch {
	case len(scaled) == 0:
		r.scaleRecs, r.scaleSince = nil, nil
	case r.scaleRecs == nil:
		r.scaleRecs, r.scaleSince = map[string][]scaleRec{}, map[string]time.Time{}
	}
	// The decision of a CTX no longer autoscaled goes at once too.
	if line := Rank(scaleClean, eligible); len(line) > 0 && line[0] == r.cfg.Node {
		for name := range scales {
			if _, ok := scaled[name]; !ok {
				r.del(scalePrefix + name)
			}
		}
	}
	now := r.now()
	if len(scaled) == 0 || !r.scaledAt.IsZero() && now.Sub(r.scaledAt) < r.cfg.ScalePeriod {
		return
	}
	r.scaledAt = now
	leases := &Leases{Store: vfsLeases{r.cfg.Store}, Node: r.cfg.Node, TTL: 3 * r.cfg.ScalePeriod, Now: r.now}
	usage := r.readUsage(live)
	for _, name := range sortedNames(scaled) {
		c := scaled[name]
		lease, held, err := leases.Acquire(scaleLease+name, eligible)
		if err != nil {
			r.log.Warn("scaler lease", "ctx", name, "err", err)
		}
		if !held {
			delete(r.scaleRecs, name)
			delete(r.scaleSince, name)
			continue
		}
		if _, ok := r.scaleSince[name]; !ok {
			r.scaleSince[name] = now
		}
		cur := instancesOf(name, c, scales)
		var samples []int64
		for i := range cur {
			if u, ok := usage[InstanceID(name, i)]; ok {
				samples = append(samples, u)
			}
		}
		want, pct := recommend(cur, *c.Autoscale, int64(c.Resources.CPU), samples)
		next := r.stabilize(name, cur, want, len(samples) == cur, now)
		_, decided := scales[name]
		if next == cur && (decided || next == c.Autoscale.Min) {
			continue
		}
		r.log.Info("scale", "ctx", name, "from", cur, "to", next, "cpu_percent", pct, "target", c.Autoscale.TargetCPU, "reporting", len(samples))
		r.put(scalePrefix+name, Scale{Replicas: next, CPUPercent: pct, Reporting: len(samples), By: r.cfg.Node, Epoch: lease.Epoch, At: now.UTC()})
	}
}

// stabilize turns a recommendation into the next number of instances:
// up at once, down only to the highest recommendation of the last
// ScaleDownWindow, once this node has held the lease that long and every
// instance reports its use.
func (r *Reconciler) stabilize(name string, cur, want int, allReport bool, now time.Time) int {
	recs := r.scaleRecs[name]
	cut := 0
	for cut < len(recs) && now.Sub(recs[cut].at) > r.cfg.ScaleDownWindow {
		cut++
	}
	recs = append(recs[cut:], scaleRec{at: now, want: want})
	r.scaleRecs[name] = recs
	if want >= cur {
		return want
	}
	if !allReport || now.Sub(r.scaleSince[name]) < r.cfg.ScaleDownWindow {
		return cur
	}
	highest := want
	for _, rec := range recs {
		highest = max(highest, rec.want)
	}
	return min(highest, cur)
}

// recommend returns how many instances would use as's target share of
// their requested CPU (request millicores each) given what cur instances
// use now (samples, millicores, one per instance that reported), and the
// average use in percent of the request. It keeps cur when nothing
// reported or the average is within the tolerance of the target, grows at
// most to max(2·cur, cur+4), and stays within min and max.
func recommend(cur int, as schema.Autoscale, request int64, samples []int64) (want, percent int) {
	if len(samples) == 0 || request <= 0 || as.TargetCPU <= 0 {
		return min(max(cur, as.Min), as.Max), 0
	}
	var total int64
	for _, s := range samples {
		total += s
	}
	avg := float64(total) / float64(len(samples)) / float64(request) * 100
	percent = int(math.Round(avg))
	want = cur
	if math.Abs(avg/float64(as.TargetCPU)-1) > scaleTolerance {
		// Less a hair, so that exactly 2.0 instances' worth is 2, not 3.
		want = int(math.Ceil(float64(total)*100/float64(request)/float64(as.TargetCPU) - 1e-9))
	}
	want = min(want, max(2*cur, cur+4))
	return min(max(want, as.Min), as.Max), percent
}
