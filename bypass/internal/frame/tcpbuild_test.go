package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

func TestTCPTemplateRoundTrip(t *testing.T) {
	src, dst := netip.MustParseAddr("10.199.1.1"), netip.MustParseAddr("10.199.1.2")
	tmpl, err := NewTCPTemplate(macA, macB, src, dst, 0)
	if err != nil {
		t.Fatal(err)
	}
	seg := TCPSegment{SrcPort: 40000, DstPort: 7000, Seq: 1, Ack: 2, Flags: TCPAck | TCPPsh, Window: 512,
		Options: TCPOptions{HasTimestamp: true, TSVal: 5, TSEcr: 6}}
	buf := make([]byte, 2048)
	n, err := tmpl.Build(buf, &seg, []byte("hello, "), []byte("world"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFilter(macB, netip.AddrPortFrom(dst, 0))
	if err != nil {
		t.Fatal(err)
	}
	var p Packet
	if r := f.Parse(buf[:n], &p); r != NotOurs {
		t.Fatalf("a filter that does not accept TCP returned %v, want NotOurs", r)
	}
	f.AcceptTCP(true)
	if r := f.Parse(buf[:n], &p); r != OK {
		t.Fatalf("parse: %v", r)
	}
	if p.Proto != ProtoTCP || p.Src != netip.AddrPortFrom(src, 40000) || p.Dst != netip.AddrPortFrom(dst, 7000) || p.SrcMAC != macA {
		t.Fatalf("packet %+v", p)
	}
	var got TCPSegment
	s, d := TCPAddrs(&p)
	if err := ParseTCP(p.Payload, s, d, &got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Payload, []byte("hello, world")) || got.Seq != 1 || got.Ack != 2 || got.Options.TSEcr != 6 {
		t.Fatalf("segment %+v", got)
	}
	// A checksum left to offload: only the pseudo-header sum.
	tcp := p.Payload
	binary.BigEndian.PutUint16(tcp[16:], Fold(tcpPseudoSum(s, d, len(tcp))))
	if err := ParseTCP(tcp, s, d, &got); !errors.Is(err, ErrTCPChecksum) {
		t.Fatalf("strict parse of an offloaded checksum: %v", err)
	}
	if err := ParseTCPOffloaded(tcp, s, d, &got); err != nil {
		t.Fatalf("offloaded parse: %v", err)
	}
	tcp[len(tcp)-1] ^= 1
	binary.BigEndian.PutUint16(tcp[16:], 0x1234)
	if err := ParseTCPOffloaded(tcp, s, d, &got); !errors.Is(err, ErrTCPChecksum) {
		t.Fatalf("offloaded parse of a bad checksum: %v", err)
	}
	if _, err := tmpl.Build(buf[:60], &seg, make([]byte, 100), nil); !errors.Is(err, ErrShortBuffer) {
		t.Fatalf("short buffer: %v", err)
	}
}

func TestFilterTCPChecks(t *testing.T) {
	src, dst := netip.MustParseAddr("10.199.1.1"), netip.MustParseAddr("10.199.1.2")
	tmpl, _ := NewTCPTemplate(macA, macB, src, dst, 0)
	buf := make([]byte, 256)
	seg := TCPSegment{SrcPort: 1, DstPort: 2, Flags: TCPSyn}
	n, _ := tmpl.Build(buf, &seg, make([]byte, 10), nil)
	f, _ := NewFilter(macB, netip.AddrPortFrom(dst, 0))
	f.AcceptTCP(true)
	var p Packet
	if r := f.Parse(buf[:n-1], &p); r != Length {
		t.Errorf("truncated segment: %v, want Length", r)
	}
	if r := f.Parse(buf[:TCPHeadersLen+10], &p); r != Short {
		t.Errorf("segment cut inside its header: %v, want Short", r)
	}
	other, _ := NewFilter(macB, netip.AddrPortFrom(src, 0))
	other.AcceptTCP(true)
	if r := other.Parse(buf[:n], &p); r != NotOurs {
		t.Errorf("other address: %v, want NotOurs", r)
	}
}

func BenchmarkTCPTemplateBuild(b *testing.B) {
	tmpl, _ := NewTCPTemplate(macA, macB, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 0)
	seg := TCPSegment{SrcPort: 1, DstPort: 2, Flags: TCPAck, Options: TCPOptions{HasTimestamp: true}}
	buf := make([]byte, 2048)
	p := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		tmpl.Build(buf, &seg, p, nil)
	}
}
