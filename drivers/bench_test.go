package drivers

import (
	"fmt"
	"testing"
)

func benchSpecs(n int) ([]Spec, []Instance) {
	specs := make([]Spec, n)
	obs := make([]Instance, n)
	for i := range specs {
		s := Spec{ID: fmt.Sprintf("ctx.web.%d", i), Kind: KindCTX, Name: "web", Command: "sleep", Args: []string{"1000"},
			Env: map[string]string{"A": "1", "B": "2"}, Ports: map[string]int{"http": 8080}}
		specs[i] = s
		obs[i] = Instance{ID: s.ID, SpecHash: s.Hash(), State: Running}
	}
	return specs, obs
}

func BenchmarkSpecHash(b *testing.B) {
	specs, _ := benchSpecs(1)
	b.ReportAllocs()
	for b.Loop() {
		specs[0].Hash()
	}
}

// BenchmarkPlanChanges1000 plans a node with 1000 instances, all in sync:
// the reconciler's resync cost when nothing changed.
func BenchmarkPlanChanges1000(b *testing.B) {
	specs, obs := benchSpecs(1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := PlanChanges(specs, obs); err != nil {
			b.Fatal(err)
		}
	}
}
