//go:build linux

package affinity

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/internal/priv"
)

// SetScheduler sets the scheduling policy of task pid (0: the calling
// thread) through sched_setattr. Priority is 1-99 for SchedFIFO and
// SchedRR and must be 0 for SchedOther. A real-time policy needs
// CAP_SYS_NICE (or an RLIMIT_RTPRIO allowance). A policy is inherited by
// threads and children the task creates afterwards.
func SetScheduler(pid int, p Policy, priority int) error {
	if err := p.validate(priority); err != nil {
		return err
	}
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: uint32(p.kernel()), Priority: uint32(priority)}
	if err := unix.SchedSetAttr(pid, &attr, 0); err != nil {
		return priv.Wrap(fmt.Sprintf("sched_setattr pid %d %s priority %d", pid, p, priority), "CAP_SYS_NICE", err)
	}
	return nil
}

// Scheduler returns the policy and priority of task pid (0: the calling
// thread), through sched_getattr.
func Scheduler(pid int) (Policy, int, error) {
	attr, err := unix.SchedGetAttr(pid, 0)
	if err != nil {
		return 0, 0, os.NewSyscallError(fmt.Sprintf("sched_getattr pid %d", pid), err)
	}
	switch attr.Policy {
	case unix.SCHED_FIFO:
		return SchedFIFO, int(attr.Priority), nil
	case unix.SCHED_RR:
		return SchedRR, int(attr.Priority), nil
	case unix.SCHED_NORMAL:
		return SchedOther, 0, nil
	}
	return Policy(-1), int(attr.Priority), fmt.Errorf("sched_getattr pid %d: policy %d: %w", pid, attr.Policy, ErrNotSupported)
}

func (p Policy) kernel() int {
	switch p {
	case SchedFIFO:
		return unix.SCHED_FIFO
	case SchedRR:
		return unix.SCHED_RR
	}
	return unix.SCHED_NORMAL
}

// LockMemory locks every page of the process in RAM, now and in future
// (mlockall MCL_CURRENT|MCL_FUTURE), so that no page fault to swap or to
// reclaimed file pages stalls a hot path. It needs CAP_IPC_LOCK, or an
// RLIMIT_MEMLOCK large enough for the whole process. It acts on the calling
// process only: an exec discards it, so a wrapper cannot do it for the
// program it starts.
func LockMemory() error {
	err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE)
	if errors.Is(err, unix.ENOMEM) {
		var rl unix.Rlimit
		unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl)
		return fmt.Errorf("mlockall: %w (RLIMIT_MEMLOCK is %d bytes: grant CAP_IPC_LOCK or raise the limit)", err, rl.Cur)
	}
	if err != nil {
		return priv.Wrap("mlockall", "CAP_IPC_LOCK", err)
	}
	return nil
}

// UnlockMemory undoes LockMemory (munlockall).
func UnlockMemory() error {
	if err := unix.Munlockall(); err != nil {
		return os.NewSyscallError("munlockall", err)
	}
	return nil
}
