package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/reconcile"
)

func TestPrintStatusAutoscaled(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	decision, err := json.Marshal(reconcile.Scale{Replicas: 3, CPUPercent: 180, Reporting: 2, By: "n1", Epoch: 1, At: now.Add(-20 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	st := cluster.StatusView{Node: "n1", Scale: []cluster.EntryView{
		{Path: "/lk/scale/web", Value: decision},
		{Path: "/lk/scale/odd", Value: json.RawMessage(`[1]`)},
	}}
	var out bytes.Buffer
	printStatus(&out, st, now)
	for _, want := range []string{
		"autoscaled:\n",
		"  web: 3 instances, CPU 180% of requested over 2 reporting, decided by n1 20s ago\n",
		"  odd: [1]\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
}
