package containerd

import (
	"path/filepath"

	"github.com/ctxos/ctxos/drivers"
)

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
