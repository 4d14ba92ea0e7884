// Package props collects what a node is (its props: hardware facts,
// published at /hw/<node>) and how loaded it is (its status, published at
// /sum/<node>), through pluggable collectors.
//
// A [Registry] holds [PropsCollector]s and [StatusCollector]s and runs them
// in order; a collector that fails or hangs is recorded in the result's
// Errors map by name and does not stop the others. [DefaultRegistry] holds
// the built-in collectors, which read the machine through gopsutil and find
// NVIDIA GPUs through NVML, loaded at run time so that one binary runs on
// machines with and without the driver.
//
// [PropsWatch] and [StatusWatch] run a registry on a schedule and hand the
// values to a publish function: props when the facts change (volatile
// fields such as free disk space do not count, see [HW.SameFacts]), status
// at every interval. The package knows nothing of the network or the VFS;
// the agent wires publish to the store.
package props
