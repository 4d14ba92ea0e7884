package props

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

func sampleHW() HW {
	return HW{
		CPU:         CPU{Model: "EPYC", Cores: 2, Threads: 4, MHz: 2600},
		MemoryBytes: 8 << 30,
		Disks: []Disk{
			{Mountpoint: "/data", Device: "/dev/vdb", Fstype: "xfs", Total: 200, Free: 100},
			{Mountpoint: "/", Device: "/dev/vda", Fstype: "ext4", Total: 100, Free: 50},
		},
		Interfaces: []Interface{
			{Name: "lo", Addrs: []string{"::1/128", "127.0.0.1/8"}, MTU: 65536, Up: true, Loopback: true},
			{Name: "eth0", MAC: "02:00:00:00:00:01", Addrs: []string{"10.0.0.5/24"}, MTU: 1500, Up: true},
		},
		GPUs:     []GPU{{Index: 0, UUID: "GPU-a", Name: "Fake", MemoryBytes: 1 << 30, Driver: "550"}},
		OS:       OS{Name: "linux", Platform: "debian", Version: "12", Kernel: "6.1", Arch: "x86_64", Hostname: "n1"},
		Labels:   map[string]string{"zone": "a"},
		Capacity: Capacity{CPUMilli: 4000, MemoryBytes: 8 << 30, GPUs: 1},
	}
}

func TestSameFacts(t *testing.T) {
	tests := []struct {
		name   string
		change func(hw *HW)
		same   bool
	}{
		{"identical", func(*HW) {}, true},
		{"free space", func(hw *HW) { hw.Disks[0].Free = 1 }, true},
		{"clock", func(hw *HW) { hw.CPU.MHz = 3500 }, true},
		{"order of disks", func(hw *HW) { hw.Disks[0], hw.Disks[1] = hw.Disks[1], hw.Disks[0] }, true},
		{"order of addresses", func(hw *HW) { a := hw.Interfaces[0].Addrs; a[0], a[1] = a[1], a[0] }, true},
		{"empty labels vs none", func(hw *HW) { hw.Labels = map[string]string{}; hw.GPUs = hw.GPUs[:0] }, false},
		{"disk size", func(hw *HW) { hw.Disks[0].Total = 300 }, false},
		{"address", func(hw *HW) { hw.Interfaces[1].Addrs = []string{"10.0.0.6/24"} }, false},
		{"interface down", func(hw *HW) { hw.Interfaces[1].Up = false }, false},
		{"gpu gone", func(hw *HW) { hw.GPUs = nil }, false},
		{"label", func(hw *HW) { hw.Labels["zone"] = "b" }, false},
		{"collector failed", func(hw *HW) { hw.Errors = map[string]string{"gpu": "nvml init: ERROR_UNKNOWN"} }, false},
		{"kernel", func(hw *HW) { hw.OS.Kernel = "6.2" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := sampleHW(), sampleHW()
			tt.change(&b)
			if got := a.SameFacts(b); got != tt.same {
				t.Errorf("SameFacts = %v, want %v", got, tt.same)
			}
			if got := b.SameFacts(a); got != tt.same {
				t.Errorf("SameFacts reversed = %v, want %v", got, tt.same)
			}
		})
	}
	// Empty collections and nil ones are the same facts.
	a, b := sampleHW(), sampleHW()
	a.GPUs, a.Labels = nil, nil
	b.GPUs, b.Labels = []GPU{}, map[string]string{}
	if !a.SameFacts(b) {
		t.Error("nil and empty collections differ")
	}
}

// TestWireFormat pins the field names of the VFS value format and checks a
// round trip through CBOR with the store's deterministic options.
func TestWireFormat(t *testing.T) {
	hw := sampleHW()
	hw.canonical()
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := em.Marshal(hw)
	if err != nil {
		t.Fatal(err)
	}
	var back HW
	if err := cbor.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, hw) {
		t.Errorf("CBOR round trip =\n%+v\nwant\n%+v", back, hw)
	}
	var keys map[string]any
	if err := cbor.Unmarshal(b, &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cpu", "memoryBytes", "disks", "interfaces", "gpus", "os", "labels", "capacity"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("CBOR HW has no key %q: %v", k, keys)
		}
	}
	j, err := json.Marshal(hw)
	if err != nil {
		t.Fatal(err)
	}
	var jkeys struct {
		Capacity map[string]any   `json:"capacity"`
		GPUs     []map[string]any `json:"gpus"`
		CPU      map[string]any   `json:"cpu"`
	}
	if err := json.Unmarshal(j, &jkeys); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cpuMilli", "memoryBytes", "gpus"} {
		if _, ok := jkeys.Capacity[k]; !ok {
			t.Errorf("JSON capacity has no key %q: %s", k, j)
		}
	}
	for _, k := range []string{"index", "uuid", "name", "memoryBytes", "driver"} {
		if _, ok := jkeys.GPUs[0][k]; !ok {
			t.Errorf("JSON gpu has no key %q: %s", k, j)
		}
	}
	for _, k := range []string{"model", "cores", "threads", "mhz"} {
		if _, ok := jkeys.CPU[k]; !ok {
			t.Errorf("JSON cpu has no key %q: %s", k, j)
		}
	}

	s := Status{Time: time.Unix(1700000000, 0).UTC(), CPUPercent: 12.5, Memory: Memory{Total: 10, Used: 4, Available: 6},
		DiskIO: DiskIO{ReadBytes: 1, ReadBytesPerSec: 0.5}, NetIO: NetIO{RxBytes: 2, TxBytesPerSec: 1.5}, UptimeSeconds: 9}
	b, err = em.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var sback Status
	if err := cbor.Unmarshal(b, &sback); err != nil {
		t.Fatal(err)
	}
	if !sback.Time.Equal(s.Time) {
		t.Errorf("CBOR status time = %v, want %v", sback.Time, s.Time)
	}
	sback.Time = s.Time // the decoder picks the location
	if !reflect.DeepEqual(sback, s) {
		t.Errorf("CBOR status round trip =\n%+v\nwant\n%+v", sback, s)
	}
}
