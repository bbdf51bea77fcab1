package frame

import (
	"encoding/binary"
	"math/bits"
)

// The Internet checksum (RFC 1071) is the one's-complement of the
// one's-complement sum of the data taken as big-endian 16-bit words. Two
// properties make it cheap to compute:
//
//   - The sum does not depend on byte order as long as the same order is used
//     throughout, so the data can be loaded as little-endian words (a plain
//     load on amd64 and arm64), eight bytes at a time, and the folded result
//     swapped once at the end.
//   - Carries out of the top bit wrap around to the bottom, so wider words can
//     be added with carry (bits.Add64, an ADC on amd64) and folded down to 16
//     bits at the end.
//
// Sums in this package are "partial sums": a uint32 holding a value that
// folds (Fold) to the 16-bit one's-complement sum. Partial sums of adjacent
// pieces of data add up as long as every piece but the last has even length.

// Sum adds the one's-complement sum of b, taken as big-endian 16-bit words
// (a final odd byte is padded with a zero byte), to the partial sum initial
// and returns the result folded to 16 bits. The returned value is at most
// 0xffff, so it can be passed on as initial for the next piece. b must begin
// at an even offset of the checksummed data.
func Sum(b []byte, initial uint32) uint32 {
	var s, c uint64
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[0:8]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:16]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:24]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:32]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[0:8]), c)
		b = b[8:]
	}
	if len(b) >= 4 {
		s, c = bits.Add64(s, uint64(binary.LittleEndian.Uint32(b[0:4])), c)
		b = b[4:]
	}
	if len(b) >= 2 {
		s, c = bits.Add64(s, uint64(binary.LittleEndian.Uint16(b[0:2])), c)
		b = b[2:]
	}
	if len(b) == 1 {
		// In little-endian lanes the first byte of a word is its low byte:
		// this is the big-endian word b[0]<<8 padded with zero.
		s, c = bits.Add64(s, uint64(b[0]), c)
	}
	// Add the last carry; if that overflows, s is 0 and the wrap adds 1.
	s, c = bits.Add64(s, 0, c)
	s += c

	return uint32(fold64(uint64(bits.ReverseBytes16(fold64(s))) + uint64(initial)))
}

// Fold reduces a partial sum to 16 bits with end-around carries. The result
// is the one's-complement sum; the checksum is its complement (^Fold(sum)).
func Fold(sum uint32) uint16 {
	sum = (sum >> 16) + (sum & 0xffff)
	sum = (sum >> 16) + (sum & 0xffff)
	return uint16(sum)
}

// fold64 is Fold for a 64-bit sum: two folds to 32 bits (the second cannot
// carry out), then two to 16.
func fold64(s uint64) uint16 {
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s)
}

// sumIPv4Header is Sum for exactly the 20 bytes of an IPv4 header without
// options: five 32-bit little-endian loads cannot overflow 64 bits, so no
// carries need tracking. The result is in little-endian lanes; byte order
// does not matter to a check against 0xffff.
func sumIPv4Header(h *[20]byte) uint16 {
	s := uint64(binary.LittleEndian.Uint32(h[0:4])) +
		uint64(binary.LittleEndian.Uint32(h[4:8])) +
		uint64(binary.LittleEndian.Uint32(h[8:12])) +
		uint64(binary.LittleEndian.Uint32(h[12:16])) +
		uint64(binary.LittleEndian.Uint32(h[16:20]))
	return fold64(s)
}

// Checksum returns the Internet checksum of b: the complement of its
// one's-complement sum. Storing it in a zeroed checksum field of b makes the
// sum of b fold to 0xffff.
func Checksum(b []byte) uint16 {
	return ^Fold(Sum(b, 0))
}

// Update16 returns the checksum check after one 16-bit word of the
// checksummed data changes from old to new, following RFC 1624 (eqn. 3:
// HC' = ~(~HC + ~m + m')).
func Update16(check, old, new uint16) uint16 {
	return ^Fold(uint32(^check) + uint32(^old) + uint32(new))
}

// Update32 is Update16 for a 32-bit field, such as an IPv4 address, that
// starts at an even offset.
func Update32(check uint16, old, new uint32) uint16 {
	s := uint32(^check) +
		uint32(^uint16(old>>16)) + uint32(^uint16(old)) +
		uint32(uint16(new>>16)) + uint32(uint16(new))
	return ^Fold(s)
}
