//go:build !cgo

package props

import (
	"context"
	"log/slog"
	"sync"
)

// NVML would find NVIDIA GPUs through libnvidia-ml, but go-nvml needs cgo
// to open the library: in a binary built with CGO_ENABLED=0 it reports no
// GPUs, as on a machine without the driver, and logs why once.
type NVML struct {
	log *slog.Logger

	mu         sync.Mutex
	saidAbsent bool
}

// NewNVML returns an NVML source; without cgo it finds no GPUs.
func NewNVML(log *slog.Logger) *NVML { return &NVML{log: orDefault(log)} }

// NewNVMLAt returns an NVML source for the library at path; without cgo
// it finds no GPUs.
func NewNVMLAt(_ string, log *slog.Logger) *NVML { return NewNVML(log) }

// Devices implements [GPUSource].
func (n *NVML) Devices(ctx context.Context) ([]GPU, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.saidAbsent {
		n.log.Debug("built without cgo: NVML cannot be loaded, reporting no GPUs")
		n.saidAbsent = true
	}
	return nil, nil
}
