package process

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// procStat is what the driver reads from /proc/<pid>/stat.
type procStat struct {
	state      byte   // R, S, D, Z, ...
	session    int    // session id; our processes lead their own session
	startTicks uint64 // start time in clock ticks since boot
}

// readProcStat parses /proc/<pid>/stat. The command name (field 2) may hold
// spaces and parentheses, so fields are counted from the last ')'.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(string(b[i+2:]))
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	sid, err := strconv.Atoi(f[6-3])
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: session: %w", pid, err)
	}
	ticks, err := strconv.ParseUint(f[22-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: starttime: %w", pid, err)
	}
	return procStat{state: f[0][0], session: sid, startTicks: ticks}, nil
}

// alive reports whether pid runs and is the process that started at
// startTicks (not a later process that got the same pid). A zombie has
// ended.
func alive(pid int, startTicks uint64) bool {
	if pid <= 0 {
		return false
	}
	st, err := readProcStat(pid)
	if err != nil {
		return false
	}
	return st.startTicks == startTicks && st.state != 'Z' && st.state != 'X'
}

// findByStartID returns the session leader whose environment carries
// CTXOS_START_ID=startID, and its start ticks. Children of the workload
// inherit the variable too; the leader is the one the driver started.
func findByStartID(startID string) (pid int, ticks uint64, err error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, err
	}
	needle := []byte(envStartID + "=" + startID + "\x00")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(append([]byte{0}, env...), append([]byte{0}, needle...)) {
			continue
		}
		st, err := readProcStat(p)
		if err != nil || st.session != p || st.state == 'Z' {
			continue
		}
		return p, st.startTicks, nil
	}
	return 0, 0, os.ErrNotExist
}

// watchExit blocks until the process behind pidfd exits or wake becomes
// readable or hung up (the driver closing). It reports whether the process
// exited. pidfd works for processes that are not our children, which is
// what adoption after an agent restart needs.
func watchExit(pidfd, wake int) (bool, error) {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("poll pidfd: %w", err)
		}
		if fds[0].Revents != 0 {
			return true, nil
		}
		if fds[1].Revents != 0 {
			return false, nil
		}
	}
}
