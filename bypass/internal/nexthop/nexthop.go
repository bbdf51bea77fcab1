package nexthop

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// Interface describes a local network interface.
type Interface struct {
	Name  string
	Index int
	MAC   net.HardwareAddr // empty on interfaces without an Ethernet address
	// IPv4 holds the interface's IPv4 addresses with their prefix lengths,
	// primary address first.
	IPv4 []netip.Prefix
	MTU  int
	// Up is true when the interface is administratively up and its
	// operational state is up (or unknown, as for loopback and dummy).
	Up          bool
	NumRxQueues int
	NumTxQueues int
}

// Hop is where frames for one destination go.
type Hop struct {
	// DstMAC is the Ethernet destination: the gateway's or the
	// destination's MAC, or the multicast or broadcast address.
	DstMAC net.HardwareAddr
	// SrcIP is the source address the kernel would choose for the
	// destination.
	SrcIP netip.Addr
	// Gateway is the router the destination is reached through; the zero
	// Addr when the destination is on-link (or multicast or broadcast).
	Gateway netip.Addr
	// Iface is the interface frames leave through.
	Iface Interface
}

// DefaultTimeout bounds Resolve when its context has no deadline. The
// kernel's ARP gives up after three probes one second apart.
const DefaultTimeout = 3 * time.Second

// Errors that calls wrap, for errors.Is. The messages around them name the
// interface and address concerned.
var (
	// ErrNotFound: no such interface, or no interface owns the address.
	ErrNotFound = errors.New("not found")
	// ErrDown: the interface is administratively or operationally down.
	ErrDown = errors.New("down")
	// ErrNotIPv4: only IPv4 destinations and interfaces are handled.
	ErrNotIPv4 = errors.New("not an IPv4 address")
	// ErrNoEthernet: the interface has no 6-byte hardware address, so
	// there is no Ethernet header to build.
	ErrNoEthernet = errors.New("interface has no Ethernet address")
	// ErrLocal: the destination is an address of this host.
	ErrLocal = errors.New("destination is a local address")
	// ErrNoRoute: no route sends the destination through the interface.
	ErrNoRoute = errors.New("no route through this interface")
	// ErrUnresolved: the neighbour's MAC did not become known in time.
	ErrUnresolved = errors.New("neighbour not resolved")
)

// multicastMAC maps an IPv4 multicast group to its Ethernet address,
// 01:00:5e and the low 23 bits of the group (RFC 1112 section 6.4).
func multicastMAC(group netip.Addr) net.HardwareAddr {
	g := group.As4()
	return net.HardwareAddr{0x01, 0x00, 0x5e, g[1] & 0x7f, g[2], g[3]}
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
