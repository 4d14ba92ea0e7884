package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/cluster/props"
	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/gitsync"
	"github.com/ctxos/ctxos/reconcile"
	"github.com/ctxos/ctxos/schema"
)

// The dashboard is one read-only page on the agent's API address: what
// `ctxos status` shows (members and their load, the commit in force, each
// node's sync and progress, the scaler's decisions, problems) plus every
// instance where it runs and the recent steps, cluster-wide. Everything on
// it is read from this node's VFS replica, like status. It refreshes
// itself every few seconds; there is nothing to click that changes state.

//go:embed dashboard.html
var dashboardHTML string

var dashboardPage = template.Must(template.New("dashboard").Funcs(template.FuncMap{
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return ago(now.Sub(t))
	},
	"short": shortRev,
}).Parse(dashboardHTML))

// dashboardRefresh is how often the page reloads itself.
const dashboardRefresh = 3 * time.Second

// dashboardHistory bounds the recent steps shown.
const dashboardHistory = 30

type dashboardView struct {
	Now       time.Time
	Refresh   int // seconds
	Node      string
	Manifest  *schema.Manifest
	Syncs     []dashboardSync
	Members   []dashboardMember
	Progress  []dashboardProgress
	Scales    []dashboardScale
	Problems  []dashboardProblem
	Instances []dashboardInstance
	Steps     []reconcile.Step
}

type dashboardSync struct {
	Node string
	gitsync.SyncStatus
}

type dashboardMember struct {
	cluster.MemberStatus
	CPU, Memory, Model string
}

type dashboardProgress struct {
	Node string
	reconcile.Progress
}

type dashboardScale struct {
	CTX string
	reconcile.Scale
}

type dashboardProblem struct {
	Path, What, Reason string
}

type dashboardInstance struct {
	Node, Key string
	reconcile.InstanceStatus
}

// Verdict is the health check's verdict in a word, "" without one.
func (d dashboardInstance) Verdict() string {
	switch {
	case d.Healthy == nil:
		return ""
	case *d.Healthy:
		return "healthy"
	}
	return "unhealthy"
}

// serveDashboard renders the dashboard from api's status view and the
// node's replica, store.
func serveDashboard(api *cluster.API, store *vfs.Store, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := dashboardOf(api.Status(r.Context()), store, time.Now())
		var b bytes.Buffer
		if err := dashboardPage.Execute(&b, v); err != nil {
			log.Warn("render dashboard", "err", err)
			http.Error(w, "render dashboard: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(b.Bytes())
	})
}

func dashboardOf(st cluster.StatusView, store *vfs.Store, now time.Time) dashboardView {
	v := dashboardView{Now: now, Refresh: int(dashboardRefresh / time.Second), Node: st.Node}
	var m schema.Manifest
	if len(st.Revision) > 0 && json.Unmarshal(st.Revision, &m) == nil && m.Commit != "" {
		v.Manifest = &m
	}
	for _, e := range st.Sync {
		var s gitsync.SyncStatus
		if json.Unmarshal(e.Value, &s) == nil {
			v.Syncs = append(v.Syncs, dashboardSync{Node: nodeOfRun(e.Path), SyncStatus: s})
		}
	}
	for _, ms := range st.Members {
		dm := dashboardMember{MemberStatus: ms, CPU: "-", Memory: "-"}
		var hw props.HW
		if len(ms.HW) > 0 && json.Unmarshal(ms.HW, &hw) == nil {
			dm.Model = fmt.Sprintf("%d threads, %s", hw.CPU.Threads, gib(hw.MemoryBytes))
		}
		var sum struct {
			CPUPercent float64      `json:"cpuPercent"`
			Memory     props.Memory `json:"memory"`
		}
		if len(ms.Sum) > 0 && json.Unmarshal(ms.Sum, &sum) == nil {
			dm.CPU = fmt.Sprintf("%.0f%%", sum.CPUPercent)
			dm.Memory = fmt.Sprintf("%s of %s", gib(sum.Memory.Used), gib(sum.Memory.Total))
		}
		v.Members = append(v.Members, dm)
	}
	for _, e := range st.Progress {
		var p reconcile.Progress
		if json.Unmarshal(e.Value, &p) == nil {
			v.Progress = append(v.Progress, dashboardProgress{Node: nodeOfRun(e.Path), Progress: p})
		}
	}
	for _, e := range st.Scale {
		var s reconcile.Scale
		if json.Unmarshal(e.Value, &s) == nil {
			v.Scales = append(v.Scales, dashboardScale{CTX: strings.TrimPrefix(e.Path, "/lk/scale/"), Scale: s})
		}
	}
	for _, e := range st.Integrity {
		var p reconcile.Problem
		if json.Unmarshal(e.Value, &p) == nil && p.Reason != "" {
			v.Problems = append(v.Problems, dashboardProblem{Path: e.Path, What: p.Kind + " " + p.Name, Reason: p.Reason})
			continue
		}
		var s gitsync.SyncStatus
		if json.Unmarshal(e.Value, &s) == nil && s.Error != "" {
			v.Problems = append(v.Problems, dashboardProblem{Path: e.Path, What: "sync", Reason: s.Error})
			continue
		}
		v.Problems = append(v.Problems, dashboardProblem{Path: e.Path, Reason: compactJSON(e.Value)})
	}
	for _, ms := range st.Members {
		if ms.State != cluster.StateAlive {
			continue
		}
		if e, ok := store.Get("/run/" + ms.Name + "/instances"); ok {
			var insts map[string]reconcile.InstanceStatus
			if vfs.Decode(e.Value, &insts) == nil {
				for key, in := range insts {
					v.Instances = append(v.Instances, dashboardInstance{Node: ms.Name, Key: key, InstanceStatus: in})
				}
			}
		}
		if e, ok := store.Get("/run/" + ms.Name + "/history"); ok {
			var steps []reconcile.Step
			if vfs.Decode(e.Value, &steps) == nil {
				v.Steps = append(v.Steps, steps...)
			}
		}
	}
	sort.Slice(v.Instances, func(i, j int) bool {
		a, b := v.Instances[i], v.Instances[j]
		return a.Key < b.Key || a.Key == b.Key && a.Node < b.Node
	})
	slices.SortFunc(v.Steps, func(a, b reconcile.Step) int { return b.At.Compare(a.At) })
	v.Steps = v.Steps[:min(len(v.Steps), dashboardHistory)]
	return v
}

// nodeOfRun is the node of a /run/<node>/... or /itg/<node>/... path.
func nodeOfRun(path string) string {
	segs, err := vfs.Split(path)
	if err != nil || len(segs) < 2 {
		return path
	}
	return segs[1]
}
