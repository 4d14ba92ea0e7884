package process

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat. The kernel
// reports them in USER_HZ, which is 100 on every architecture Go runs on
// (sysconf(_SC_CLK_TCK) returns this constant; it is not the kernel's HZ).
const userHZ = 100

// cpuProbe is one live instance whose CPU time Observe reads.
type cpuProbe struct {
	out        int // index in Observe's result
	id         string
	pid        int
	startTicks uint64
	isolated   bool
}

// cpuTimes returns the CPU time of each probe, 0 where it cannot be read
// (the process just exited, its pid went to another process).
//
// An isolated instance has a cgroup of its own, whose usage counter is
// exact: it counts every process that ever ran in it. A host process has
// none, so its time is that of the process tree under its pid, read in one
// pass over /proc: each live (or not yet reaped) process's own time plus
// what it reaped of its children. That misses a process that left the tree
// (a daemon that double-forks to init) and the children a parent never
// waited for.
func cpuTimes(probes []cpuProbe) []time.Duration {
	out := make([]time.Duration, len(probes))
	var tree []int // indexes into probes that need the /proc pass
	for i, p := range probes {
		if p.isolated {
			if t, ok := cgroupCPUTime(p.id); ok {
				out[i] = t
				continue
			}
		}
		tree = append(tree, i)
	}
	if len(tree) == 0 {
		return out
	}
	procs := scanProcs()
	for _, i := range tree {
		p := probes[i]
		root, ok := procs.byPid[p.pid]
		if !ok || procs.stats[root].startTicks != p.startTicks {
			continue
		}
		out[i] = time.Duration(procs.treeTicks(root)) * (time.Second / userHZ)
	}
	return out
}

// procTable is one pass over /proc: every process's stat, and its children.
type procTable struct {
	pids     []int
	stats    []procStat
	byPid    map[int]int   // pid → index
	children map[int][]int // parent pid → indexes of its children
}

// scanProcs reads /proc/<pid>/stat of every process on the host. A process
// that exits during the pass is left out.
func scanProcs() *procTable {
	t := &procTable{byPid: map[int]int{}, children: map[int][]int{}}
	dir, err := os.Open("/proc")
	if err != nil {
		return t
	}
	names, _ := dir.Readdirnames(-1)
	dir.Close()
	t.pids = make([]int, 0, len(names))
	t.stats = make([]procStat, 0, len(names))
	var buf [1024]byte
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		n, err := readSmall("/proc/"+name+"/stat", buf[:])
		if err != nil {
			continue
		}
		st, err := parseProcStat(buf[:n])
		if err != nil {
			continue
		}
		t.byPid[pid] = len(t.pids)
		t.children[st.ppid] = append(t.children[st.ppid], len(t.pids))
		t.pids = append(t.pids, pid)
		t.stats = append(t.stats, st)
	}
	return t
}

// treeTicks sums the CPU ticks of the process at index root and of all its
// descendants.
func (t *procTable) treeTicks(root int) uint64 {
	var sum uint64
	stack := []int{root}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		sum += t.stats[i].cpuTicks
		stack = append(stack, t.children[t.pids[i]]...)
	}
	return sum
}

// readSmall reads a small file into buf with raw syscalls: os.Open would
// try to register each /proc file with the poller, and this runs for every
// process on the host at every Observe.
func readSmall(path string, buf []byte) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// cgroupCPUTime reads the CPU usage of the cgroup libcontainer made for an
// isolated instance (see containerConfig): cpuacct.usage (ns) on cgroup v1,
// usage_usec of cpu.stat on v2.
func cgroupCPUTime(id string) (time.Duration, bool) {
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpuacct/ctxos", id, "cpuacct.usage")); err == nil {
		if ns, ok := parseUint(bytes.TrimSpace(b)); ok {
			return time.Duration(ns), true
		}
	}
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/ctxos", id, "cpu.stat"))
	if err != nil {
		return 0, false
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("usage_usec ")); ok {
			if us, ok := parseUint(bytes.TrimSpace(v)); ok {
				return time.Duration(us) * time.Microsecond, true
			}
		}
	}
	return 0, false
}
