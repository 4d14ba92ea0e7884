package reconcile

import (
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/schema"
)

func TestRecommend(t *testing.T) {
	as := schema.Autoscale{Min: 1, Max: 10, TargetCPU: 50}
	tests := []struct {
		name        string
		cur         int
		samples     []int64 // millicores, request 100
		want, pct   int
		autoscale   *schema.Autoscale
		requestMill int64
	}{
		{"nothing reported keeps the count", 3, nil, 3, 0, nil, 0},
		{"on target", 2, []int64{50, 50}, 2, 50, nil, 0},
		{"within the tolerance", 2, []int64{54, 54}, 2, 54, nil, 0},
		{"twice the target doubles", 2, []int64{100, 100}, 4, 100, nil, 0},
		{"exactly two instances' worth is two, not three", 1, []int64{100}, 2, 100, nil, 0},
		{"a busy instance grows by 4 at most from 1", 1, []int64{1000}, 5, 1000, nil, 0},
		{"a busy pair grows to double at most", 4, []int64{1000, 1000, 1000, 1000}, 8, 1000, nil, 0},
		{"never above max", 8, []int64{1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000}, 10, 1000, nil, 0},
		{"idle shrinks to what the load needs", 4, []int64{10, 10, 10, 10}, 1, 10, nil, 0},
		{"never below min", 4, []int64{0, 0, 0, 0}, 2, 0, &schema.Autoscale{Min: 2, Max: 10, TargetCPU: 50}, 0},
		{"a count outside min and max is brought in", 20, nil, 10, 0, nil, 0},
		{"only the reporting instances' use counts", 3, []int64{300}, 6, 300, nil, 0},
		{"a larger request", 2, []int64{500, 500}, 2, 50, nil, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, req := as, int64(100)
			if tt.autoscale != nil {
				a = *tt.autoscale
			}
			if tt.requestMill != 0 {
				req = tt.requestMill
			}
			got, pct := recommend(tt.cur, a, req, tt.samples)
			if got != tt.want || pct != tt.pct {
				t.Errorf("recommend(%d, %v) = %d, %d%%; want %d, %d%%", tt.cur, tt.samples, got, pct, tt.want, tt.pct)
			}
		})
	}
}

// TestStabilize: up at once; down only after the lease was held for the
// whole window, with every instance reporting, and to the highest
// recommendation of the window.
func TestStabilize(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &Reconciler{cfg: Config{ScaleDownWindow: time.Minute},
		scaleRecs: map[string][]scaleRec{}, scaleSince: map[string]time.Time{"web": t0}}
	steps := []struct {
		at        time.Duration
		cur, want int
		allReport bool
		next      int
	}{
		{0, 2, 5, true, 5},                 // up at once
		{10 * time.Second, 5, 3, true, 5},  // down, but the lease is held for 10s only
		{30 * time.Second, 5, 4, true, 5},  // still inside the first window
		{61 * time.Second, 5, 2, false, 5}, // a window held, but not every instance reports
		{62 * time.Second, 5, 2, true, 4},  // the highest of the last minute: 4 (30s), 5 (0s) fell out
		{100 * time.Second, 4, 2, true, 2}, // 4 (30s) and 3 (10s) fell out too; only 2s left
		{101 * time.Second, 2, 6, true, 6}, // up again at once
		{120 * time.Second, 6, 1, true, 6}, // 6 (101s) is in the window
		{162 * time.Second, 6, 1, true, 1}, // 6 (101s) fell out: every recommendation left is 1
	}
	for _, s := range steps {
		got := r.stabilize("web", s.cur, s.want, s.allReport, t0.Add(s.at))
		if got != s.next {
			t.Fatalf("at %s, cur %d, want %d: next = %d, want %d", s.at, s.cur, s.want, got, s.next)
		}
	}
}

// busyCTX is an autoscaled process CTX (min 1, max 3, target 50% of 100
// millicores) whose instances busy-loop, marked for counting.
func busyCTX(marker string) schema.Ctx {
	return schema.Ctx{
		Runtime: schema.RuntimeProcess, Command: "sh", Args: []string{"-c", "while :; do :; done"},
		Env:       map[string]string{"CTXOS_TEST_MARK": marker},
		Autoscale: &schema.Autoscale{Min: 1, Max: 3, TargetCPU: 50},
		Restart:   schema.RestartAlways,
		Resources: schema.Resources{CPU: 100, Memory: "16Mi"},
		Stop:      schema.Stop{Signal: "SIGKILL", Grace: "1s"},
	}
}

// TestScalerFollowsCPU runs an autoscaled CTX (min 1, max 3, target 50% of
// 100 millicores) on one node with the real process driver: busy-looping
// instances make the scaler go to 3 at once; the same CTX changed to idle
// instances goes back to 1 once the scale-down window has passed; removed
// from Git, its decision goes too.
func TestScalerFollowsCPU(t *testing.T) {
	marker := newMarker(t)
	t.Cleanup(func() { killMarked(marker) })
	store := newStore(t, "n1")
	putHW(t, store, "n1", nil)
	// The resync is longer than the test may take: only the scaler's own
	// pace may bring the decisions.
	a := startAgent(t, "n1", store, agentOpts{resync: time.Hour, scalePeriod: time.Second, scaleDownWindow: 2 * time.Second})
	busy := busyCTX(marker)
	scale := func() (Scale, bool) {
		e, ok := store.Get(scalePrefix + "web")
		if !ok {
			return Scale{}, false
		}
		var s Scale
		return s, vfs.Decode(e.Value, &s) == nil
	}

	// A pass with nothing autoscaled comes first, just before the CTX
	// that is: the scaler's round was less than a period ago then, and
	// the loop must still pick up the scaler's pace at once.
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"other": sleepCTX(marker, 1, "1000")}, nil), 1)
	converged(t, a, marker, 1, 1)
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"web": busy}, nil), 2)
	converged(t, a, marker, 2, 3)
	s, ok := scale()
	if !ok || s.Replicas != 3 || s.By != "n1" || s.CPUPercent <= 50 || s.Reporting < 1 {
		t.Fatalf("/lk/scale/web = %+v (%v), want 3 instances decided by n1 over more than 50%% CPU", s, ok)
	}
	var usage map[string]int64
	readValue(t, store, "/run/n1/usage", &usage)
	if usage["web.0"] <= 50 {
		t.Errorf("/run/n1/usage = %v, want web.0 above 50 millicores", usage)
	}

	idle := busy
	idle.Command, idle.Args = "sleep", []string{"1000"}
	publish(t, store, buildSnapshot(t, map[string]schema.Ctx{"web": idle}, nil), 3)
	converged(t, a, marker, 3, 1)
	if s, _ := scale(); s.Replicas != 1 {
		t.Errorf("/lk/scale/web = %+v after the load went, want 1 instance", s)
	}

	publish(t, store, buildSnapshot(t, nil, nil), 4)
	converged(t, a, marker, 4, 0)
	waitUntil(t, "the decision of a CTX gone from Git removed", func() (bool, string) {
		_, ok := scale()
		return !ok, "still there"
	})
	waitUntil(t, "the usage entry removed", func() (bool, string) {
		_, ok := store.Get("/run/n1/usage")
		return !ok, "still there"
	})
}
