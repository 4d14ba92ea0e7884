package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/cluster/props"
	"github.com/ctxos/ctxos/gitsync"
	"github.com/ctxos/ctxos/reconcile"
)

// TestDashboard renders the dashboard of a node holding a snapshot, props,
// instances, a problem, a scaler decision and history: each shows, and
// text from the VFS is escaped (a reason holding markup stays text).
func TestDashboard(t *testing.T) {
	f := newPlanFixture(t)
	_, node := startPlanNode(t, f.mainSnapshot, gitsync.Revision{Commit: f.main, Subject: f.mainSubject, Author: "Ada"},
		props.Capacity{CPUMilli: 4000, MemoryBytes: 8 << 30}, []string{"web.0", "web.1"})
	store := node.Store()
	put := func(path string, v any) {
		t.Helper()
		if _, err := store.PutValue(path, v); err != nil {
			t.Fatal(err)
		}
	}
	put("/itg/n0/ctx.web", reconcile.Problem{Kind: "ctx", Name: "web", Reason: `<script>alert("x")</script> exited 1`})
	put("/lk/scale/web", reconcile.Scale{Replicas: 2, CPUPercent: 180, Reporting: 2, By: "n0", At: time.Now().Add(-5 * time.Second)})
	put("/run/n0/progress", reconcile.Progress{Node: "n0", State: reconcile.ProgressConverged, Converged: true, Generation: 1, Running: 2, Desired: 2})
	put("/run/n0/history", []reconcile.Step{{Resource: "ctx/web.1", Action: "create", State: reconcile.StepDone, Generation: 1, At: time.Now()}})

	api := cluster.NewAPI(node)
	api.Handle("GET /{$}", serveDashboard(api, store, slog.New(slog.DiscardHandler)))
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)

	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		"ctxos · node n0",
		"commit <code>" + shortRev(f.main) + "</code>, generation 1",
		"<td>n0</td><td class=\"good\">alive</td>",
		"<td>ctx.web.0</td><td>n0</td><td>process</td>",
		"<td>ctx.web.1</td>",
		"<td>web</td><td>2</td><td>180%</td>",
		"converged",
		"<td>ctx/web.1</td><td>create</td>",
		"&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; exited 1",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}
	if strings.Contains(page, "<script>") {
		t.Error("text from the VFS reached the page as markup")
	}
	// Only the root is the dashboard; other paths stay the API's.
	resp, err = http.Get(srv.URL + "/nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing = %d, want 404", resp.StatusCode)
	}
}
