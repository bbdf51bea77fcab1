package efvi

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/lowlat/lowlat/bypass/backend"
)

// Backend is the "efvi" backend.
type Backend struct{}

var (
	_ backend.StackBackend  = Backend{}
	_ backend.StreamBackend = Backend{}
	_ backend.ContextDialer = Backend{}
)

// Name returns "efvi".
func (Backend) Name() string { return "efvi" }

// ErrNoEFVI is returned by ListenUDP in a binary built without ef_vi. It
// wraps backend.ErrNotSupported.
var ErrNoEFVI = backend.Unsupported("built without ef_vi: rebuild with -tags efvi on a host with Onload's headers and libciul")

// ListenUDP opens an ef_vi endpoint for laddr on o.Interface (or the
// interface that owns laddr's address). It fails with an error wrapping
// backend.ErrNotSupported when the binary was built without ef_vi, when the
// host has no Onload driver (/dev/sfc_char), or when the interface is not
// one the driver serves.
func (Backend) ListenUDP(laddr netip.AddrPort, o backend.Options) (backend.PacketConn, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("efvi: listen udp %v: %w", laddr, err)
	}
	c, err := listen(laddr, o)
	if err != nil {
		return nil, fmt.Errorf("efvi: listen udp %v: %w", laddr, err)
	}
	return c, nil
}

// DialTCP opens a TCP connection to raddr on the efvi stack of
// o.Interface (or of the interface the route to raddr leaves by): the
// user-space TCP of package stack over ef_vi.
func (b Backend) DialTCP(raddr netip.AddrPort, o backend.Options) (backend.Stream, error) {
	return b.DialTCPContext(context.Background(), raddr, o)
}

// DialTCPContext is DialTCP whose handshake ends with ctx.
func (Backend) DialTCPContext(ctx context.Context, raddr netip.AddrPort, o backend.Options) (backend.Stream, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("efvi: dial tcp %v: %w", raddr, err)
	}
	c, err := dialTCP(ctx, raddr, o)
	if err != nil {
		return nil, fmt.Errorf("efvi: dial tcp %v: %w", raddr, err)
	}
	return c, nil
}

// ListenTCP listens for TCP connections on laddr on the efvi stack.
func (Backend) ListenTCP(laddr netip.AddrPort, o backend.Options) (backend.StreamListener, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("efvi: listen tcp %v: %w", laddr, err)
	}
	l, err := listenTCP(laddr, o)
	if err != nil {
		return nil, fmt.Errorf("efvi: listen tcp %v: %w", laddr, err)
	}
	return l, nil
}

// OpenStack returns this process's efvi stack on o.Interface, opening it
// when there is none yet: its VIs, packet memory and every socket opened
// on it are served by whichever thread reads them. Close gives back this
// handle's reference.
func (Backend) OpenStack(o backend.Options) (backend.Stack, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("efvi: open stack: %w", err)
	}
	s, err := openStack(o)
	if err != nil {
		return nil, fmt.Errorf("efvi: open stack on %s: %w", o.Interface, err)
	}
	return s, nil
}
