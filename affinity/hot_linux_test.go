//go:build linux

package affinity

import (
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadMasks reads every thread's CPU mask.
func threadMasks(t *testing.T) map[int]CPUSet {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]CPUSet{}
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		if m, err := ProcessAffinity(tid); err == nil {
			out[tid] = m
		}
	}
	return out
}

// TestMakeHot: the hot thread alone on its CPU, every other thread on the
// housekeeping CPUs, threads started later too; Release puts them all
// back.
func TestMakeHot(t *testing.T) {
	all, err := ThreadAffinity()
	if err != nil {
		t.Fatal(err)
	}
	if all.Len() < 2 {
		t.Skipf("needs two CPUs, this thread may use %s", all)
	}
	cpu := all.CPUs()[all.Len()-1]
	errc := make(chan error, 1)
	go func() {
		h, err := MakeHot(cpu, CPUSet{})
		if err != nil {
			errc <- err
			return
		}
		// New threads: goroutines locked to threads of their own, started
		// from the hot thread's goroutine.
		stop := make(chan struct{})
		for range 3 {
			go func() {
				runtime.LockOSThread()
				<-stop
			}()
		}
		time.Sleep(4 * hotRescan)
		for tid, m := range threadMasks(t) {
			switch {
			case tid == unix.Gettid() && (m.Len() != 1 || !m.Contains(cpu)):
				t.Errorf("the hot thread's mask is %s, want %d", m, cpu)
			case tid != unix.Gettid() && m.Contains(cpu):
				t.Errorf("thread %d may still run on the hot cpu %d (%s)", tid, cpu, m)
			}
		}
		close(stop)
		errc <- h.Release()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for tid, m := range threadMasks(t) {
		if !m.Equal(all) {
			t.Errorf("thread %d left on %s after Release, want %s", tid, m, all)
		}
	}
}
