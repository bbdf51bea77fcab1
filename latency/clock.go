package latency

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Clock reads nanoseconds since a fixed epoch from one of two sources,
// chosen once per process (see NewClock):
//
//   - the CPU's time-stamp counter, on amd64 when the TSC is invariant and
//     its rate could be calibrated: one RDTSCP instruction and a
//     multiply-shift, the clock sockperf reads;
//   - the monotonic clock otherwise: time.Since on a time.Time that carries
//     a monotonic reading, one vDSO clock_gettime(CLOCK_MONOTONIC) and no
//     system call.
//
// A Clock is a small value: copy it freely.
type Clock struct {
	epoch time.Time
	tsc   bool     // read the TSC; false: the monotonic clock
	t0    uint64   // TSC reading at epoch
	scale tscScale // ticks to nanoseconds
	src   string   // what Source reports
}

// NewClock returns a clock whose epoch is now, reading the TSC when this
// host has a usable one (calibrated once per process, about 20 ms on the
// first call) and the monotonic clock otherwise. Setting LOWLAT_CLOCK=monotonic
// in the environment forces the monotonic clock.
func NewClock() Clock {
	ch := clockChoiceOnce()
	if !ch.tsc {
		return NewMonotonicClock(ch.why)
	}
	c := Clock{tsc: true, scale: ch.scale, src: ch.why}
	c.epoch = time.Now()
	c.t0 = readTSC()
	return c
}

// NewMonotonicClock returns a clock on the monotonic clock whatever the
// host offers; why, if not empty, says why (it ends up in Source).
func NewMonotonicClock(why string) Clock {
	src := "monotonic clock through the vDSO"
	if why != "" {
		src += " (" + why + ")"
	}
	return Clock{epoch: time.Now(), src: src}
}

// Now returns the nanoseconds elapsed since the clock's epoch.
func (c Clock) Now() int64 {
	if c.tsc {
		return c.scale.since(readTSC(), c.t0)
	}
	return int64(time.Since(c.epoch))
}

// Wall converts a reading of c back to wall-clock time.
func (c Clock) Wall(ns int64) time.Time { return c.epoch.Add(time.Duration(ns)) }

// IsTSC reports whether c reads the time-stamp counter.
func (c Clock) IsTSC() bool { return c.tsc }

// Source says in words which clock c reads, and for the TSC its calibrated
// rate.
func (c Clock) Source() string { return c.src }

// Histogram bounds: every round trip is recorded in nanoseconds with three
// significant digits; values outside the range are clamped into it.
const (
	LowestRTT  int64 = 1
	HighestRTT int64 = int64(60 * time.Second)
	SigFigs          = 3
)

// NewHistogram returns an empty histogram with the bounds above.
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(LowestRTT, HighestRTT, SigFigs)
}

// record adds one round trip to h, clamped into the histogram's range so
// that recording cannot fail (and never allocates an error).
func record(h *hdrhistogram.Histogram, ns int64) {
	ns = min(max(ns, LowestRTT), HighestRTT)
	_ = h.RecordValue(ns)
}
