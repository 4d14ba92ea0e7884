package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/spf13/cobra"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/cluster/props"
	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/gitsync"
	"github.com/ctxos/ctxos/reconcile"
	"github.com/ctxos/ctxos/schema"
)

func init() { register(newPlanCmd) }

// Exit codes of plan, as terraform plan -detailed-exitcode has them.
const (
	planExitInvalid = 1
	planExitUsage   = 2
	planExitChanges = 3
)

type planOptions struct {
	dir      string
	from, to string
	path     string
	pathSet  bool
	cluster  string
	format   string
	detailed bool
	timeout  time.Duration
}

func newPlanCmd() *cobra.Command {
	var o planOptions
	cmd := &cobra.Command{
		Use:   "plan [DIR]",
		Short: "Show what a change to the desired-state repository does: items, fields, totals, nodes",
		Long: `Plan compares two versions of the desired state and prints what differs: the
CTX, MID, ZTB and SYS items added, removed or changed, each with its fields
(replicas: 3 → 5), and the totals the CTXs ask of the cluster before and after
(instances, CPU, memory, GPUs; a CTX with autoscale counts as min..max).

The two sides:
  --from REV  the "before". Default: HEAD of the repository holding DIR; with
              --cluster, the snapshot in force in the cluster (/sys/revision).
  --to REV    the "after". Default: the working tree at DIR, as it is on
              disk, committed or not.
REV is anything git rev-parse takes: a branch, a tag, a hash or a prefix of
one, HEAD~1, main^. DIR (default ".") is any directory inside the repository;
the desired state is DIR's path from the repository root, or --path SUBDIR
(relative to the root) when given. Outside a Git repository, plan needs
--cluster and compares the cluster with the files at DIR.

With --cluster API (an agent's API address), plan also reads the live
members and their capacity (/hw/<node>) and where instances run now
(/run/<node>/instances), places the CTXs of both sides the way the
scheduler does, from the same current placement, and prints which nodes
gain or lose instances and which instances could not be placed, and why.
A CTX with autoscale is placed with its min instances. MIDs are not placed
here: their nodes are chosen by their drivers.

Formats: text (default), markdown (a pull-request comment: heading with the
commit range, summary line, totals table, one collapsible diff per item, the
node table) and json (a stable structure for tools).

Exit status:
  0  no changes, or changes without --detailed-exitcode
  1  the desired state on either side is invalid (diagnostics printed as
     file:line:col: path: message, file relative to the desired-state
     directory, as ctxos vet prints them)
  2  usage or I/O error: unknown revision, DIR not in a repository and no
     --cluster, cluster unreachable, timeout
  3  there are changes, with --detailed-exitcode`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.dir = "."
			if len(args) == 1 {
				o.dir = args[0]
			}
			o.pathSet = cmd.Flags().Changed("path")
			return runPlan(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "the revision before the change (default HEAD, or the cluster's snapshot with --cluster)")
	f.StringVar(&o.to, "to", "", "the revision after the change (default the working tree at DIR)")
	f.StringVar(&o.path, "path", "", "directory of the desired state inside the repository (default DIR's path from the repository root)")
	f.StringVar(&o.cluster, "cluster", "", "agent API address: compare with the snapshot in force and show the impact on nodes")
	f.StringVar(&o.format, "format", "text", "output format: text, markdown or json")
	f.BoolVar(&o.detailed, "detailed-exitcode", false, "exit 3 when there are changes (0 means no changes)")
	f.DurationVar(&o.timeout, "timeout", time.Minute, "give up when loading, evaluating and asking the cluster take longer")
	return cmd
}

func planUsage(format string, args ...any) error {
	return &exitError{code: planExitUsage, err: fmt.Errorf("plan: "+format, args...)}
}

// runPlan loads both sides, compares them and prints the plan.
func runPlan(ctx context.Context, w io.Writer, o planOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	switch o.format {
	case "text", "markdown", "json":
	default:
		return planUsage("--format %q: want text, markdown or json", o.format)
	}
	if o.timeout <= 0 {
		return planUsage("--timeout %s: want a positive duration", o.timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	repo, err := openPlanRepo(o.dir, o.path, o.pathSet)
	if err != nil {
		return &exitError{code: planExitUsage, err: err}
	}
	if repo == nil {
		switch {
		case o.from != "" || o.to != "":
			return planUsage("%s is not inside a Git repository: --from and --to need one", o.dir)
		case o.pathSet:
			return planUsage("%s is not inside a Git repository: --path needs one", o.dir)
		case o.cluster == "":
			return planUsage("%s is not inside a Git repository: give --cluster API to compare the files with the cluster's desired state", o.dir)
		}
	}
	if repo != nil && repo.root == "" && o.to == "" {
		return planUsage("the repository of %s is bare: it has no working tree, give --to", o.dir)
	}
	var live *liveCluster
	if o.cluster != "" {
		if live, err = readLiveCluster(ctx, cluster.NewClient(o.cluster)); err != nil {
			return &exitError{code: planExitUsage, err: fmt.Errorf("plan: --cluster %s: %w", o.cluster, err)}
		}
	}

	tmp, err := os.MkdirTemp("", "ctxos-plan-")
	if err != nil {
		return &exitError{code: planExitUsage, err: fmt.Errorf("plan: %w", err)}
	}
	defer os.RemoveAll(tmp)

	if live != nil && o.from == "" {
		if err := live.fromRepository(ctx, repo, filepath.Join(tmp, "cluster")); err != nil {
			return &exitError{code: planExitUsage, err: fmt.Errorf("plan: --cluster %s: %w", o.cluster, err)}
		}
	}

	var from, to planSide
	switch {
	case o.from != "":
		from, err = repo.side(ctx, "--from", o.from, filepath.Join(tmp, "from"), false)
	case live != nil:
		from = live.side()
	default:
		from, err = repo.side(ctx, "--from", "HEAD", filepath.Join(tmp, "from"), true)
	}
	if err != nil {
		return &exitError{code: planExitUsage, err: err}
	}
	if o.to != "" {
		to, err = repo.side(ctx, "--to", o.to, filepath.Join(tmp, "to"), false)
	} else {
		dir := o.dir
		if repo != nil && o.pathSet {
			dir = filepath.Join(repo.root, filepath.FromSlash(repo.sub))
		}
		to, err = loadSide(ctx, planSide{Source: "worktree", label: "working tree"}, dir)
	}
	if err != nil {
		return &exitError{code: planExitUsage, err: err}
	}

	report := planReport{From: from, To: to, Items: []schema.ItemDiff{}}
	if !from.Valid || !to.Valid {
		if err := printPlan(w, o.format, &report); err != nil {
			return &exitError{code: planExitUsage, err: err}
		}
		var bad []string
		for _, s := range []planSide{from, to} {
			if !s.Valid {
				bad = append(bad, fmt.Sprintf("%s: %d %s", s.label, len(s.Diagnostics), plural(len(s.Diagnostics), "problem")))
			}
		}
		return &exitError{code: planExitInvalid, err: fmt.Errorf("plan: invalid desired state: %s", strings.Join(bad, "; "))}
	}
	report.Valid = true
	if report.Items, err = schema.DiffSnapshots(from.snap, to.snap); err != nil {
		return &exitError{code: planExitUsage, err: fmt.Errorf("plan: %w", err)}
	}
	report.Changed = len(report.Items) > 0
	for _, it := range report.Items {
		switch it.Op {
		case schema.OpAdd:
			report.Summary.Added++
		case schema.OpRemove:
			report.Summary.Removed++
		default:
			report.Summary.Changed++
		}
	}
	if report.Totals.Before, err = schema.TotalsOf(from.snap); err != nil {
		return &exitError{code: planExitUsage, err: fmt.Errorf("plan: %s: %w", from.label, err)}
	}
	if report.Totals.After, err = schema.TotalsOf(to.snap); err != nil {
		return &exitError{code: planExitUsage, err: fmt.Errorf("plan: %s: %w", to.label, err)}
	}
	if live != nil {
		impact, err := live.impact(from.snap, to.snap)
		if err != nil {
			return &exitError{code: planExitUsage, err: fmt.Errorf("plan: %w", err)}
		}
		report.Cluster = impact
	}
	if err := printPlan(w, o.format, &report); err != nil {
		return &exitError{code: planExitUsage, err: err}
	}
	if report.Changed && o.detailed {
		return &exitError{code: planExitChanges}
	}
	return nil
}

// planReport is the whole plan; --format json prints it as is.
type planReport struct {
	// Valid is false when either side has diagnostics; nothing below
	// Summary is filled in then.
	Valid   bool              `json:"valid"`
	From    planSide          `json:"from"`
	To      planSide          `json:"to"`
	Changed bool              `json:"changed"`
	Summary planSummary       `json:"summary"`
	Items   []schema.ItemDiff `json:"items"`
	Totals  struct {
		Before schema.Totals `json:"before"`
		After  schema.Totals `json:"after"`
	} `json:"totals"`
	Cluster *planCluster `json:"cluster,omitempty"`
}

type planSummary struct {
	Added   int `json:"added"`
	Removed int `json:"removed"`
	Changed int `json:"changed"`
}

// planSide is one side of the comparison and where it came from.
type planSide struct {
	Source      string              `json:"source"` // git, worktree or cluster
	Rev         string              `json:"rev,omitempty"`
	Commit      string              `json:"commit,omitempty"`
	Subject     string              `json:"subject,omitempty"`
	Author      string              `json:"author,omitempty"`
	Time        *time.Time          `json:"time,omitempty"`       // commit time
	Generation  uint64              `json:"generation,omitempty"` // of the cluster's snapshot
	Hash        string              `json:"hash,omitempty"`       // content hash of the snapshot
	Valid       bool                `json:"valid"`
	Diagnostics []schema.Diagnostic `json:"diagnostics,omitempty"`

	snap  *schema.Snapshot
	label string // how the text names the side
}

// planCluster is the impact on the nodes, with --cluster.
type planCluster struct {
	// Members counts the live members; Nodes has those with capacity.
	Members  int          `json:"members"`
	Nodes    []nodeImpact `json:"nodes"`
	Unplaced struct {
		Before []unplacedView `json:"before"`
		After  []unplacedView `json:"after"`
	} `json:"unplaced"`
	// Notes say what plan left out and why (a member without props).
	Notes []string `json:"notes,omitempty"`
}

type nodeImpact struct {
	Node   string   `json:"node"`
	Before int      `json:"before"` // instances placed before the change
	After  int      `json:"after"`
	Gains  []string `json:"gains"` // instance ids
	Loses  []string `json:"loses"`
}

type unplacedView struct {
	Instance string `json:"instance"`
	Reason   string `json:"reason"`
}

// planRepo is the Git repository that holds the desired state.
type planRepo struct {
	repo   *git.Repository
	root   string // root of the working tree; "" for a bare repository
	gitDir string // holds objects and refs (the common dir of a linked worktree)
	sub    string // slash path of the desired state in the repository; "" for the root
}

// openPlanRepo finds the repository holding dir. It returns nil, nil when
// dir is in no repository.
func openPlanRepo(dir, sub string, subSet bool) (*planRepo, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("plan: %s: %w", dir, schema.ErrNotDir)
	}
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
	if errors.Is(err, git.ErrRepositoryNotExists) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("plan: open the repository of %s: %w", dir, err)
	}
	r := &planRepo{repo: repo}
	st, ok := repo.Storer.(*filesystem.Storage)
	if !ok {
		return nil, fmt.Errorf("plan: repository of %s is not on disk", dir)
	}
	r.gitDir = st.Filesystem().Root()
	// A linked worktree's git dir holds its HEAD; objects and refs are in
	// the common dir it names.
	if b, err := os.ReadFile(filepath.Join(r.gitDir, "commondir")); err == nil {
		common := strings.TrimSpace(string(b))
		if !filepath.IsAbs(common) {
			common = filepath.Join(r.gitDir, common)
		}
		r.gitDir = filepath.Clean(common)
	}
	if wt, err := repo.Worktree(); err == nil {
		r.root = wt.Filesystem.Root()
	}
	if subSet {
		c := path.Clean(filepath.ToSlash(sub))
		if sub == "" || path.IsAbs(c) || c == ".." || strings.HasPrefix(c, "../") {
			return nil, fmt.Errorf("plan: --path %q: want a directory inside the repository, relative to its root", sub)
		}
		if c != "." {
			r.sub = c
		}
		return r, nil
	}
	if r.root == "" {
		return r, nil
	}
	rel, err := relPath(r.root, dir)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	if rel != "." {
		r.sub = rel
	}
	return r, nil
}

// relPath is dir relative to root, both with symlinks resolved (a
// temporary directory is often reached through one).
func relPath(root, dir string) (string, error) {
	absRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", err
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if absDir, err = filepath.EvalSymlinks(absDir); err != nil {
		return "", err
	}
	rel, err := filepath.Rel(absRoot, absDir)
	if err != nil {
		return "", err
	}
	return filepath.ToSlash(rel), nil
}

// side exports the desired state at revision rev into dst and loads it.
// With emptyOK, a repository without any commit yet gives an empty side
// (everything in the working tree is then added).
func (r *planRepo) side(ctx context.Context, flag, rev, dst string, emptyOK bool) (planSide, error) {
	s := planSide{Source: "git", Rev: rev}
	h, err := r.repo.ResolveRevision(plumbing.Revision(rev))
	if err != nil {
		if emptyOK && errors.Is(err, plumbing.ErrReferenceNotFound) {
			if _, herr := r.repo.Head(); errors.Is(herr, plumbing.ErrReferenceNotFound) {
				s.label, s.Valid = rev+" (no commits yet)", true
				return s, nil
			}
		}
		return s, fmt.Errorf("plan: %s: unknown revision %q in the repository at %s", flag, rev, r.displayRoot())
	}
	c, err := peelToCommit(r.repo, *h)
	if err != nil {
		return s, fmt.Errorf("plan: %s %s: %w", flag, rev, err)
	}
	s.Commit = c.Hash.String()
	s.Subject, _, _ = strings.Cut(strings.TrimSpace(c.Message), "\n")
	s.Author = c.Author.Name
	when := c.Committer.When
	s.Time = &when
	s.label = fmt.Sprintf("%s (%s)", rev, short(s.Commit))
	src := &gitsync.Source{Path: r.sub, CacheDir: r.gitDir}
	if err := src.Checkout(ctx, s.Commit, dst); err != nil {
		if errors.Is(err, gitsync.ErrPathNotFound) {
			return s, fmt.Errorf("plan: %s %s: no directory %q at commit %s", flag, rev, r.sub, short(s.Commit))
		}
		return s, fmt.Errorf("plan: %s %s: %w", flag, rev, err)
	}
	return loadSide(ctx, s, dst)
}

func (r *planRepo) displayRoot() string {
	if r.root != "" {
		return r.root
	}
	return r.gitDir
}

// peelToCommit follows annotated tags down to the commit they name.
func peelToCommit(repo *git.Repository, h plumbing.Hash) (*object.Commit, error) {
	for range 10 {
		obj, err := repo.Object(plumbing.AnyObject, h)
		if err != nil {
			return nil, fmt.Errorf("object %s: %w", h, err)
		}
		switch o := obj.(type) {
		case *object.Commit:
			return o, nil
		case *object.Tag:
			h = o.Target
		default:
			return nil, fmt.Errorf("%s is a %s, not a commit", h, obj.Type())
		}
	}
	return nil, fmt.Errorf("%s: tags nested too deep", h)
}

// loadSide loads the desired state at dir into s. Invalid configuration
// is not an error: s carries the diagnostics.
func loadSide(ctx context.Context, s planSide, dir string) (planSide, error) {
	snap, diags, err := schema.Load(ctx, dir)
	if errors.Is(err, schema.ErrTimeout) {
		return s, fmt.Errorf("plan: %s: CUE evaluation did not finish within --timeout", s.label)
	}
	if err != nil {
		return s, fmt.Errorf("plan: %s: %w", s.label, err)
	}
	s.snap, s.Diagnostics, s.Valid = snap, diags, snap != nil
	if snap != nil {
		s.Hash = snap.Hash
	}
	return s, nil
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

// liveCluster is what plan reads from a running cluster.
type liveCluster struct {
	manifest *schema.Manifest // nil before the first sync
	snap     *schema.Snapshot
	// rebuildErr says why snap could not be rebuilt from the API.
	rebuildErr error
	members    int
	nodes      []reconcile.Node
	current    reconcile.Placement
	// scales are the scaler's decisions (/lk/scale/<ctx>), by CTX.
	scales map[string]int
	notes  []string
}

// readLiveCluster reads the snapshot in force, the live members with their
// capacity and the current placement through the agent's API.
func readLiveCluster(ctx context.Context, c *cluster.Client) (*liveCluster, error) {
	live := &liveCluster{current: reconcile.Placement{}, scales: map[string]int{}}
	if err := live.readSnapshot(ctx, c); err != nil {
		return nil, err
	}
	decisions, err := c.ListEntries(ctx, "/lk/scale")
	if err != nil {
		return nil, err
	}
	for _, e := range decisions {
		var s reconcile.Scale
		if err := schema.Decode(e.Value, &s); err != nil {
			live.notes = append(live.notes, fmt.Sprintf("%s: %v: autoscaled CTX counted at its min", e.Path, err))
			continue
		}
		live.scales[strings.TrimPrefix(e.Path, "/lk/scale/")] = s.Replicas
	}
	members, err := c.Members(ctx)
	if err != nil {
		return nil, err
	}
	hws, err := c.List(ctx, "/hw")
	if err != nil {
		return nil, err
	}
	hwByNode := map[string]json.RawMessage{}
	for _, e := range hws {
		hwByNode[strings.TrimPrefix(e.Path, "/hw/")] = e.Value
	}
	copies := map[string][]instanceCopy{} // CTX instance id → the nodes that run it
	for _, m := range members {
		if m.State != cluster.StateAlive {
			continue
		}
		live.members++
		raw, ok := hwByNode[m.Name]
		if !ok {
			live.notes = append(live.notes, fmt.Sprintf("member %s has published no props at /hw/%s yet: not placed on", m.Name, m.Name))
			continue
		}
		var hw props.HW
		if err := json.Unmarshal(raw, &hw); err != nil {
			live.notes = append(live.notes, fmt.Sprintf("member %s: /hw/%s: %v: not placed on", m.Name, m.Name, err))
			continue
		}
		n := reconcile.Node{
			Name:        m.Name,
			Labels:      hw.Labels,
			CPUMilli:    hw.Capacity.CPUMilli,
			MemoryBytes: hw.Capacity.MemoryBytes,
			GPUs:        hw.Capacity.GPUs,
		}
		if hw.Capacity.GPUs > 0 {
			// The device kind a CTX asks for with placement: devices: ["gpu"].
			n.Devices = []string{"gpu"}
		}
		live.nodes = append(live.nodes, n)

		p := "/run/" + m.Name + "/instances"
		e, err := c.Get(ctx, p)
		if errors.Is(err, cluster.ErrNotFound) {
			continue // nothing reported running there yet
		}
		if err != nil {
			return nil, err
		}
		var instances map[string]runInstance
		if err := json.Unmarshal(e.Value, &instances); err != nil {
			live.notes = append(live.notes, fmt.Sprintf("%s: not a map of instances: %v: taken as empty", p, err))
			continue
		}
		for key, in := range instances {
			id, ok := in.ctxInstance(key)
			if !ok {
				continue
			}
			if _, _, err := reconcile.ParseInstanceID(id); err != nil {
				live.notes = append(live.notes, fmt.Sprintf("%s: %v: left out", p, err))
				continue
			}
			copies[id] = append(copies[id], instanceCopy{node: m.Name, started: in.started()})
		}
	}
	// An instance two nodes report (views differed for a moment) counts
	// where the reconciler keeps it: the copy that started first, else the
	// one on the highest-ranked node.
	for id, cs := range copies {
		nodes := make([]string, len(cs))
		for i, c := range cs {
			nodes[i] = c.node
		}
		keep := reconcile.Rank(id, nodes)[0]
		var keepAt time.Time
		for _, c := range cs {
			if c.node == keep {
				keepAt = c.started
			}
		}
		for _, c := range cs {
			if !c.started.IsZero() && (keepAt.IsZero() || c.started.Before(keepAt)) {
				keep, keepAt = c.node, c.started
			}
		}
		live.current[id] = keep
	}
	slices.SortFunc(live.nodes, func(a, b reconcile.Node) int { return cmp.Compare(a.Name, b.Name) })
	// An instance two nodes report (views differed for a moment) counts
	// where the reconciler keeps it: on the highest-ranked node.
	slices.Sort(live.notes)
	return live, nil
}

// runInstance is the part of an entry of /run/<node>/instances (keyed by
// driver instance id, "ctx.web.0") that placement needs.
type runInstance struct {
	Kind     string `json:"kind"`
	Instance string `json:"instance"` // the CTX instance id, "web.0"
	State    string `json:"state"`
	// StartedAt is RFC 3339 text in the VFS; anything else reads as unknown.
	StartedAt json.RawMessage `json:"startedAt"`
}

func (in runInstance) started() time.Time {
	var t time.Time
	if json.Unmarshal(in.StartedAt, &t) != nil {
		return time.Time{}
	}
	return t
}

// ctxInstance is the CTX instance id of a live CTX instance: one that
// runs, starts or waits to restart, as the reconciler counts them.
func (in runInstance) ctxInstance(key string) (string, bool) {
	if in.Kind != drivers.KindCTX {
		return "", false
	}
	switch drivers.State(in.State) {
	case drivers.Running, drivers.Starting, drivers.Backoff:
	default:
		return "", false
	}
	if in.Instance != "" {
		return in.Instance, true
	}
	return strings.CutPrefix(key, drivers.KindCTX+".")
}

type instanceCopy struct {
	node    string
	started time.Time
}

// readSnapshot rebuilds the snapshot in force from /sys/revision and the
// entries it names. The API shows values as JSON, so each entry is decoded
// into its schema type and encoded again as canonical CBOR; the manifest's
// content hash then proves the rebuilt snapshot is the one in force.
func (l *liveCluster) readSnapshot(ctx context.Context, c *cluster.Client) error {
	rev, err := c.GetEntry(ctx, schema.PathRevision)
	if errors.Is(err, cluster.ErrNotFound) {
		return nil // nothing synced yet: the cluster desires nothing
	}
	if err != nil {
		return err
	}
	var m schema.Manifest
	if err := schema.Decode(rev.Value, &m); err != nil {
		return fmt.Errorf("%s: %w", schema.PathRevision, err)
	}
	// The entries as stored (CBOR), so that the snapshot rebuilt here has
	// the manifest's content hash bit for bit.
	values := map[string][]byte{}
	for _, root := range []string{"/ctx", "/mid", "/ztb", "/sys"} {
		entries, err := c.ListEntries(ctx, root)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Path != schema.PathRevision && !e.Deleted {
				values[e.Path] = e.Value
			}
		}
	}
	snap, err := schema.Assemble(m, func(p string) ([]byte, bool) {
		b, ok := values[p]
		return b, ok
	})
	l.manifest = &m
	if err != nil {
		// The caller may still find the commit in a local repository.
		l.rebuildErr = fmt.Errorf("the snapshot in force (commit %s) cannot be rebuilt from what the agent holds (a publication may be under way; try again): %w", short(m.Commit), err)
		return nil
	}
	l.snap = snap
	return nil
}

// fromRepository exports the commit in force from the local repository
// when the agent did not hold the whole snapshot (a publication under
// way). The export counts only when its content hash is the manifest's.
func (l *liveCluster) fromRepository(ctx context.Context, repo *planRepo, dst string) error {
	if l.rebuildErr == nil {
		return nil
	}
	if repo == nil {
		return l.rebuildErr
	}
	s, err := repo.side(ctx, "cluster", l.manifest.Commit, dst, false)
	if err != nil || !s.Valid || s.Hash != l.manifest.Hash {
		return l.rebuildErr
	}
	l.snap, l.rebuildErr = s.snap, nil
	return nil
}

func (l *liveCluster) side() planSide {
	s := planSide{Source: "cluster", Valid: true, snap: l.snap}
	if l.manifest == nil {
		s.label = "cluster (nothing synced yet)"
		return s
	}
	m := l.manifest
	s.Commit, s.Subject, s.Author, s.Generation, s.Hash = m.Commit, m.Subject, m.Author, m.Generation, m.Hash
	if !m.Time.IsZero() {
		t := m.Time
		s.Time = &t
	}
	s.label = fmt.Sprintf("cluster (%s, generation %d)", short(m.Commit), m.Generation)
	return s
}

// impact places the CTXs of both sides on the live nodes from the current
// placement and compares the results node by node.
func (l *liveCluster) impact(before, after *schema.Snapshot) (*planCluster, error) {
	pc := &planCluster{Members: l.members, Nodes: []nodeImpact{}, Notes: l.notes}
	place := func(snap *schema.Snapshot) (reconcile.Placement, []unplacedView, error) {
		reqs, err := placementRequests(snap, l.scales)
		if err != nil {
			return nil, nil, err
		}
		p, unplaced := reconcile.Place(l.nodes, reqs, l.current)
		views := make([]unplacedView, 0, len(unplaced))
		for _, u := range unplaced {
			views = append(views, unplacedView{Instance: u.Instance, Reason: u.Reason})
		}
		return p, views, nil
	}
	pb, ub, err := place(before)
	if err != nil {
		return nil, err
	}
	pa, ua, err := place(after)
	if err != nil {
		return nil, err
	}
	pc.Unplaced.Before, pc.Unplaced.After = ub, ua
	byNode := map[string]*nodeImpact{}
	for _, n := range l.nodes {
		byNode[n.Name] = &nodeImpact{Node: n.Name, Gains: []string{}, Loses: []string{}}
	}
	at := func(node string) *nodeImpact {
		ni, ok := byNode[node]
		if !ok {
			ni = &nodeImpact{Node: node, Gains: []string{}, Loses: []string{}}
			byNode[node] = ni
		}
		return ni
	}
	for id, node := range pb {
		at(node).Before++
		if pa[id] != node {
			at(node).Loses = append(at(node).Loses, id)
		}
	}
	for id, node := range pa {
		at(node).After++
		if pb[id] != node {
			at(node).Gains = append(at(node).Gains, id)
		}
	}
	for _, ni := range byNode {
		slices.SortFunc(ni.Gains, compareInstances)
		slices.SortFunc(ni.Loses, compareInstances)
		pc.Nodes = append(pc.Nodes, *ni)
	}
	slices.SortFunc(pc.Nodes, func(a, b nodeImpact) int { return cmp.Compare(a.Node, b.Node) })
	return pc, nil
}

// placementRequests is what the scheduler is asked for the CTXs of snap. A
// CTX with autoscale asks for what the scaler decided (scales), within its
// min and max, else its min: what runs right after the change, before the
// scaler acts again.
func placementRequests(snap *schema.Snapshot, scales map[string]int) ([]reconcile.Request, error) {
	if snap == nil {
		return nil, nil
	}
	ctxs, err := snap.Ctxs()
	if err != nil {
		return nil, err
	}
	reqs := make([]reconcile.Request, 0, len(ctxs))
	for name, c := range ctxs {
		mem, err := c.Resources.MemoryBytes()
		if err != nil {
			return nil, fmt.Errorf("/ctx/%s: resources.memory: %w", name, err)
		}
		n := c.Replicas
		if as := c.Autoscale; as != nil {
			n = as.Min
			if d, ok := scales[name]; ok {
				n = min(max(d, as.Min), as.Max)
			}
		}
		reqs = append(reqs, reconcile.Request{
			Name:        name,
			Replicas:    n,
			CPUMilli:    int64(c.Resources.CPU),
			MemoryBytes: mem,
			GPUs:        c.Resources.GPU,
			Strategy:    c.Placement.Strategy,
			Constraints: c.Placement.Nodes,
			Devices:     c.Placement.Devices,
		})
	}
	return reqs, nil
}

// compareInstances orders instance ids by CTX, then numerically by index.
func compareInstances(a, b string) int {
	ac, ai, aerr := reconcile.ParseInstanceID(a)
	bc, bi, berr := reconcile.ParseInstanceID(b)
	if aerr != nil || berr != nil {
		return strings.Compare(a, b)
	}
	if c := strings.Compare(ac, bc); c != 0 {
		return c
	}
	return cmp.Compare(ai, bi)
}

func printPlan(w io.Writer, format string, r *planReport) error {
	switch format {
	case "json":
		return printJSON(w, r)
	case "markdown":
		return printPlanMarkdown(w, r)
	}
	return printPlanText(w, r)
}

// opMark is the one-character sign of an op, as diff and terraform use.
func opMark(op schema.Op) string {
	switch op {
	case schema.OpAdd:
		return "+"
	case schema.OpRemove:
		return "-"
	}
	return "~"
}

func printDiagnostics(w io.Writer, r *planReport, line func(s planSide) string) {
	for _, s := range []planSide{r.From, r.To} {
		if s.Valid {
			continue
		}
		fmt.Fprintln(w, line(s))
		for _, d := range s.Diagnostics {
			fmt.Fprintln(w, d.String())
		}
	}
}

func (r *planReport) summaryLine() string {
	n := len(r.Items)
	return fmt.Sprintf("%d %s: %d added, %d removed, %d changed", n, plural(n, "change"), r.Summary.Added, r.Summary.Removed, r.Summary.Changed)
}

func printPlanText(w io.Writer, r *planReport) error {
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "plan: %s → %s\n", r.From.label, r.To.label)
	if !r.Valid {
		printDiagnostics(ew, r, func(s planSide) string {
			return fmt.Sprintf("\n%s is invalid:", s.label)
		})
		return ew.err
	}
	if !r.Changed {
		fmt.Fprintln(ew, "No changes: both sides describe the same desired state.")
	} else {
		fmt.Fprintln(ew, r.summaryLine())
		for _, it := range r.Items {
			fmt.Fprintf(ew, "\n%s %s/%s\n", opMark(it.Op), it.Kind, it.Name)
			for _, f := range it.Fields {
				fmt.Fprintf(ew, "    %s\n", fieldLine(f))
			}
		}
		fmt.Fprintln(ew)
		tw := tabwriter.NewWriter(ew, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOTALS\tBEFORE\tAFTER")
		for _, row := range totalsRows(r.Totals.Before, r.Totals.After) {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", row[0], row[1], row[2])
		}
		tw.Flush()
	}
	if c := r.Cluster; c != nil {
		fmt.Fprintf(ew, "\n%s\n", c.headline())
		if r.Changed && len(c.Nodes) > 0 {
			tw := tabwriter.NewWriter(ew, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tBEFORE\tAFTER\tGAINS\tLOSES")
			for _, n := range c.Nodes {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", n.Node, n.Before, n.After, idList(n.Gains, ""), idList(n.Loses, ""))
			}
			tw.Flush()
		}
		if len(c.Unplaced.After) > 0 {
			fmt.Fprintln(ew, "\ncould not be placed after the change:")
			for _, u := range c.Unplaced.After {
				fmt.Fprintf(ew, "  %s: %s\n", u.Instance, u.Reason)
			}
		}
		for _, n := range c.Notes {
			fmt.Fprintf(ew, "note: %s\n", n)
		}
	}
	return ew.err
}

// fieldLine is one field of an item: "~ replicas: 3 → 5".
func fieldLine(f schema.FieldDiff) string {
	name := f.Field
	if name == "" {
		name = "(whole value)"
	}
	switch f.Op {
	case schema.OpAdd:
		return fmt.Sprintf("+ %s: %s", name, schema.FormatValue(f.New))
	case schema.OpRemove:
		return fmt.Sprintf("- %s: %s", name, schema.FormatValue(f.Old))
	}
	return fmt.Sprintf("~ %s: %s → %s", name, schema.FormatValue(f.Old), schema.FormatValue(f.New))
}

func (c *planCluster) headline() string {
	return fmt.Sprintf("cluster: %d live %s, %d with capacity; instances placed from where they run now",
		c.Members, plural(c.Members, "member"), len(c.Nodes))
}

func idList(ids []string, quote string) string {
	if len(ids) == 0 {
		return "-"
	}
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = quote + id + quote
	}
	return strings.Join(q, ", ")
}

// totalsRows are the rows of the totals table: name, before, after.
func totalsRows(b, a schema.Totals) [][3]string {
	span := func(lo, hi int64, unit func(int64) string) string {
		if lo == hi {
			return unit(lo)
		}
		return unit(lo) + ".." + unit(hi)
	}
	num := func(n int64) string { return strconv.FormatInt(n, 10) }
	milli := func(n int64) string { return strconv.FormatInt(n, 10) + "m" }
	replicas := func(t schema.Totals) string {
		s := span(int64(t.Replicas), int64(t.ReplicasMax), num)
		if t.Autoscaled > 0 {
			s += fmt.Sprintf(" (autoscale: %d %s)", t.Autoscaled, plural(t.Autoscaled, "CTX"))
		}
		return s
	}
	return [][3]string{
		{"CTX", num(int64(b.CTX)), num(int64(a.CTX))},
		{"MID", num(int64(b.MID)), num(int64(a.MID))},
		{"instances", replicas(b), replicas(a)},
		{"CPU", span(b.CPUMilli, b.CPUMilliMax, milli), span(a.CPUMilli, a.CPUMilliMax, milli)},
		{"memory", span(b.MemoryBytes, b.MemoryBytesMax, schema.FormatBytes), span(a.MemoryBytes, a.MemoryBytesMax, schema.FormatBytes)},
		{"GPU", span(b.GPUs, b.GPUsMax, num), span(a.GPUs, a.GPUsMax, num)},
	}
}

func printPlanMarkdown(w io.Writer, r *planReport) error {
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "### ctxos plan: %s → %s\n\n", mdSide(r.From), mdSide(r.To))
	if !r.Valid {
		for _, s := range []planSide{r.From, r.To} {
			if s.Valid {
				continue
			}
			var b strings.Builder
			for _, d := range s.Diagnostics {
				b.WriteString(d.String())
				b.WriteByte('\n')
			}
			fence := codeFence(b.String())
			fmt.Fprintf(ew, "**The desired state at %s is invalid** (%d %s):\n\n%s\n%s%s\n\n",
				mdSide(s), len(s.Diagnostics), plural(len(s.Diagnostics), "problem"), fence, b.String(), fence)
		}
		return ew.err
	}
	if !r.Changed {
		fmt.Fprintln(ew, "**No changes**: both sides describe the same desired state.")
	} else {
		fmt.Fprintf(ew, "**%s**\n\n", r.summaryLine())
		fmt.Fprintln(ew, "| totals | before | after |")
		fmt.Fprintln(ew, "| --- | ---: | ---: |")
		for _, row := range totalsRows(r.Totals.Before, r.Totals.After) {
			fmt.Fprintf(ew, "| %s | %s | %s |\n", row[0], row[1], row[2])
		}
		for _, it := range r.Items {
			var b strings.Builder
			for _, f := range it.Fields {
				name := f.Field
				if name == "" {
					name = "(whole value)"
				}
				if f.Op != schema.OpAdd {
					fmt.Fprintf(&b, "- %s: %s\n", name, schema.FormatValue(f.Old))
				}
				if f.Op != schema.OpRemove {
					fmt.Fprintf(&b, "+ %s: %s\n", name, schema.FormatValue(f.New))
				}
			}
			what := string(it.Op)
			if it.Op == schema.OpChange {
				what = fmt.Sprintf("%d %s changed", len(it.Fields), plural(len(it.Fields), "field"))
			}
			fence := codeFence(b.String())
			fmt.Fprintf(ew, "\n<details><summary><code>%s %s/%s</code> %s</summary>\n\n%sdiff\n%s%s\n\n</details>\n",
				opMark(it.Op), it.Kind, it.Name, what, fence, b.String(), fence)
		}
	}
	if c := r.Cluster; c != nil {
		fmt.Fprintf(ew, "\n#### Nodes\n\n%s.\n", upperFirst(c.headline()))
		if r.Changed && len(c.Nodes) > 0 {
			fmt.Fprintln(ew, "\n| node | instances before | after | gains | loses |")
			fmt.Fprintln(ew, "| --- | ---: | ---: | --- | --- |")
			for _, n := range c.Nodes {
				fmt.Fprintf(ew, "| %s | %d | %d | %s | %s |\n", n.Node, n.Before, n.After, idList(n.Gains, "`"), idList(n.Loses, "`"))
			}
		}
		if len(c.Unplaced.After) > 0 {
			fmt.Fprintln(ew, "\n**Could not be placed after the change:**")
			for _, u := range c.Unplaced.After {
				fmt.Fprintf(ew, "- `%s`: %s\n", u.Instance, u.Reason)
			}
		}
		if len(c.Notes) > 0 {
			fmt.Fprintln(ew)
			for _, n := range c.Notes {
				fmt.Fprintf(ew, "> %s\n", n)
			}
		}
	}
	return ew.err
}

// mdSide names a side in markdown: the revision and the short commit.
func mdSide(s planSide) string {
	switch s.Source {
	case "worktree":
		return "working tree"
	case "cluster":
		if s.Commit == "" {
			return "cluster (nothing synced yet)"
		}
		return fmt.Sprintf("cluster (`%s`, generation %d)", short(s.Commit), s.Generation)
	}
	if s.Commit == "" {
		return fmt.Sprintf("`%s` (no commits yet)", s.Rev)
	}
	return fmt.Sprintf("`%s` (`%s`)", s.Rev, short(s.Commit))
}

// codeFence is a backtick fence longer than any run of backticks in text,
// so a value holding ``` cannot end the block early.
func codeFence(text string) string {
	longest, run := 0, 0
	for _, r := range text {
		if r == '`' {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	return strings.Repeat("`", max(3, longest+1))
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// errWriter keeps the first write error, so that printing code reads
// straight and reports a closed pipe once.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
