package onload

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/lowlat/lowlat/bypass/backend"
)

// Backend is the "onload" backend.
type Backend struct{}

var _ backend.StreamBackend = Backend{}

// Name returns "onload".
func (Backend) Name() string { return "onload" }

// ErrNoOnload is returned by every call in a binary built without the
// backend. It wraps backend.ErrNotSupported.
var ErrNoOnload = backend.Unsupported("built without onload: rebuild with -tags onload (and CGO_ENABLED=1), then run under onload-run --onload")

// ErrNotLoaded is why auto selection passes over the backend in a process
// that Onload was not preloaded into: its sockets would be kernel sockets
// reached through the C library, no faster than busypoll's. Naming the
// backend still opens them. It wraps backend.ErrNotSupported.
var ErrNotLoaded = backend.Unsupported("Onload is not loaded in this process: run it under onload-run --onload (LD_PRELOAD=libonload.so)")

// AutoSelect reports why auto selection must pass over the backend
// without trying it, or nil when the binary has the backend and Onload is
// loaded in the process.
func (Backend) AutoSelect() error { return autoSelect() }

// ListenUDP opens a UDP socket bound to laddr through the C library. Its
// wait mode defaults to spin.
func (Backend) ListenUDP(laddr netip.AddrPort, o backend.Options) (backend.PacketConn, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("onload: listen udp %v: %w", laddr, err)
	}
	c, err := listenUDP(laddr, o)
	if err != nil {
		return nil, fmt.Errorf("onload: listen udp %v: %w", laddr, err)
	}
	return c, nil
}

// DialTCP connects to raddr through the C library.
func (Backend) DialTCP(raddr netip.AddrPort, o backend.Options) (backend.Stream, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("onload: dial tcp %v: %w", raddr, err)
	}
	s, err := dialTCP(raddr, o)
	if err != nil {
		return nil, fmt.Errorf("onload: dial tcp %v: %w", raddr, err)
	}
	return s, nil
}

// ListenTCP listens on laddr through the C library.
func (Backend) ListenTCP(laddr netip.AddrPort, o backend.Options) (backend.StreamListener, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("onload: listen tcp %v: %w", laddr, err)
	}
	l, err := listenTCP(laddr, o)
	if err != nil {
		return nil, fmt.Errorf("onload: listen tcp %v: %w", laddr, err)
	}
	return l, nil
}

// Extensions says which functions of Onload's extension API this process
// has, looked up at run time (nothing links against Onload).
type Extensions struct {
	Present      bool // onload_is_present found and true: Onload is loaded
	StackName    bool // onload_set_stackname
	ThreadSpin   bool // onload_thread_set_spin
	FdStat       bool // onload_fd_stat
	Templates    bool // onload_msg_template_alloc, _update and _abort
	ZeroCopyRecv bool // onload_zc_recv (reported; lowlat does not use it)
	ZeroCopySend bool // onload_zc_send (reported; lowlat does not use it)
}

// String lists what was found, or says that nothing was.
func (e Extensions) String() string {
	var have []string
	for _, f := range []struct {
		ok   bool
		name string
	}{
		{e.Present, "onload_is_present"}, {e.StackName, "onload_set_stackname"},
		{e.ThreadSpin, "onload_thread_set_spin"}, {e.FdStat, "onload_fd_stat"},
		{e.Templates, "onload_msg_template_*"}, {e.ZeroCopyRecv, "onload_zc_recv"},
		{e.ZeroCopySend, "onload_zc_send"},
	} {
		if f.ok {
			have = append(have, f.name)
		}
	}
	if len(have) == 0 {
		return "no Onload extension API"
	}
	return strings.Join(have, " ")
}

// Stat is what Onload says about one socket (onload_fd_stat).
type Stat struct {
	Known         bool   // onload_fd_stat answered; false without Onload
	Accelerated   bool   // Onload's stack has the socket; false: the kernel has it
	StackID       int    // the stack's number, as onload_stackdump lists it
	StackName     string // the stack's name (onload_set_stackname, EF_NAME)
	EndpointID    int    // the socket's number in its stack
	EndpointState int    // Onload's state of the endpoint
}

// String is one line for people.
func (s Stat) String() string {
	switch {
	case !s.Known:
		return "Onload did not say who has the socket"
	case !s.Accelerated:
		return "the kernel has the socket, not Onload"
	case s.StackName == "":
		return fmt.Sprintf("accelerated by Onload stack %d (unnamed), endpoint %d", s.StackID, s.EndpointID)
	}
	return fmt.Sprintf("accelerated by Onload stack %d %q, endpoint %d", s.StackID, s.StackName, s.EndpointID)
}

// stater is implemented by this backend's connections.
type stater interface{ Onload() Stat }

// StatOf returns what Onload said about c when it opened: c is a
// connection, stream or listener of this backend.
func StatOf(c any) (Stat, error) {
	if s, ok := c.(stater); ok {
		return s.Onload(), nil
	}
	return Stat{}, fmt.Errorf("onload: stat of %T: %w", c, backend.Unsupported("not a connection of the onload backend"))
}

// Scope is where a stack name applies (onload_set_stackname).
type Scope int

// Scopes of a stack name, as Onload numbers them.
const (
	ScopeNoChange Scope = iota
	ScopeThread
	ScopeProcess
	ScopeUser
	ScopeGlobal
)

// Spin is a kind of call onload_thread_set_spin turns spinning on or off
// for.
type Spin int

// Kinds of spinning, as Onload numbers them.
const (
	SpinAll Spin = iota
	SpinUDPRecv
	SpinUDPSend
	SpinTCPRecv
	SpinTCPSend
	SpinTCPAccept
	SpinPipeRecv
	SpinPipeSend
	SpinSelect
	SpinPoll
	SpinPktWait
	SpinEpollWait
	SpinStackLock
	SpinSockLock
	SpinSoBusyPoll
	SpinTCPConnect
	SpinMimicEFPoll
)

// SignalState says what became of Onload's signal, SIGONLOAD
// (SIGRTMAX-10), in this process. See docs/onload.md.
type SignalState struct {
	// Signal is SIGRTMAX-10 as the C library numbers it (54 with glibc);
	// 0 in a binary built without the backend.
	Signal int
	// Claimed: a handler was installed for it before the Go runtime
	// started (libonload.so's, when it is preloaded).
	Claimed bool
	// Handler is that handler's address.
	Handler uintptr
	// TakenAtStart: the Go runtime had replaced it by the time this
	// package initialised (and the package put it back).
	TakenAtStart bool
	// Installed: it is the kernel's handler for the signal now.
	Installed bool
	// Repairs counts the times it was found replaced after start-up
	// (signal.Ignore of that signal, or of every signal) and put back.
	Repairs int
}
