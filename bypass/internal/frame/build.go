package frame

import (
	"encoding/binary"
	"net/netip"
)

// Flow describes the headers of one UDP flow over untagged Ethernet and
// IPv4. The zero value of each optional field is documented beside it.
type Flow struct {
	SrcMAC MAC
	DstMAC MAC
	Src    netip.AddrPort // IPv4 (or IPv4-mapped IPv6) address and port
	Dst    netip.AddrPort // IPv4 (or IPv4-mapped IPv6) address and port

	// TTL of every datagram; 0 means DefaultTTL.
	TTL uint8
	// TOS is the IPv4 TOS byte: DSCP in the upper six bits, ECN in the
	// lower two. 0 is best effort.
	TOS uint8
	// DontFragment sets the DF bit. The frames this package builds are never
	// fragmented, so a backend normally sets it; the IP ID is then 0, as
	// RFC 6864 allows for atomic datagrams.
	DontFragment bool
	// ID is the IP ID of the first datagram when DontFragment is false; each
	// Build adds one.
	ID uint16
}

// Template writes the headers of one Flow in front of payloads. The
// constant parts of the headers and of both checksums are computed once, when
// the template is made or its destination changes, so a Build only copies
// 42 bytes, adds the lengths (and IP ID) to the precomputed sums and sums the
// payload.
//
// A Template is a value without pointers: copy it to fork a flow. It is not
// safe for concurrent use (Build advances the IP ID).
type Template struct {
	hdr    [HeaderLen]byte
	ipSum  uint32 // IPv4 header words other than total length, ID and checksum
	udpSum uint32 // pseudo-header addresses and protocol, UDP ports
	id     uint16
	df     bool
}

// NewTemplate checks f and precomputes its headers.
func NewTemplate(f Flow) (Template, error) {
	var t Template
	src, ok := ipv4(f.Src.Addr())
	if !ok {
		return t, ErrNotIPv4
	}
	dst, ok := ipv4(f.Dst.Addr())
	if !ok {
		return t, ErrNotIPv4
	}
	ttl := f.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	h := &t.hdr
	copy(h[0:6], f.DstMAC[:])
	copy(h[6:12], f.SrcMAC[:])
	binary.BigEndian.PutUint16(h[offEtherType:], etherTypeIPv4)
	h[offIP] = 0x45 // version 4, IHL 5
	h[offIP+1] = f.TOS
	if f.DontFragment {
		binary.BigEndian.PutUint16(h[offIP+6:], flagDF)
	}
	h[offIP+8] = ttl
	h[offIP+9] = protoUDP
	binary.BigEndian.PutUint32(h[offIP+12:], src)
	binary.BigEndian.PutUint16(h[offUDP:], f.Src.Port())
	t.df = f.DontFragment
	t.id = f.ID
	t.setDst(f.DstMAC, dst, f.Dst.Port())
	return t, nil
}

// SetDst points the template at another destination: a server that replies
// to many clients keeps one Template and calls SetDst before each Build. It
// costs a few additions.
func (t *Template) SetDst(mac MAC, dst netip.AddrPort) error {
	ip, ok := ipv4(dst.Addr())
	if !ok {
		return ErrNotIPv4
	}
	t.setDst(mac, ip, dst.Port())
	return nil
}

func (t *Template) setDst(mac MAC, ip uint32, port uint16) {
	h := &t.hdr
	copy(h[0:6], mac[:])
	binary.BigEndian.PutUint32(h[offIP+16:], ip)
	binary.BigEndian.PutUint16(h[offUDP+2:], port)

	src := binary.BigEndian.Uint32(h[offIP+12:])
	addrs := src>>16 + src&0xffff + ip>>16 + ip&0xffff
	t.ipSum = uint32(binary.BigEndian.Uint16(h[offIP:])) + // version, IHL, TOS
		uint32(binary.BigEndian.Uint16(h[offIP+6:])) + // flags, fragment offset
		uint32(binary.BigEndian.Uint16(h[offIP+8:])) + // TTL, protocol
		addrs
	t.udpSum = addrs + protoUDP + uint32(binary.BigEndian.Uint16(h[offUDP:])) + uint32(port)
}

// Flow returns the flow the template currently describes, with ID set to the
// IP ID the next Build uses.
func (t *Template) Flow() Flow {
	h := &t.hdr
	var f Flow
	copy(f.DstMAC[:], h[0:6])
	copy(f.SrcMAC[:], h[6:12])
	f.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(h[offIP+12:offIP+16])), binary.BigEndian.Uint16(h[offUDP:]))
	f.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(h[offIP+16:offIP+20])), binary.BigEndian.Uint16(h[offUDP+2:]))
	f.TOS = h[offIP+1]
	f.TTL = h[offIP+8]
	f.DontFragment = t.df
	f.ID = t.id
	return f
}

// Build writes a frame carrying payload into dst and returns its length,
// HeaderLen+len(payload). It fails only with ErrTooLong or ErrShortBuffer,
// before writing anything.
func (t *Template) Build(dst, payload []byte) (int, error) {
	if len(payload) > MaxPayload {
		return 0, ErrTooLong
	}
	n := HeaderLen + len(payload)
	if len(dst) < n {
		return 0, ErrShortBuffer
	}
	copy(dst[HeaderLen:n], payload)
	t.writeHeaders(dst[:n])
	return n, nil
}

// BuildInPlace writes the headers in front of a payload of payloadLen bytes
// that already sits at frame[HeaderLen:], saving Build's copy, and returns
// the frame length, HeaderLen+payloadLen. It fails only with ErrTooLong or
// ErrShortBuffer, before writing anything.
func (t *Template) BuildInPlace(frame []byte, payloadLen int) (int, error) {
	if payloadLen < 0 || payloadLen > MaxPayload {
		return 0, ErrTooLong
	}
	n := HeaderLen + payloadLen
	if len(frame) < n {
		return 0, ErrShortBuffer
	}
	t.writeHeaders(frame[:n])
	return n, nil
}

// writeHeaders fills f[:HeaderLen] for the payload f[HeaderLen:]; the caller
// has checked the lengths.
func (t *Template) writeHeaders(f []byte) {
	h := (*[HeaderLen]byte)(f[:HeaderLen])
	*h = t.hdr
	ipLen := uint32(len(f) - EthHeaderLen)
	udpLen := ipLen - IPv4HeaderLen
	var id uint16
	if !t.df {
		id = t.id
		t.id++
	}
	binary.BigEndian.PutUint16(h[offIP+2:], uint16(ipLen))
	binary.BigEndian.PutUint16(h[offIP+4:], id)
	binary.BigEndian.PutUint16(h[offIP+10:], ^Fold(t.ipSum+ipLen+uint32(id)))
	binary.BigEndian.PutUint16(h[offUDP+4:], uint16(udpLen))
	// The UDP length appears twice in the sum: in the pseudo-header and in
	// the UDP header.
	c := ^Fold(Sum(f[HeaderLen:], t.udpSum+2*udpLen))
	if c == 0 {
		c = 0xffff // 0 would mean "no checksum" (RFC 768)
	}
	binary.BigEndian.PutUint16(h[offUDP+6:], c)
}
