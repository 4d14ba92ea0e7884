package reconcile

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/schema"
)

// DeviceGPU is the device kind a node has when its props report a GPU; a
// CTX asks for it with placement: devices: ["gpu"].
const DeviceGPU = "gpu"

// Desired is what one snapshot asks of one node, given the live nodes and
// the instances that run now: the specs this node runs, by driver, and the
// cluster-wide placement it took its share from.
type Desired struct {
	// Specs are the instances this node runs, by driver name (a CTX's
	// runtime, a MID's driver), each list sorted by id.
	Specs map[string][]drivers.Spec
	// Units describes every spec of Specs by instance id.
	Units map[string]Unit
	// Placement is where every CTX instance of the cluster runs.
	Placement Placement
	// MIDNodes lists, per MID name, the nodes that run it, sorted.
	MIDNodes map[string][]string
	// Unplaced are the CTX and MID instances no node can take, with why.
	Unplaced []Unplaced
	// Problems are the CTXs and MIDs that cannot run as written, by
	// problem key ("ctx.web", "mid.cache"), with the reason. Their
	// instances are left out of Specs, and what already runs of them is
	// left alone (see Keep).
	Problems map[string]string
	// Keep lists, by problem key, the CTXs and MIDs whose instances must
	// not be stopped although they are not in Specs: their desired state is unreadable here, and
	// stopping what runs over a typo would be worse than leaving it.
	Keep map[string]bool
}

// Unit is what the loop needs to know of one desired instance besides its
// spec: which CTX or MID it belongs to, its driver and what it requires.
type Unit struct {
	Kind     string   // drivers.KindCTX or drivers.KindMID
	Name     string   // the CTX or MID name
	Driver   string   // the driver that runs it
	Resource string   // the step resource: "ctx/web.0", "mid/cache"
	Requires []string // names of CTXs and MIDs that must run first
}

// ProblemKey is the /itg/<node>/ segment for a CTX or MID: "ctx.web".
func ProblemKey(kind, name string) string { return kind + "." + name }

// CTXSpecID is the driver instance id of a CTX instance: "ctx.<InstanceID>".
func CTXSpecID(instance string) string { return drivers.KindCTX + "." + instance }

// MIDSpecID is the driver instance id of a MID on a node: "mid.<name>.<node>".
func MIDSpecID(mid, node string) string { return drivers.KindMID + "." + mid + "." + node }

// DesiredFor computes what snap asks of node. nodes are the eligible live
// members ([Place]'s input), current the placement that runs now. Every
// node computes the same Placement and MIDNodes from the same inputs. An
// autoscaled CTX runs autoscale.min instances; see [DesiredScaled].
//
// A CTX or MID that cannot be turned into a spec (an unreadable value, a
// name too long for an instance id, a bad duration) is reported in
// Problems and its instances are neither started nor stopped. DesiredFor
// returns an error only when the snapshot's CTX or MID entries cannot be
// decoded at all.
func DesiredFor(snap *schema.Snapshot, node string, nodes []Node, current Placement) (*Desired, error) {
	return DesiredScaled(snap, node, nodes, current, nil)
}

// DesiredScaled is DesiredFor with the scaler's decisions: scales maps an
// autoscaled CTX to its number of instances (/lk/scale/<ctx>), kept within
// its autoscale.min and max. A CTX without a decision runs autoscale.min.
func DesiredScaled(snap *schema.Snapshot, node string, nodes []Node, current Placement, scales map[string]int) (*Desired, error) {
	ctxs, err := snap.Ctxs()
	if err != nil {
		return nil, fmt.Errorf("decode CTXs: %w", err)
	}
	mids, err := snap.Mids()
	if err != nil {
		return nil, fmt.Errorf("decode MIDs: %w", err)
	}
	strategy := ""
	if sys, err := snap.Sys(); err == nil {
		strategy = sys.Scheduler.Strategy
	}
	d := &Desired{
		Specs:    map[string][]drivers.Spec{},
		Units:    map[string]Unit{},
		MIDNodes: map[string][]string{},
		Problems: map[string]string{},
		Keep:     map[string]bool{},
	}

	// CTXs: requests for placement, then the specs of this node's share.
	names := sortedNames(ctxs)
	reqs := make([]Request, 0, len(ctxs))
	for _, name := range names {
		c := ctxs[name]
		req, err := ctxRequest(name, c, strategy, scales)
		if err == nil {
			// Check the spec once here, so a bad CTX is reported whatever
			// node its instances would land on.
			_, err = ctxSpec(name, c, max(req.Replicas-1, 0))
		}
		if err != nil {
			d.Problems[ProblemKey(drivers.KindCTX, name)] = err.Error()
			d.Keep[ProblemKey(drivers.KindCTX, name)] = true
			continue
		}
		reqs = append(reqs, req)
	}
	d.Placement, d.Unplaced = Place(nodes, reqs, current)
	for _, id := range sortedNames(d.Placement) {
		if d.Placement[id] != node {
			continue
		}
		name, idx, err := ParseInstanceID(id)
		if err != nil {
			continue // Place only returns ids it made
		}
		c := ctxs[name]
		spec, err := ctxSpec(name, c, idx)
		if err != nil {
			d.Problems[ProblemKey(drivers.KindCTX, name)] = err.Error()
			continue
		}
		d.add(spec, Unit{Kind: drivers.KindCTX, Name: name, Driver: c.Runtime,
			Resource: drivers.KindCTX + "/" + id, Requires: c.Requires})
	}

	// MIDs: all, a selector or a count of nodes.
	for _, name := range sortedNames(mids) {
		m := mids[name]
		on, unplaced := midNodes(name, m, nodes)
		d.MIDNodes[name] = on
		d.Unplaced = append(d.Unplaced, unplaced...)
		if !slices.Contains(on, node) {
			continue
		}
		spec, err := midSpec(name, m, node)
		if err != nil {
			d.Problems[ProblemKey(drivers.KindMID, name)] = err.Error()
			d.Keep[ProblemKey(drivers.KindMID, name)] = true
			continue
		}
		d.add(spec, Unit{Kind: drivers.KindMID, Name: name, Driver: m.Driver,
			Resource: drivers.KindMID + "/" + name, Requires: m.Requires})
	}
	for drv := range d.Specs {
		slices.SortFunc(d.Specs[drv], func(a, b drivers.Spec) int { return strings.Compare(a.ID, b.ID) })
	}
	return d, nil
}

func (d *Desired) add(s drivers.Spec, u Unit) {
	d.Specs[u.Driver] = append(d.Specs[u.Driver], s)
	d.Units[s.ID] = u
}

// ResourceOf maps a driver instance id back to its step resource, for
// instances that are observed but no longer desired: "ctx.web.0" is
// "ctx/web.0", "mid.cache.<node>" is "mid/cache".
func ResourceOf(id, node string) string {
	if rest, ok := strings.CutPrefix(id, drivers.KindCTX+"."); ok {
		return drivers.KindCTX + "/" + rest
	}
	if rest, ok := strings.CutPrefix(id, drivers.KindMID+"."); ok {
		if name, ok := strings.CutSuffix(rest, "."+node); ok && name != "" {
			return drivers.KindMID + "/" + name
		}
		return drivers.KindMID + "/" + rest
	}
	return "other/" + id
}

// problemKeyOf maps a step resource to its problem key: "ctx/web.0" and
// "ctx/web" are "ctx.web".
func problemKeyOf(resource string) string {
	kind, rest, _ := strings.Cut(resource, "/")
	if kind == drivers.KindCTX {
		if name, _, err := ParseInstanceID(rest); err == nil {
			rest = name
		}
	}
	return kind + "." + rest
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ctxRequest is a CTX's demand on placement.
func ctxRequest(name string, c schema.Ctx, defaultStrategy string, scales map[string]int) (Request, error) {
	mem, err := memoryOf(c.Resources.Memory)
	if err != nil {
		return Request{}, fmt.Errorf("ctx %s: resources.memory: %w", name, err)
	}
	strategy := c.Placement.Strategy
	if strategy == "" {
		strategy = defaultStrategy
	}
	if c.Replicas < 0 {
		return Request{}, fmt.Errorf("ctx %s: replicas: %d is negative", name, c.Replicas)
	}
	return Request{
		Name:        name,
		Replicas:    instancesOf(name, c, scales),
		CPUMilli:    int64(c.Resources.CPU),
		MemoryBytes: mem,
		GPUs:        c.Resources.GPU,
		Strategy:    strategy,
		Constraints: c.Placement.Nodes,
		Devices:     c.Placement.Devices,
	}, nil
}

// instancesOf is how many instances a CTX asks for: replicas, or for an
// autoscaled CTX the scaler's decision within min and max (min without
// one).
func instancesOf(name string, c schema.Ctx, scales map[string]int) int {
	as := c.Autoscale
	if as == nil {
		return c.Replicas
	}
	n, ok := scales[name]
	if !ok {
		return as.Min
	}
	return min(max(n, as.Min), as.Max)
}

func memoryOf(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	return schema.MemoryBytes(s)
}

// ctxSpec is the driver spec of instance idx of CTX name.
func ctxSpec(name string, c schema.Ctx, idx int) (drivers.Spec, error) {
	id := CTXSpecID(InstanceID(name, idx))
	bad := func(field string, err error) (drivers.Spec, error) {
		return drivers.Spec{}, fmt.Errorf("ctx %s: %s: %w", name, field, err)
	}
	if c.Runtime == "" {
		return bad("runtime", fmt.Errorf("missing"))
	}
	if !drivers.ValidID(id) {
		return bad("name", fmt.Errorf("instance id %q is not a valid instance id (groups of [a-z0-9] joined by single '.', '_' or '-', at most %d characters)", id, drivers.MaxIDLen))
	}
	mem, err := memoryOf(c.Resources.Memory)
	if err != nil {
		return bad("resources.memory", err)
	}
	grace, err := durationOf(c.Stop.Grace)
	if err != nil {
		return bad("stop.grace", err)
	}
	dir, err := absDir(c.Dir)
	if err != nil {
		return bad("dir", err)
	}
	s := drivers.Spec{
		ID: id, Kind: drivers.KindCTX, Name: name,
		Command: c.Command, Args: c.Args, Env: c.Env, Dir: dir, User: c.User, Image: c.Image,
		Resources: drivers.Resources{CPUMilli: int64(c.Resources.CPU), MemoryBytes: mem, GPUs: c.Resources.GPU},
		Restart:   drivers.RestartPolicy{Policy: c.Restart},
		Isolate:   c.Isolate,
		Ports:     c.Ports,
		Stop:      drivers.StopPolicy{Signal: c.Stop.Signal, Grace: grace},
	}
	for _, m := range c.Mounts {
		dm := drivers.Mount{Source: m.Source, Target: m.Target, ReadOnly: m.Readonly}
		if m.Type == "tmpfs" {
			dm.Type = "tmpfs"
			if dm.Source == "" {
				dm.Source = "tmpfs"
			}
		}
		s.Mounts = append(s.Mounts, dm)
	}
	if err := s.Validate(); err != nil {
		return bad("spec", err)
	}
	return s, nil
}

// midSpec is the driver spec of MID name on node. The process driver's
// params become the spec's command; any other driver gets its params as
// strings (non-string values JSON-encoded).
func midSpec(name string, m schema.Mid, node string) (drivers.Spec, error) {
	id := MIDSpecID(name, node)
	bad := func(field string, err error) (drivers.Spec, error) {
		return drivers.Spec{}, fmt.Errorf("mid %s: %s: %w", name, field, err)
	}
	if m.Driver == "" {
		return bad("driver", fmt.Errorf("missing"))
	}
	if !drivers.ValidID(id) {
		return bad("name", fmt.Errorf("instance id %q is not a valid instance id (groups of [a-z0-9] joined by single '.', '_' or '-', at most %d characters)", id, drivers.MaxIDLen))
	}
	s := drivers.Spec{ID: id, Kind: drivers.KindMID, Name: name}
	if m.Driver == schema.RuntimeProcess {
		var p schema.ProcessParams
		if err := m.DecodeParams(&p); err != nil {
			return bad("params", err)
		}
		dir, err := absDir(p.Dir)
		if err != nil {
			return bad("params.dir", err)
		}
		s.Command, s.Args, s.Env, s.Dir, s.User = p.Command, p.Args, p.Env, dir, p.User
		s.Restart.Policy = p.Restart
	} else if len(m.Params) > 0 {
		s.Params = map[string]string{}
		for k, v := range m.Params {
			if str, ok := v.(string); ok {
				s.Params[k] = str
				continue
			}
			b, err := json.Marshal(v)
			if err != nil {
				return bad("params."+k, err)
			}
			s.Params[k] = string(b)
		}
	}
	if err := s.Validate(); err != nil {
		return bad("spec", err)
	}
	return s, nil
}

// midNodes chooses the eligible nodes a MID runs on: all of them, those
// whose labels match the selector, or the first count of [Rank] of the
// MID's name. A count larger than the eligible nodes places what it can
// and reports the rest unplaced.
func midNodes(name string, m schema.Mid, nodes []Node) ([]string, []Unplaced) {
	var names []string
	for _, n := range nodes {
		if len(m.Nodes.Selector) > 0 && !labelsMatch(n.Labels, m.Nodes.Selector) {
			continue
		}
		names = append(names, n.Name)
	}
	sort.Strings(names)
	names = slices.Compact(names)
	switch {
	case m.Nodes.Count > 0:
		ranked := Rank(name, names)
		if len(ranked) >= m.Nodes.Count {
			on := ranked[:m.Nodes.Count]
			sort.Strings(on)
			return on, nil
		}
		var unplaced []Unplaced
		for i := len(ranked); i < m.Nodes.Count; i++ {
			unplaced = append(unplaced, Unplaced{
				Instance: fmt.Sprintf("mid.%s #%d", name, i+1),
				Reason:   fmt.Sprintf("count %d, but only %d eligible nodes", m.Nodes.Count, len(ranked)),
			})
		}
		sort.Strings(ranked)
		return ranked, unplaced
	case m.Nodes.All || len(m.Nodes.Selector) > 0:
		if len(names) == 0 && len(m.Nodes.Selector) > 0 {
			return nil, []Unplaced{{Instance: "mid." + name, Reason: "no node matches selector " + formatLabels(m.Nodes.Selector)}}
		}
		return names, nil
	}
	return nil, []Unplaced{{Instance: "mid." + name, Reason: "nodes: none of all, selector or count is set"}}
}

func labelsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func durationOf(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

// absDir resolves a relative working directory against the agent's, as
// the schema documents; no dir at all is the agent's own, so a command
// like "go run ./examples/hello/app" works from where `ctxos up` runs.
func absDir(dir string) (string, error) {
	if filepath.IsAbs(dir) {
		return dir, nil
	}
	if dir == "" {
		dir = "."
	}
	return filepath.Abs(dir)
}
