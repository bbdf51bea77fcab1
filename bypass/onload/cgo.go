//go:build linux && onload && cgo

package onload

/*
#include <stdlib.h>
#include "ll_onload.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/gate"
)

// closeWait bounds how long Close waits for calls in flight to return.
const closeWait = 5 * time.Second

// errnoOf turns a C function's negative return into its errno.
func errnoOf[T ~int32 | ~int64](rc T) syscall.Errno { return syscall.Errno(-rc) }

// ---------------------------------------------------------------- SIGONLOAD

var (
	sigTakenAtStart bool  // the runtime had replaced the handler before init
	sigStartErr     error // putting it back at init failed
	sigRepairs      atomic.Int64
)

// init puts libonload.so's SIGONLOAD handler back. The handler was
// installed before the Go runtime started, and the runtime replaced it at
// start-up: it installs its own handler for every signal, and when the C
// library's sigaction refuses (Onload answers EINVAL for this signal) it
// makes the system call itself. A C constructor in this package saved the
// kernel's record of Onload's handler before the runtime ran (ll_onload.c);
// this puts that record back with the raw system call, as early as Go code
// can run. Nothing in the runtime installs a handler for this signal
// again unless the program calls signal.Ignore for it (see KeepSignal).
func init() {
	var st C.struct_ll_sigstate
	C.ll_sig_state(&st)
	sigTakenAtStart = st.claimed != 0 && st.current != st.handler
	if rc := C.ll_sig_restore(); rc < 0 {
		sigStartErr = os.NewSyscallError("rt_sigaction", errnoOf(rc))
	}
}

// Signal says what became of Onload's signal in this process.
func Signal() SignalState {
	var st C.struct_ll_sigstate
	C.ll_sig_state(&st)
	return SignalState{
		Signal:       int(st.signo),
		Claimed:      st.claimed != 0,
		Handler:      uintptr(st.handler),
		TakenAtStart: sigTakenAtStart,
		Installed:    st.claimed != 0 && st.current == st.handler,
		Repairs:      int(sigRepairs.Load()),
	}
}

// KeepSignal puts Onload's SIGONLOAD handler back if something replaced it
// after start-up: signal.Ignore of that signal (or of every signal) does,
// and a signal.Notify after such an Ignore installs the runtime's handler
// again. Every socket this backend opens calls it first; a program that
// ignores signals after its sockets are open calls it itself.
func KeepSignal() (SignalState, error) {
	if sigStartErr != nil {
		return Signal(), fmt.Errorf("onload: restore the SIGONLOAD handler at start-up: %w", sigStartErr)
	}
	rc := C.ll_sig_restore()
	if rc < 0 {
		return Signal(), fmt.Errorf("onload: restore the SIGONLOAD handler: %w", os.NewSyscallError("rt_sigaction", errnoOf(rc)))
	}
	if rc == 1 {
		sigRepairs.Add(1)
	}
	return Signal(), nil
}

// ---------------------------------------------------------------- extensions

var ext struct {
	once    sync.Once
	found   C.uint
	present bool
}

func extensions() (C.uint, bool) {
	ext.once.Do(func() {
		ext.found = C.ll_ext_find()
		ext.present = ext.found&C.LL_X_IS_PRESENT != 0 && C.ll_is_present() != 0
	})
	return ext.found, ext.present
}

// Find looks up Onload's extension API in this process (once).
func Find() Extensions {
	f, present := extensions()
	return Extensions{
		Present:      present,
		StackName:    f&C.LL_X_SET_STACKNAME != 0,
		ThreadSpin:   f&C.LL_X_THREAD_SET_SPIN != 0,
		FdStat:       f&C.LL_X_FD_STAT != 0,
		Templates:    f&C.LL_X_TEMPLATES != 0,
		ZeroCopyRecv: f&C.LL_X_ZC_RECV != 0,
		ZeroCopySend: f&C.LL_X_ZC_SEND != 0,
	}
}

func autoSelect() error {
	if _, present := extensions(); !present {
		return ErrNotLoaded
	}
	return nil
}

// missing is the error for an extension function this process lacks.
func missing(fn string) error {
	return backend.Unsupported("%s: not found in this process (Onload is not loaded, or is older than the function)", fn)
}

// extErr is the error of an extension call that failed.
func extErr(fn string, rc C.int) error {
	if syscall.Errno(-rc) == syscall.ENOSYS {
		return fmt.Errorf("onload: %w", missing(fn))
	}
	return fmt.Errorf("onload: %w", os.NewSyscallError(fn, errnoOf(rc)))
}

// SetStackName names the Onload stack that sockets created from now on
// join (onload_set_stackname for all threads); scope says who else shares
// a stack of that name. Call it before opening the sockets.
func SetStackName(name string, scope Scope) error {
	if scope < ScopeNoChange || scope > ScopeGlobal {
		return fmt.Errorf("onload: set stack name %q: scope %d out of range", name, scope)
	}
	extensions()
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	const allThreads = 1 // ONLOAD_ALL_THREADS
	if rc := C.ll_set_stackname(allThreads, C.int(scope), cs); rc < 0 {
		return extErr("onload_set_stackname", rc)
	}
	return nil
}

// SetThreadSpin turns Onload's spinning on or off for one kind of call
// made by the calling thread (onload_thread_set_spin). Call it from a
// goroutine locked to its thread (runtime.LockOSThread): the one that will
// make those calls.
func SetThreadSpin(kind Spin, on bool) error {
	if kind < SpinAll || kind > SpinMimicEFPoll {
		return fmt.Errorf("onload: set thread spin: kind %d out of range", kind)
	}
	extensions()
	v := C.int(0)
	if on {
		v = 1
	}
	if rc := C.ll_thread_set_spin(C.int(kind), v); rc < 0 {
		return extErr("onload_thread_set_spin", rc)
	}
	return nil
}

// statFD asks Onload about fd.
func statFD(fd C.int) Stat {
	f, _ := extensions()
	if f&C.LL_X_FD_STAT == 0 {
		return Stat{}
	}
	var st C.struct_ll_stat
	rc := C.ll_fd_stat(fd, &st)
	if rc < 0 {
		return Stat{}
	}
	return Stat{
		Known:         true,
		Accelerated:   rc == 1,
		StackID:       int(st.stack_id),
		StackName:     C.GoString(&st.name[0]),
		EndpointID:    int(st.endpoint_id),
		EndpointState: int(st.endpoint_state),
	}
}

// onloadNotes says, for Info, whether Onload is in the process and who
// took the socket.
func onloadNotes(st Stat) []string {
	f, present := extensions()
	switch {
	case !present:
		return []string{"onload: Onload is absent (not loaded in this process): kernel sockets through the C library"}
	case f&C.LL_X_FD_STAT == 0:
		return []string{"onload: Onload is loaded; onload_fd_stat is missing, so who has the socket is unknown"}
	}
	return []string{"onload: " + st.String()}
}

// ---------------------------------------------------------------- sockets

// sock is what UDP and TCP connections share: the C side's socket, the
// close gate, the read timeout.
type sock struct {
	s       *C.struct_ll_sock
	fd      C.int
	spin    bool
	gate    gate.Pair
	timeout atomic.Int64 // read timeout, ns; 0: none
}

// openSock creates a non-blocking socket through the C library.
func openSock(family, typ C.int, spin bool, batch int, wtimeout time.Duration) (*C.struct_ll_sock, error) {
	var e C.int
	sp := C.int(0)
	if spin {
		sp = 1
	}
	s := C.ll_open(family, typ, sp, C.int(batch), C.int64_t(wtimeout), &e)
	if s == nil {
		return nil, os.NewSyscallError("socket", errnoOf(e))
	}
	return s, nil
}

// discard closes and frees a socket that setup gave up on.
func discard(s *C.struct_ll_sock) {
	C.ll_close(s)
	C.ll_free(s)
}

// setInt is setsockopt(2) of an int through the C library.
func setInt(fd C.int, level, opt int, v int, name string) error {
	if rc := C.ll_setsockopt_int(fd, C.int(level), C.int(opt), C.int(v)); rc < 0 {
		return os.NewSyscallError("setsockopt "+name, errnoOf(rc))
	}
	return nil
}

// mapErr turns a hot-path errno into the package-level error values, and
// anything rarer into an *os.SyscallError naming the call.
func (k *sock) mapErr(op string, e syscall.Errno) error {
	switch e {
	case syscall.ETIMEDOUT:
		return backend.ErrTimeout
	case syscall.EMSGSIZE:
		return backend.ErrMessageTooLong
	}
	if k.gate.Closed() {
		return backend.ErrClosed
	}
	return os.NewSyscallError(op, e)
}

func (k *sock) setReadTimeout(d time.Duration) error {
	k.timeout.Store(int64(max(d, 0)))
	return nil
}

// close marks the socket closed, wakes a call waiting on it (shutdown
// through the C library), waits for the calls inside, and closes and
// frees it.
func (k *sock) close() error {
	if !k.gate.Shut() {
		return backend.ErrClosed
	}
	C.ll_wake(k.s)
	if !k.gate.Wait(closeWait) {
		// Closing under a live call could hand it a reused descriptor:
		// leak the descriptor instead.
		return errors.New("onload: close: a call on the socket did not return; descriptor left open")
	}
	rc := C.ll_close(k.s)
	C.ll_free(k.s)
	if rc < 0 {
		return fmt.Errorf("onload: %w", os.NewSyscallError("close", errnoOf(rc)))
	}
	return nil
}

// Closed reports whether Close has been called.
func (k *sock) Closed() bool { return k.gate.Closed() }
