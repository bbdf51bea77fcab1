package latency

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Clock reads the monotonic clock as nanoseconds since a fixed epoch.
// time.Since on a time.Time that carries a monotonic reading costs one vDSO
// clock_gettime(CLOCK_MONOTONIC) and no system call.
type Clock struct{ epoch time.Time }

// NewClock returns a clock whose epoch is now.
func NewClock() Clock { return Clock{epoch: time.Now()} }

// Now returns the nanoseconds elapsed since the clock's epoch.
func (c Clock) Now() int64 { return int64(time.Since(c.epoch)) }

// Wall converts a reading of c back to wall-clock time.
func (c Clock) Wall(ns int64) time.Time { return c.epoch.Add(time.Duration(ns)) }

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
