package containerd

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

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
// truncates path. The shim holds the file open and writes with O_APPEND, so
// renaming path away would leave it writing into path.1 while truncation
// keeps its descriptor valid and its next write lands at the new end. Lines
// written between the copy and the truncate are lost, the usual price of
// copytruncate.
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
