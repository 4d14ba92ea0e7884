package containerd

import (
	"path/filepath"
	"time"

	"github.com/ctxos/ctxos/drivers"
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
	drivers.RotateLogs(filepath.Join(d.cfg.StateDir, "logs"), d.cfg.LogMaxBytes, d.cfg.LogKeep, d.log)
}

func (d *Driver) rotateIfLarge(path string) error {
	return drivers.RotateLog(path, d.cfg.LogMaxBytes, d.cfg.LogKeep)
}
