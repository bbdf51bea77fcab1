package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

const (
	tcpSrc = 0x0a000001 // 10.0.0.1
	tcpDst = 0x0a000002 // 10.0.0.2
)

func tcpOptionSets() []TCPOptions {
	ts := TCPOptions{HasTimestamp: true, TSVal: 0x01020304, TSEcr: 0xa0b0c0d0}
	sack3 := ts
	sack3.NSACK = 3
	sack3.SACK = [MaxSACKBlocks]SACKBlock{{1, 2}, {3, 4}, {0xfffffff0, 0x10}}
	return []TCPOptions{
		{},
		{MSS: 1460},
		{MSS: 8960, HasWScale: true, WScale: 7, SACKPermitted: true, HasTimestamp: true, TSVal: 7},
		{HasWScale: true, WScale: 0},
		ts,
		sack3,
		{NSACK: 4, SACK: [MaxSACKBlocks]SACKBlock{{1, 2}, {3, 4}, {5, 6}, {7, 8}}},
	}
}

// TestTCPRoundTrip writes segments with each option set and reads them
// back field for field, with the checksum checked independently: the
// Internet checksum of pseudo-header and segment together is zero.
func TestTCPRoundTrip(t *testing.T) {
	for i, o := range tcpOptionSets() {
		in := TCPSegment{SrcPort: 40000, DstPort: 443, Seq: 0xdeadbeef, Ack: 17, Flags: TCPSyn | TCPAck,
			Window: 65535, Urgent: 0, Options: o, Payload: []byte("hello, odd length")}
		seg, err := AppendTCP(make([]byte, 0, 128), &in, tcpSrc, tcpDst)
		if err != nil {
			t.Fatalf("set %d: %v", i, err)
		}
		if len(seg)%2 == 0 {
			t.Fatalf("set %d: want an odd-length segment to exercise the checksum's padding", i)
		}
		var ph [12]byte
		binary.BigEndian.PutUint32(ph[0:], tcpSrc)
		binary.BigEndian.PutUint32(ph[4:], tcpDst)
		ph[9] = 6
		binary.BigEndian.PutUint16(ph[10:], uint16(len(seg)))
		if c := Checksum(append(ph[:], seg...)); c != 0 {
			t.Fatalf("set %d: pseudo-header and segment sum to checksum %#04x, want 0", i, c)
		}
		var out TCPSegment
		if err := ParseTCP(seg, tcpSrc, tcpDst, &out); err != nil {
			t.Fatalf("set %d: %v", i, err)
		}
		if !bytes.Equal(out.Payload, in.Payload) {
			t.Fatalf("set %d: payload %q", i, out.Payload)
		}
		out.Payload, in.Payload = nil, nil
		if !reflect.DeepEqual(out, in) {
			t.Fatalf("set %d: read back\n%+v\nwrote\n%+v", i, out, in)
		}
	}
}

func TestTCPBadSegments(t *testing.T) {
	in := TCPSegment{SrcPort: 1, DstPort: 2, Flags: TCPAck, Options: TCPOptions{MSS: 1460, HasTimestamp: true}, Payload: []byte("data")}
	good, err := AppendTCP(nil, &in, tcpSrc, tcpDst)
	if err != nil {
		t.Fatal(err)
	}
	// reseal recomputes the checksum, so that each case fails for its own
	// reason and not for the checksum.
	reseal := func(seg []byte) []byte {
		seg[16], seg[17] = 0, 0
		binary.BigEndian.PutUint16(seg[16:], ^Fold(Sum(seg, tcpPseudoSum(tcpSrc, tcpDst, len(seg)))))
		return seg
	}
	cases := []struct {
		name string
		seg  func([]byte) []byte
		want error
	}{
		{"short", func(s []byte) []byte { return s[:19] }, ErrTCPShort},
		{"offset below 5", func(s []byte) []byte { s[12] = 4 << 4; return reseal(s) }, ErrTCPOffset},
		{"offset past the end", func(s []byte) []byte { return reseal(s[:TCPHeaderLen+8]) }, ErrTCPOffset},
		{"checksum", func(s []byte) []byte { s[len(s)-1] ^= 1; return s }, ErrTCPChecksum},
		{"MSS length", func(s []byte) []byte { s[21] = 3; return reseal(s) }, ErrTCPOption},
		{"zero option length", func(s []byte) []byte { s[21] = 0; return reseal(s) }, ErrTCPOption},
		{"option past the header", func(s []byte) []byte { s[21] = 40; return reseal(s) }, ErrTCPOption},
		{"kind without length", func(s []byte) []byte {
			copy(s[20:36], bytes.Repeat([]byte{optNop}, 15)) // the last option byte: MSS's kind alone
			s[35] = optMSS
			return reseal(s)
		}, ErrTCPOption},
		{"unknown option skipped", func(s []byte) []byte { s[20] = 30; return reseal(s) }, nil},
		{"end of options", func(s []byte) []byte { s[20] = 0; return reseal(s) }, nil},
	}
	for _, c := range cases {
		var out TCPSegment
		err := ParseTCP(c.seg(bytes.Clone(good)), tcpSrc, tcpDst, &out)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	var out TCPSegment
	if err := ParseTCP(good, tcpSrc, tcpDst+1, &out); !errors.Is(err, ErrTCPChecksum) {
		t.Errorf("a segment for another address: %v, want the checksum to catch it", err)
	}
}

func TestTCPOptionSpace(t *testing.T) {
	s := TCPSegment{Options: TCPOptions{HasTimestamp: true, NSACK: 4}}
	if _, err := AppendTCP(nil, &s, tcpSrc, tcpDst); !errors.Is(err, ErrTCPOptions) {
		t.Fatalf("timestamps and 4 SACK blocks: %v, want ErrTCPOptions", err)
	}
	s.Options.NSACK = 3
	seg, err := AppendTCP(nil, &s, tcpSrc, tcpDst)
	if err != nil || len(seg) != TCPMaxHeaderLen {
		t.Fatalf("timestamps and 3 SACK blocks: %d bytes, %v; want a full 60-byte header", len(seg), err)
	}
}

func FuzzParseTCP(f *testing.F) {
	for _, o := range tcpOptionSets() {
		s := TCPSegment{SrcPort: 5, DstPort: 6, Seq: 1, Flags: TCPSyn, Options: o, Payload: []byte{1, 2, 3}}
		seg, _ := AppendTCP(nil, &s, tcpSrc, tcpDst)
		f.Add(seg)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, seg []byte) {
		// Any bytes: a parse never panics. With the checksum sealed, what
		// parses re-encodes (options in lowlat's layout) to a segment that
		// parses to the same fields.
		if len(seg) >= TCPHeaderLen {
			seg[16], seg[17] = 0, 0
			binary.BigEndian.PutUint16(seg[16:], ^Fold(Sum(seg, tcpPseudoSum(tcpSrc, tcpDst, len(seg)))))
		}
		var a TCPSegment
		if ParseTCP(seg, tcpSrc, tcpDst, &a) != nil {
			return
		}
		re, err := AppendTCP(nil, &a, tcpSrc, tcpDst)
		if err != nil {
			// A peer's options can fill 40 bytes more tightly than ours do.
			if errors.Is(err, ErrTCPOptions) {
				return
			}
			t.Fatal(err)
		}
		var b TCPSegment
		if err := ParseTCP(re, tcpSrc, tcpDst, &b); err != nil {
			t.Fatalf("re-encoded segment does not parse: %v", err)
		}
		if !bytes.Equal(a.Payload, b.Payload) {
			t.Fatalf("re-encoded payload %x, want %x", b.Payload, a.Payload)
		}
		a.Payload, b.Payload = nil, nil
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("re-encoded segment reads\n%+v\nwant\n%+v", b, a)
		}
	})
}

func BenchmarkParseTCP(b *testing.B) {
	s := TCPSegment{SrcPort: 1, DstPort: 2, Flags: TCPAck | TCPPsh, Options: TCPOptions{HasTimestamp: true, TSVal: 9}, Payload: make([]byte, 64)}
	seg, _ := AppendTCP(nil, &s, tcpSrc, tcpDst)
	var out TCPSegment
	b.ReportAllocs()
	for b.Loop() {
		if err := ParseTCP(seg, tcpSrc, tcpDst, &out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendTCP(b *testing.B) {
	s := TCPSegment{SrcPort: 1, DstPort: 2, Flags: TCPAck | TCPPsh, Options: TCPOptions{HasTimestamp: true, TSVal: 9}, Payload: make([]byte, 64)}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := AppendTCP(buf[:0], &s, tcpSrc, tcpDst); err != nil {
			b.Fatal(err)
		}
	}
}
