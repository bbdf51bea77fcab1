//go:build linux

package bypass

import (
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// wakeup lets the adapter sleep in ppoll(2) on the connection's descriptor
// and an eventfd of its own, which deadline changes and Close signal. The
// eventfd lives as long as the adapter (a finalizer closes it): a read
// woken by Close may still be on its way into ppoll.
type wakeup struct {
	efd int
	fds [2]unix.PollFd
}

// initWakeup opens w's eventfd, which lives as long as owner.
func initWakeup[T any](w *wakeup, owner *T) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		fd = -1 // no wake-ups: waits fall back to short slices
	}
	w.efd = fd
	if fd >= 0 {
		runtime.AddCleanup(owner, func(fd int) { unix.Close(fd) }, fd)
	}
}

func (w *wakeup) wake() {
	if w.efd >= 0 {
		one := [8]byte{1}
		unix.Write(w.efd, one[:])
	}
}

// wait sleeps until fd (when >= 0) is readable (writable, with write), a
// wake-up, or d passes (d < 0: no limit; without an eventfd or a
// descriptor, one short slice).
func (w *wakeup) wait(fd int, write bool, d time.Duration) error {
	if w.efd < 0 || fd < 0 {
		if d < 0 || d > maxSlice {
			d = maxSlice
		}
		time.Sleep(min(d, 50*time.Microsecond))
		return nil
	}
	ev := int16(unix.POLLIN)
	if write {
		ev = unix.POLLOUT
	}
	w.fds[0] = unix.PollFd{Fd: int32(fd), Events: ev}
	w.fds[1] = unix.PollFd{Fd: int32(w.efd), Events: unix.POLLIN}
	var ts *unix.Timespec
	if d >= 0 {
		t := unix.NsecToTimespec(int64(d))
		ts = &t
	}
	_, _, e := syscall.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&w.fds[0])), 2, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if e != 0 && e != unix.EINTR {
		return os.NewSyscallError("ppoll", e)
	}
	if w.fds[1].Revents != 0 {
		var b [8]byte
		unix.Read(w.efd, b[:])
	}
	return nil
}
