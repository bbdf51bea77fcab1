package frame

import (
	"net/netip"
	"testing"
)

func TestReceiver(t *testing.T) {
	mac := MAC{2, 0, 0, 0, 0, 1}
	local := netip.MustParseAddrPort("10.0.0.1:9000")
	f, err := NewFilter(mac, local)
	if err != nil {
		t.Fatal(err)
	}
	var r Receiver
	r.Init(f)
	tmpl, err := NewTemplate(Flow{SrcMAC: MAC{2, 0, 0, 0, 0, 2}, DstMAC: mac,
		Src: netip.MustParseAddrPort("10.0.0.2:4000"), Dst: local})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 128)
	n, _ := tmpl.Build(buf, []byte("hello"))
	p, src, ok := r.Parse(buf[:n])
	if !ok || string(p) != "hello" || src != netip.MustParseAddrPort("10.0.0.2:4000") {
		t.Fatalf("Parse = %q, %v, %v", p, src, ok)
	}
	if _, _, ok := r.Parse(buf[:20]); ok {
		t.Fatal("a 20-byte frame was accepted")
	}
	group := netip.MustParseAddr("239.1.1.1")
	gmac, _ := MulticastMAC(group)
	tmpl.SetDst(gmac, netip.AddrPortFrom(group, 9000))
	n, _ = tmpl.Build(buf, []byte("tick"))
	if _, _, ok := r.Parse(buf[:n]); ok {
		t.Fatal("a group not joined was accepted")
	}
	if err := r.Join(group); err != nil {
		t.Fatal(err)
	}
	if p, _, ok := r.Parse(buf[:n]); !ok || string(p) != "tick" {
		t.Fatalf("joined group: %q, %v", p, ok)
	}
	if d := r.Drops(); d.Short != 1 || d.NotOurs != 1 || d.Total() != 2 {
		t.Fatalf("drops %+v", d)
	}
	if a := testing.AllocsPerRun(100, func() { r.Parse(buf[:n]) }); a != 0 {
		t.Fatalf("Parse allocates %v times", a)
	}
}

func TestPartialChecksum(t *testing.T) {
	mac := MAC{2, 0, 0, 0, 0, 1}
	local := netip.MustParseAddrPort("10.0.0.1:9000")
	src := netip.MustParseAddrPort("10.0.0.2:4000")
	tmpl, _ := NewTemplate(Flow{SrcMAC: MAC{2, 0, 0, 0, 0, 2}, DstMAC: mac, Src: src, Dst: local})
	buf := make([]byte, 128)
	n, _ := tmpl.Build(buf, []byte("offloaded"))
	// What a sender with TX checksum offload leaves in the field: the
	// pseudo-header sum alone (addresses, protocol, UDP length).
	udpLen := uint32(UDPHeaderLen + len("offloaded"))
	seed := Fold(Sum(buf[EthHeaderLen+12:EthHeaderLen+20], protoUDP+udpLen))
	buf[offUDP+6], buf[offUDP+7] = byte(seed>>8), byte(seed)

	f, _ := NewFilter(mac, local)
	var p Packet
	if r := f.Parse(buf[:n], &p); r != UDPChecksum {
		t.Fatalf("seed accepted by default: %v", r)
	}
	f.AcceptPartialChecksum(true)
	if r := f.Parse(buf[:n], &p); r != OK || string(p.Payload) != "offloaded" {
		t.Fatalf("seed refused with AcceptPartialChecksum: %v", r)
	}
	buf[offUDP+7] ^= 1 // neither complete nor the seed
	if r := f.Parse(buf[:n], &p); r != UDPChecksum {
		t.Fatalf("a wrong checksum was accepted: %v", r)
	}
}
