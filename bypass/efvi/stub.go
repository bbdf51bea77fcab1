//go:build !(linux && efvi && cgo)

package efvi

import (
	"net/netip"

	"github.com/lowlat/lowlat/bypass/backend"
)

// listen reports that this binary has no ef_vi support.
func listen(netip.AddrPort, backend.Options) (backend.PacketConn, error) {
	return nil, ErrNoEFVI
}

func openStack(backend.Options) (backend.Stack, error) { return nil, ErrNoEFVI }
