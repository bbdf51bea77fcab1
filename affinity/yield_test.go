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

func TestYielderPassesOncePerCheck(t *testing.T) {
	y := NewYielder(time.Nanosecond)
	passed := 0
	for i := 1; i <= 10*yieldCheck; i++ {
		if y.Between() {
			passed++
			if i%yieldCheck != 0 {
				t.Fatalf("passed at call %d, not a multiple of %d", i, yieldCheck)
			}
		}
	}
	if passed != 10 || y.Passes() != 10 {
		t.Fatalf("passed %d times (Passes %d), want 10", passed, y.Passes())
	}
}

func TestYielderDefaultPeriod(t *testing.T) {
	for _, every := range []time.Duration{0, -time.Second} {
		if y := NewYielder(every); y.every != DefaultYieldEvery {
			t.Errorf("NewYielder(%v) period %v, want %v", every, y.every, DefaultYieldEvery)
		}
	}
}

// TestGCStopsAYieldingSpinner: a goroutine locked to its thread that spins
// and calls Between still lets every collection stop the world (the
// runtime preempts it at its next call, Yielder or not). A hang here is
// the failure; the test's timeout catches it.
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
