package props

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
)

// A GPUSource finds a node's accelerators.
type GPUSource interface {
	// Devices returns the GPUs present. A machine without the vendor's
	// driver or library has none: that is (nil, nil), not an error. An
	// error means the driver is there but failed to answer. Devices may
	// block for as long as the driver takes (NVML calls do not take ctx).
	Devices(ctx context.Context) ([]GPU, error)
}

var (
	_ GPUSource      = StaticGPUs(nil)
	_ GPUSource      = (*NVML)(nil)
	_ PropsCollector = GPUProps{}
)

// StaticGPUs is a fixed list of GPUs: a fake for tests and for machines
// whose accelerators no driver reports.
type StaticGPUs []GPU

// Devices implements [GPUSource]; it returns a copy of the list.
func (s StaticGPUs) Devices(context.Context) ([]GPU, error) { return slices.Clone(s), nil }

// GPUProps collects the GPUs of a [GPUSource].
type GPUProps struct {
	Source GPUSource
}

// Name implements [PropsCollector].
func (GPUProps) Name() string { return "gpu" }

// CollectProps implements [PropsCollector].
func (g GPUProps) CollectProps(ctx context.Context, hw *HW) error {
	if g.Source == nil {
		return nil
	}
	gpus, err := g.Source.Devices(ctx)
	hw.GPUs = gpus
	if err != nil {
		return fmt.Errorf("find gpus: %w", err)
	}
	return nil
}

func orDefault(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.Default()
	}
	return log
}
