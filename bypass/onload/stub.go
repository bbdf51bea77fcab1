//go:build !(linux && onload && cgo)

package onload

import (
	"net/netip"

	"github.com/lowlat/lowlat/bypass/backend"
)

func listenUDP(netip.AddrPort, backend.Options) (backend.PacketConn, error) { return nil, ErrNoOnload }
func dialTCP(netip.AddrPort, backend.Options) (backend.Stream, error)       { return nil, ErrNoOnload }
func listenTCP(netip.AddrPort, backend.Options) (backend.StreamListener, error) {
	return nil, ErrNoOnload
}
func autoSelect() error { return ErrNoOnload }

// Find reports no extension API: this binary has no backend.
func Find() Extensions { return Extensions{} }

// SetStackName reports ErrNoOnload.
func SetStackName(string, Scope) error { return ErrNoOnload }

// SetThreadSpin reports ErrNoOnload.
func SetThreadSpin(Spin, bool) error { return ErrNoOnload }

// Signal returns the zero state: this binary does nothing about SIGONLOAD.
func Signal() SignalState { return SignalState{} }

// KeepSignal reports ErrNoOnload.
func KeepSignal() (SignalState, error) { return SignalState{}, ErrNoOnload }

// Template is a send template; without the backend there is none.
type Template struct{}

// NewTemplate reports ErrNoOnload.
func NewTemplate(backend.Stream, []byte) (*Template, error) { return nil, ErrNoOnload }

// Update reports ErrNoOnload.
func (*Template) Update(int, []byte) error { return ErrNoOnload }

// Send reports ErrNoOnload.
func (*Template) Send(int, []byte) error { return ErrNoOnload }

// Abort reports ErrNoOnload.
func (*Template) Abort() error { return ErrNoOnload }
