//go:build !(linux && efvi && cgo)

package efvi

import (
	"context"
	"net/netip"

	"github.com/lowlat/lowlat/bypass/backend"
)

// listen reports that this binary has no ef_vi support.
func listen(netip.AddrPort, backend.Options) (backend.PacketConn, error) {
	return nil, ErrNoEFVI
}

func openStack(backend.Options) (backend.Stack, error) { return nil, ErrNoEFVI }

func dialTCP(context.Context, netip.AddrPort, backend.Options) (backend.Stream, error) {
	return nil, ErrNoEFVI
}

func listenTCP(netip.AddrPort, backend.Options) (backend.StreamListener, error) {
	return nil, ErrNoEFVI
}
