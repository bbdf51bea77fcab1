package latency

import (
	"fmt"
	"math"
	"math/bits"
	"os"
	"sync"
	"time"
)

// tscShift is the fixed-point shift of tscScale: nanoseconds are
// ticks*mult >> 32, computed in 128 bits so that no run is long enough to
// overflow (about 2^95 / mult ticks: centuries at any real TSC rate).
const tscShift = 32

// tscScale converts TSC ticks to nanoseconds: mult is 2^32 * 1e9 / Hz.
type tscScale struct{ mult uint64 }

func newTSCScale(hz float64) tscScale {
	return tscScale{mult: uint64(math.Round(1e9 * (1 << tscShift) / hz))}
}

// ns converts a tick count to nanoseconds.
func (s tscScale) ns(ticks uint64) int64 {
	hi, lo := bits.Mul64(ticks, s.mult)
	return int64(hi<<(64-tscShift) | lo>>tscShift)
}

// since converts now - t0 to nanoseconds. A reading below t0 (another
// CPU's counter a few ticks behind) gives a small negative number, not a
// wrapped huge one.
func (s tscScale) since(now, t0 uint64) int64 {
	if now >= t0 {
		return s.ns(now - t0)
	}
	return -s.ns(t0 - now)
}

// Calibration bounds. The rate is measured over two back-to-back windows of
// calibWindow each; the two rates must agree within calibTolerance (a VM
// migration, a counter that is not invariant after all, or a clock being
// slewed fails that), and lie within a plausible range.
const (
	calibWindow    = 10 * time.Millisecond
	calibTolerance = 100e-6 // 100 ppm: 0.5 ns in a 5 µs round trip
	calibPairTries = 16
	calibMinHz     = 100e6
	calibMaxHz     = 100e9
)

// calibSource is what calibration reads: the counter, the monotonic clock
// (ns), and a way to let time pass. Tests substitute synthetic ones.
type calibSource struct {
	ticks func() uint64
	mono  func() int64
	wait  func(time.Duration)
}

// pair reads the counter on both sides of one monotonic reading and keeps
// the tightest of calibPairTries brackets, so that an interrupt or a VM
// stall inside one try does not skew the pair. It returns the counter at
// the bracket's midpoint and the monotonic reading.
func (s calibSource) pair() (tick uint64, ns int64) {
	best := uint64(math.MaxUint64)
	for range calibPairTries {
		t1 := s.ticks()
		m := s.mono()
		t2 := s.ticks()
		if t2 < t1 {
			continue
		}
		if w := t2 - t1; w < best {
			best, tick, ns = w, t1+w/2, m
		}
	}
	return tick, ns
}

// calibrate measures the counter's rate in Hz against the monotonic clock:
// three (counter, monotonic) pairs calibWindow apart give two rates, which
// must agree within calibTolerance; the rate over the whole span is the
// result. It reports why when the counter is unusable.
func calibrate(s calibSource) (hz float64, err error) {
	t0, m0 := s.pair()
	s.wait(calibWindow)
	t1, m1 := s.pair()
	s.wait(calibWindow)
	t2, m2 := s.pair()
	rate := func(ta, tb uint64, ma, mb int64) float64 {
		if tb <= ta || mb <= ma {
			return 0
		}
		return float64(tb-ta) * 1e9 / float64(mb-ma)
	}
	r1, r2 := rate(t0, t1, m0, m1), rate(t1, t2, m1, m2)
	if r1 == 0 || r2 == 0 {
		return 0, fmt.Errorf("TSC did not advance with the monotonic clock")
	}
	if d := math.Abs(r1-r2) / r1; d > calibTolerance {
		return 0, fmt.Errorf("TSC rate unstable: %.0f then %.0f Hz (%.0f ppm apart)", r1, r2, d*1e6)
	}
	hz = rate(t0, t2, m0, m2)
	if hz < calibMinHz || hz > calibMaxHz {
		return 0, fmt.Errorf("TSC rate %.0f Hz is implausible", hz)
	}
	return hz, nil
}

// clockChoice is the process-wide decision NewClock follows.
type clockChoice struct {
	tsc   bool
	scale tscScale
	why   string // the TSC's rate, or why the monotonic clock was chosen
}

// chooseClock decides between the TSC and the monotonic clock. forced
// (LOWLAT_CLOCK=monotonic) and a counter that is not invariant skip
// calibration; a calibration error falls back too.
func chooseClock(forced bool, invariant error, cal func() (float64, error)) clockChoice {
	switch {
	case forced:
		return clockChoice{why: "forced by LOWLAT_CLOCK=monotonic"}
	case invariant != nil:
		return clockChoice{why: invariant.Error()}
	}
	hz, err := cal()
	if err != nil {
		return clockChoice{why: err.Error()}
	}
	return clockChoice{
		tsc:   true,
		scale: newTSCScale(hz),
		why:   fmt.Sprintf("invariant TSC through RDTSCP, %.4f GHz calibrated against CLOCK_MONOTONIC", hz/1e9),
	}
}

var clockChoiceOnce = sync.OnceValue(func() clockChoice {
	epoch := time.Now()
	return chooseClock(os.Getenv("LOWLAT_CLOCK") == "monotonic", tscUsable(), func() (float64, error) {
		return calibrate(calibSource{
			ticks: readTSC,
			mono:  func() int64 { return int64(time.Since(epoch)) },
			wait:  time.Sleep,
		})
	})
})
