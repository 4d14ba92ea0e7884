//go:build !cgo

package process

import (
	"fmt"
	"os/exec"

	"github.com/ctxos/ctxos/drivers"
)

// isolateSupported: libcontainer's nsenter needs cgo, so a build without it
// refuses isolate: true (checkSpec says so at plan time).
const isolateSupported = false

func (d *Driver) launchIsolated(spec drivers.Spec, _ *exec.Cmd) (launched, error) {
	return launched{}, fmt.Errorf("%w: instance %q: isolate: true is not supported by this build (built without cgo)", drivers.ErrUnsupported, spec.ID)
}

func (d *Driver) destroyContainer(string) {}

func (d *Driver) containerInit(string) (int, uint64, bool) { return 0, 0, false }
