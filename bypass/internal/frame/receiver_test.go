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
