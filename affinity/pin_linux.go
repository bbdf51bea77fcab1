//go:build linux

package affinity

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/internal/priv"
)

// toUnix converts s to the kernel mask type.
func (s CPUSet) toUnix() unix.CPUSet {
	var u unix.CPUSet
	u.Zero()
	for _, c := range s.CPUs() {
		u.Set(c)
	}
	return u
}

func fromUnix(u *unix.CPUSet) CPUSet {
	var s CPUSet
	for c := 0; c < MaxCPU; c++ {
		if u.IsSet(c) {
			s.bits[c/64] |= 1 << (uint(c) % 64)
		}
	}
	return s
}

// ThreadAffinity returns the CPU mask of the calling OS thread
// (sched_getaffinity on tid 0).
func ThreadAffinity() (CPUSet, error) {
	var u unix.CPUSet
	if err := unix.SchedGetaffinity(0, &u); err != nil {
		return CPUSet{}, os.NewSyscallError("sched_getaffinity", err)
	}
	return fromUnix(&u), nil
}

// ProcessAffinity returns the CPU mask of task pid (a process or thread
// id; 0 is the calling thread), through sched_getaffinity.
func ProcessAffinity(pid int) (CPUSet, error) {
	var u unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &u); err != nil {
		return CPUSet{}, os.NewSyscallError(fmt.Sprintf("sched_getaffinity pid %d", pid), err)
	}
	return fromUnix(&u), nil
}

// PinThread restricts the calling OS thread to cpus (sched_setaffinity on
// tid 0). The caller must have called runtime.LockOSThread first, or the Go
// scheduler may move the goroutine to another, unpinned thread at any time.
// Changing one's own thread's mask needs no privilege unless cpus leaves the
// cpuset cgroup the process runs in (EINVAL).
func PinThread(cpus CPUSet) error {
	if cpus.IsEmpty() {
		return fmt.Errorf("sched_setaffinity: empty cpu set: %w", unix.EINVAL)
	}
	u := cpus.toUnix()
	if err := unix.SchedSetaffinity(0, &u); err != nil {
		return priv.Wrap(fmt.Sprintf("sched_setaffinity cpus %s", cpus), "CAP_SYS_NICE", err)
	}
	return nil
}

// LockAndPin wires the calling goroutine to its OS thread
// (runtime.LockOSThread) and pins that thread to cpu. The returned unlock
// puts the thread's previous CPU mask back and unlocks the goroutine; call it
// from the same goroutine, once (later calls do nothing). If the old mask
// cannot be restored, unlock leaves the goroutine locked so that the runtime
// discards the thread when the goroutine exits instead of reusing a
// wrongly-pinned thread for other goroutines.
func LockAndPin(cpu int) (unlock func(), err error) {
	var set CPUSet
	if err := set.Add(cpu); err != nil {
		return nil, fmt.Errorf("pin to cpu: %w", err)
	}
	runtime.LockOSThread()
	prev, err := ThreadAffinity()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	if err := PinThread(set); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	done := false
	return func() {
		if done {
			return
		}
		done = true
		if PinThread(prev) != nil {
			return // stay locked: the thread dies with the goroutine
		}
		runtime.UnlockOSThread()
	}, nil
}

// SetProcessAffinity sets the CPU mask of task pid (sched_setaffinity).
// Another user's task needs CAP_SYS_NICE.
func SetProcessAffinity(pid int, cpus CPUSet) error {
	if cpus.IsEmpty() {
		return fmt.Errorf("sched_setaffinity pid %d: empty cpu set: %w", pid, unix.EINVAL)
	}
	u := cpus.toUnix()
	if err := unix.SchedSetaffinity(pid, &u); err != nil {
		return priv.Wrap(fmt.Sprintf("sched_setaffinity pid %d cpus %s", pid, cpus), "CAP_SYS_NICE", err)
	}
	return nil
}
