package process

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
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
	t := time.NewTicker(d.cfg.LogCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-d.done:
			return
		case <-t.C:
			d.RotateLogs()
		}
	}
}

// RotateLogs rotates every instance log larger than LogMaxBytes. The driver
// calls it every LogCheckInterval.
func (d *Driver) RotateLogs() {
	paths, err := filepath.Glob(filepath.Join(d.cfg.StateDir, "logs", "*", "*.log"))
	if err != nil {
		d.log.Error("list logs", "err", err)
		return
	}
	for _, p := range paths {
		if err := d.rotateIfLarge(p); err != nil {
			d.log.Warn("rotate log", "path", p, "err", err)
		}
	}
}

// rotateIfLarge shifts path.1…N-1 to path.2…N, copies path to path.1 and
// truncates path. Renaming path away would not work: the running process
// holds an inherited descriptor to the file itself and would go on writing
// into path.1 forever, while we cannot reopen its descriptor for it. Copy
// then truncate keeps the child's descriptor valid; lines written between
// the copy and the truncate are lost, the usual price of copytruncate.
func (d *Driver) rotateIfLarge(path string) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() < d.cfg.LogMaxBytes {
		return nil
	}
	keep := d.cfg.LogKeep
	os.Remove(fmt.Sprintf("%s.%d", path, keep))
	for i := keep - 1; i >= 1; i-- {
		from := fmt.Sprintf("%s.%d", path, i)
		if _, err := os.Stat(from); err == nil {
			if err := os.Rename(from, fmt.Sprintf("%s.%d", path, i+1)); err != nil {
				return err
			}
		}
	}
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(path+".1", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	return os.Truncate(path, 0)
}
