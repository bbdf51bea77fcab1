package frame

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/lowlat/lowlat/bypass/backend"
)

// Reason says why Parse dropped a frame, or OK when it accepted it.
type Reason uint8

// The reasons, one per drop counter of backend.Stats.
const (
	OK          Reason = iota // accepted
	Short                     // the frame ends inside a header
	Fragment                  // an IPv4 fragment (MF set or a fragment offset)
	IPOptions                 // an IPv4 header with options (IHL > 5)
	IPChecksum                // bad IPv4 header checksum
	UDPChecksum               // bad UDP checksum
	NotOurs                   // wrong EtherType, VLAN, destination MAC, IP or port; not IPv4 or not UDP
	Length                    // IPv4 (IHL or total) or UDP length disagrees with the frame
)

var reasonNames = [...]string{
	OK:          "ok",
	Short:       "short",
	Fragment:    "fragment",
	IPOptions:   "ip-options",
	IPChecksum:  "ip-checksum",
	UDPChecksum: "udp-checksum",
	NotOurs:     "not-ours",
	Length:      "length",
}

// String returns a short lower-case name for r.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// Packet is what Parse extracts from an accepted frame.
type Packet struct {
	// Payload is the UDP payload, or for TCP (Proto ProtoTCP) the whole
	// TCP segment, header included, for ParseTCP. It aliases the frame
	// passed to Parse.
	Payload []byte
	Proto   uint8 // ProtoUDP or ProtoTCP
	Src     netip.AddrPort
	Dst     netip.AddrPort
	SrcMAC  MAC
	DstMAC  MAC
	// VLAN is the VLAN ID of the frame's 802.1Q tag; 0 when the frame is
	// untagged or carries a priority tag only.
	VLAN uint16
	TOS  uint8
	TTL  uint8
	ID   uint16 // IPv4 identification
	DF   bool   // IPv4 don't-fragment bit
}

// Filter selects the frames that belong to one UDP endpoint. Its zero value
// accepts any destination MAC, address, port and VLAN; NewFilter makes one
// that accepts only the endpoint's own.
//
// Accepted destinations:
//   - MAC: the filter's own unicast MAC, or, for a joined IPv4 multicast
//     group, exactly the MAC the group maps to (MulticastMAC). Broadcast
//     frames are not accepted.
//   - IPv4: the local address (any unicast address when it is 0.0.0.0), or a
//     joined group.
//   - UDP port: the local port (any when it is 0).
//   - VLAN: untagged (or priority-tagged) frames only, unless SetVLAN chose a
//     VLAN ID; then frames carrying one 802.1Q tag with that ID only. Stacked
//     tags (QinQ) are never accepted.
//
// Parse only reads a Filter. Join, Leave and SetVLAN must not run while
// another goroutine parses with the same Filter: change a Clone and publish it
// (with an atomic.Pointer, say) instead.
type Filter struct {
	narrow bool // set by NewFilter; false accepts any destination
	mac    MAC
	ip     uint32 // 0: any unicast address
	port   uint16 // 0: any port
	vlan   uint16 // 0: untagged only
	groups []uint32

	partialOK bool // accept a UDP checksum field holding only the pseudo-header sum
	tcp       bool // accept TCP segments too
}

// AcceptTCP makes the filter accept TCP segments to its address as well:
// Parse then checks their IPv4 header and destination and returns the
// whole segment with Proto ProtoTCP, for ParseTCP to check the rest.
func (f *Filter) AcceptTCP(on bool) { f.tcp = on }

// AcceptPartialChecksum makes the filter accept UDP datagrams whose
// checksum field holds only the pseudo-header sum: what a Linux sender with
// transmit checksum offload puts there for the NIC to complete. On a
// virtual link (veth) no NIC completes it, so a receiver that bypasses the
// kernel sees the seed. Turn this on only for links that cannot corrupt
// frames in transit; a datagram whose checksum is neither complete nor the
// seed is still dropped.
func (f *Filter) AcceptPartialChecksum(on bool) { f.partialOK = on }

// NewFilter returns a filter for frames sent to mac and local. An
// unspecified local address (0.0.0.0) accepts any unicast IPv4 destination
// sent to mac; port 0 accepts any port.
func NewFilter(mac MAC, local netip.AddrPort) (Filter, error) {
	ip, ok := ipv4(local.Addr())
	if !ok {
		return Filter{}, ErrNotIPv4
	}
	return Filter{narrow: true, mac: mac, ip: ip, port: local.Port()}, nil
}

// SetVLAN makes the filter accept only frames tagged with VLAN ID id (1 to
// 4094); 0 goes back to untagged frames only.
func (f *Filter) SetVLAN(id uint16) error {
	if id > 4094 {
		return ErrVLAN
	}
	f.vlan = id
	return nil
}

// Join adds an IPv4 multicast group to the accepted destinations. Joining a
// group twice is not an error.
func (f *Filter) Join(group netip.Addr) error {
	if _, ok := MulticastMAC(group); !ok {
		return ErrNotMulticast
	}
	g, _ := ipv4(group)
	if !slices.Contains(f.groups, g) {
		f.groups = append(f.groups, g)
	}
	return nil
}

// Leave removes a group and reports whether it had been joined.
func (f *Filter) Leave(group netip.Addr) bool {
	g, ok := ipv4(group)
	if !ok {
		return false
	}
	i := slices.Index(f.groups, g)
	if i < 0 {
		return false
	}
	f.groups = slices.Delete(slices.Clone(f.groups), i, i+1)
	return true
}

// Clone returns a copy of f that shares nothing with it.
func (f *Filter) Clone() *Filter {
	c := *f
	c.groups = slices.Clone(f.groups)
	return &c
}

func (f *Filter) joined(ip uint32) bool {
	// A linear scan: endpoints join a handful of groups, and comparing a
	// few uint32s beats hashing.
	for _, g := range f.groups {
		if g == ip {
			return true
		}
	}
	return false
}

// Parse checks one received Ethernet frame against the filter and, when it
// is a valid UDP/IPv4 datagram for this endpoint, fills p and returns OK.
// Otherwise it returns why the frame was dropped and p is left partly
// written. Ethernet padding after the IPv4 datagram is ignored. A zero UDP
// checksum means the sender computed none, and is accepted.
//
// The checks run from the outside in, so that cheap ones reject foreign
// traffic first: EtherType and VLAN, destination MAC, IPv4 header (version,
// options, header checksum, total length, fragments, protocol, destination
// address), UDP header (destination port, lengths), then the UDP checksum.
// The first failing check gives the Reason. A frame that ends inside a
// header is Short; one whose headers are whole but whose IPv4 total length
// runs past its end is Length.
func (f *Filter) Parse(frame []byte, p *Packet) Reason {
	if len(frame) < EthHeaderLen {
		return Short
	}
	off := EthHeaderLen
	etherType := binary.BigEndian.Uint16(frame[offEtherType:])
	var vlan uint16
	if etherType == etherTypeVLAN {
		if len(frame) < EthHeaderLen+VLANTagLen {
			return Short
		}
		vlan = binary.BigEndian.Uint16(frame[14:16]) & 0x0fff
		etherType = binary.BigEndian.Uint16(frame[16:18])
		off += VLANTagLen
	}
	if etherType != etherTypeIPv4 || (f.narrow && vlan != f.vlan) {
		return NotOurs
	}
	dstMAC := MAC(frame[0:6])
	mcastMAC := dstMAC[0] == 0x01 && dstMAC[1] == 0x00 && dstMAC[2] == 0x5e && dstMAC[3]&0x80 == 0
	if f.narrow && dstMAC != f.mac && !mcastMAC {
		return NotOurs
	}

	if len(frame) < off+IPv4HeaderLen {
		return Short
	}
	ip := (*[IPv4HeaderLen]byte)(frame[off : off+IPv4HeaderLen])
	if ip[0]>>4 != 4 {
		return NotOurs
	}
	switch ihl := ip[0] & 0x0f; {
	case ihl > 5:
		return IPOptions
	case ihl < 5:
		return Length
	}
	if sumIPv4Header(ip) != 0xffff {
		return IPChecksum
	}
	ipLen := int(binary.BigEndian.Uint16(ip[2:4]))
	if ipLen < IPv4HeaderLen {
		return Length
	}
	frag := binary.BigEndian.Uint16(ip[6:8])
	if frag&(flagMF|fragOffMask) != 0 {
		return Fragment
	}
	tcp := ip[9] == ProtoTCP && f.tcp
	if ip[9] != protoUDP && !tcp {
		return NotOurs
	}
	dstIP := binary.BigEndian.Uint32(ip[16:20])
	if tcp {
		return f.parseTCP(frame, off, ipLen, dstMAC, dstIP, p)
	}
	if f.narrow {
		if dstIP>>28 == 0xe { // 224.0.0.0/4
			m, _ := MulticastMAC(netip.AddrFrom4([4]byte(ip[16:20])))
			if dstMAC != m || !f.joined(dstIP) {
				return NotOurs
			}
		} else if dstMAC != f.mac || (f.ip != 0 && dstIP != f.ip) {
			return NotOurs
		}
	}

	if ipLen < IPv4HeaderLen+UDPHeaderLen {
		return Length // too short for the UDP header it claims to carry
	}
	if len(frame) < off+IPv4HeaderLen+UDPHeaderLen {
		return Short
	}
	udp := frame[off+IPv4HeaderLen : off+IPv4HeaderLen+UDPHeaderLen]
	dstPort := binary.BigEndian.Uint16(udp[2:4])
	if f.port != 0 && dstPort != f.port {
		return NotOurs
	}
	if off+ipLen > len(frame) {
		return Length
	}
	udpLen := int(binary.BigEndian.Uint16(udp[4:6]))
	if udpLen != ipLen-IPv4HeaderLen {
		return Length
	}
	seg := frame[off+IPv4HeaderLen : off+ipLen]
	if binary.BigEndian.Uint16(udp[6:8]) != 0 {
		// Pseudo-header: the two addresses (adjacent in the IPv4 header),
		// the protocol and the UDP length; then the segment itself.
		s := Sum(ip[12:20], protoUDP+uint32(udpLen))
		if Fold(Sum(seg, s)) != 0xffff &&
			!(f.partialOK && binary.BigEndian.Uint16(udp[6:8]) == Fold(s)) {
			return UDPChecksum
		}
	}

	p.Payload = seg[UDPHeaderLen:]
	p.Proto = protoUDP
	p.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(udp[0:2]))
	p.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), dstPort)
	p.SrcMAC = MAC(frame[6:12])
	p.DstMAC = dstMAC
	p.VLAN = vlan
	p.TOS = ip[1]
	p.TTL = ip[8]
	p.ID = binary.BigEndian.Uint16(ip[4:6])
	p.DF = frag&flagDF != 0
	return OK
}

// parseTCP finishes Parse for a TCP segment: its destination (unicast
// only), its length, and the ports, which the stack demultiplexes by.
func (f *Filter) parseTCP(frame []byte, off, ipLen int, dstMAC MAC, dstIP uint32, p *Packet) Reason {
	if f.narrow && (dstIP>>28 == 0xe || dstMAC != f.mac || (f.ip != 0 && dstIP != f.ip)) {
		return NotOurs
	}
	if ipLen < IPv4HeaderLen+TCPHeaderLen {
		return Length
	}
	if len(frame) < off+IPv4HeaderLen+TCPHeaderLen {
		return Short
	}
	if off+ipLen > len(frame) {
		return Length
	}
	ip := frame[off : off+IPv4HeaderLen]
	seg := frame[off+IPv4HeaderLen : off+ipLen]
	p.Payload = seg
	p.Proto = ProtoTCP
	p.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(seg[0:2]))
	p.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(seg[2:4]))
	p.SrcMAC = MAC(frame[6:12])
	p.DstMAC = dstMAC
	p.TOS = ip[1]
	p.TTL = ip[8]
	p.ID = binary.BigEndian.Uint16(ip[4:6])
	p.DF = binary.BigEndian.Uint16(ip[6:8])&flagDF != 0
	return OK
}

// Parse is Filter.Parse with a filter that accepts any destination MAC,
// address, port and VLAN: it checks only that frame is a valid, unfragmented
// UDP/IPv4 datagram.
func Parse(frame []byte, p *Packet) Reason {
	var all Filter
	return all.Parse(frame, p)
}

// Counters count dropped frames, one field per Reason. They belong to the
// goroutine that parses and counts: Count is a plain increment, cheaper than
// an atomic one, so a backend that reports them to another goroutine copies
// them out at a point where the two synchronise.
type Counters struct {
	Short       uint64
	Fragment    uint64
	IPOptions   uint64
	IPChecksum  uint64
	UDPChecksum uint64
	NotOurs     uint64
	Length      uint64
}

// Count adds one to the counter for r; OK and unknown reasons count nothing.
func (c *Counters) Count(r Reason) {
	switch r {
	case Short:
		c.Short++
	case Fragment:
		c.Fragment++
	case IPOptions:
		c.IPOptions++
	case IPChecksum:
		c.IPChecksum++
	case UDPChecksum:
		c.UDPChecksum++
	case NotOurs:
		c.NotOurs++
	case Length:
		c.Length++
	}
}

// Total is the sum of all counters.
func (c Counters) Total() uint64 {
	return c.Short + c.Fragment + c.IPOptions + c.IPChecksum + c.UDPChecksum + c.NotOurs + c.Length
}

// AddTo adds the counters to the matching Drop fields of s.
func (c Counters) AddTo(s *backend.Stats) {
	s.DropShort += c.Short
	s.DropFragment += c.Fragment
	s.DropIPOptions += c.IPOptions
	s.DropIPChecksum += c.IPChecksum
	s.DropUDPChecksum += c.UDPChecksum
	s.DropNotOurs += c.NotOurs
	s.DropLength += c.Length
}
