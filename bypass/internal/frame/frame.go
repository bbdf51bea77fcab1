package frame

import (
	"errors"
	"net"
	"net/netip"
)

// Sizes of the headers this package writes and reads.
const (
	EthHeaderLen  = 14 // destination MAC, source MAC, EtherType
	VLANTagLen    = 4  // one 802.1Q tag (TPID 0x8100 and TCI), accepted by Parse only
	IPv4HeaderLen = 20 // IPv4 header without options
	UDPHeaderLen  = 8

	// HeaderLen is the length of the headers in front of the payload of a
	// frame that Build writes: the payload starts at this offset.
	HeaderLen = EthHeaderLen + IPv4HeaderLen + UDPHeaderLen

	// MaxPayload is the largest UDP payload one IPv4 datagram carries.
	MaxPayload = 0xffff - IPv4HeaderLen - UDPHeaderLen

	// DefaultTTL is the TTL a Flow with TTL 0 gets (Linux's default).
	DefaultTTL = 64
)

// IP protocol numbers of the transports a stack carries.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Header offsets within an untagged frame.
const (
	offEtherType = 12
	offIP        = EthHeaderLen
	offUDP       = offIP + IPv4HeaderLen

	etherTypeIPv4 = 0x0800
	etherTypeVLAN = 0x8100
	protoUDP      = ProtoUDP

	flagDF       = 0x4000
	flagMF       = 0x2000
	fragOffMask  = 0x1fff
	flagReserved = 0x8000
)

// Errors from Build, BuildInPlace and the setup functions. They are values,
// so returning one never allocates.
var (
	// ErrShortBuffer means the destination buffer cannot hold the frame.
	ErrShortBuffer = errors.New("frame: buffer too small for the frame")
	// ErrTooLong means the payload is larger than MaxPayload.
	ErrTooLong = errors.New("frame: payload larger than one IPv4 datagram carries")
	// ErrNotIPv4 means an address given to a Flow, Template or Filter is
	// not an IPv4 address.
	ErrNotIPv4 = errors.New("frame: not an IPv4 address")
	// ErrNotMulticast means an address given to Filter.Join is not an IPv4
	// multicast group.
	ErrNotMulticast = errors.New("frame: not an IPv4 multicast group")
	// ErrVLAN means a VLAN ID outside 1..4094 was given to Filter.SetVLAN.
	ErrVLAN = errors.New("frame: VLAN ID outside 1..4094")
)

// MAC is an Ethernet hardware address. It is an array, so it compares with
// == and copies without allocating.
type MAC [6]byte

// Broadcast is the Ethernet broadcast address.
var Broadcast = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// MACFrom converts a net.HardwareAddr of 6 bytes.
func MACFrom(hw net.HardwareAddr) (MAC, bool) {
	var m MAC
	if len(hw) != len(m) {
		return m, false
	}
	copy(m[:], hw)
	return m, true
}

// HardwareAddr returns m as a net.HardwareAddr (a new slice).
func (m MAC) HardwareAddr() net.HardwareAddr { return append(net.HardwareAddr(nil), m[:]...) }

// String formats m as six colon-separated lower-case hex bytes.
func (m MAC) String() string {
	const hex = "0123456789abcdef"
	var b [17]byte
	for i, v := range m {
		if i > 0 {
			b[3*i-1] = ':'
		}
		b[3*i] = hex[v>>4]
		b[3*i+1] = hex[v&0xf]
	}
	return string(b[:])
}

// MulticastMAC returns the Ethernet address an IPv4 multicast group maps to
// (RFC 1112 section 6.4): 01:00:5e followed by the low 23 bits of the group.
// It returns the zero MAC and false for an address that is not an IPv4
// multicast group.
func MulticastMAC(group netip.Addr) (MAC, bool) {
	group = group.Unmap()
	if !group.Is4() || !group.IsMulticast() {
		return MAC{}, false
	}
	g := group.As4()
	return MAC{0x01, 0x00, 0x5e, g[1] & 0x7f, g[2], g[3]}, true
}

// ipv4 returns a as a big-endian uint32, or false when a is not IPv4.
// IPv4-mapped IPv6 addresses are accepted.
func ipv4(a netip.Addr) (uint32, bool) {
	if a.Is4In6() {
		a = a.Unmap()
	}
	if !a.Is4() {
		return 0, false
	}
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), true
}
