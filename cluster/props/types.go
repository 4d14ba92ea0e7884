package props

import (
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"
)

// HW is a node's props: the hardware and system facts published at
// /hw/<node>. The field names and tags are the VFS value format; change
// them only by adding fields.
type HW struct {
	CPU CPU `cbor:"cpu" json:"cpu"`
	// MemoryBytes is the physical memory the kernel manages.
	MemoryBytes uint64 `cbor:"memoryBytes" json:"memoryBytes"`
	// Disks are the mounted real filesystems, sorted by mountpoint.
	Disks []Disk `cbor:"disks,omitempty" json:"disks,omitempty"`
	// Interfaces are the network interfaces, sorted by name.
	Interfaces []Interface `cbor:"interfaces,omitempty" json:"interfaces,omitempty"`
	// GPUs are sorted by index.
	GPUs   []GPU             `cbor:"gpus,omitempty" json:"gpus,omitempty"`
	OS     OS                `cbor:"os" json:"os"`
	Labels map[string]string `cbor:"labels,omitempty" json:"labels,omitempty"`
	// Capacity is what the scheduler may place on the node, derived from
	// the facts above by the registry after every collection.
	Capacity Capacity `cbor:"capacity" json:"capacity"`
	// Errors maps the name of each collector that failed to its message.
	Errors map[string]string `cbor:"errors,omitempty" json:"errors,omitempty"`
}

// CPU describes the node's processors.
type CPU struct {
	Model string `cbor:"model" json:"model"`
	// Cores counts physical cores, Threads logical CPUs.
	Cores   int `cbor:"cores" json:"cores"`
	Threads int `cbor:"threads" json:"threads"`
	// MHz is the maximum clock where the kernel knows it, else the
	// current one; it is volatile (see [HW.SameFacts]).
	MHz float64 `cbor:"mhz" json:"mhz"`
}

// Disk is one mounted real filesystem.
type Disk struct {
	Mountpoint string `cbor:"mountpoint" json:"mountpoint"`
	Device     string `cbor:"device" json:"device"`
	Fstype     string `cbor:"fstype" json:"fstype"`
	Total      uint64 `cbor:"total" json:"total"`
	// Free is the free space when the props were collected. It is
	// volatile: a change alone does not republish the props, so the
	// published value may be old. Live free space is in [Status].Disks.
	Free uint64 `cbor:"free" json:"free"`
}

// Interface is one network interface.
type Interface struct {
	Name string `cbor:"name" json:"name"`
	MAC  string `cbor:"mac,omitempty" json:"mac,omitempty"`
	// Addrs are addresses in CIDR form, sorted.
	Addrs    []string `cbor:"addrs,omitempty" json:"addrs,omitempty"`
	MTU      int      `cbor:"mtu" json:"mtu"`
	Up       bool     `cbor:"up" json:"up"`
	Loopback bool     `cbor:"loopback,omitempty" json:"loopback,omitempty"`
}

// GPU is one accelerator as its driver reports it.
type GPU struct {
	Index       int    `cbor:"index" json:"index"`
	UUID        string `cbor:"uuid" json:"uuid"`
	Name        string `cbor:"name" json:"name"`
	MemoryBytes uint64 `cbor:"memoryBytes" json:"memoryBytes"`
	Driver      string `cbor:"driver" json:"driver"`
}

// OS describes the operating system.
type OS struct {
	// Name is the kernel's family as Go names it ("linux").
	Name string `cbor:"name" json:"name"`
	// Platform is the distribution ("debian", "ubuntu").
	Platform string `cbor:"platform" json:"platform"`
	Version  string `cbor:"version" json:"version"`
	Kernel   string `cbor:"kernel" json:"kernel"`
	Arch     string `cbor:"arch" json:"arch"`
	Hostname string `cbor:"hostname" json:"hostname"`
}

// Capacity is what the scheduler may place on a node, in the units of a
// CTX's resources: CPUMilli = Threads*1000.
type Capacity struct {
	CPUMilli    int64 `cbor:"cpuMilli" json:"cpuMilli"`
	MemoryBytes int64 `cbor:"memoryBytes" json:"memoryBytes"`
	GPUs        int   `cbor:"gpus" json:"gpus"`
}

// capacityOf derives the schedulable capacity from the facts.
func capacityOf(hw HW) Capacity {
	mem := hw.MemoryBytes
	if mem > 1<<63-1 {
		mem = 1<<63 - 1
	}
	return Capacity{
		CPUMilli:    int64(hw.CPU.Threads) * 1000,
		MemoryBytes: int64(mem),
		GPUs:        len(hw.GPUs),
	}
}

// SameFacts reports whether h and o describe the same node, ignoring the
// volatile fields (CPU.MHz, which follows frequency scaling on some
// machines, and Disks[].Free, which belongs to status) and the difference
// between nil and empty collections. A watch republishes props only when
// SameFacts is false.
func (h HW) SameFacts(o HW) bool {
	return reflect.DeepEqual(h.facts(), o.facts())
}

// facts returns a deep copy of h in canonical form: volatile fields zeroed,
// collections sorted, empty collections nil.
func (h HW) facts() HW {
	c := h.clone()
	c.CPU.MHz = 0
	for i := range c.Disks {
		c.Disks[i].Free = 0
	}
	c.canonical()
	return c
}

// clone returns a deep copy of h, so a value kept for comparison cannot be
// changed through a publisher's copy.
func (h HW) clone() HW {
	c := h
	c.Disks = slices.Clone(h.Disks)
	c.GPUs = slices.Clone(h.GPUs)
	c.Interfaces = slices.Clone(h.Interfaces)
	for i := range c.Interfaces {
		c.Interfaces[i].Addrs = slices.Clone(c.Interfaces[i].Addrs)
	}
	c.Labels = maps.Clone(h.Labels)
	c.Errors = maps.Clone(h.Errors)
	return c
}

// canonical sorts collections and turns empty ones into nil, so equal facts
// compare equal and encode to the same bytes.
func (h *HW) canonical() {
	slices.SortStableFunc(h.Disks, func(a, b Disk) int { return strings.Compare(a.Mountpoint, b.Mountpoint) })
	slices.SortStableFunc(h.Interfaces, func(a, b Interface) int { return strings.Compare(a.Name, b.Name) })
	slices.SortStableFunc(h.GPUs, func(a, b GPU) int { return a.Index - b.Index })
	for i := range h.Interfaces {
		slices.Sort(h.Interfaces[i].Addrs)
		h.Interfaces[i].Addrs = nilIfEmpty(h.Interfaces[i].Addrs)
	}
	h.Disks = nilIfEmpty(h.Disks)
	h.Interfaces = nilIfEmpty(h.Interfaces)
	h.GPUs = nilIfEmpty(h.GPUs)
	if len(h.Labels) == 0 {
		h.Labels = nil
	}
	if len(h.Errors) == 0 {
		h.Errors = nil
	}
}

func nilIfEmpty[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return s
}

// mergeHW copies into dst what a collector set in src: non-zero scalars and
// structs replace, collections are appended, maps are merged.
func mergeHW(dst *HW, src HW) {
	if src.CPU != (CPU{}) {
		dst.CPU = src.CPU
	}
	if src.MemoryBytes != 0 {
		dst.MemoryBytes = src.MemoryBytes
	}
	dst.Disks = append(dst.Disks, src.Disks...)
	dst.Interfaces = append(dst.Interfaces, src.Interfaces...)
	dst.GPUs = append(dst.GPUs, src.GPUs...)
	if src.OS != (OS{}) {
		dst.OS = src.OS
	}
	if len(src.Labels) > 0 && dst.Labels == nil {
		dst.Labels = make(map[string]string, len(src.Labels))
	}
	maps.Copy(dst.Labels, src.Labels)
}

// Status is a node's load, published at /sum/<node> at every status
// interval. Rates are per second over the time since the previous sample
// of the same collector, and zero on the first sample.
type Status struct {
	// Time is when the registry started the collection. CBOR carries
	// it as whole Unix seconds.
	Time time.Time `cbor:"time" json:"time"`
	// CPUPercent is the busy share of all logical CPUs, 0–100.
	CPUPercent float64 `cbor:"cpuPercent" json:"cpuPercent"`
	Load1      float64 `cbor:"load1" json:"load1"`
	Load5      float64 `cbor:"load5" json:"load5"`
	Load15     float64 `cbor:"load15" json:"load15"`
	Memory     Memory  `cbor:"memory" json:"memory"`
	// Disks is the live space of the filesystems listed in [HW].Disks.
	Disks         []DiskSpace `cbor:"disks,omitempty" json:"disks,omitempty"`
	DiskIO        DiskIO      `cbor:"diskIO" json:"diskIO"`
	NetIO         NetIO       `cbor:"netIO" json:"netIO"`
	UptimeSeconds uint64      `cbor:"uptimeSeconds" json:"uptimeSeconds"`
	// Errors maps the name of each collector that failed to its message.
	Errors map[string]string `cbor:"errors,omitempty" json:"errors,omitempty"`
}

// Memory is the use of physical memory in bytes. Available is what can be
// given to new work without swapping (it counts reclaimable cache).
type Memory struct {
	Total     uint64 `cbor:"total" json:"total"`
	Used      uint64 `cbor:"used" json:"used"`
	Available uint64 `cbor:"available" json:"available"`
}

// DiskSpace is the live size of one filesystem.
type DiskSpace struct {
	Mountpoint string `cbor:"mountpoint" json:"mountpoint"`
	Total      uint64 `cbor:"total" json:"total"`
	Free       uint64 `cbor:"free" json:"free"`
}

// DiskIO is the cumulative I/O of the node's physical disks and its rate.
type DiskIO struct {
	ReadBytes        uint64  `cbor:"readBytes" json:"readBytes"`
	WriteBytes       uint64  `cbor:"writeBytes" json:"writeBytes"`
	ReadBytesPerSec  float64 `cbor:"readBytesPerSec" json:"readBytesPerSec"`
	WriteBytesPerSec float64 `cbor:"writeBytesPerSec" json:"writeBytesPerSec"`
}

// NetIO is the cumulative traffic of the node's physical network
// interfaces and its rate.
type NetIO struct {
	RxBytes       uint64  `cbor:"rxBytes" json:"rxBytes"`
	TxBytes       uint64  `cbor:"txBytes" json:"txBytes"`
	RxBytesPerSec float64 `cbor:"rxBytesPerSec" json:"rxBytesPerSec"`
	TxBytesPerSec float64 `cbor:"txBytesPerSec" json:"txBytesPerSec"`
}

// mergeStatus copies into dst what a collector set in src.
func mergeStatus(dst *Status, src Status) {
	if src.CPUPercent != 0 {
		dst.CPUPercent = src.CPUPercent
	}
	if src.Load1 != 0 || src.Load5 != 0 || src.Load15 != 0 {
		dst.Load1, dst.Load5, dst.Load15 = src.Load1, src.Load5, src.Load15
	}
	if src.Memory != (Memory{}) {
		dst.Memory = src.Memory
	}
	dst.Disks = append(dst.Disks, src.Disks...)
	if src.DiskIO != (DiskIO{}) {
		dst.DiskIO = src.DiskIO
	}
	if src.NetIO != (NetIO{}) {
		dst.NetIO = src.NetIO
	}
	if src.UptimeSeconds != 0 {
		dst.UptimeSeconds = src.UptimeSeconds
	}
}
