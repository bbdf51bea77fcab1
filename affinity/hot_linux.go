//go:build linux

package affinity

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// HotThread is an OS thread that has a CPU to itself within its process:
// MakeHot pins the calling goroutine's thread to one CPU and keeps every
// other thread of the process, the Go runtime's own included and those it
// starts later, on the housekeeping CPUs, until Release.
type HotThread struct {
	cpu   int
	tid   int
	hk    CPUSet
	prev  CPUSet // the hot thread's own mask before
	mu    sync.Mutex
	saved map[int]CPUSet // other threads' masks before they were moved
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// hotRescan is how often MakeHot's watcher looks for threads started
// since: a new thread inherits the mask of the thread that created it,
// which may be the hot one.
const hotRescan = 50 * time.Millisecond

// MakeHot locks the calling goroutine to its OS thread, pins the thread to
// cpu, and moves every other thread of the process to housekeeping (the
// calling thread's allowed CPUs less cpu when housekeeping is empty). A
// watcher moves threads started later within hotRescan. Release undoes it
// all; call it from the same goroutine.
func MakeHot(cpu int, housekeeping CPUSet) (*HotThread, error) {
	runtime.LockOSThread()
	prev, err := ThreadAffinity()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	if !prev.Contains(cpu) {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("make cpu %d hot: not a CPU this thread may run on (%s)", cpu, prev)
	}
	hk := housekeeping
	if hk.IsEmpty() {
		var self CPUSet
		self.Add(cpu)
		hk = prev.Difference(self)
	}
	if hk.IsEmpty() || hk.Contains(cpu) {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("make cpu %d hot: the housekeeping CPUs (%s) must be others, and at least one", cpu, hk)
	}
	var one CPUSet
	one.Add(cpu)
	if err := PinThread(one); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	h := &HotThread{cpu: cpu, tid: unix.Gettid(), hk: hk, prev: prev, saved: map[int]CPUSet{},
		stop: make(chan struct{}), done: make(chan struct{})}
	if err := h.sweep(true); err != nil {
		h.Release()
		return nil, err
	}
	go h.watch()
	return h, nil
}

// sweep moves every thread not yet moved (but the hot one) to the
// housekeeping CPUs. It saves the mask of a thread that was there at
// MakeHot (first) to give it back; a thread started since inherited its
// mask from the hot period and gets the process's mask before it (the hot
// thread's) back instead.
func (h *HotThread) sweep(first bool) error {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("list the process's threads: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.hk.toUnix()
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil || tid == h.tid {
			continue
		}
		if _, done := h.saved[tid]; done {
			continue
		}
		prev := h.prev
		if first {
			if prev, err = ProcessAffinity(tid); err != nil {
				continue // the thread exited meanwhile
			}
		}
		if err := unix.SchedSetaffinity(tid, &u); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("move thread %d to cpus %s: %w", tid, h.hk, os.NewSyscallError("sched_setaffinity", err))
		}
		h.saved[tid] = prev
	}
	return nil
}

func (h *HotThread) watch() {
	defer close(h.done)
	t := time.NewTicker(hotRescan)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			h.sweep(false)
		}
	}
}

// CPU is the hot thread's CPU.
func (h *HotThread) CPU() int { return h.cpu }

// Housekeeping is where the process's other threads run.
func (h *HotThread) Housekeeping() CPUSet { return h.hk }

// Release stops the watcher, puts every moved thread back on its mask and
// the hot thread on its own, and unlocks the goroutine. Later calls do
// nothing.
func (h *HotThread) Release() error {
	var errs []error
	h.once.Do(func() {
		close(h.stop)
		if h.done != nil {
			select {
			case <-h.done:
			case <-time.After(time.Second):
			}
		}
		h.mu.Lock()
		for tid, prev := range h.saved {
			u := prev.toUnix()
			if err := unix.SchedSetaffinity(tid, &u); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("restore thread %d: %w", tid, os.NewSyscallError("sched_setaffinity", err)))
			}
		}
		h.mu.Unlock()
		if err := PinThread(h.prev); err != nil {
			errs = append(errs, err) // stay locked: the thread dies with the goroutine
			return
		}
		runtime.UnlockOSThread()
	})
	return errors.Join(errs...)
}
