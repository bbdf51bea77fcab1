//go:build !linux

package afxdp

import (
	"net/netip"

	"github.com/lowlat/lowlat/bypass/backend"
)

// Backend is the "afxdp" backend; AF_XDP exists only on Linux.
type Backend struct{}

func (Backend) Name() string { return "afxdp" }

func (Backend) ListenUDP(netip.AddrPort, backend.Options) (backend.PacketConn, error) {
	return nil, backend.Unsupported("afxdp: AF_XDP sockets exist only on Linux")
}

func (Backend) DialTCP(netip.AddrPort, backend.Options) (backend.Stream, error) {
	return nil, backend.Unsupported("afxdp: AF_XDP sockets exist only on Linux")
}

func (Backend) ListenTCP(netip.AddrPort, backend.Options) (backend.StreamListener, error) {
	return nil, backend.Unsupported("afxdp: AF_XDP sockets exist only on Linux")
}

func (Backend) OpenStack(backend.Options) (backend.Stack, error) {
	return nil, backend.Unsupported("afxdp: AF_XDP sockets exist only on Linux")
}
