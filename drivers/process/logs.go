package process

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ctxos/ctxos/drivers"
)

// openLogs opens the instance's stdout and stderr files for appending, to be
// handed to the child. O_APPEND matters twice: restarts add to the end, and
// after rotation truncates a file the child's next write lands at the new
// end instead of at its old offset (which would leave a hole of zeros).
func (d *Driver) openLogs(id string) (stdout, stderr *os.File, err error) {
	outPath, errPath := d.LogPaths(id)
	if err := os.MkdirAll(filepath.Dir(outPath), 0o750); err != nil {
		return nil, nil, fmt.Errorf("instance %q: logs: %w", id, err)
	}
	for _, p := range []string{outPath, errPath} {
		if err := d.rotateIfLarge(p); err != nil {
			d.log.Warn("rotate log", "path", p, "err", err)
		}
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	stdout, err = os.OpenFile(outPath, flags, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("instance %q: logs: %w", id, err)
	}
	stderr, err = os.OpenFile(errPath, flags, 0o640)
	if err != nil {
		stdout.Close()
		return nil, nil, fmt.Errorf("instance %q: logs: %w", id, err)
	}
	return stdout, stderr, nil
}

func (d *Driver) rotateLoop() {
	defer d.wg.Done()
	drivers.RotateLogsEvery(d.done, d.cfg.LogCheckInterval, filepath.Join(d.cfg.StateDir, "logs"), d.cfg.LogMaxBytes, d.cfg.LogKeep, d.log)
}

// RotateLogs rotates every instance log larger than LogMaxBytes. The driver
// calls it every LogCheckInterval.
func (d *Driver) RotateLogs() {
	drivers.RotateLogs(filepath.Join(d.cfg.StateDir, "logs"), d.cfg.LogMaxBytes, d.cfg.LogKeep, d.log)
}

func (d *Driver) rotateIfLarge(path string) error {
	return drivers.RotateLog(path, d.cfg.LogMaxBytes, d.cfg.LogKeep)
}
