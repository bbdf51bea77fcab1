package bypass

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"

	"github.com/lowlat/lowlat/bypass/afxdp"
	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/efvi"
	"github.com/lowlat/lowlat/bypass/kernel"
	"github.com/lowlat/lowlat/bypass/onload"
)

// The types of the API are defined in package backend, which the backend
// implementations import; they are re-exported here.
type (
	PacketConn       = backend.PacketConn
	Stream           = backend.Stream
	StreamListener   = backend.StreamListener
	Message          = backend.Message
	Options          = backend.Options
	XDPOptions       = backend.XDPOptions
	WaitMode         = backend.WaitMode
	Info             = backend.Info
	Stats            = backend.Stats
	Skip             = backend.Skip
	Backend          = backend.Backend
	Stack            = backend.Stack
	Timestamp        = backend.Timestamp
	StampClock       = backend.StampClock
	TimestampMode    = backend.TimestampMode
	MulticastOptions = backend.MulticastOptions
	ReadyFD          = backend.ReadyFD
	TxStamper        = backend.TxStamper
)

// Timestamp modes and clocks.
const (
	TimestampsOff      = backend.TimestampsOff
	TimestampsSoftware = backend.TimestampsSoftware
	TimestampsHardware = backend.TimestampsHardware
	ClockNone          = backend.ClockNone
	ClockKernel        = backend.ClockKernel
	ClockNIC           = backend.ClockNIC
	ClockUser          = backend.ClockUser
)

// Wait modes.
const (
	WaitDefault = backend.WaitDefault
	WaitBlock   = backend.WaitBlock
	WaitSpin    = backend.WaitSpin
)

// Errors returned by every backend.
var (
	ErrClosed         = backend.ErrClosed
	ErrTimeout        = backend.ErrTimeout
	ErrNotSupported   = backend.ErrNotSupported
	ErrMessageTooLong = backend.ErrMessageTooLong
	ErrRingFull       = backend.ErrRingFull
)

// backends lists every backend, fastest first; auto tries them in order.
func backends() []backend.Backend {
	return []backend.Backend{
		onload.Backend{},
		efvi.Backend{},
		afxdp.Backend{},
		kernel.BusyPoll{},
		kernel.Kernel{},
	}
}

// Backends returns the names of the backends this binary knows, fastest
// first. A backend in the list may still be unusable on this host.
func Backends() []string {
	var names []string
	for _, b := range backends() {
		names = append(names, b.Name())
	}
	return names
}

// AutoSkip returns why auto selection passes over the named backend
// without trying it, or nil when it is worth trying: a backend that works
// when named but is no faster than the next one here (onload in a process
// Onload was not preloaded into) says so.
func AutoSkip(name string) error {
	b, err := Lookup(name)
	if err != nil {
		return err
	}
	return autoSkip(b)
}

func autoSkip(b backend.Backend) error {
	if a, ok := b.(interface{ AutoSelect() error }); ok {
		return a.AutoSelect()
	}
	return nil
}

// Lookup returns the backend with the given name.
func Lookup(name string) (backend.Backend, error) {
	for _, b := range backends() {
		if b.Name() == name {
			return b, nil
		}
	}
	return nil, fmt.Errorf("backend %q: unknown (have auto, %s)", name, strings.Join(Backends(), ", "))
}

// ListenUDP opens a UDP endpoint bound to laddr on the backend o.Backend
// names, or on the fastest that works when it is "auto" or empty. The
// connection's Info().Skipped then lists each faster backend and why it was
// not used.
func ListenUDP(laddr netip.AddrPort, o Options) (PacketConn, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("listen udp %v: %w", laddr, err)
	}
	if o.Backend != "" && o.Backend != "auto" {
		b, err := Lookup(o.Backend)
		if err != nil {
			return nil, fmt.Errorf("listen udp %v: %w", laddr, err)
		}
		return b.ListenUDP(laddr, o)
	}
	var skipped []Skip
	for _, b := range backends() {
		if err := autoSkip(b); err != nil {
			skipped = append(skipped, Skip{Backend: b.Name(), Reason: err})
			continue
		}
		o.Skipped = skipped
		c, err := b.ListenUDP(laddr, o)
		if err == nil {
			return c, nil
		}
		if addressError(err) {
			// Every backend would fail the same way: say so once.
			return nil, err
		}
		skipped = append(skipped, Skip{Backend: b.Name(), Reason: err})
	}
	return nil, fmt.Errorf("listen udp %v: no backend works: %w", laddr, joinSkips(skipped))
}

// OpenStack returns this process's user-space stack on o.Interface for
// o.Backend (afxdp or efvi; auto or empty takes the fastest that works):
// the rings, buffers and steering of that interface, shared by every
// socket opened on it, whether through the Stack's ListenUDP or through
// ListenUDP with the same backend and interface. Sockets on one stack are
// served best from one thread (a Poller). The stack closes when its last
// handle and socket have; Close gives back this handle.
func OpenStack(o Options) (Stack, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("open stack: %w", err)
	}
	var skipped []Skip
	for _, b := range backends() {
		sb, ok := b.(backend.StackBackend)
		if o.Backend != "" && o.Backend != "auto" {
			if b.Name() != o.Backend {
				continue
			}
			if !ok {
				return nil, fmt.Errorf("open stack: backend %s: %w", b.Name(), backend.Unsupported("uses the kernel's stack: open its sockets with ListenUDP"))
			}
			return sb.OpenStack(o)
		}
		if !ok {
			continue
		}
		st, err := sb.OpenStack(o)
		if err == nil {
			return st, nil
		}
		skipped = append(skipped, Skip{Backend: b.Name(), Reason: err})
	}
	if len(skipped) == 0 {
		return nil, fmt.Errorf("open stack: backend %q: unknown", o.Backend)
	}
	return nil, fmt.Errorf("open stack: no user-space stack works: %w", joinSkips(skipped))
}

// DialTCP connects to raddr over the named stream backend (busypoll or
// kernel; auto picks busypoll).
func DialTCP(raddr netip.AddrPort, o Options) (Stream, error) {
	b, skipped, err := streamBackend(o)
	if err != nil {
		return nil, fmt.Errorf("dial tcp %v: %w", raddr, err)
	}
	o.Skipped = skipped
	return b.DialTCP(raddr, o)
}

// ListenTCP listens on laddr over the named stream backend.
func ListenTCP(laddr netip.AddrPort, o Options) (StreamListener, error) {
	b, skipped, err := streamBackend(o)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %v: %w", laddr, err)
	}
	o.Skipped = skipped
	return b.ListenTCP(laddr, o)
}

func streamBackend(o Options) (backend.StreamBackend, []Skip, error) {
	if err := o.Validate(); err != nil {
		return nil, nil, err
	}
	var skipped []Skip
	for _, b := range backends() {
		sb, ok := b.(backend.StreamBackend)
		if o.Backend != "" && o.Backend != "auto" {
			if b.Name() != o.Backend {
				continue
			}
			if !ok {
				return nil, nil, fmt.Errorf("backend %s: TCP: %w", b.Name(), backend.Unsupported("carries UDP only"))
			}
			return sb, nil, nil
		}
		if !ok {
			skipped = append(skipped, Skip{Backend: b.Name(), Reason: backend.Unsupported("carries UDP only")})
			continue
		}
		if _, userSpace := b.(backend.StackBackend); userSpace {
			// A user-space TCP takes the connection's port from the kernel
			// and answers for it itself: a program asks for that by name.
			skipped = append(skipped, Skip{Backend: b.Name(), Reason: backend.Unsupported("its user-space TCP is chosen by name only (Backend %q)", b.Name())})
			continue
		}
		if err := autoSkip(b); err != nil {
			skipped = append(skipped, Skip{Backend: b.Name(), Reason: err})
			continue
		}
		return sb, skipped, nil
	}
	return nil, nil, fmt.Errorf("backend %q: unknown", o.Backend)
}

// addressError reports errors about the address itself, which no other
// backend can get around: the port is taken, or the address is not local.
func addressError(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL)
}

func joinSkips(s []Skip) error {
	var errs []error
	for _, k := range s {
		errs = append(errs, errors.New(k.String()))
	}
	return errors.Join(errs...)
}

// OptionsFromEnv returns base with the LOWLAT_* environment variables (see
// EnvHelp) filling in what base left unset: options set in code win, so
// that a wrapper's profile (onload-run's LOWLAT_WAIT=spin, say) tunes a
// program without overriding what the program chose for a socket.
func OptionsFromEnv(base Options) (Options, error) { return backend.FillFromEnv(base, nil) }

// OptionsOverriddenByEnv returns base with every LOWLAT_* variable that is
// set applied over it: for a program that wants its wrapper's profile to
// win over its own settings.
func OptionsOverriddenByEnv(base Options) (Options, error) { return backend.FromEnv(base, nil) }

// EnvHelp describes each LOWLAT_* variable, one per line.
func EnvHelp() string {
	var b strings.Builder
	for _, v := range backend.EnvVars {
		fmt.Fprintf(&b, "  %-24s %s\n", v.Name, v.Help)
	}
	return b.String()
}

// ParseWaitMode parses "block" or "spin".
func ParseWaitMode(s string) (WaitMode, error) { return backend.ParseWaitMode(s) }

// Describe renders Info for people: the backend, its mode, notes and skips.
func Describe(i Info) string {
	var b strings.Builder
	fmt.Fprintf(&b, "backend %s, wait %s", i.Backend, i.Wait)
	if i.Interface != "" {
		fmt.Fprintf(&b, ", interface %s", i.Interface)
		if i.Queue >= 0 {
			fmt.Fprintf(&b, " queue %d", i.Queue)
		}
	}
	if i.XDPMode != "" {
		fmt.Fprintf(&b, ", xdp %s", i.XDPMode)
	}
	if i.BindMode != "" {
		fmt.Fprintf(&b, ", bind %s", i.BindMode)
	}
	for _, s := range i.Skipped {
		fmt.Fprintf(&b, "\n  skipped %s", s)
	}
	for _, n := range i.Notes {
		fmt.Fprintf(&b, "\n  note: %s", n)
	}
	return b.String()
}
