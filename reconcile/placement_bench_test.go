package reconcile

import (
	"fmt"
	"testing"
)

// benchWorld is 1000 nodes in 4 zones, some with GPUs, and 1000 CTXs of 10
// replicas each (10 000 instances) filling about 60% of the CPU: a mix of
// binpack and spread, with and without zone constraints.
func benchWorld() ([]Node, []Request) {
	nodes := make([]Node, 1000)
	for i := range nodes {
		nodes[i] = Node{
			Name:        fmt.Sprintf("node-%04d", i),
			Labels:      map[string]string{"zone": fmt.Sprintf("z%d", i%4), "rack": fmt.Sprintf("r%d", i%40)},
			CPUMilli:    16000,
			MemoryBytes: 64 * gi,
		}
		if i%10 == 0 {
			nodes[i].GPUs = 4
			nodes[i].Devices = []string{"nvidia0", "nvidia1", "nvidia2", "nvidia3"}
		}
	}
	reqs := make([]Request, 1000)
	for i := range reqs {
		r := Request{
			Name:        fmt.Sprintf("ctx-%04d", i),
			Replicas:    10,
			CPUMilli:    int64(250 * (1 + i%7)),
			MemoryBytes: int64(1+i%5) * gi / 2,
		}
		if i%3 == 0 {
			r.Strategy = StrategySpread
		}
		if i%5 == 0 {
			r.Constraints = map[string]string{"zone": fmt.Sprintf("z%d", i%4)}
		}
		if i%50 == 0 {
			r.GPUs = 1
			r.Devices = []string{"nvidia0"}
		}
		reqs[i] = r
	}
	return nodes, reqs
}

func BenchmarkPlace10000On1000(b *testing.B) {
	nodes, reqs := benchWorld()
	var p Placement
	var unplaced []Unplaced
	for b.Loop() {
		p, unplaced = Place(nodes, reqs, nil)
	}
	b.ReportMetric(float64(len(p)), "placed")
	b.ReportMetric(float64(len(unplaced)), "unplaced")
}

// BenchmarkReplaceOneCTXChanged is the common case of the loop: one CTX of
// the snapshot changed (here it grows and doubles its replicas), everything
// else keeps its place.
func BenchmarkReplaceOneCTXChanged(b *testing.B) {
	nodes, reqs := benchWorld()
	prev, _ := Place(nodes, reqs, nil)
	reqs[500].Replicas = 20
	reqs[500].CPUMilli += 500
	var p Placement
	for b.Loop() {
		p, _ = Place(nodes, reqs, prev)
	}
	moved := 0
	for id, n := range prev {
		if p[id] != n {
			moved++
		}
	}
	b.ReportMetric(float64(moved), "moved")
}
