package frame

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"testing"
)

// refSum is the textbook RFC 1071 loop: big-endian 16-bit words, a final odd
// byte padded with zero, carries folded at the end. It is the reference the
// fast code is checked against.
func refSum(b []byte, initial uint32) uint16 {
	s := uint64(initial)
	for len(b) >= 2 {
		s += uint64(b[0])<<8 | uint64(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s>>16 != 0 {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func refChecksum(b []byte) uint16 { return ^refSum(b, 0) }

func TestSumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 4096)
	for i := range 20000 {
		n := r.IntN(len(buf))
		if i < 200 {
			n = i // every short length, where the tail handling lives
		}
		b := buf[:n]
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if i%7 == 0 { // runs of 0xff make every add carry
			for j := range b {
				b[j] = 0xff
			}
		}
		var initial uint32
		switch i % 3 {
		case 1:
			initial = r.Uint32() & 0xffff
		case 2:
			initial = r.Uint32()
		}
		got, want := Fold(Sum(b, initial)), refSum(b, initial)
		if got != want {
			t.Fatalf("len %d initial %#x: Sum folds to %#04x, reference %#04x", n, initial, got, want)
		}
		if got := Checksum(b); got != refChecksum(b) {
			t.Fatalf("len %d: Checksum %#04x, reference %#04x", n, got, refChecksum(b))
		}
	}
}

func TestSumUnalignedAndSplit(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 1600)
	for j := range buf {
		buf[j] = byte(r.Uint32())
	}
	for start := range 16 { // the slice's address alignment must not matter
		b := buf[start:]
		want := refSum(b, 0)
		if got := Fold(Sum(b, 0)); got != want {
			t.Fatalf("start %d: %#04x, want %#04x", start, got, want)
		}
		for k := 0; k < len(b); k += 2 * (1 + r.IntN(50)) { // even split points
			if got := Fold(Sum(b[k:], Sum(b[:k], 0))); got != want {
				t.Fatalf("start %d split %d: %#04x, want %#04x", start, k, got, want)
			}
		}
	}
}

func TestChecksumKnownVectors(t *testing.T) {
	// The IPv4 header of the example in RFC 1071's successors and countless
	// textbooks: 192.168.0.1 -> 192.168.0.199, UDP, total length 0x73, DF.
	hdr := []byte{
		0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
		0x00, 0x00, // checksum zeroed
		0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
	}
	if got := Checksum(hdr); got != 0xb861 {
		t.Errorf("IPv4 header checksum %#04x, want 0xb861", got)
	}
	binary.BigEndian.PutUint16(hdr[10:], 0xb861)
	if got := sumIPv4Header((*[20]byte)(hdr)); got != 0xffff {
		t.Errorf("header with its checksum sums to %#04x, want 0xffff", got)
	}

	// UDP 192.168.0.1:1234 -> 192.168.0.199:5678, payload "hi", by hand:
	//   pseudo-header c0a8+0001+c0a8+00c7+0011+000a (UDP length 10)
	//   UDP header    04d2+162e+000a+0000
	//   payload       6869
	//   sum 0x205a6 -> fold 0x0002+0x05a6 = 0x05a8 -> checksum ^0x05a8 = 0xfa57
	tmpl, err := NewTemplate(Flow{
		Src: mustAddrPort("192.168.0.1:1234"),
		Dst: mustAddrPort("192.168.0.199:5678"),
	})
	if err != nil {
		t.Fatal(err)
	}
	f := make([]byte, 64)
	n, err := tmpl.Build(f, []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint16(f[offUDP+6:]); got != 0xfa57 {
		t.Errorf("UDP checksum %#04x, want 0xfa57 (frame % x)", got, f[:n])
	}
}

func TestUpdate(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	b := make([]byte, 40)
	for range 5000 {
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		check := refChecksum(b)

		off := 2 * r.IntN(len(b)/2)
		old := binary.BigEndian.Uint16(b[off:])
		nw := uint16(r.Uint32())
		binary.BigEndian.PutUint16(b[off:], nw)
		// Compare sums, not checksum fields: 0x0000 and 0xffff are the two
		// one's-complement zeros, and either is a valid checksum.
		if got, want := Update16(check, old, nw), refChecksum(b); got != want && !(got^want == 0xffff && (got == 0 || want == 0)) {
			t.Fatalf("Update16: %#04x, recomputed %#04x", got, want)
		}

		check = refChecksum(b)
		off = 2 * r.IntN(len(b)/2-1)
		old32 := binary.BigEndian.Uint32(b[off:])
		nw32 := r.Uint32()
		binary.BigEndian.PutUint32(b[off:], nw32)
		if got, want := Update32(check, old32, nw32), refChecksum(b); got != want && !(got^want == 0xffff && (got == 0 || want == 0)) {
			t.Fatalf("Update32: %#04x, recomputed %#04x", got, want)
		}
	}
}

func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{20, 64, 1500} {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			var s uint16
			for b.Loop() {
				s += Checksum(buf)
			}
			_ = s
		})
	}
}
