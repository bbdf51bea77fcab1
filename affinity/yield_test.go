package affinity

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestYielderWaitsForItsPeriod(t *testing.T) {
	y := NewYielder(time.Hour)
	for range 100_000 {
		if y.Between() {
			t.Fatal("passed through the scheduler before its period had gone by")
		}
	}
	if y.Passes() != 0 {
		t.Fatalf("passes %d, want 0", y.Passes())
	}
}

func TestYielderPassesOncePerPeriod(t *testing.T) {
	y := NewYielder(time.Nanosecond)
	for i := 1; i <= 10; i++ {
		time.Sleep(time.Microsecond) // the period has gone by at each call
		if !y.Between() {
			t.Fatalf("call %d: no pass although the period had gone by", i)
		}
	}
	if y.Passes() != 10 {
		t.Fatalf("Passes %d, want 10", y.Passes())
	}
}

func TestYielderDefaultPeriod(t *testing.T) {
	for _, every := range []time.Duration{0, -time.Second} {
		if y := NewYielder(every); y.every != DefaultYieldEvery {
			t.Errorf("NewYielder(%v) period %v, want %v", every, y.every, DefaultYieldEvery)
		}
	}
}

// TestGCStopsAYieldingSpinner guards the guarantee the Yielder must keep:
// a goroutine locked to its thread that spins and calls Between lets every
// collection stop the world. Nothing in Between may hold it off (no
// runtime lock held across the spin, no non-preemptible loop); a hang
// here is the failure, and the test's timeout catches it.
func TestGCStopsAYieldingSpinner(t *testing.T) {
	var stop atomic.Bool
	var spins atomic.Uint64
	done := make(chan uint64)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		y := NewYielder(0)
		for !stop.Load() {
			spins.Add(1)
			y.Between()
		}
		done <- y.Passes()
	}()
	for spins.Load() == 0 {
		runtime.Gosched()
	}
	for range 20 {
		runtime.GC()
	}
	stop.Store(true)
	<-done
}

func BenchmarkYielderBetween(b *testing.B) {
	y := NewYielder(0)
	b.ReportAllocs()
	for b.Loop() {
		y.Between()
	}
}
