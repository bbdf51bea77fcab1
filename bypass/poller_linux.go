//go:build linux

package bypass

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// epoll is the poller's epoll instance: exactly-signalled descriptors
// (kernel sockets) to learn which connections are ready, and, for a
// blocking poller, the others to sleep on.
type epoll struct {
	fd       int
	block    bool
	sleepFDs int // registered descriptors that wake a sleeper
	evs      [64]unix.EpollEvent
}

func (e *epoll) open(block bool) error {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	e.fd, e.block = fd, block
	return nil
}

// add registers fd: always when it is exact, for sleeping only in block
// mode otherwise. Sockets of one stack share a descriptor: a second add is
// not an error.
func (e *epoll) add(fd int, exact bool) error {
	if !exact && !e.block {
		return nil
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	err := unix.EpollCtl(e.fd, unix.EPOLL_CTL_ADD, fd, &ev)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	e.sleepFDs++
	return nil
}

func (e *epoll) remove(fd int, exact, shared bool) {
	if (!exact && !e.block) || shared {
		return
	}
	if unix.EpollCtl(e.fd, unix.EPOLL_CTL_DEL, fd, nil) == nil {
		e.sleepFDs--
	}
}

// canSleep reports whether every one of n connections can wake a sleeper:
// a connection with no descriptor (efvi) must be polled by spinning.
func (e *epoll) canSleep(n int) bool { return e.block && e.sleepFDs > 0 && n > 0 }

// wait runs epoll_wait for up to d (0: do not wait; negative: forever)
// and calls mark for each ready descriptor.
func (e *epoll) wait(d time.Duration, mark func(fd int)) error {
	ms := 0
	switch {
	case d < 0:
		ms = -1
	case d > 0:
		ms = int((d + time.Millisecond - 1) / time.Millisecond)
	}
	for {
		n, err := unix.EpollWait(e.fd, e.evs[:], ms)
		if err == unix.EINTR {
			if ms == 0 {
				return nil
			}
			continue
		}
		if err != nil {
			return os.NewSyscallError("epoll_wait", err)
		}
		for i := range n {
			mark(int(e.evs[i].Fd))
		}
		return nil
	}
}

func (e *epoll) close() error {
	if e.fd < 0 {
		return nil
	}
	err := unix.Close(e.fd)
	e.fd = -1
	return err
}
