//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// pushAndSync pushes main and asks the syncing host to sync now, as the
// Git server's webhook would; it fails the test unless the commit is
// taken into force.
func (c *Cluster) pushAndSync(t testing.TB) {
	t.Helper()
	c.Repo.Push("main")
	if out, code := c.sync(); code != 0 {
		t.Fatalf("ctxos sync: exit %d: %s", code, out)
	}
}

// TestPushScaleDelete: a CTX pushed to Git runs where placement put it, a
// changed replica count is applied, a deleted CTX is pruned everywhere.
func TestPushScaleDelete(t *testing.T) {
	for _, hosts := range []int{3, 5} {
		t.Run(fmt.Sprintf("hosts=%d", hosts), func(t *testing.T) {
			requireHosts(t)
			repo := newRepo(t, nil)
			c := newCluster(t, hosts, repo)
			first := repo.Git("rev-parse", "HEAD")
			c.waitConverged(t, c.Hosts, nil, first, 60*time.Second)

			// The first CTX of a cluster that just formed: one instance
			// per host (spread).
			want := map[string]int{"web": hosts}
			repo.Write(repo.files(want))
			commit := repo.Commit("add web")
			start := time.Now()
			c.pushAndSync(t)
			placed, at := c.waitConverged(t, c.Hosts, want, commit, 90*time.Second)
			figure(t, "first-push-to-converged", hosts, at.Sub(start), fmt.Sprintf("instances=%d", hosts))
			for _, h := range c.Hosts {
				if got := countOn(placed, h.Name); got != 1 {
					t.Errorf("spread of %d instances on %d hosts: %s runs %d, want 1 (%s)", hosts, hosts, h.Name, got, placed.PerHost())
				}
			}

			// Another CTX pushed to the running cluster.
			want = map[string]int{"web": hosts, "api": hosts}
			repo.Write(repo.files(want))
			commit = repo.Commit("add api")
			start = time.Now()
			c.pushAndSync(t)
			_, at = c.waitConverged(t, c.Hosts, want, commit, 60*time.Second)
			figure(t, "push-to-converged", hosts, at.Sub(start), fmt.Sprintf("instances=%d", hosts))
			before := c.pids(t)

			// Two more replicas: the running ones stay where they are.
			want = map[string]int{"web": hosts + 2, "api": hosts}
			repo.Write(repo.files(want))
			commit = repo.Commit("scale web")
			start = time.Now()
			c.pushAndSync(t)
			placed, at = c.waitConverged(t, c.Hosts, want, commit, 60*time.Second)
			figure(t, "scale-to-converged", hosts, at.Sub(start), "instances=+2")
			after := c.pids(t)
			for id, pid := range before {
				if after[id] != pid {
					t.Errorf("scale up restarted or moved %s: pid %d, now %d", id, pid, after[id])
				}
			}
			t.Logf("placement after scale: %s", placed.PerHost())

			// Deleted from Git: pruned everywhere, the other CTX untouched.
			want = map[string]int{"api": hosts}
			repo.Write(map[string]string{"ctx/web.cue": ""})
			commit = repo.Commit("remove web")
			start = time.Now()
			c.pushAndSync(t)
			_, at = c.waitConverged(t, c.Hosts, want, commit, 60*time.Second)
			figure(t, "delete-to-pruned", hosts, at.Sub(start), fmt.Sprintf("instances=-%d", hosts+2))
			for id, pid := range c.pids(t) {
				if before[id] != pid {
					t.Errorf("deleting web touched %s: pid %d, now %d", id, before[id], pid)
				}
			}
		})
	}
}

// TestPlanPullRequest: `ctxos plan --cluster` run against the live
// cluster prints, for the change on a feature branch, the markdown a
// pull-request comment gets: items, fields, totals and which hosts gain
// instances. Then the branch is merged and the hosts the plan named are
// the ones that run the new instances.
func TestPlanPullRequest(t *testing.T) {
	requireHosts(t)
	repo := newRepo(t, map[string]int{"web": 2})
	c := newCluster(t, 3, repo)
	main := repo.Git("rev-parse", "HEAD")
	c.waitConverged(t, c.Hosts, map[string]int{"web": 2}, main, 90*time.Second)

	repo.Git("checkout", "--quiet", "-b", "feature")
	repo.Write(repo.files(map[string]int{"web": 3, "api": 1}))
	feature := repo.Commit("feature: scale web, add api")

	out, errOut, code := c.Hosts[0].run("plan", repo.Work, "--from", "main", "--to", "feature",
		"--cluster", c.Hosts[0].apiAddr(), "--format", "markdown")
	if code != 0 {
		t.Fatalf("ctxos plan: exit %d: %s", code, errOut)
	}
	got := maskPlan(out, repo.Marker, map[string]string{main: "MAIN", feature: "FEATURE"})
	// Which hosts run web now depends on whether the first commit was
	// placed before the other hosts had joined (placement is sticky), so
	// the golden file stops at the node table; the table is checked
	// against what the hosts run after the merge, below.
	diff, nodes, ok := strings.Cut(got, "#### Nodes")
	if !ok {
		t.Fatalf("plan has no node table:\n%s", got)
	}
	for _, want := range []string{"| node | instances before | after | gains | loses |", "`api.0`", "`web.2`"} {
		if !strings.Contains(nodes, want) {
			t.Errorf("node table lacks %q:\n%s", want, nodes)
		}
	}
	golden(t, "testdata/plan.md", diff)

	// The merge: what runs must be what the plan said each host gains.
	repo.Git("checkout", "--quiet", "main")
	repo.Git("merge", "--quiet", "--ff-only", "feature")
	before := placementOf(t, c)
	c.pushAndSync(t)
	after, _ := c.waitConverged(t, c.Hosts, map[string]int{"web": 3, "api": 1}, feature, 60*time.Second)
	for id, host := range after {
		if _, ok := before[id]; ok {
			continue
		}
		// The plan names CTX instances as placement does ("web.2"), the
		// hosts' reports by driver instance id ("ctx.web.2").
		name := "`" + strings.TrimPrefix(id, "ctx.") + "`"
		if !strings.Contains(out, name) {
			t.Errorf("instance %s started on %s, the plan does not name it", id, host)
			continue
		}
		if row := planRow(out, host); !strings.Contains(row, name) {
			t.Errorf("instance %s started on %s, the plan's row for %s is %q", id, host, host, row)
		}
	}
}

// placementOf is the converged placement of c at whatever commit it runs.
func placementOf(t testing.TB, c *Cluster) Placement {
	t.Helper()
	out := Placement{}
	for _, h := range c.Live() {
		v, err := h.view()
		if err != nil {
			t.Fatal(err)
		}
		for id := range v.running() {
			out[id] = h.Name
		}
	}
	return out
}

// planRow returns the line of the plan's node table for host.
func planRow(plan, host string) string {
	for _, l := range strings.Split(plan, "\n") {
		if strings.HasPrefix(l, "| "+host+" |") {
			return l
		}
	}
	return ""
}

var hexRun = regexp.MustCompile(`\b[0-9a-f]{12,40}\b`)

// maskPlan makes plan output stable across runs: the marker and the known
// commits by name, any other hash as HASH.
func maskPlan(s, marker string, commits map[string]string) string {
	s = strings.ReplaceAll(s, marker, "MARKER")
	s = hexRun.ReplaceAllStringFunc(s, func(h string) string {
		for full, name := range commits {
			if strings.HasPrefix(full, h) {
				return name
			}
		}
		return "HASH"
	})
	return s
}

// golden compares got with the file at path; CTXOS_UPDATE_GOLDEN=1
// rewrites the file instead.
func golden(t testing.TB, path, got string) {
	t.Helper()
	if os.Getenv("CTXOS_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (CTXOS_UPDATE_GOLDEN=1 writes it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (CTXOS_UPDATE_GOLDEN=1 rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestVetRejectsBadCommit: `ctxos vet` refuses a bad commit with
// file:line:col diagnostics; pushed anyway, it is refused by the cluster,
// which keeps the last good commit running, and `ctxos status` on every
// host shows the diagnostics.
func TestVetRejectsBadCommit(t *testing.T) {
	requireHosts(t)
	repo := newRepo(t, map[string]int{"web": 2})
	c := newCluster(t, 3, repo)
	good := repo.Git("rev-parse", "HEAD")
	placed, _ := c.waitConverged(t, c.Hosts, map[string]int{"web": 2}, good, 90*time.Second)
	pids := c.pids(t)

	bad := strings.Replace(repo.sleepCTX("web", 2), "replicas: 2", `replicas: "two"`, 1)
	line := 1 + strings.Count(bad[:strings.Index(bad, "replicas")], "\n")
	repo.Write(map[string]string{"ctx/web.cue": bad})
	badCommit := repo.Commit("web: replicas as a word")

	// CI: vet on the checkout.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, errOut, code := runCmd(ctx, repo.Work, nil, ctxosBin, "vet", ".")
	wantDiag := fmt.Sprintf("ctx/web.cue:%d:", line)
	if code != 1 || !strings.Contains(out, wantDiag) || !strings.Contains(out, "ctx.web.replicas") {
		t.Fatalf("ctxos vet: exit %d, stdout %q, stderr %q; want exit 1 and a diagnostic %s... ctx.web.replicas", code, out, errOut, wantDiag)
	}

	// Pushed anyway: refused, the good commit stays in force.
	repo.Push("main")
	if out, code := c.sync(); code != 1 || !strings.Contains(out, wantDiag) {
		t.Fatalf("ctxos sync of a bad commit: exit %d, output %q; want exit 1 naming %s", code, out, wantDiag)
	}
	for _, h := range c.Hosts {
		waitFor(t, 30*time.Second, h.Name+" status shows the refused commit's diagnostics", func() (bool, string) {
			m, err := h.revision()
			if err != nil {
				return false, err.Error()
			}
			if m.Commit != good {
				return false, fmt.Sprintf("in force: %.12s, want the good %.12s", m.Commit, good)
			}
			var st statusView
			if err := h.json(&st, "status"); err != nil {
				return false, err.Error()
			}
			for _, e := range st.Sync {
				var ss syncStatus
				if json.Unmarshal(e.Value, &ss) != nil || !strings.HasPrefix(badCommit, ss.Commit) {
					continue
				}
				for _, d := range ss.Diagnostics {
					if d.File == "ctx/web.cue" && d.Line == line {
						text, _, _ := h.ctxos("status")
						if !strings.Contains(text, wantDiag) {
							return false, fmt.Sprintf("status text lacks %s: %q", wantDiag, text)
						}
						return true, ""
					}
				}
				return false, fmt.Sprintf("sync state %s of %.12s without a diagnostic at %s: %+v", ss.State, ss.Commit, wantDiag, ss.Diagnostics)
			}
			return false, fmt.Sprintf("no sync status about %.12s yet", badCommit)
		})
	}
	after, _ := c.waitConverged(t, c.Hosts, map[string]int{"web": 2}, good, 30*time.Second)
	if !maps.Equal(after, placed) || !maps.Equal(c.pids(t), pids) {
		t.Errorf("the refused commit changed what runs: %v pids %v, before %v pids %v", after, c.pids(t), placed, pids)
	}
}

func countOn(p Placement, host string) int {
	n := 0
	for _, h := range p {
		if h == host {
			n++
		}
	}
	return n
}

// pids returns instance id → pid over every live host's report.
func (c *Cluster) pids(t testing.TB) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, h := range c.Live() {
		v, err := h.view()
		if err != nil {
			t.Fatal(err)
		}
		for id, in := range v.running() {
			out[id] = in.Pid
		}
	}
	return out
}
