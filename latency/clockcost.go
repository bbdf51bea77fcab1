package latency

import "time"

// ClockCost is what the measuring clock itself costs: the floor under every
// round trip a Client records.
type ClockCost struct {
	// ReadNS is the mean time one Clock.Now takes, in nanoseconds.
	ReadNS float64
	// ResolutionNS is the smallest step between two readings that differ:
	// no interval shorter than this can be told apart from zero.
	ResolutionNS int64
	// Source says which clock was measured (Clock.Source): the TSC and its
	// calibrated rate, or the monotonic clock and why.
	Source string
}

// clockSamples is how many readings MeasureClock takes: about a
// millisecond on a vDSO clock, less on the TSC.
const clockSamples = 1 << 15

// MeasureClock reads the clock a Client would use (NewClock) clockSamples
// times back to back and returns the mean cost of one reading, the smallest
// non-zero step seen, and which clock it is.
func MeasureClock() ClockCost { return measureClock(NewClock()) }

func measureClock(c Clock) ClockCost {
	// Warm the vDSO page and the branch predictors first.
	for range 1024 {
		c.Now()
	}
	res := int64(0)
	start := time.Now()
	prev := c.Now()
	for range clockSamples {
		now := c.Now()
		if d := now - prev; d > 0 && (res == 0 || d < res) {
			res = d
		}
		prev = now
	}
	elapsed := time.Since(start)
	return ClockCost{ReadNS: float64(elapsed.Nanoseconds()) / float64(clockSamples+1), ResolutionNS: res, Source: c.Source()}
}
