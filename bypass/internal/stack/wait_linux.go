//go:build linux

package stack

import (
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// waiter lets a blocking reader sleep in ppoll(2) on the driver's
// descriptors and an eventfd of its own, which Close and other sockets'
// polls (when they queue a datagram for it) signal.
type waiter struct {
	efd      int // -1 when the socket spins (set by Listen before anything reads it)
	fds      []unix.PollFd
	ts       unix.Timespec
	sleeping atomic.Bool
}

func (w *waiter) init(driverFDs []int) error {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		w.efd = -1
		return os.NewSyscallError("eventfd", err)
	}
	w.efd = fd
	for _, d := range driverFDs {
		w.fds = append(w.fds, unix.PollFd{Fd: int32(d), Events: unix.POLLIN})
	}
	w.fds = append(w.fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
	return nil
}

// notify wakes the socket if it sleeps; a write only then, so that a
// spinning or busy socket costs its neighbours nothing.
func (w *waiter) notify() {
	if w.sleeping.Load() {
		w.wake()
	}
}

// wake signals the eventfd (a no-op for a spinning socket).
func (w *waiter) wake() {
	if w.efd >= 0 {
		one := [8]byte{1}
		unix.Write(w.efd, one[:])
	}
}

// wait sleeps until a descriptor is readable or left passes (0: no
// limit); woke reports whether one was.
func (w *waiter) wait(left time.Duration) (woke bool, err error) {
	var ts unsafe.Pointer
	if left > 0 {
		w.ts = unix.NsecToTimespec(int64(left))
		ts = unsafe.Pointer(&w.ts)
	}
	for {
		r, _, e := syscall.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&w.fds[0])), uintptr(len(w.fds)), uintptr(ts), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return false, os.NewSyscallError("ppoll", e)
		}
		if w.fds[len(w.fds)-1].Revents != 0 {
			var b [8]byte
			unix.Read(w.efd, b[:]) // drain: the next sleep waits again
		}
		return r > 0, nil
	}
}

// waitOwn is wait on the eventfd alone, not the driver's descriptors:
// for a waiter that other threads' polls notify.
func (w *waiter) waitOwn(left time.Duration) (woke bool, err error) {
	all := w.fds
	w.fds = all[len(all)-1:]
	woke, err = w.wait(left)
	w.fds = all
	return woke, err
}

func (w *waiter) close() error {
	if w.efd >= 0 {
		unix.Close(w.efd)
		w.efd = -1
	}
	return nil
}
