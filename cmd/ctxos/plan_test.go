package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/cluster/props"
	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/gitsync"
	"github.com/ctxos/ctxos/reconcile"
	"github.com/ctxos/ctxos/schema"
)

// planRepo files: the desired state lives in deploy/ of the repository, so
// that finding it from DIR is tested too.
var (
	planMain = map[string]string{
		"deploy/ctx/web.cue": `ctx: web: {
	command:  "/usr/bin/web"
	replicas: 3
	resources: {cpu: 250, memory: "256Mi"}
	env: {LOG_LEVEL: "info", OLD_FLAG: "1"}
	ports: http: 8080
}
`,
		"deploy/ctx/worker.cue": `ctx: worker: {
	command: "/usr/bin/worker"
	autoscale: {min: 1, max: 4}
}
`,
		"deploy/mid/cache.cue": `mid: cache: {
	driver: "process"
	nodes: all: true
	params: command: "redis-server"
}
`,
		"deploy/ztb/policy.cue": `ztb: allow: [{from: "web", to: "cache"}]
`,
		"deploy/sys/sys.cue": `sys: sync: interval: "30s"
`,
		"README.md": "not desired state\n",
	}
	// planFeature is the pull request: web scaled and reconfigured, api
	// added, the cache MID removed with its rule, a GPU CTX no node can
	// take, and a sys setting changed.
	planFeature = map[string]string{
		"deploy/ctx/web.cue": `ctx: web: {
	command:  "/usr/bin/web"
	args: ["--port", "8080"]
	replicas: 5
	resources: {cpu: 250, memory: "512Mi"}
	env: {LOG_LEVEL: "debug", NEW_FLAG: "1"}
	ports: http: 8080
}
`,
		"deploy/ctx/api.cue": `ctx: api: {
	command: "/usr/bin/api"
	resources: {cpu: 500, memory: "1Gi"}
}
`,
		"deploy/ctx/train.cue": `ctx: train: {
	command: "/usr/bin/train"
	resources: gpu: 1
}
`,
		"deploy/mid/cache.cue": "",
		"deploy/ztb/policy.cue": `ztb: allow: [{from: "api", to: "web", port: "http"}]
`,
		"deploy/sys/sys.cue": `sys: sync: interval: "1m"
`,
	}
)

// gitEnv makes commits reproducible: fixed names and dates, no user or
// system configuration (which could sign commits or change defaults).
func gitEnv(date string) []string {
	return append(os.Environ(),
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.com",
		"GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.com",
		"GIT_AUTHOR_DATE="+date, "GIT_COMMITTER_DATE="+date,
	)
}

func gitRun(tb testing.TB, dir, date string, args ...string) string {
	tb.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv(date)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// writeFiles writes files (slash path → content) under dir; empty content
// removes the file.
func writeFiles(tb testing.TB, dir string, files map[string]string) {
	tb.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if content == "" {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				tb.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// gitCommit writes files, commits them all and returns the commit hash.
func gitCommit(tb testing.TB, dir, date, msg string, files map[string]string) string {
	tb.Helper()
	writeFiles(tb, dir, files)
	gitRun(tb, dir, date, "add", "-A")
	gitRun(tb, dir, date, "commit", "-q", "-m", msg)
	return gitRun(tb, dir, date, "rev-parse", "HEAD")
}

// planFixture is a repository with branches main and feature (and broken,
// whose CUE is invalid), checked out on main.
type planFixture struct {
	dir             string // repository root
	main, feature   string // commit hashes
	broken          string
	deploy          string // the desired-state directory in the working tree
	mainSnapshot    *schema.Snapshot
	mainSubject     string
	mainCommittedAt time.Time
}

func newPlanFixture(tb testing.TB) *planFixture {
	tb.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		tb.Skip("no git command")
	}
	f := &planFixture{dir: tb.TempDir(), mainSubject: "web, worker and a cache"}
	f.deploy = filepath.Join(f.dir, "deploy")
	gitRun(tb, f.dir, "", "init", "-q", "-b", "main")
	f.main = gitCommit(tb, f.dir, "2025-03-01T10:00:00Z", f.mainSubject, planMain)
	f.mainCommittedAt = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	gitRun(tb, f.dir, "", "checkout", "-q", "-b", "feature")
	f.feature = gitCommit(tb, f.dir, "2025-03-02T11:30:00Z", "scale web, add api and train, drop the cache", planFeature)
	gitRun(tb, f.dir, "", "checkout", "-q", "-b", "broken", "main")
	f.broken = gitCommit(tb, f.dir, "2025-03-03T09:00:00Z", "a typo", map[string]string{
		"deploy/ctx/web.cue": "ctx: web: {\n\tcommand: \"/usr/bin/web\"\n\treplicas: \"three\"\n}\n",
	})
	gitRun(tb, f.dir, "", "checkout", "-q", "main")

	snap, diags, err := schema.Load(context.Background(), f.deploy)
	if err != nil || len(diags) > 0 {
		tb.Fatalf("load main: %v %v", err, diags)
	}
	f.mainSnapshot = snap
	return f
}

// runCLI runs ctxos in-process and returns what it printed and its exit
// code, as main would end.
func runCLI(tb testing.TB, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	if err != nil {
		code = 2
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
			err = ee.err
		}
		if err != nil {
			errOut.WriteString("ctxos: " + err.Error() + "\n")
		}
	}
	return out.String(), errOut.String(), code
}

// checkGolden compares got with testdata/plan/name. CTXOS_UPDATE_GOLDEN=1
// rewrites the file instead.
func checkGolden(tb testing.TB, name, got string) {
	tb.Helper()
	path := filepath.Join("testdata", "plan", name)
	if os.Getenv("CTXOS_UPDATE_GOLDEN") != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			tb.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("%v (run with CTXOS_UPDATE_GOLDEN=1 to create it)", err)
	}
	if got != string(want) {
		tb.Errorf("%s differs (CTXOS_UPDATE_GOLDEN=1 rewrites it)\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

func TestPlanBranches(t *testing.T) {
	f := newPlanFixture(t)
	for _, tc := range []struct {
		format, golden string
	}{
		{"markdown", "feature.md"},
		{"text", "feature.txt"},
		{"json", "feature.json"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, "plan", f.deploy, "--from", "main", "--to", "feature", "--format", tc.format)
			if code != 0 {
				t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
			}
			if stderr != "" {
				t.Errorf("stderr = %q, want nothing", stderr)
			}
			checkGolden(t, tc.golden, stdout)
		})
	}

	t.Run("detailed exit code", func(t *testing.T) {
		_, _, code := runCLI(t, "plan", f.deploy, "--from", "main", "--to", "feature", "--detailed-exitcode")
		if code != planExitChanges {
			t.Errorf("exit %d, want %d", code, planExitChanges)
		}
	})

	t.Run("--path from the repository root", func(t *testing.T) {
		fromRoot, _, code := runCLI(t, "plan", f.dir, "--path", "deploy", "--from", "main", "--to", "feature")
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		fromDir, _, _ := runCLI(t, "plan", f.deploy, "--from", "main", "--to", "feature")
		if fromRoot != fromDir {
			t.Errorf("--path deploy from the root:\n%s\nDIR=deploy:\n%s", fromRoot, fromDir)
		}
	})

	t.Run("revisions as git takes them", func(t *testing.T) {
		byHash, _, code := runCLI(t, "plan", f.deploy, "--from", f.main[:8], "--to", "feature~0")
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		if !strings.Contains(byHash, "plan: "+f.main[:8]+" ("+f.main[:12]+") → feature~0 ("+f.feature[:12]+")") {
			t.Errorf("heading names the revisions as given and their commits:\n%s", byHash)
		}
		reverse, _, _ := runCLI(t, "plan", f.deploy, "--from", "feature", "--to", "main")
		if !strings.Contains(reverse, "6 changes: 1 added, 2 removed, 3 changed") {
			t.Errorf("reverse plan summary:\n%s", reverse)
		}
	})
}

// TestPlanTagAndLinkedWorktree: an annotated tag names its commit, and a
// linked worktree (git worktree add) has its own HEAD and working tree
// but shares the objects of the main repository.
func TestPlanTagAndLinkedWorktree(t *testing.T) {
	f := newPlanFixture(t)
	gitRun(t, f.dir, "2025-03-04T08:00:00Z", "tag", "-a", "v1", "-m", "release 1", "main")
	wt := filepath.Join(t.TempDir(), "wt")
	gitRun(t, f.dir, "", "worktree", "add", "-q", wt, "feature")

	stdout, stderr, code := runCLI(t, "plan", filepath.Join(wt, "deploy"))
	if code != 0 || !strings.HasPrefix(stdout, "plan: HEAD ("+f.feature[:12]+") → working tree\nNo changes") {
		t.Errorf("the worktree's HEAD is feature: exit %d\n%s%s", code, stdout, stderr)
	}
	got, stderr, code := runCLI(t, "plan", filepath.Join(wt, "deploy"), "--from", "v1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want, _, _ := runCLI(t, "plan", f.deploy, "--from", "main", "--to", "feature")
	_, gotBody, _ := strings.Cut(got, "\n")
	_, wantBody, _ := strings.Cut(want, "\n")
	if !strings.HasPrefix(got, "plan: v1 ("+f.main[:12]+") → working tree\n") || gotBody != wantBody {
		t.Errorf("--from v1 in the worktree:\n%s\nwant the plan of main → feature:\n%s", got, want)
	}
}

func TestPlanWorkingTree(t *testing.T) {
	f := newPlanFixture(t)

	stdout, stderr, code := runCLI(t, "plan", f.deploy)
	if code != 0 || !strings.Contains(stdout, "No changes: both sides describe the same desired state.") {
		t.Fatalf("clean working tree: exit %d\n%s%s", code, stdout, stderr)
	}
	if want := "plan: HEAD (" + f.main[:12] + ") → working tree\n"; !strings.HasPrefix(stdout, want) {
		t.Errorf("heading: got %q, want prefix %q", stdout, want)
	}
	if _, _, code := runCLI(t, "plan", f.deploy, "--detailed-exitcode"); code != 0 {
		t.Errorf("no changes with --detailed-exitcode: exit %d, want 0", code)
	}
	md, _, _ := runCLI(t, "plan", f.deploy, "--format", "markdown")
	if !strings.Contains(md, "**No changes**") {
		t.Errorf("markdown without changes:\n%s", md)
	}

	// An uncommitted edit is the "after"; a change that only writes a
	// default out is none.
	writeFiles(t, f.dir, map[string]string{
		"deploy/ctx/worker.cue": "ctx: worker: {\n\tcommand: \"/usr/bin/worker\"\n\tautoscale: {min: 2, max: 4, targetCPU: 70}\n}\n",
	})
	stdout, _, code = runCLI(t, "plan", f.deploy, "--detailed-exitcode")
	if code != planExitChanges {
		t.Errorf("uncommitted change with --detailed-exitcode: exit %d, want %d", code, planExitChanges)
	}
	for _, want := range []string{
		"1 change: 0 added, 0 removed, 1 changed",
		"~ ctx/worker\n    ~ autoscale.min: 1 → 2\n",
		"instances  4..7 (autoscale: 1 CTX)  5..7 (autoscale: 1 CTX)",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
}

func TestPlanEmptyRepository(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git command")
	}
	dir := t.TempDir()
	gitRun(t, dir, "", "init", "-q", "-b", "main")
	writeFiles(t, dir, map[string]string{"ctx/web.cue": `ctx: web: command: "web"` + "\n"})
	stdout, stderr, code := runCLI(t, "plan", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"plan: HEAD (no commits yet) → working tree", "3 changes: 3 added, 0 removed, 0 changed", "+ ctx/web\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
}

func TestPlanInvalid(t *testing.T) {
	f := newPlanFixture(t)
	diag := "ctx/web.cue:3:12: ctx.web.replicas: conflicting values \"three\" and int (mismatched types string and int)\n"
	cases := []struct {
		name       string
		args       []string
		wantOut    []string
		wantStderr string
	}{
		{
			name:       "--to",
			args:       []string{"--from", "main", "--to", "broken"},
			wantOut:    []string{"broken (" + f.broken[:12] + ") is invalid:\n" + diag},
			wantStderr: "ctxos: plan: invalid desired state: broken (" + f.broken[:12] + "): 1 problem\n",
		},
		{
			name:       "--from",
			args:       []string{"--from", "broken", "--to", "main"},
			wantOut:    []string{"broken (" + f.broken[:12] + ") is invalid:\n" + diag},
			wantStderr: "ctxos: plan: invalid desired state: broken (" + f.broken[:12] + "): 1 problem\n",
		},
		{
			name:    "markdown",
			args:    []string{"--to", "broken", "--format", "markdown"},
			wantOut: []string{"**The desired state at `broken` (`" + f.broken[:12] + "`) is invalid** (1 problem):\n\n```\n" + diag + "```\n"},
		},
		{
			name:    "json",
			args:    []string{"--to", "broken", "--format", "json"},
			wantOut: []string{`"valid": false`, `"file": "ctx/web.cue"`, `"line": 3`, `"column": 12`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, append([]string{"plan", f.deploy}, tc.args...)...)
			if code != planExitInvalid {
				t.Errorf("exit %d, want %d", code, planExitInvalid)
			}
			for _, want := range tc.wantOut {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			if tc.wantStderr != "" && stderr != tc.wantStderr {
				t.Errorf("stderr = %q, want %q", stderr, tc.wantStderr)
			}
		})
	}
}

func TestPlanUsageErrors(t *testing.T) {
	f := newPlanFixture(t)
	outside := t.TempDir()
	writeFiles(t, outside, map[string]string{"ctx/web.cue": `ctx: web: command: "web"` + "\n"})
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown --to", []string{"plan", f.deploy, "--to", "nope"}, `plan: --to: unknown revision "nope" in the repository at `},
		{"unknown --from", []string{"plan", f.deploy, "--from", "v9.9"}, `plan: --from: unknown revision "v9.9"`},
		{"bad format", []string{"plan", f.deploy, "--format", "yaml"}, `plan: --format "yaml": want text, markdown or json`},
		{"bad timeout", []string{"plan", f.deploy, "--timeout", "0s"}, `plan: --timeout 0s: want a positive duration`},
		{"no repository and no cluster", []string{"plan", outside}, "is not inside a Git repository: give --cluster API"},
		{"--from outside a repository", []string{"plan", outside, "--from", "main"}, "is not inside a Git repository: --from and --to need one"},
		{"--path outside a repository", []string{"plan", outside, "--path", "deploy"}, "is not inside a Git repository: --path needs one"},
		{"--path leaving the repository", []string{"plan", f.dir, "--path", "../x"}, `plan: --path "../x": want a directory inside the repository`},
		{"--path missing at the commit", []string{"plan", f.dir, "--path", "nowhere", "--from", "main", "--to", "feature"}, `plan: --from main: no directory "nowhere" at commit ` + f.main[:12]},
		{"DIR missing", []string{"plan", filepath.Join(outside, "none")}, "no such file or directory"},
		{"DIR is a file", []string{"plan", filepath.Join(f.dir, "README.md")}, "not a directory"},
		{"cluster unreachable", []string{"plan", f.deploy, "--cluster", "127.0.0.1:1"}, "plan: --cluster 127.0.0.1:1: "},
		{"two arguments", []string{"plan", f.deploy, f.dir}, "accepts at most 1 arg(s)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, tc.args...)
			if code != planExitUsage {
				t.Errorf("exit %d, want %d", code, planExitUsage)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tc.want)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
		})
	}
}

// startPlanCluster starts a real one-node cluster with its API, publishes
// snap as commit rev and writes the node's props with the given capacity
// and the instances it runs.
func startPlanCluster(tb testing.TB, snap *schema.Snapshot, rev gitsync.Revision, capacity props.Capacity, running []string) string {
	tb.Helper()
	url, _ := startPlanNode(tb, snap, rev, capacity, running)
	return url
}

// startPlanNode is startPlanCluster that also returns the node.
func startPlanNode(tb testing.TB, snap *schema.Snapshot, rev gitsync.Revision, capacity props.Capacity, running []string) (string, *cluster.Node) {
	tb.Helper()
	cfg := cluster.LocalConfig()
	cfg.Name = "n0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	node, err := cluster.Start(context.Background(), cfg, vfs.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { node.Close() })
	srv := httptest.NewServer(cluster.NewAPI(node))
	tb.Cleanup(srv.Close)

	store := node.Store()
	if snap != nil {
		if _, err := gitsync.Publish(store, snap, rev); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := store.PutValue("/hw/n0", props.HW{Capacity: capacity, Labels: map[string]string{"zone": "a"}}); err != nil {
		tb.Fatal(err)
	}
	// /run/n0/instances as the reconciler writes it: by driver instance id.
	instances := map[string]any{}
	for _, id := range running {
		instances["ctx."+id] = map[string]any{"kind": "ctx", "name": strings.Split(id, ".")[0], "instance": id, "driver": "process", "state": "running"}
	}
	// A stopped instance does not hold a place.
	instances["ctx.old.0"] = map[string]any{"kind": "ctx", "name": "old", "instance": "old.0", "driver": "process", "state": "exited"}
	if _, err := store.PutValue("/run/n0/instances", instances); err != nil {
		tb.Fatal(err)
	}
	return srv.URL, node
}

func TestPlanCluster(t *testing.T) {
	f := newPlanFixture(t)
	rev := gitsync.Revision{Commit: f.main, Ref: "refs/heads/main", Author: "Ada", Subject: f.mainSubject, Time: f.mainCommittedAt}
	// 4 cores and 8Gi, no GPU; web.0-2 and worker.0 run there now.
	api := startPlanCluster(t, f.mainSnapshot, rev,
		props.Capacity{CPUMilli: 4000, MemoryBytes: 8 << 30},
		[]string{"web.0", "web.1", "web.2", "worker.0"})

	t.Run("markdown", func(t *testing.T) {
		// The before side is the cluster's snapshot; the after side the
		// feature branch.
		stdout, stderr, code := runCLI(t, "plan", f.deploy, "--to", "feature", "--cluster", api, "--format", "markdown")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		checkGolden(t, "cluster.md", stdout)
	})
	t.Run("json", func(t *testing.T) {
		stdout, stderr, code := runCLI(t, "plan", f.deploy, "--to", "feature", "--cluster", api, "--format", "json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		checkGolden(t, "cluster.json", stdout)
	})
	t.Run("text", func(t *testing.T) {
		stdout, stderr, code := runCLI(t, "plan", f.deploy, "--to", "feature", "--cluster", api)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{
			"plan: cluster (" + f.main[:12] + ", generation 1) → feature (" + f.feature[:12] + ")",
			"NODE  BEFORE  AFTER  GAINS                LOSES\nn0    4       7      api.0, web.3, web.4  -\n",
			"could not be placed after the change:\n  train.0: no node has 1 GPU free\n",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, stdout)
			}
		}
	})
	t.Run("working tree equal to the cluster", func(t *testing.T) {
		stdout, stderr, code := runCLI(t, "plan", f.deploy, "--cluster", api)
		if code != 0 || !strings.Contains(stdout, "No changes") {
			t.Errorf("exit %d:\n%s%s", code, stdout, stderr)
		}
	})
	t.Run("outside a repository", func(t *testing.T) {
		outside := t.TempDir()
		files := map[string]string{}
		for name, content := range planMain {
			if rest, ok := strings.CutPrefix(name, "deploy/"); ok {
				files[rest] = content
			}
		}
		files["ctx/web.cue"] = strings.Replace(files["ctx/web.cue"], "replicas: 3", "replicas: 4", 1)
		writeFiles(t, outside, files)
		stdout, stderr, code := runCLI(t, "plan", outside, "--cluster", api)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{"~ replicas: 3 → 4", "n0    4       5      web.3  -"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, stdout)
			}
		}
	})
}

// TestPlanClusterEmpty: a cluster that has synced nothing desires nothing,
// so everything is added; a cluster whose node is too small cannot place.
func TestPlanClusterEmpty(t *testing.T) {
	f := newPlanFixture(t)
	api := startPlanCluster(t, nil, gitsync.Revision{}, props.Capacity{CPUMilli: 500, MemoryBytes: 1 << 30}, nil)
	stdout, stderr, code := runCLI(t, "plan", f.deploy, "--cluster", api)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"plan: cluster (nothing synced yet) → working tree",
		"5 changes: 5 added, 0 removed, 0 changed",
		// Binpack fills the node with web first (CTXs in name order).
		"n0    0       2      web.0, web.1  -",
		"  web.2: no node has 250m CPU free\n  worker.0: no node has 100m CPU free\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
}

// TestPlanLiveSnapshotRoundTrip: the snapshot in force, read back through
// the API, is the bytes gitsync published, for every kind of value the
// schema has (the manifest's hash checks it).
func TestPlanLiveSnapshotRoundTrip(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"ctx/web.cue": `ctx: web: {
	image: "docker.io/library/nginx:1.27"
	args: ["-g", "daemon off;"]
	env: {"A-B": "1", C: ""}
	autoscale: {min: 1, max: 3, targetCPU: 50}
	resources: {cpu: 1500, memory: "1G", gpu: 0}
	ports: {http: 80, admin: 9000}
	placement: {strategy: "spread", nodes: "example.com/zone": "a", devices: ["gpu"]}
	health: http: {port: 80, path: "/healthz"}
	mounts: [{source: "/srv", target: "/srv", readonly: true}, {type: "tmpfs", target: "/tmp"}]
	stop: {signal: "SIGINT", grace: "30s"}
	requires: ["cache"]
}
`,
		"mid/cache.cue": `mid: cache: {
	driver: "redis"
	nodes: selector: role: "db"
	params: {port: 6379, ratio: 0.25, big: 12345678901, neg: -3, tags: ["a", "b"], nested: {x: 1, y: [true, null]}, s: "x"}
}
`,
		"ztb/policy.cue": `ztb: {default: "deny", allow: [{from: "web", to: "cache", port: 6379}, {from: "cache", to: "web", port: "http"}]}
`,
		"sys/sys.cue": `sys: {sync: interval: "15s", gossip: profile: "wan"}
`,
	})
	snap, diags, err := schema.Load(context.Background(), dir)
	if err != nil || len(diags) > 0 {
		t.Fatalf("load: %v %v", err, diags)
	}
	api := startPlanCluster(t, snap, gitsync.Revision{Commit: strings.Repeat("ab", 20)}, props.Capacity{CPUMilli: 1000, MemoryBytes: 1 << 30}, nil)
	live, err := readLiveCluster(context.Background(), cluster.NewClient(api))
	if err != nil {
		t.Fatal(err)
	}
	if live.snap == nil || live.snap.Hash != snap.Hash {
		t.Fatalf("live snapshot %v, want hash %s", live.snap, snap.Hash)
	}
	if got := live.side().label; got != "cluster (abababababab, generation 1)" {
		t.Errorf("label = %q", got)
	}
}

// TestPlanLiveSnapshotFromRepository: plan reads the snapshot in force as
// stored (CBOR), so a MID's float 2.0, which JSON would turn into the
// integer 2, still hashes to the manifest, inside a repository or not.
// When the agent does not hold the whole snapshot (a publication under
// way), plan exports the commit in force from the repository instead;
// elsewhere it says why it cannot go on.
func TestPlanLiveSnapshotFromRepository(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git command")
	}
	dir := t.TempDir()
	gitRun(t, dir, "", "init", "-q", "-b", "main")
	files := map[string]string{
		"ctx/web.cue":   `ctx: web: command: "web"` + "\n",
		"mid/cache.cue": `mid: cache: {driver: "redis", nodes: all: true, params: maxmemoryRatio: 2.0}` + "\n",
	}
	hash := gitCommit(t, dir, "2025-03-01T10:00:00Z", "float params", files)
	snap, diags, err := schema.Load(context.Background(), dir)
	if err != nil || len(diags) > 0 {
		t.Fatalf("load: %v %v", err, diags)
	}
	api, node := startPlanNode(t, snap, gitsync.Revision{Commit: hash}, props.Capacity{CPUMilli: 1000, MemoryBytes: 1 << 30}, nil)
	outside := t.TempDir()
	writeFiles(t, outside, files)
	for _, d := range []string{dir, outside} {
		stdout, stderr, code := runCLI(t, "plan", d, "--cluster", api)
		if code != 0 || !strings.Contains(stdout, "No changes") {
			t.Errorf("plan %s: exit %d\n%s%s", d, code, stdout, stderr)
		}
	}

	// An entry of the manifest missing, as while a publication is under way.
	if _, err := node.Store().Delete("/mid/cache"); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runCLI(t, "plan", dir, "--cluster", api)
	if code != 0 || !strings.Contains(stdout, "No changes") {
		t.Errorf("in the repository, snapshot incomplete: exit %d\n%s%s", code, stdout, stderr)
	}
	_, stderr, code = runCLI(t, "plan", outside, "--cluster", api)
	if code != planExitUsage || !strings.Contains(stderr, "the snapshot in force (commit "+hash[:12]+") cannot be rebuilt from what the agent holds") || !strings.Contains(stderr, "/mid/cache") {
		t.Errorf("outside the repository, snapshot incomplete: exit %d, stderr %q", code, stderr)
	}
}

// TestPlanClusterCountsScalerDecisions: with --cluster, an autoscaled CTX
// counts as many instances as the scaler decided (within the new min and
// max), not its min; an unreadable decision is noted and the min counts.
func TestPlanClusterCountsScalerDecisions(t *testing.T) {
	load := func(max int) *schema.Snapshot {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{
			"ctx/web.cue": fmt.Sprintf("ctx: web: {command: \"web\", autoscale: {min: 1, max: %d}}\n", max),
			"ctx/api.cue": "ctx: api: {command: \"api\", autoscale: {min: 2, max: 4}}\n",
		})
		snap, diags, err := schema.Load(context.Background(), dir)
		if err != nil || len(diags) > 0 {
			t.Fatalf("load: %v %v", err, diags)
		}
		return snap
	}
	before := load(5)
	api, node := startPlanNode(t, before, gitsync.Revision{Commit: strings.Repeat("cd", 20)}, props.Capacity{CPUMilli: 8000, MemoryBytes: 8 << 30}, nil)
	if _, err := node.Store().PutValue("/lk/scale/web", reconcile.Scale{Replicas: 4, By: "n0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := node.Store().PutValue("/lk/scale/api", "not a decision"); err != nil {
		t.Fatal(err)
	}
	live, err := readLiveCluster(context.Background(), cluster.NewClient(api))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := live.impact(before, load(3)) // max lowered below the decision
	if err != nil {
		t.Fatal(err)
	}
	if len(pc.Nodes) != 1 || pc.Nodes[0].Before != 4+2 || pc.Nodes[0].After != 3+2 {
		t.Errorf("impact = %+v, want web at 4 then 3 (the new max) and api at its min 2", pc.Nodes)
	}
	if !slices.ContainsFunc(pc.Notes, func(n string) bool { return strings.HasPrefix(n, "/lk/scale/api: ") }) {
		t.Errorf("notes %q lack the unreadable decision of api", pc.Notes)
	}
}
