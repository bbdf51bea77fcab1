package latency

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// The clock's calibration is not compared with time.Since here: that would
// assert a timing. These tests check what does not depend on the host's
// timing: readings never go back, the tick arithmetic, and the choice.

func TestClockMonotonic(t *testing.T) {
	for _, c := range []Clock{NewClock(), NewMonotonicClock("test")} {
		prev := c.Now()
		for range 100000 {
			now := c.Now()
			if now < prev {
				t.Fatalf("%s: reading %d after %d", c.Source(), now, prev)
			}
			prev = now
		}
	}
}

func TestClockSource(t *testing.T) {
	c := NewClock()
	if c.IsTSC() != strings.Contains(c.Source(), "TSC through RDTSCP") {
		t.Fatalf("IsTSC %v but source %q", c.IsTSC(), c.Source())
	}
	t.Logf("clock: %s", c.Source())
	if m := NewMonotonicClock("why"); m.IsTSC() || m.Source() != "monotonic clock through the vDSO (why)" {
		t.Fatalf("monotonic clock: tsc %v, source %q", m.IsTSC(), m.Source())
	}
}

func TestTSCScale(t *testing.T) {
	for _, tc := range []struct {
		hz    float64
		ticks uint64
		ns    int64
	}{
		{1e9, 0, 0},
		{1e9, 12345, 12345},
		{3e9, 3000, 1000},
		{2.5e9, 2_500_000_000, 1_000_000_000},
		{2.5e9, 5, 2},
		// A day at 4 GHz: 3.456e14 ticks, past 64-bit ticks*mult.
		{4e9, 4e9 * 86400, 86400e9},
		// A year at 3 GHz.
		{3e9, 3e9 * 86400 * 365, 86400e9 * 365},
	} {
		got := newTSCScale(tc.hz).ns(tc.ticks)
		// The fixed-point multiplier is rounded: allow one part in 2^31.
		if d := math.Abs(float64(got - tc.ns)); d > 1+float64(tc.ns)/(1<<31) {
			t.Errorf("%.4g Hz, %d ticks: %d ns, want %d", tc.hz, tc.ticks, got, tc.ns)
		}
	}
	s := newTSCScale(2e9)
	if got := s.since(1000, 3000); got != -1000 {
		t.Errorf("since below t0: %d, want -1000", got)
	}
	if got := s.since(1<<40+2000, 1<<40); got != 1000 {
		t.Errorf("since: %d, want 1000", got)
	}
}

// fakeCounter is a synthetic TSC tied to a synthetic monotonic clock:
// hz(ns) gives the rate in force at monotonic time ns.
type fakeCounter struct {
	ns    int64
	ticks float64
	hz    func(ns int64) float64
}

func (f *fakeCounter) source() calibSource {
	step := func(d int64) {
		f.ticks += float64(d) * f.hz(f.ns) / 1e9
		f.ns += d
	}
	return calibSource{
		ticks: func() uint64 { step(7); return uint64(f.ticks) },
		mono:  func() int64 { step(5); return f.ns },
		wait:  func(d time.Duration) { step(int64(d)) },
	}
}

func TestCalibrate(t *testing.T) {
	f := &fakeCounter{ticks: 1 << 40, hz: func(int64) float64 { return 2.9e9 }}
	hz, err := calibrate(f.source())
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(hz-2.9e9)/2.9e9 > 1e-6 {
		t.Fatalf("calibrated %.0f Hz, want 2.9e9", hz)
	}

	// The rate changes between the two windows (frequency scaling on a
	// counter that is not invariant after all): unusable.
	f = &fakeCounter{hz: func(ns int64) float64 {
		if ns >= int64(calibWindow) {
			return 1.5e9
		}
		return 3e9
	}}
	if _, err := calibrate(f.source()); err == nil || !strings.Contains(err.Error(), "unstable") {
		t.Fatalf("changing rate: err %v, want unstable", err)
	}

	// A counter that stands still.
	f = &fakeCounter{hz: func(int64) float64 { return 0 }}
	if _, err := calibrate(f.source()); err == nil {
		t.Fatal("stopped counter calibrated")
	}

	// Implausibly slow.
	f = &fakeCounter{hz: func(int64) float64 { return 1e6 }}
	if _, err := calibrate(f.source()); err == nil || !strings.Contains(err.Error(), "implausible") {
		t.Fatalf("1 MHz counter: err %v, want implausible", err)
	}
}

func TestChooseClock(t *testing.T) {
	good := func() (float64, error) { return 3e9, nil }
	bad := func() (float64, error) { return 0, errors.New("TSC rate unstable") }
	never := func() (float64, error) { t.Fatal("calibrated although not needed"); return 0, nil }

	if c := chooseClock(false, nil, good); !c.tsc || c.scale != newTSCScale(3e9) || !strings.Contains(c.why, "3.0000 GHz") {
		t.Errorf("usable TSC: %+v", c)
	}
	if c := chooseClock(true, nil, never); c.tsc || !strings.Contains(c.why, "LOWLAT_CLOCK") {
		t.Errorf("forced: %+v", c)
	}
	if c := chooseClock(false, errors.New("TSC not invariant"), never); c.tsc || c.why != "TSC not invariant" {
		t.Errorf("not invariant: %+v", c)
	}
	if c := chooseClock(false, nil, bad); c.tsc || c.why != "TSC rate unstable" {
		t.Errorf("unstable: %+v", c)
	}
}

func TestMeasureClockSource(t *testing.T) {
	c := measureClock(NewMonotonicClock("forced"))
	if c.Source != "monotonic clock through the vDSO (forced)" || c.ReadNS <= 0 {
		t.Fatalf("%+v", c)
	}
}

func BenchmarkClockNow(b *testing.B) {
	for _, c := range []Clock{NewClock(), NewMonotonicClock("")} {
		name := "monotonic"
		if c.IsTSC() {
			name = "tsc"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var s int64
			for b.Loop() {
				s += c.Now()
			}
			_ = s
		})
	}
}
