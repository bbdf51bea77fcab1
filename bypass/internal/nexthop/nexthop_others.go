//go:build !linux

package nexthop

import (
	"context"
	"net/netip"

	"github.com/lowlat/lowlat/bypass/backend"
)

var errOS = backend.Unsupported("nexthop: the kernel's routing and neighbour tables are read through Linux netlink")

// Local returns an error wrapping backend.ErrNotSupported.
func Local(string) (Interface, error) { return Interface{}, errOS }

// InterfaceFor returns an error wrapping backend.ErrNotSupported.
func InterfaceFor(netip.Addr) (string, error) { return "", errOS }

// Resolve returns an error wrapping backend.ErrNotSupported.
func Resolve(context.Context, string, netip.Addr) (Hop, error) { return Hop{}, errOS }
