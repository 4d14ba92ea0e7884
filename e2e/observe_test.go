//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The JSON the CLI prints, decoded into only the fields the tests read:
// the suite is a client of the binary, not of its packages.
type (
	statusView struct {
		Node    string `json:"node"`
		Members []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"members"`
		Revision  json.RawMessage `json:"revision"`
		Integrity []entryView     `json:"integrity"`
		Progress  []entryView     `json:"progress"`
		Sync      []entryView     `json:"sync"`
	}
	entryView struct {
		Path    string          `json:"path"`
		Value   json.RawMessage `json:"value"`
		Deleted bool            `json:"deleted"`
	}
	instance struct {
		Kind     string `json:"kind"`
		Name     string `json:"name"`
		Instance string `json:"instance"`
		State    string `json:"state"`
		Pid      int    `json:"pid"`
	}
	progress struct {
		Generation uint64 `json:"generation"`
		Commit     string `json:"commit"`
		State      string `json:"state"`
		Message    string `json:"message"`
		Converged  bool   `json:"converged"`
		Desired    int    `json:"desired"`
		Running    int    `json:"running"`
	}
	manifest struct {
		Commit     string `json:"commit"`
		Generation uint64 `json:"generation"`
	}
	syncStatus struct {
		State       string `json:"state"`
		Commit      string `json:"commit"`
		InForce     string `json:"inForce"`
		Diagnostics []struct {
			File    string `json:"file"`
			Line    int    `json:"line"`
			Column  int    `json:"column"`
			Message string `json:"message"`
		} `json:"diagnostics"`
	}
)

// hostView is what a host's agent publishes about itself under
// /run/<host>, read from its own API.
type hostView struct {
	Instances map[string]instance
	Progress  progress
}

func (h *Host) view() (hostView, error) {
	var entries []entryView
	if err := h.json(&entries, "vfs", "ls", "/run/"+h.Name); err != nil {
		return hostView{}, err
	}
	v := hostView{Instances: map[string]instance{}}
	for _, e := range entries {
		if e.Deleted {
			continue
		}
		var err error
		switch e.Path {
		case "/run/" + h.Name + "/instances":
			err = json.Unmarshal(e.Value, &v.Instances)
		case "/run/" + h.Name + "/progress":
			err = json.Unmarshal(e.Value, &v.Progress)
		}
		if err != nil {
			return hostView{}, fmt.Errorf("%s: %s: %w", h.Name, e.Path, err)
		}
	}
	return v, nil
}

// running returns the CTX instances the view reports running.
func (v hostView) running() map[string]instance {
	out := map[string]instance{}
	for id, in := range v.Instances {
		if in.Kind == "ctx" && in.State == "running" {
			out[id] = in
		}
	}
	return out
}

// revision reads /sys/revision, the snapshot in force, from a host.
func (h *Host) revision() (manifest, error) {
	var e entryView
	if err := h.json(&e, "vfs", "get", "/sys/revision"); err != nil {
		return manifest{}, err
	}
	var m manifest
	err := json.Unmarshal(e.Value, &m)
	return m, err
}

// workload is a live process of a cluster's sleep workloads.
type workload struct {
	Pid   int
	NetNS uint64 // inode of its network namespace
}

// markerProcesses finds the live `/bin/sleep <marker>` processes on the
// machine, whatever namespace they run in.
func markerProcesses(marker string) []workload {
	var out []workload
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) != 2 || args[1] != marker || !strings.HasSuffix(args[0], "sleep") || !processAlive(pid) {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat("/proc/"+e.Name()+"/ns/net", &st); err != nil {
			continue
		}
		out = append(out, workload{Pid: pid, NetNS: st.Ino})
	}
	return out
}

// nsInode is the inode identifying the network namespace of host h.
func (h *Host) nsInode() (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+h.NS, &st); err != nil {
		return 0, fmt.Errorf("%s: %w", h.Name, err)
	}
	return st.Ino, nil
}

// Placement is where a cluster runs its CTX instances: instance id →
// host, as the hosts report it and the processes confirm.
type Placement map[string]string

// PerHost counts instances by host, for logs.
func (p Placement) PerHost() string {
	n := map[string]int{}
	for _, h := range p {
		n[h]++
	}
	var parts []string
	for h, c := range n {
		parts = append(parts, fmt.Sprintf("%s=%d", h, c))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// check reports whether hosts run exactly want (CTX name → replicas) of
// the snapshot at commit: every host's progress is converged on commit;
// across hosts each CTX has want running instances, no instance id runs
// twice, nothing else runs; and the sleep processes in each host's
// namespace are exactly the pids it reports in /run/<host>/instances.
func (c *Cluster) check(hosts []*Host, want map[string]int, commit string) (Placement, bool, string) {
	byNS := map[uint64]*Host{}
	for _, h := range hosts {
		ino, err := h.nsInode()
		if err != nil {
			return nil, false, err.Error()
		}
		byNS[ino] = h
	}
	procs := map[*Host][]int{}
	for _, w := range markerProcesses(c.Marker) {
		h, ok := byNS[w.NetNS]
		if !ok {
			return nil, false, fmt.Sprintf("workload pid %d runs outside the hosts checked", w.Pid)
		}
		procs[h] = append(procs[h], w.Pid)
	}
	placed := Placement{}
	count := map[string]int{}
	for _, h := range hosts {
		v, err := h.view()
		if err != nil {
			return nil, false, err.Error()
		}
		p := v.Progress
		if commit != "" && (p.Commit == "" || !strings.HasPrefix(commit, p.Commit) && !strings.HasPrefix(p.Commit, commit)) {
			return nil, false, fmt.Sprintf("%s: progress on commit %.12s, want %.12s", h.Name, p.Commit, commit)
		}
		if !p.Converged {
			return nil, false, fmt.Sprintf("%s: progress %s (%d of %d running) %s", h.Name, p.State, p.Running, p.Desired, p.Message)
		}
		var pids []int
		for id, in := range v.running() {
			if other, dup := placed[id]; dup {
				return nil, false, fmt.Sprintf("instance %s runs on both %s and %s", id, other, h.Name)
			}
			placed[id] = h.Name
			count[in.Name]++
			pids = append(pids, in.Pid)
		}
		got := procs[h]
		slices.Sort(got)
		slices.Sort(pids)
		if !slices.Equal(got, pids) {
			return nil, false, fmt.Sprintf("%s: sleep processes %v in its namespace, /run/%s/instances says pids %v", h.Name, got, h.Name, pids)
		}
	}
	for name, n := range want {
		if count[name] != n {
			return nil, false, fmt.Sprintf("ctx %s: %d instances running, want %d (%s)", name, count[name], n, placed.PerHost())
		}
	}
	for name := range count {
		if _, ok := want[name]; !ok {
			return nil, false, fmt.Sprintf("ctx %s still runs %d instances, want none", name, count[name])
		}
	}
	return placed, true, ""
}

// waitConverged polls check until it holds and returns the placement and
// when it was first seen.
func (c *Cluster) waitConverged(t testing.TB, hosts []*Host, want map[string]int, commit string, timeout time.Duration) (Placement, time.Time) {
	t.Helper()
	var placed Placement
	waitFor(t, timeout, fmt.Sprintf("converged on %.12s with %v", commit, want), func() (bool, string) {
		p, ok, why := c.check(hosts, want, commit)
		placed = p
		return ok, why
	})
	return placed, time.Now()
}

// sync makes the syncing host fetch and publish now (what a webhook
// does) and returns its exit code and output.
func (c *Cluster) sync() (string, int) {
	out, errOut, code := c.Hosts[0].ctxos("sync")
	return out + errOut, code
}

// figure logs a measured figure in the one format the report greps.
func figure(t testing.TB, name string, hosts int, d time.Duration, extra string) {
	t.Helper()
	line := fmt.Sprintf("FIGURE %s hosts=%d ms=%d profile=%s", name, hosts, d.Milliseconds(), profile)
	if extra != "" {
		line += " " + extra
	}
	t.Log(line)
}
