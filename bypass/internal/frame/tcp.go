package frame

import (
	"encoding/binary"
	"errors"
)

// TCP segments: the header and options codec the user-space TCP builds on
// (RFC 9293 section 3.1; options from RFC 7323 and RFC 2018). It parses and
// writes the TCP header only; the IPv4 header around it is the caller's,
// which passes the pseudo-header's addresses for the checksum.

// TCP header flags, as they sit in the header's 13th byte.
const (
	TCPFin uint8 = 1 << iota
	TCPSyn
	TCPRst
	TCPPsh
	TCPAck
	TCPUrg
	TCPEce
	TCPCwr
)

// Sizes of the TCP header and its options.
const (
	TCPHeaderLen    = 20 // without options
	TCPMaxHeaderLen = 60 // data offset 15
	MaxSACKBlocks   = 4  // the most a 40-byte option space holds
)

// Option kinds.
const (
	optEnd       = 0
	optNop       = 1
	optMSS       = 2
	optWScale    = 3
	optSACKPerm  = 4
	optSACK      = 5
	optTimestamp = 8
)

// Errors from ParseTCP and AppendTCP. They are values, so returning one
// never allocates; the stack counts drops by them.
var (
	ErrTCPShort    = errors.New("frame: TCP segment shorter than its header")
	ErrTCPOffset   = errors.New("frame: TCP data offset below 5 words or past the segment")
	ErrTCPOption   = errors.New("frame: malformed TCP option")
	ErrTCPChecksum = errors.New("frame: bad TCP checksum")
	ErrTCPOptions  = errors.New("frame: TCP options longer than 40 bytes")
)

// SACKBlock is one selective acknowledgment: the sequence numbers of a
// received block's first byte and the byte after its last.
type SACKBlock struct{ Left, Right uint32 }

// TCPOptions are the options lowlat negotiates and reads. Unknown options
// are skipped by their length.
type TCPOptions struct {
	MSS           uint16 // 0: absent
	HasWScale     bool
	WScale        uint8 // the shift, as sent (RFC 7323 caps its use at 14)
	SACKPermitted bool
	HasTimestamp  bool
	TSVal, TSEcr  uint32
	NSACK         int // blocks used in SACK
	SACK          [MaxSACKBlocks]SACKBlock
}

// TCPSegment is a parsed TCP header and the payload after it.
type TCPSegment struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Window           uint16 // as sent: not yet shifted by the window scale
	Urgent           uint16
	Options          TCPOptions
	// Payload aliases the segment passed to ParseTCP.
	Payload []byte
}

// tcpPseudoSum is the partial sum of the IPv4 pseudo-header for a TCP
// segment of length n between src and dst.
func tcpPseudoSum(src, dst uint32, n int) uint32 {
	var ph [12]byte
	binary.BigEndian.PutUint32(ph[0:], src)
	binary.BigEndian.PutUint32(ph[4:], dst)
	ph[9] = 6 // IPPROTO_TCP
	binary.BigEndian.PutUint16(ph[10:], uint16(n))
	return Sum(ph[:], 0)
}

// ParseTCP parses seg, a whole TCP segment (header, options, payload; the
// IPv4 payload), into s, verifying its checksum against the IPv4
// pseudo-header of src and dst (host-order IPv4 addresses). On error s is
// left partly written. It never reads outside seg.
func ParseTCP(seg []byte, src, dst uint32, s *TCPSegment) error {
	return parseTCP(seg, src, dst, s, false)
}

// ParseTCPOffloaded is ParseTCP that also accepts a checksum field holding
// only the pseudo-header sum, which a Linux sender with transmit checksum
// offload leaves for the NIC to complete: on a virtual link (veth) nothing
// completes it. See Filter.AcceptPartialChecksum for when that is safe.
func ParseTCPOffloaded(seg []byte, src, dst uint32, s *TCPSegment) error {
	return parseTCP(seg, src, dst, s, true)
}

func parseTCP(seg []byte, src, dst uint32, s *TCPSegment, partialOK bool) error {
	if len(seg) < TCPHeaderLen {
		return ErrTCPShort
	}
	off := int(seg[12]>>4) * 4
	if off < TCPHeaderLen || off > len(seg) {
		return ErrTCPOffset
	}
	if ps := tcpPseudoSum(src, dst, len(seg)); Fold(Sum(seg, ps)) != 0xffff &&
		!(partialOK && binary.BigEndian.Uint16(seg[16:]) == Fold(ps)) {
		return ErrTCPChecksum
	}
	s.SrcPort = binary.BigEndian.Uint16(seg[0:])
	s.DstPort = binary.BigEndian.Uint16(seg[2:])
	s.Seq = binary.BigEndian.Uint32(seg[4:])
	s.Ack = binary.BigEndian.Uint32(seg[8:])
	s.Flags = seg[13]
	s.Window = binary.BigEndian.Uint16(seg[14:])
	s.Urgent = binary.BigEndian.Uint16(seg[18:])
	s.Payload = seg[off:]
	return parseTCPOptions(seg[TCPHeaderLen:off], &s.Options)
}

// parseTCPOptions reads the option space b. Each known option must have
// its fixed length; an unknown one needs a length of at least 2 that stays
// inside b. End of options stops the scan.
func parseTCPOptions(b []byte, o *TCPOptions) error {
	*o = TCPOptions{}
	for len(b) > 0 {
		kind := b[0]
		if kind == optEnd {
			return nil
		}
		if kind == optNop {
			b = b[1:]
			continue
		}
		if len(b) < 2 {
			return ErrTCPOption
		}
		l := int(b[1])
		if l < 2 || l > len(b) {
			return ErrTCPOption
		}
		v := b[2:l]
		switch kind {
		case optMSS:
			if l != 4 {
				return ErrTCPOption
			}
			o.MSS = binary.BigEndian.Uint16(v)
		case optWScale:
			if l != 3 {
				return ErrTCPOption
			}
			o.HasWScale, o.WScale = true, v[0]
		case optSACKPerm:
			if l != 2 {
				return ErrTCPOption
			}
			o.SACKPermitted = true
		case optTimestamp:
			if l != 10 {
				return ErrTCPOption
			}
			o.HasTimestamp = true
			o.TSVal = binary.BigEndian.Uint32(v)
			o.TSEcr = binary.BigEndian.Uint32(v[4:])
		case optSACK:
			if (l-2)%8 != 0 || l == 2 {
				return ErrTCPOption
			}
			n := min((l-2)/8, MaxSACKBlocks)
			for i := range n {
				o.SACK[i] = SACKBlock{binary.BigEndian.Uint32(v[8*i:]), binary.BigEndian.Uint32(v[8*i+4:])}
			}
			o.NSACK = n
		}
		b = b[l:]
	}
	return nil
}

// tcpOptionsLen is the option space o takes when written by AppendTCP,
// padded to a multiple of 4.
func tcpOptionsLen(o *TCPOptions) int {
	n := 0
	if o.MSS != 0 {
		n += 4
	}
	if o.HasWScale {
		n += 4 // NOP, then 3
	}
	if o.SACKPermitted {
		n += 4 // NOP, NOP, then 2
	}
	if o.HasTimestamp {
		n += 12 // NOP, NOP, then 10
	}
	if o.NSACK > 0 {
		n += 4 + 8*min(o.NSACK, MaxSACKBlocks) // NOP, NOP, then 2+8n
	}
	return n
}

// AppendTCP appends s's header, its options (each aligned as Linux aligns
// them, with NOPs) and payload to dst, with the checksum for the IPv4
// pseudo-header of src and dst, and returns the extended slice. Options
// that do not fit the 40-byte option space are ErrTCPOptions. It allocates
// only when dst lacks the capacity.
func AppendTCP(b []byte, s *TCPSegment, src, dst uint32) ([]byte, error) {
	return appendTCP(b, s, s.Payload, nil, src, dst)
}

// TCPHeaderSize is the header length, options included, that AppendTCP
// writes for s.
func TCPHeaderSize(s *TCPSegment) int { return TCPHeaderLen + tcpOptionsLen(&s.Options) }

// appendTCP is AppendTCP with the payload in two pieces (a ring buffer's
// wrap), which it joins.
func appendTCP(b []byte, s *TCPSegment, p1, p2 []byte, src, dst uint32) ([]byte, error) {
	o := &s.Options
	optLen := tcpOptionsLen(o)
	if optLen > TCPMaxHeaderLen-TCPHeaderLen {
		return b, ErrTCPOptions
	}
	start := len(b)
	hlen := TCPHeaderLen + optLen
	b = append(b, make([]byte, hlen)...)
	h := b[start:]
	binary.BigEndian.PutUint16(h[0:], s.SrcPort)
	binary.BigEndian.PutUint16(h[2:], s.DstPort)
	binary.BigEndian.PutUint32(h[4:], s.Seq)
	binary.BigEndian.PutUint32(h[8:], s.Ack)
	h[12] = uint8(hlen/4) << 4
	h[13] = s.Flags
	binary.BigEndian.PutUint16(h[14:], s.Window)
	binary.BigEndian.PutUint16(h[18:], s.Urgent)
	p := h[TCPHeaderLen:]
	if o.MSS != 0 {
		p[0], p[1] = optMSS, 4
		binary.BigEndian.PutUint16(p[2:], o.MSS)
		p = p[4:]
	}
	if o.HasWScale {
		p[0], p[1], p[2], p[3] = optNop, optWScale, 3, o.WScale
		p = p[4:]
	}
	if o.SACKPermitted {
		p[0], p[1], p[2], p[3] = optNop, optNop, optSACKPerm, 2
		p = p[4:]
	}
	if o.HasTimestamp {
		p[0], p[1], p[2], p[3] = optNop, optNop, optTimestamp, 10
		binary.BigEndian.PutUint32(p[4:], o.TSVal)
		binary.BigEndian.PutUint32(p[8:], o.TSEcr)
		p = p[12:]
	}
	if o.NSACK > 0 {
		n := min(o.NSACK, MaxSACKBlocks)
		p[0], p[1], p[2], p[3] = optNop, optNop, optSACK, uint8(2+8*n)
		for i := range n {
			binary.BigEndian.PutUint32(p[4+8*i:], o.SACK[i].Left)
			binary.BigEndian.PutUint32(p[8+8*i:], o.SACK[i].Right)
		}
	}
	b = append(b, p1...)
	b = append(b, p2...)
	seg := b[start:]
	binary.BigEndian.PutUint16(seg[16:], ^Fold(Sum(seg, tcpPseudoSum(src, dst, len(seg)))))
	return b, nil
}
