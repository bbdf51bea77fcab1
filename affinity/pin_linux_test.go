//go:build linux

package affinity

import (
	"runtime"
	"testing"
)

func TestOnlineCPUs(t *testing.T) {
	s, err := OnlineCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() < 1 || !s.Contains(0) {
		t.Fatalf("online cpus %q: want at least cpu 0", s)
	}
}

func TestLockAndPin(t *testing.T) {
	allowed, err := ProcessAffinity(0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		before, err := ThreadAffinity()
		if err != nil {
			t.Error(err)
			return
		}
		cpu := allowed.CPUs()[len(allowed.CPUs())-1]
		unlock, err := LockAndPin(cpu)
		if err != nil {
			t.Error(err)
			return
		}
		got, err := ThreadAffinity()
		if err != nil || !got.Equal(NewCPUSet(cpu)) {
			t.Errorf("pinned mask %q, %v; want %d", got, err, cpu)
		}
		unlock()
		unlock() // a second call does nothing
		after, err := ThreadAffinity()
		if err != nil || !after.Equal(before) {
			t.Errorf("mask after unlock %q, want %q (%v)", after, before, err)
		}
	}()
	<-done
	if _, err := LockAndPin(MaxCPU); err == nil {
		t.Fatal("LockAndPin(MaxCPU) succeeded")
	}
	if err := PinThread(CPUSet{}); err == nil {
		t.Fatal("PinThread(empty) succeeded")
	}
}

func lockThread() { runtime.LockOSThread() }
