//go:build cgo

package props

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML finds NVIDIA GPUs through libnvidia-ml, which go-nvml opens with
// dlopen at each Devices call, not at program start: the same binary runs
// on machines without the library and reports no GPUs there. Init and
// Shutdown wrap every call, so a driver installed or reloaded while the
// agent runs is picked up by the next collection; the price is NVML's
// start-up time (well under a second with persistence mode, more without)
// once per props collection. Safe for concurrent use; calls are
// serialized.
type NVML struct {
	lib nvml.Interface
	log *slog.Logger

	mu         sync.Mutex
	saidAbsent bool // log the missing library once, not every collection
}

// NewNVML returns an NVML source using the library found by the dynamic
// loader (libnvidia-ml.so.1).
func NewNVML(log *slog.Logger) *NVML {
	return &NVML{lib: nvml.New(), log: orDefault(log)}
}

// NewNVMLAt returns an NVML source using the library at path.
func NewNVMLAt(path string, log *slog.Logger) *NVML {
	return &NVML{lib: nvml.New(nvml.WithLibraryPath(path)), log: orDefault(log)}
}

// Devices implements [GPUSource]. A missing library or an unloaded kernel
// driver mean no GPUs; any other NVML failure is an error.
func (n *NVML) Devices(ctx context.Context) ([]GPU, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch ret := n.lib.Init(); ret {
	case nvml.SUCCESS:
	case nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED:
		if !n.saidAbsent {
			n.log.Debug("no NVIDIA driver: reporting no GPUs", "nvml", ret.Error())
			n.saidAbsent = true
		}
		return nil, nil
	default:
		return nil, fmt.Errorf("nvml init: %w", ret)
	}
	n.saidAbsent = false
	defer n.lib.Shutdown()

	driver, ret := n.lib.SystemGetDriverVersion()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml driver version: %w", ret)
	}
	count, ret := n.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml device count: %w", ret)
	}
	var gpus []GPU
	var errs []error
	for i := range count {
		g, err := nvmlDevice(n.lib, i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		g.Driver = driver
		gpus = append(gpus, g)
	}
	return gpus, errors.Join(errs...)
}

func nvmlDevice(lib nvml.Interface, i int) (GPU, error) {
	dev, ret := lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		return GPU{}, fmt.Errorf("nvml device %d: %w", i, ret)
	}
	uuid, ret := dev.GetUUID()
	if ret != nvml.SUCCESS {
		return GPU{}, fmt.Errorf("nvml device %d uuid: %w", i, ret)
	}
	name, ret := dev.GetName()
	if ret != nvml.SUCCESS {
		return GPU{}, fmt.Errorf("nvml device %d name: %w", i, ret)
	}
	memory, ret := dev.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return GPU{}, fmt.Errorf("nvml device %d memory: %w", i, ret)
	}
	return GPU{Index: i, UUID: uuid, Name: name, MemoryBytes: memory.Total}, nil
}
