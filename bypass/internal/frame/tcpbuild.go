package frame

import (
	"encoding/binary"
	"net/netip"
)

// TCPHeadersLen is the Ethernet and IPv4 headers in front of a TCP
// segment in an untagged frame.
const TCPHeadersLen = EthHeaderLen + IPv4HeaderLen

// TCPTemplate writes the Ethernet and IPv4 headers of one TCP connection
// in front of the segments AppendTCP's encoding builds. Like Template it
// is a value without pointers, computed once per connection.
type TCPTemplate struct {
	hdr      [TCPHeadersLen]byte
	ipSum    uint32 // IPv4 header words other than total length and checksum
	src, dst uint32
}

// NewTCPTemplate returns the headers for segments from src (at srcMAC) to
// dst (at dstMAC): DF set, IP ID 0 (RFC 6864), TTL DefaultTTL, TOS tos.
func NewTCPTemplate(srcMAC, dstMAC MAC, src, dst netip.Addr, tos uint8) (TCPTemplate, error) {
	var t TCPTemplate
	s, ok := ipv4(src)
	if !ok {
		return t, ErrNotIPv4
	}
	d, ok := ipv4(dst)
	if !ok {
		return t, ErrNotIPv4
	}
	h := &t.hdr
	copy(h[0:6], dstMAC[:])
	copy(h[6:12], srcMAC[:])
	binary.BigEndian.PutUint16(h[offEtherType:], etherTypeIPv4)
	h[offIP] = 0x45
	h[offIP+1] = tos
	binary.BigEndian.PutUint16(h[offIP+6:], flagDF)
	h[offIP+8] = DefaultTTL
	h[offIP+9] = ProtoTCP
	binary.BigEndian.PutUint32(h[offIP+12:], s)
	binary.BigEndian.PutUint32(h[offIP+16:], d)
	t.src, t.dst = s, d
	t.ipSum = uint32(binary.BigEndian.Uint16(h[offIP:])) +
		uint32(binary.BigEndian.Uint16(h[offIP+6:])) +
		uint32(binary.BigEndian.Uint16(h[offIP+8:])) +
		s>>16 + s&0xffff + d>>16 + d&0xffff
	return t, nil
}

// Build writes a frame carrying segment s, with the payload p1 then p2
// (s.Payload is ignored), into dst and returns its length. It fails with
// ErrShortBuffer when dst cannot hold it, and ErrTCPOptions when the
// options do not fit, before writing anything.
func (t *TCPTemplate) Build(dst []byte, s *TCPSegment, p1, p2 []byte) (int, error) {
	n := TCPHeadersLen + TCPHeaderSize(s) + len(p1) + len(p2)
	if n-EthHeaderLen > 0xffff {
		return 0, ErrTooLong
	}
	if len(dst) < n {
		return 0, ErrShortBuffer
	}
	if tcpOptionsLen(&s.Options) > TCPMaxHeaderLen-TCPHeaderLen {
		return 0, ErrTCPOptions
	}
	copy(dst, t.hdr[:])
	if _, err := appendTCP(dst[:TCPHeadersLen], s, p1, p2, t.src, t.dst); err != nil {
		return 0, err
	}
	ipLen := uint32(n - EthHeaderLen)
	binary.BigEndian.PutUint16(dst[offIP+2:], uint16(ipLen))
	binary.BigEndian.PutUint16(dst[offIP+10:], ^Fold(t.ipSum+ipLen))
	return n, nil
}

// TCPAddrs returns a TCP frame's IPv4 source and destination as the
// host-order numbers ParseTCP takes for its pseudo-header.
func TCPAddrs(p *Packet) (src, dst uint32) {
	s, d := p.Src.Addr().As4(), p.Dst.Addr().As4()
	return binary.BigEndian.Uint32(s[:]), binary.BigEndian.Uint32(d[:])
}
