//go:build !linux

package kernel

import (
	"net/netip"

	"github.com/lowlat/lowlat/bypass/backend"
)

// Kernel and BusyPoll are Linux-only: their hot paths are raw Linux system
// calls (recvmmsg, sendmmsg, busy-poll socket options).
type (
	Kernel   struct{}
	BusyPoll struct{}
)

func (Kernel) Name() string   { return "kernel" }
func (BusyPoll) Name() string { return "busypoll" }

var errOS = backend.Unsupported("lowlat's kernel backends run on Linux only")

func (Kernel) ListenUDP(netip.AddrPort, backend.Options) (backend.PacketConn, error) {
	return nil, errOS
}
func (BusyPoll) ListenUDP(netip.AddrPort, backend.Options) (backend.PacketConn, error) {
	return nil, errOS
}
func (Kernel) DialTCP(netip.AddrPort, backend.Options) (backend.Stream, error)   { return nil, errOS }
func (BusyPoll) DialTCP(netip.AddrPort, backend.Options) (backend.Stream, error) { return nil, errOS }
func (Kernel) ListenTCP(netip.AddrPort, backend.Options) (backend.StreamListener, error) {
	return nil, errOS
}
func (BusyPoll) ListenTCP(netip.AddrPort, backend.Options) (backend.StreamListener, error) {
	return nil, errOS
}
