package latency

import (
	"errors"

	"github.com/klauspost/cpuid/v2"
)

// readTSC returns the time-stamp counter. It executes RDTSCP, which waits
// until every earlier instruction has executed before it reads the counter,
// so a reading taken after a receive cannot be moved ahead of it. A later
// instruction may start before the read; a trailing LFENCE would stop that
// but cost 10-20 ns more per reading on this KVM guest (RDTSCP alone
// measured 25-38 ns, with LFENCE 35-49), for at most a few cycles moved
// out of the measured interval. Implemented in clock_amd64.s.
//
//go:noescape
func readTSC() uint64

// cpuidLeaf executes CPUID with EAX=leaf and ECX=sub. Implemented in
// clock_amd64.s.
//
//go:noescape
func cpuidLeaf(leaf, sub uint32) (a, b, c, d uint32)

// tscUsable reports why the TSC cannot be the clock, or nil when it can:
// the CPU must have RDTSCP and an invariant TSC (CPUID 0x80000007 EDX bit
// 8: the counter ticks at a constant rate in every P-, C- and T-state, so
// it measures time; Linux shows it as the nonstop_tsc flag).
// klauspost/cpuid v2.4.2 has no flag for the latter, so it is read here.
func tscUsable() error {
	if !cpuid.CPU.Has(cpuid.RDTSCP) {
		return errors.New("no RDTSCP instruction")
	}
	if max, _, _, _ := cpuidLeaf(0x80000000, 0); max < 0x80000007 {
		return errors.New("TSC not invariant: CPUID has no leaf 0x80000007")
	}
	if _, _, _, d := cpuidLeaf(0x80000007, 0); d&(1<<8) == 0 {
		return errors.New("TSC not invariant")
	}
	return nil
}
