package process

import (
	"context"
	"os"
	"strconv"
	"strings"

	"github.com/ctxos/ctxos/drivers"
)

// ApplyHalfway applies c up to the point where the process runs and its
// record still says Starting without a pid: where an agent that died inside
// Apply leaves things.
func (d *Driver) ApplyHalfway(ctx context.Context, c drivers.Change) error {
	d.haltAfterLaunch = true
	defer func() { d.haltAfterLaunch = false }()
	_, err := d.Apply(ctx, c)
	return err
}

// CountRunning counts the live session leaders on the host whose
// environment names instance id, independently of any record. Only this
// driver's workloads count (they carry CTXOS_START_ID): the containerd
// driver's conformance run, in a package tested at the same time, starts
// containers with the same instance ids.
func CountRunning(id string) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		found, ours := false, false
		for _, kv := range strings.Split(string(env), "\x00") {
			if kv == envInstance+"="+id {
				found = true
			}
			if strings.HasPrefix(kv, envStartID+"=") {
				ours = true
			}
		}
		if !found || !ours {
			continue
		}
		st, err := readProcStat(pid)
		if err == nil && st.session == pid && st.state != 'Z' {
			n++
		}
	}
	return n
}

// ReadProcStartTicks exposes the start time the driver records for pid.
func ReadProcStartTicks(pid int) (uint64, error) {
	st, err := readProcStat(pid)
	return st.startTicks, err
}

// KillInstance SIGKILLs the process groups of every live session leader
// whose environment names id; tests use it in cleanup.
func KillInstance(id string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !strings.Contains("\x00"+string(env), "\x00"+envInstance+"="+id+"\x00") {
			continue
		}
		if st, err := readProcStat(pid); err == nil && st.session == pid {
			killGroup(pid, 9)
		}
	}
}

// Session returns the session id of pid.
func Session(pid int) (int, error) {
	st, err := readProcStat(pid)
	return st.session, err
}

var Credential = credential

// SetEUID makes the driver act as if it ran as uid n.
func (d *Driver) SetEUID(n int) { d.euid = n }

// ParseProcStat exposes the /proc/<pid>/stat parser.
func ParseProcStat(b []byte) (ppid, session int, cpuTicks, startTicks uint64, err error) {
	st, err := parseProcStat(b)
	return st.ppid, st.session, st.cpuTicks, st.startTicks, err
}

// CgroupCPUTime is the usage of an isolated instance's cgroup.
var CgroupCPUTime = cgroupCPUTime
