//go:build linux

package kernel

import (
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/gate"
)

// sock is the descriptor and wait logic shared by UDP and TCP connections.
type sock struct {
	fd       int
	spin     bool
	gate     gate.Pair    // calls using fd; close waits for them before close(2)
	timeout  atomic.Int64 // read timeout in nanoseconds; 0 waits forever
	wtimeout int64        // write timeout in nanoseconds, set at creation; 0 waits until Close
}

// preemptPoint gives the Go scheduler a place to stop a spinning goroutine.
// A spin loop spends nearly all its time inside RawSyscall6, where the
// runtime's asynchronous preemption cannot stop it, so without this a
// spinning reader would hold up every stop-the-world (garbage collection
// among them) for as long as it spins. The call is not inlined and its
// callee makes it a non-leaf, so it keeps the stack-bound check in its
// prologue: the check that a pending preemption request trips.
//
//go:noinline
func preemptPoint() { preemptLeaf() }

//go:noinline
func preemptLeaf() {}

// call issues one socket system call whose fourth argument is the flags
// word (recvfrom, recvmmsg, sendto, sendmmsg all have that shape) and waits
// as the socket's mode says: spinning with MSG_DONTWAIT, or blocking in the
// kernel. Pointer arguments stay unsafe.Pointer until the syscall expression
// so that the runtime keeps them valid.
//
// The sixth argument is p5 when it is not nil (recvfrom's address length),
// else a5 (sendto's address length): a pointer must reach the syscall
// expression as an unsafe.Pointer to be kept valid.
func (s *sock) call(trap uintptr, p1 unsafe.Pointer, n, flags uintptr, p4, p5 unsafe.Pointer, a5 uintptr, read bool) (uintptr, syscall.Errno) {
	g := &s.gate.W
	if read {
		g = &s.gate.R
	}
	if !g.Enter() {
		return 0, unix.EBADF
	}
	defer g.Exit()
	if !s.spin {
		for {
			var r uintptr
			var e syscall.Errno
			if p5 != nil {
				r, _, e = syscall.Syscall6(trap, uintptr(s.fd), uintptr(p1), n, flags, uintptr(p4), uintptr(p5))
			} else {
				r, _, e = syscall.Syscall6(trap, uintptr(s.fd), uintptr(p1), n, flags, uintptr(p4), a5)
			}
			if e == unix.EINTR {
				continue
			}
			if e == unix.EAGAIN {
				// SO_RCVTIMEO or SO_SNDTIMEO ran out.
				if g.Closed() {
					return 0, unix.EBADF
				}
				return 0, unix.ETIMEDOUT
			}
			return r, e
		}
	}
	flags |= unix.MSG_DONTWAIT
	var start time.Time
	// Counting from 1, the clock is first read after 64 empty polls: a
	// reply that is already on its way costs no clock read.
	for spins := uint32(1); ; spins++ {
		var r uintptr
		var e syscall.Errno
		if p5 != nil {
			r, _, e = syscall.RawSyscall6(trap, uintptr(s.fd), uintptr(p1), n, flags, uintptr(p4), uintptr(p5))
		} else {
			r, _, e = syscall.RawSyscall6(trap, uintptr(s.fd), uintptr(p1), n, flags, uintptr(p4), a5)
		}
		if e != unix.EAGAIN && e != unix.EINTR {
			return r, e
		}
		if g.Closed() {
			return 0, unix.EBADF
		}
		preemptPoint()
		if spins&63 != 0 {
			continue
		}
		to := s.wtimeout
		if read {
			to = s.timeout.Load()
		}
		if to == 0 {
			continue
		}
		if start.IsZero() {
			start = time.Now()
		} else if time.Since(start) >= time.Duration(to) {
			return 0, unix.ETIMEDOUT
		}
	}
}

// mapErr turns a hot-path errno into the package-level error values, and
// anything rarer into an *os.SyscallError naming the call.
func (s *sock) mapErr(op string, e syscall.Errno) error {
	switch e {
	case unix.ETIMEDOUT:
		return backend.ErrTimeout
	case unix.EBADF:
		if s.gate.Closed() {
			return backend.ErrClosed
		}
	case unix.EMSGSIZE:
		return backend.ErrMessageTooLong
	}
	if s.gate.Closed() {
		return backend.ErrClosed
	}
	return os.NewSyscallError(op, e)
}

// setWriteTimeout bounds how long a write waits for room: SO_SNDTIMEO in
// block mode, the spin loop's clock otherwise.
func (s *sock) setWriteTimeout(d time.Duration) error {
	s.wtimeout = int64(max(d, 0))
	if s.spin || d <= 0 {
		return nil
	}
	tv := unix.NsecToTimeval(int64(d))
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt SO_SNDTIMEO", err)
	}
	return nil
}

func (s *sock) setReadTimeout(d time.Duration) error {
	if d < 0 {
		d = 0
	}
	s.timeout.Store(int64(d))
	if s.spin {
		return nil
	}
	tv := unix.NsecToTimeval(int64(d))
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt SO_RCVTIMEO", err)
	}
	return nil
}

// close marks the socket closed, wakes any reader sleeping or spinning on
// it, and releases the descriptor.
func (s *sock) close() error {
	if !s.gate.Shut() {
		return backend.ErrClosed
	}
	// shutdown wakes a reader blocked in recv (it returns 0) or accept; on
	// an unconnected UDP socket it reports ENOTCONN but still wakes.
	_ = unix.Shutdown(s.fd, unix.SHUT_RDWR)
	if !s.gate.Wait(closeWait) {
		// Closing under a live call could hand it a reused descriptor:
		// leak the descriptor instead.
		return errors.New("close: a call on the socket did not return; descriptor left open")
	}
	if err := unix.Close(s.fd); err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// closeWait bounds how long close waits for calls in flight to return.
const closeWait = 5 * time.Second

func newSocket(family, typ int, spin bool) (int, error) {
	flags := typ | unix.SOCK_CLOEXEC
	if spin {
		flags |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(family, flags, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	return fd, nil
}

// rawConn gives access to a socket's descriptor (syscall.RawConn), for
// options lowlat does not wrap. Control, Read and Write hold the
// descriptor open for the duration of f: Close waits for them.
type rawConn struct{ s *sock }

var _ syscall.RawConn = rawConn{}

func (r rawConn) Control(f func(fd uintptr)) error {
	if !r.s.gate.W.Enter() {
		return backend.ErrClosed
	}
	defer r.s.gate.W.Exit()
	f(uintptr(r.s.fd))
	return nil
}

// Read calls f until it returns true, waiting in poll(2) for the
// descriptor to be readable in between.
func (r rawConn) Read(f func(fd uintptr) bool) error { return r.loop(&r.s.gate.R, unix.POLLIN, f) }

// Write calls f until it returns true, waiting for the descriptor to be
// writable in between.
func (r rawConn) Write(f func(fd uintptr) bool) error { return r.loop(&r.s.gate.W, unix.POLLOUT, f) }

func (r rawConn) loop(g *gate.Gate, ev int16, f func(fd uintptr) bool) error {
	if !g.Enter() {
		return backend.ErrClosed
	}
	defer g.Exit()
	for !f(uintptr(r.s.fd)) {
		if g.Closed() {
			return backend.ErrClosed
		}
		fds := []unix.PollFd{{Fd: int32(r.s.fd), Events: ev}}
		if _, err := unix.Poll(fds, 10); err != nil && err != unix.EINTR {
			return os.NewSyscallError("poll", err)
		}
	}
	return nil
}
