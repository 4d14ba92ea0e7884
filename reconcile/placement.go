package reconcile

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// Placement strategies of a [Request].
const (
	// StrategyBinpack fills the most allocated node that fits first, so
	// whole nodes stay free for large requests. It is the default.
	StrategyBinpack = "binpack"
	// StrategySpread puts each instance on the eligible node that runs the
	// fewest instances of the same CTX, then the least allocated one.
	StrategySpread = "spread"
)

// Node is a live member as placement sees it: its name, its labels and the
// capacity its props report in /hw/<node>.
type Node struct {
	Name        string
	Labels      map[string]string
	CPUMilli    int64
	MemoryBytes int64
	GPUs        int
	Devices     []string
}

// Request is one CTX's demand: Replicas instances, each needing the given
// resources on one node.
type Request struct {
	Name        string
	Replicas    int
	CPUMilli    int64
	MemoryBytes int64
	GPUs        int
	// Strategy is StrategyBinpack (also when empty) or StrategySpread.
	Strategy string
	// Constraints are node labels that must all match.
	Constraints map[string]string
	// Devices must all be present on the node.
	Devices []string
}

// Placement maps instance ids ([InstanceID]: "<ctx>.<index>") to node names.
type Placement map[string]string

// Unplaced is an instance [Place] could not put on any node, and why.
type Unplaced struct {
	Instance string
	Reason   string
}

// InstanceID names instance index of a CTX: "<ctx>.<index>".
func InstanceID(ctx string, index int) string { return ctx + "." + strconv.Itoa(index) }

// ParseInstanceID splits an id made by [InstanceID]. CTX names may contain
// dots, so the index is what follows the last one.
func ParseInstanceID(id string) (ctx string, index int, err error) {
	i := strings.LastIndexByte(id, '.')
	if i <= 0 {
		return "", 0, fmt.Errorf("instance id %q: want <ctx>.<index>", id)
	}
	n, err := strconv.Atoi(id[i+1:])
	if err != nil || n < 0 || strconv.Itoa(n) != id[i+1:] {
		return "", 0, fmt.Errorf("instance id %q: index %q is not a non-negative integer", id, id[i+1:])
	}
	return id[:i], n, nil
}

// Place computes where every instance of reqs runs on nodes, given the
// placement that runs now. It is pure and deterministic: the same inputs in
// any order give the same answer on every node.
//
// Rules, in order:
//   - Sticky: an instance of current stays on its node while the node is
//     live (in nodes), still matches the request's constraints and devices,
//     and has room for it. Kept instances are charged to their node first,
//     CTX by CTX in name order and index by index; one that no longer fits
//     (the node shrank or the request grew) is evicted and placed again like
//     a new one, so the eviction is the same on every node.
//   - New and evicted instances are placed in the same order onto eligible
//     nodes (labels match, devices present) with free CPU, memory and GPUs.
//     Binpack picks the node with the highest utilization; spread the node
//     with the fewest instances of this CTX, then the lowest utilization.
//     Utilization is the mean of the CPU and memory fractions in use, in
//     integers so every architecture agrees. GPUs count for fit only.
//   - Ties go to the node with the highest rendezvous weight of (instance,
//     node), not to the alphabetically first node, so that on an empty
//     cluster independent CTXs do not all start on the same node.
//   - Scale down removes the highest indexes: instance ids are always
//     0..Replicas-1, and entries of current outside that are dropped.
//
// Every instance of reqs is either in the result or in the Unplaced list,
// with a reason such as "no node has 2000m CPU free". Invalid input never
// panics: a request with a negative resource or an unknown strategy, and
// both requests of a duplicated name, are reported unplaced; nodes whose name
// appears twice are ambiguous and left out.
func Place(nodes []Node, reqs []Request, current Placement) (Placement, []Unplaced) {
	p := newPlacer(nodes)
	out := make(Placement, len(current))
	var unplaced []Unplaced

	sorted := slices.Clone(reqs)
	slices.SortFunc(sorted, func(a, b Request) int { return cmp.Compare(a.Name, b.Name) })

	// Pass 1: keep what can stay, so new instances never take room a running
	// one already holds.
	work := make([]pendingRequest, 0, len(sorted))
	for i := range sorted {
		r := &sorted[i]
		dup := (i > 0 && sorted[i-1].Name == r.Name) || (i+1 < len(sorted) && sorted[i+1].Name == r.Name)
		bad := requestProblem(r, dup)
		pr := pendingRequest{req: r}
		for idx := 0; idx < r.Replicas; idx++ {
			id := InstanceID(r.Name, idx)
			if bad != "" {
				unplaced = append(unplaced, Unplaced{Instance: id, Reason: bad})
				continue
			}
			if name, ok := current[id]; ok {
				if ni, ok := p.index[name]; ok && p.eligible(r, ni) && p.fits(r, ni) {
					p.allocate(r, ni)
					out[id] = name
					pr.kept = append(pr.kept, ni)
					continue
				}
			}
			pr.todo = append(pr.todo, idx)
		}
		if len(pr.todo) > 0 {
			work = append(work, pr)
		}
	}

	// Pass 2: place new and evicted instances.
	var failed []failedInstance
	for _, pr := range work {
		failed = p.placeRequest(pr, out, failed)
	}
	// Reasons are worded against the final allocation, not the moment each
	// instance failed, so re-placing the result gives the same words.
	for _, f := range failed {
		unplaced = append(unplaced, Unplaced{Instance: f.id, Reason: p.reason(f.req, f.elig)})
	}
	slices.SortFunc(unplaced, func(a, b Unplaced) int { return compareInstanceIDs(a.Instance, b.Instance) })
	return out, unplaced
}

// Dedupe says which copies to stop when more than one node runs the same
// instance, which happens when views differed for a moment. running maps an
// instance id to the nodes that run it. The copy on the placed node survives;
// when the placed node runs none, the copy on the highest-ranked node
// ([Rank] of the instance id over the nodes running it) survives. The result
// maps a node to the sorted instance ids it must stop; instances that run on
// one node only are the ordinary reconcile's business and are not listed.
func Dedupe(running map[string][]string, p Placement) map[string][]string {
	stop := map[string][]string{}
	for inst, nodes := range running {
		ns := slices.Clone(nodes)
		slices.Sort(ns)
		ns = slices.Compact(ns)
		ns = slices.DeleteFunc(ns, func(n string) bool { return n == "" })
		if len(ns) < 2 {
			continue
		}
		keep := p[inst]
		if !slices.Contains(ns, keep) {
			keep = Rank(inst, ns)[0]
		}
		for _, n := range ns {
			if n != keep {
				stop[n] = append(stop[n], inst)
			}
		}
	}
	for _, l := range stop {
		slices.SortFunc(l, compareInstanceIDs)
	}
	return stop
}

// compareInstanceIDs orders by CTX name, then numerically by index, so
// "web.2" comes before "web.10".
func compareInstanceIDs(a, b string) int {
	ac, ai, aerr := ParseInstanceID(a)
	bc, bi, berr := ParseInstanceID(b)
	if aerr != nil || berr != nil {
		return strings.Compare(a, b)
	}
	if c := strings.Compare(ac, bc); c != 0 {
		return c
	}
	return cmp.Compare(ai, bi)
}

// requestProblem says why no instance of r can be placed, or "".
func requestProblem(r *Request, dup bool) string {
	switch {
	case dup:
		return fmt.Sprintf("invalid request: CTX %q is requested twice", r.Name)
	case r.Name == "":
		return "invalid request: empty CTX name"
	case r.CPUMilli < 0:
		return fmt.Sprintf("invalid request: negative CPU %dm", r.CPUMilli)
	case r.MemoryBytes < 0:
		return fmt.Sprintf("invalid request: negative memory %d bytes", r.MemoryBytes)
	case r.GPUs < 0:
		return fmt.Sprintf("invalid request: negative GPUs %d", r.GPUs)
	case r.Strategy != "" && r.Strategy != StrategyBinpack && r.Strategy != StrategySpread:
		return fmt.Sprintf("invalid request: unknown strategy %q (want %s or %s)", r.Strategy, StrategyBinpack, StrategySpread)
	}
	return ""
}

type pendingRequest struct {
	req  *Request
	kept []int // node indexes of kept instances, for spread
	todo []int // instance indexes to place
}

type failedInstance struct {
	id   string
	req  *Request
	elig []int
}

type placeNode struct {
	name    string
	labels  map[string]string
	devices []string

	capCPU, capMem   int64
	capGPU           int
	usedCPU, usedMem int64
	usedGPU          int
	util             uint64 // mean CPU and memory utilization, parts per million
	hash             uint64 // hashString(name), for rendezvous tie-breaks
}

type placer struct {
	nodes  []placeNode
	index  map[string]int
	all    []int   // every node index: the eligible set of unconstrained requests
	counts []int32 // scratch: instances of the request being placed, per node
}

func newPlacer(nodes []Node) *placer {
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b Node) int { return cmp.Compare(a.Name, b.Name) })
	p := &placer{index: make(map[string]int, len(sorted))}
	for i, n := range sorted {
		if n.Name == "" || (i > 0 && sorted[i-1].Name == n.Name) || (i+1 < len(sorted) && sorted[i+1].Name == n.Name) {
			continue
		}
		p.index[n.Name] = len(p.nodes)
		p.all = append(p.all, len(p.nodes))
		p.nodes = append(p.nodes, placeNode{
			name: n.Name, labels: n.Labels, devices: n.Devices,
			capCPU: n.CPUMilli, capMem: n.MemoryBytes, capGPU: n.GPUs,
			hash: hashString(n.Name),
		})
	}
	p.counts = make([]int32, len(p.nodes))
	return p
}

// eligible reports whether node ni satisfies r's labels and devices.
func (p *placer) eligible(r *Request, ni int) bool {
	n := &p.nodes[ni]
	for k, v := range r.Constraints {
		if got, ok := n.labels[k]; !ok || got != v {
			return false
		}
	}
	for _, d := range r.Devices {
		if !slices.Contains(n.devices, d) {
			return false
		}
	}
	return true
}

func (p *placer) fits(r *Request, ni int) bool {
	n := &p.nodes[ni]
	return n.capCPU-n.usedCPU >= r.CPUMilli && n.capMem-n.usedMem >= r.MemoryBytes && n.capGPU-n.usedGPU >= r.GPUs
}

func (p *placer) allocate(r *Request, ni int) {
	n := &p.nodes[ni]
	n.usedCPU += r.CPUMilli
	n.usedMem += r.MemoryBytes
	n.usedGPU += r.GPUs
	n.util = (ppm(n.usedCPU, n.capCPU) + ppm(n.usedMem, n.capMem)) / 2
}

// ppm is used/capacity in parts per million, computed in 128 bits so
// terabytes of memory do not overflow. A resource the node lacks counts as
// unused.
func ppm(used, capacity int64) uint64 {
	if capacity <= 0 || used <= 0 {
		return 0
	}
	if used >= capacity {
		return 1_000_000
	}
	hi, lo := bits.Mul64(uint64(used), 1_000_000)
	q, _ := bits.Div64(hi, lo, uint64(capacity))
	return q
}

// eligibleNodes lists the nodes r may run on, ascending by index.
func (p *placer) eligibleNodes(r *Request) []int {
	if len(r.Constraints) == 0 && len(r.Devices) == 0 {
		return p.all
	}
	var out []int
	for ni := range p.nodes {
		if p.eligible(r, ni) {
			out = append(out, ni)
		}
	}
	return out
}

func (p *placer) placeRequest(pr pendingRequest, out Placement, failed []failedInstance) []failedInstance {
	r := pr.req
	elig := p.eligibleNodes(r)
	spread := r.Strategy == StrategySpread
	if spread {
		for _, ni := range pr.kept {
			p.counts[ni]++
		}
	}
	for _, idx := range pr.todo {
		id := InstanceID(r.Name, idx)
		ni := p.best(r, id, elig, spread)
		if ni < 0 {
			failed = append(failed, failedInstance{id, r, elig})
			continue
		}
		p.allocate(r, ni)
		out[id] = p.nodes[ni].name
		if spread {
			p.counts[ni]++
		}
	}
	if spread {
		for _, ni := range elig {
			p.counts[ni] = 0
		}
	}
	return failed
}

// best returns the node for instance id among elig, or -1 when none fits.
func (p *placer) best(r *Request, id string, elig []int, spread bool) int {
	best := -1
	var bestCount int32
	var bestUtil, bestWeight uint64
	weightOK := false
	idHash := hashString(id)
	for _, ni := range elig {
		n := &p.nodes[ni]
		if n.capCPU-n.usedCPU < r.CPUMilli || n.capMem-n.usedMem < r.MemoryBytes || n.capGPU-n.usedGPU < r.GPUs {
			continue
		}
		if best < 0 {
			best, bestCount, bestUtil, weightOK = ni, p.counts[ni], n.util, false
			continue
		}
		if spread {
			if c := p.counts[ni]; c != bestCount {
				if c < bestCount {
					best, bestCount, bestUtil, weightOK = ni, c, n.util, false
				}
				continue
			}
			if n.util != bestUtil {
				if n.util < bestUtil {
					best, bestUtil, weightOK = ni, n.util, false
				}
				continue
			}
		} else if n.util != bestUtil {
			if n.util > bestUtil {
				best, bestUtil, weightOK = ni, n.util, false
			}
			continue
		}
		// A tie: the rendezvous weight decides. Weights are computed only
		// here, so the common case stays a few comparisons per node.
		if !weightOK {
			bestWeight, weightOK = rendezvousWeight(idHash, p.nodes[best].hash), true
		}
		if w := rendezvousWeight(idHash, n.hash); w > bestWeight {
			best, bestWeight = ni, w
		}
	}
	return best
}

// reason explains why no node in elig fits r right now.
func (p *placer) reason(r *Request, elig []int) string {
	if len(p.nodes) == 0 {
		return "no live node"
	}
	node := "node"
	if len(r.Constraints) > 0 || len(r.Devices) > 0 {
		node = "eligible node"
	}
	if len(elig) == 0 {
		labels := formatLabels(r.Constraints)
		labelsOK := labels == "" || slices.ContainsFunc(p.all, func(ni int) bool {
			return p.eligible(&Request{Constraints: r.Constraints}, ni)
		})
		switch {
		case !labelsOK:
			return "no node matches labels " + labels
		case labels == "":
			return "no node has devices " + strings.Join(r.Devices, ",")
		default:
			return fmt.Sprintf("no node with labels %s has devices %s", labels, strings.Join(r.Devices, ","))
		}
	}
	var cpu, mem, gpu bool
	for _, ni := range elig {
		n := &p.nodes[ni]
		cpu = cpu || n.capCPU-n.usedCPU >= r.CPUMilli
		mem = mem || n.capMem-n.usedMem >= r.MemoryBytes
		gpu = gpu || n.capGPU-n.usedGPU >= r.GPUs
	}
	switch {
	case !cpu:
		return fmt.Sprintf("no %s has %dm CPU free", node, r.CPUMilli)
	case !mem:
		return fmt.Sprintf("no %s has %s memory free", node, formatBytes(r.MemoryBytes))
	case !gpu:
		return fmt.Sprintf("no %s has %s free", node, formatGPUs(r.GPUs))
	}
	return fmt.Sprintf("no %s has %dm CPU, %s memory and %s free together", node, r.CPUMilli, formatBytes(r.MemoryBytes), formatGPUs(r.GPUs))
}

func formatLabels(m map[string]string) string {
	l := make([]string, 0, len(m))
	for k, v := range m {
		l = append(l, k+"="+v)
	}
	slices.Sort(l)
	return strings.Join(l, ",")
}

func formatBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

func formatGPUs(n int) string {
	if n == 1 {
		return "1 GPU"
	}
	return strconv.Itoa(n) + " GPUs"
}
