package affinity

import (
	"bufio"
	"os"
	"strings"
	"sync"

	"github.com/klauspost/cpuid/v2"
)

// Features are the CPU properties that bear on latency work.
type Features struct {
	Vendor string `json:"vendor"`
	Brand  string `json:"brand"`
	// InvariantTSC: the time stamp counter ticks at a constant rate in
	// every P-state and C-state (constant_tsc and nonstop_tsc), so rdtsc
	// based clocks (and the kernel's tsc clocksource) stay exact.
	InvariantTSC bool `json:"invariant_tsc"`
	// Hybrid: the package mixes core types (performance and efficiency
	// cores); pin latency-critical threads to the performance cores.
	Hybrid bool `json:"hybrid"`
	// Hypervisor: the CPU reports that it runs under a hypervisor.
	Hypervisor       bool   `json:"hypervisor"`
	HypervisorVendor string `json:"hypervisor_vendor,omitempty"`
	CacheLine        int    `json:"cache_line"` // bytes; 0 when unknown
	ThreadsPerCore   int    `json:"threads_per_core"`
	PhysicalCores    int    `json:"physical_cores"`
	LogicalCores     int    `json:"logical_cores"`
	// Cache sizes in bytes; -1 when unknown.
	L1D int `json:"l1d"`
	L2  int `json:"l2"`
	L3  int `json:"l3"`
}

var features = sync.OnceValue(func() Features {
	c := cpuid.CPU
	f := Features{
		Vendor:           c.VendorString,
		Brand:            strings.TrimSpace(c.BrandName),
		Hybrid:           c.Supports(cpuid.HYBRID_CPU),
		Hypervisor:       c.VM(),
		HypervisorVendor: c.HypervisorVendorString,
		CacheLine:        c.CacheLine,
		ThreadsPerCore:   c.ThreadsPerCore,
		PhysicalCores:    c.PhysicalCores,
		LogicalCores:     c.LogicalCores,
		L1D:              c.Cache.L1D,
		L2:               c.Cache.L2,
		L3:               c.Cache.L3,
	}
	// cpuid does not decode the invariant TSC bit (CPUID 0x80000007
	// EDX[8]); the kernel does, as the nonstop_tsc flag.
	flags := cpuFlags()
	f.InvariantTSC = flags["constant_tsc"] && flags["nonstop_tsc"]
	if !f.Hypervisor && flags["hypervisor"] {
		f.Hypervisor = true
	}
	return f
})

// CPUFeatures returns the features of the CPU this process runs on,
// detected once through the cpuid instruction (github.com/klauspost/cpuid)
// and the kernel's flags in /proc/cpuinfo.
func CPUFeatures() Features { return features() }

// cpuFlags reads the first "flags" line of /proc/cpuinfo.
func cpuFlags() map[string]bool {
	out := map[string]bool{}
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "flags" {
			for _, w := range strings.Fields(v) {
				out[w] = true
			}
			break
		}
	}
	return out
}
