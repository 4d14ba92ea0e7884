package process

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// procStat is what the driver reads from /proc/<pid>/stat.
type procStat struct {
	state      byte   // R, S, D, Z, ...
	ppid       int    // parent pid
	session    int    // session id; our processes lead their own session
	cpuTicks   uint64 // utime+stime+cutime+cstime: its own CPU and that of the children it reaped, in clock ticks
	startTicks uint64 // start time in clock ticks since boot
}

// readProcStat parses /proc/<pid>/stat.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	st, err := parseProcStat(b)
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return st, nil
}

// parseProcStat parses the text of a /proc/<pid>/stat file without
// allocating: Observe parses one per process on the host. The command name
// (field 2) may hold spaces and parentheses, so fields are counted from the
// last ')'.
func parseProcStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return procStat{}, errors.New("no command field")
	}
	var st procStat
	field := 3 // the field rest starts with, numbered as in proc(5)
	for rest := b[i+2:]; field <= 22; field++ {
		j := bytes.IndexByte(rest, ' ')
		if j < 0 {
			j = len(rest)
		}
		f := bytes.TrimSpace(rest[:j])
		if len(f) == 0 {
			break
		}
		switch field {
		case 3:
			st.state = f[0]
		case 4, 6, 14, 15, 16, 17, 22:
			n, ok := parseUint(f)
			if !ok {
				return procStat{}, fmt.Errorf("field %d: %q is not a number", field, f)
			}
			switch field {
			case 4:
				st.ppid = int(n)
			case 6:
				st.session = int(n)
			case 22:
				st.startTicks = n
			default:
				st.cpuTicks += n
			}
		}
		if j == len(rest) {
			field++
			break
		}
		rest = rest[j+1:]
	}
	if field <= 22 {
		return procStat{}, fmt.Errorf("%d fields, want at least 22", field-1)
	}
	return st, nil
}

// parseUint parses a decimal number; ppid and session are 0 for some
// kernel threads, never negative.
func parseUint(b []byte) (uint64, bool) {
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, len(b) > 0
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
