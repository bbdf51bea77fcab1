package frame

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"reflect"
	"strconv"
	"testing"

	"github.com/lowlat/lowlat/bypass/backend"
)

var testPayload = []byte("0123456789abcdefghij") // 20 bytes, so frames are 62 bytes

// goodFrame returns a valid frame from testFlow carrying testPayload.
func goodFrame() []byte {
	f := testFlow()
	f.DontFragment = true
	tmpl, err := NewTemplate(f)
	if err != nil {
		panic(err)
	}
	b := make([]byte, HeaderLen+len(testPayload))
	if _, err := tmpl.Build(b, testPayload); err != nil {
		panic(err)
	}
	return b
}

// testFilter accepts what goodFrame sends.
func testFilter(t testing.TB) *Filter {
	f, err := NewFilter(macB, mustAddrPort("10.199.1.2:7000"))
	if err != nil {
		t.Fatal(err)
	}
	return &f
}

// fixIP recomputes the IPv4 header checksum of the header at ip.
func fixIP(ip []byte) {
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], refChecksum(ip[:20]))
}

// fixUDP recomputes the UDP checksum of the datagram at ip using its
// (possibly edited) IPv4 total length.
func fixUDP(ip []byte) {
	binary.BigEndian.PutUint16(ip[26:], refUDPChecksum(ip))
}

// tag inserts an 802.1Q tag with the given TCI after the MAC addresses.
func tag(fr []byte, tci uint16) []byte {
	out := append([]byte(nil), fr[:12]...)
	out = append(out, 0x81, 0x00, byte(tci>>8), byte(tci))
	return append(out, fr[12:]...)
}

func TestParseDrops(t *testing.T) {
	type edit func(fr []byte) []byte
	ipEdit := func(fn func(ip []byte)) edit { // edit the IPv4 header, keep its checksum valid
		return func(fr []byte) []byte {
			fn(fr[offIP:])
			fixIP(fr[offIP:])
			return fr
		}
	}
	setIPLen := func(n int) edit {
		return ipEdit(func(ip []byte) { binary.BigEndian.PutUint16(ip[2:], uint16(n)) })
	}
	truncate := func(n int) edit { return func(fr []byte) []byte { return fr[:n] } }

	cases := []struct {
		name   string
		edit   edit
		filter func(f *Filter)
		want   Reason
	}{
		{"valid", nil, nil, OK},
		{"ethernet padding", func(fr []byte) []byte { return append(fr, make([]byte, 30)...) }, nil, OK},
		{"zero UDP checksum", func(fr []byte) []byte { fr[offUDP+6], fr[offUDP+7] = 0, 0; return fr }, nil, OK},
		{"empty payload", func(fr []byte) []byte {
			fr = fr[:HeaderLen]
			binary.BigEndian.PutUint16(fr[offUDP+4:], 8)
			binary.BigEndian.PutUint16(fr[offIP+2:], 28)
			fixIP(fr[offIP:])
			fixUDP(fr[offIP:])
			return fr
		}, nil, OK},

		// Truncated at and inside each header.
		{"empty frame", truncate(0), nil, Short},
		{"inside ethernet", truncate(13), nil, Short},
		{"after ethernet", truncate(14), nil, Short},
		{"inside IPv4", truncate(33), nil, Short},
		{"after IPv4", truncate(34), nil, Short},
		{"inside UDP", truncate(41), nil, Short},
		{"after UDP", truncate(42), nil, Length}, // headers whole, payload missing
		{"inside payload", truncate(50), nil, Length},
		{"inside VLAN tag", func(fr []byte) []byte { return tag(fr, 5)[:16] }, nil, Short},
		{"inside IPv4 after VLAN tag", func(fr []byte) []byte { return tag(fr, 5)[:30] }, func(f *Filter) { f.SetVLAN(5) }, Short},

		{"more fragments", ipEdit(func(ip []byte) { ip[6] |= 0x20 }), nil, Fragment},
		{"fragment offset", ipEdit(func(ip []byte) { ip[6], ip[7] = 0x00, 0x10 }), nil, Fragment},
		{"last fragment", ipEdit(func(ip []byte) { ip[6], ip[7] = 0x40, 0x01 }), nil, Fragment},

		{"IHL 6", ipEdit(func(ip []byte) { ip[0] = 0x46 }), nil, IPOptions},
		{"IHL 15", ipEdit(func(ip []byte) { ip[0] = 0x4f }), nil, IPOptions},
		{"IHL 4", ipEdit(func(ip []byte) { ip[0] = 0x44 }), nil, Length},

		{"IP checksum", func(fr []byte) []byte { fr[offIP+11] ^= 1; return fr }, nil, IPChecksum},
		{"IP header bit flip", func(fr []byte) []byte { fr[offIP+8] ^= 0x40; return fr }, nil, IPChecksum},
		{"UDP checksum", func(fr []byte) []byte { fr[offUDP+7] ^= 1; return fr }, nil, UDPChecksum},
		{"payload bit flip", func(fr []byte) []byte { fr[HeaderLen+3] ^= 0x10; return fr }, nil, UDPChecksum},

		{"other MAC", func(fr []byte) []byte { fr[5] = 0x0c; return fr }, nil, NotOurs},
		{"broadcast MAC", func(fr []byte) []byte { copy(fr, Broadcast[:]); return fr }, nil, NotOurs},
		{"ARP", func(fr []byte) []byte { fr[12], fr[13] = 0x08, 0x06; return fr }, nil, NotOurs},
		{"IPv6 EtherType", func(fr []byte) []byte { fr[12], fr[13] = 0x86, 0xdd; return fr }, nil, NotOurs},
		{"IP version 6", ipEdit(func(ip []byte) { ip[0] = 0x65 }), nil, NotOurs},
		{"TCP", ipEdit(func(ip []byte) { ip[9] = 6 }), nil, NotOurs},
		{"other IP", ipEdit(func(ip []byte) { ip[19] = 3 }), nil, NotOurs},
		{"other port", func(fr []byte) []byte { fr[offUDP+3]++; return fr }, nil, NotOurs},
		{"stacked VLAN", func(fr []byte) []byte { return tag(tag(fr, 5), 6) }, func(f *Filter) { f.SetVLAN(6) }, NotOurs},
		{"tagged, filter untagged", func(fr []byte) []byte { return tag(fr, 5) }, nil, NotOurs},
		{"untagged, filter tagged", nil, func(f *Filter) { f.SetVLAN(5) }, NotOurs},
		{"tagged, other VLAN", func(fr []byte) []byte { return tag(fr, 6) }, func(f *Filter) { f.SetVLAN(5) }, NotOurs},
		{"tagged, our VLAN", func(fr []byte) []byte { return tag(fr, 0xe005) }, func(f *Filter) { f.SetVLAN(5) }, OK},
		{"priority tag", func(fr []byte) []byte { return tag(fr, 0xa000) }, nil, OK},

		{"IP length below header", setIPLen(19), nil, Length},
		{"IP length below UDP header", setIPLen(27), nil, Length},
		{"IP length past frame", setIPLen(49), nil, Length},
		{"IP length short of UDP length", setIPLen(47), nil, Length},
		{"UDP length short of IP length", func(fr []byte) []byte {
			binary.BigEndian.PutUint16(fr[offUDP+4:], 27)
			fixUDP(fr[offIP:])
			return fr
		}, nil, Length},
		{"UDP length past IP length", func(fr []byte) []byte {
			binary.BigEndian.PutUint16(fr[offUDP+4:], 29)
			return fr
		}, nil, Length},
		{"UDP length below header", func(fr []byte) []byte {
			binary.BigEndian.PutUint16(fr[offUDP+4:], 7)
			return fr
		}, nil, Length},
		{"IP length short of frame is padding", func(fr []byte) []byte {
			// Shrink the datagram by 2 bytes; the frame keeps them as padding.
			binary.BigEndian.PutUint16(fr[offIP+2:], 46)
			binary.BigEndian.PutUint16(fr[offUDP+4:], 26)
			fixIP(fr[offIP:])
			fixUDP(fr[offIP:])
			return fr
		}, nil, OK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fr := goodFrame()
			if c.edit != nil {
				fr = c.edit(fr)
			}
			f := testFilter(t)
			if c.filter != nil {
				c.filter(f)
			}
			var p Packet
			if got := f.Parse(fr, &p); got != c.want {
				t.Fatalf("Parse = %v, want %v (frame % x)", got, c.want, fr)
			}
			// Parse without a destination filter agrees on everything but
			// NotOurs caused by the destination.
			var q Packet
			if got := Parse(fr, &q); c.want != NotOurs && got != c.want {
				t.Errorf("unfiltered Parse = %v, want %v", got, c.want)
			}
			if c.want == OK && !bytes.Equal(p.Payload, testPayload[:len(p.Payload)]) {
				t.Errorf("payload %q", p.Payload)
			}
		})
	}
}

func TestParseFields(t *testing.T) {
	fr := goodFrame()
	var p Packet
	if r := testFilter(t).Parse(fr, &p); r != OK {
		t.Fatal(r)
	}
	want := Packet{
		Src:    mustAddrPort("10.199.1.1:40000"),
		Dst:    mustAddrPort("10.199.1.2:7000"),
		SrcMAC: macA,
		DstMAC: macB,
		TOS:    0xb8,
		TTL:    17,
		DF:     true,
		Proto:  ProtoUDP,
	}
	got := p
	got.Payload, want.Payload = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse filled\n%+v\nwant\n%+v", p, want)
	}
	if !bytes.Equal(p.Payload, testPayload) || &p.Payload[0] != &fr[HeaderLen] {
		t.Errorf("payload %q does not alias the frame", p.Payload)
	}

	var q Packet
	if r := testFilter(t).Parse(tag(fr, 0x2064), &q); r != NotOurs {
		t.Fatalf("tagged frame: %v", r)
	}
	f := testFilter(t)
	if err := f.SetVLAN(100); err != nil {
		t.Fatal(err)
	}
	if r := f.Parse(tag(fr, 0x2064), &q); r != OK || q.VLAN != 100 {
		t.Fatalf("VLAN 100: %v, VLAN %d", r, q.VLAN)
	}
	if err := f.SetVLAN(4095); err != ErrVLAN {
		t.Errorf("SetVLAN(4095) = %v", err)
	}
}

func TestFilterWildcards(t *testing.T) {
	fr := goodFrame()
	var p Packet
	f, _ := NewFilter(macB, mustAddrPort("0.0.0.0:0"))
	if r := f.Parse(fr, &p); r != OK {
		t.Errorf("0.0.0.0:0 filter: %v", r)
	}
	fr[offUDP+3]++ // other port
	fr[offIP+19]++ // other address
	fixIP(fr[offIP:])
	fixUDP(fr[offIP:])
	if r := f.Parse(fr, &p); r != OK {
		t.Errorf("0.0.0.0:0 filter, other address and port: %v", r)
	}
	fr[5]++ // other MAC still matters
	if r := f.Parse(fr, &p); r != NotOurs {
		t.Errorf("0.0.0.0:0 filter, other MAC: %v", r)
	}
	if _, err := NewFilter(macB, mustAddrPort("[::1]:1")); err != ErrNotIPv4 {
		t.Errorf("NewFilter(IPv6) = %v", err)
	}
}

func TestFilterMulticast(t *testing.T) {
	group := netip.MustParseAddr("239.1.2.3")
	gmac, _ := MulticastMAC(group)
	mk := func(dstMAC MAC, dst netip.Addr) []byte {
		fl := testFlow()
		fl.DstMAC = dstMAC
		fl.Dst = netip.AddrPortFrom(dst, 7000)
		tmpl, _ := NewTemplate(fl)
		b := make([]byte, 100)
		n, _ := tmpl.Build(b, testPayload)
		return b[:n]
	}
	f := testFilter(t)
	var p Packet
	if r := f.Parse(mk(gmac, group), &p); r != NotOurs {
		t.Errorf("group not joined: %v", r)
	}
	if err := f.Join(group); err != nil {
		t.Fatal(err)
	}
	if err := f.Join(group); err != nil {
		t.Fatal(err)
	}
	if err := f.Join(netip.MustParseAddr("10.0.0.1")); err != ErrNotMulticast {
		t.Errorf("Join(unicast) = %v", err)
	}
	if r := f.Parse(mk(gmac, group), &p); r != OK || p.Dst.Addr() != group {
		t.Errorf("joined group: %v %v", r, p.Dst)
	}
	if r := f.Parse(mk(macB, group), &p); r != NotOurs {
		t.Errorf("group address to our unicast MAC: %v", r)
	}
	other, _ := MulticastMAC(netip.MustParseAddr("239.1.2.4"))
	if r := f.Parse(mk(other, group), &p); r != NotOurs {
		t.Errorf("group address to another group's MAC: %v", r)
	}
	if r := f.Parse(mk(gmac, netip.MustParseAddr("10.199.1.2")), &p); r != NotOurs {
		t.Errorf("our unicast address to a group MAC: %v", r)
	}
	c := f.Clone()
	if !f.Leave(group) || f.Leave(group) {
		t.Error("Leave did not report membership")
	}
	if r := f.Parse(mk(gmac, group), &p); r != NotOurs {
		t.Errorf("after Leave: %v", r)
	}
	if r := c.Parse(mk(gmac, group), &p); r != OK {
		t.Errorf("clone lost the group when the original left: %v", r)
	}
}

func TestCounters(t *testing.T) {
	var c Counters
	for r := OK; r <= Length+1; r++ {
		for range int(r) + 1 {
			c.Count(r)
		}
	}
	want := Counters{Short: 2, Fragment: 3, IPOptions: 4, IPChecksum: 5, UDPChecksum: 6, NotOurs: 7, Length: 8}
	if got := c; got != want {
		t.Fatalf("counters %+v, want %+v", got, want)
	}
	s := backend.Stats{DropShort: 100}
	c.AddTo(&s)
	if s.DropShort != 102 || s.DropFragment != 3 || s.DropIPOptions != 4 || s.DropIPChecksum != 5 ||
		s.DropUDPChecksum != 6 || s.DropNotOurs != 7 || s.DropLength != 8 {
		t.Errorf("AddTo: %+v", s)
	}
	if s.Dropped() != c.Total()+100 {
		t.Errorf("Dropped %d, Total %d", s.Dropped(), c.Total())
	}
	for r, name := range map[Reason]string{OK: "ok", NotOurs: "not-ours", UDPChecksum: "udp-checksum", 200: "unknown"} {
		if r.String() != name {
			t.Errorf("Reason(%d).String() = %q", r, r.String())
		}
	}
}

func TestNoAllocs(t *testing.T) {
	tmpl, _ := NewTemplate(testFlow())
	buf := make([]byte, 2048)
	payload := make([]byte, 1024)
	f := testFilter(t)
	fr := goodFrame()
	var p Packet
	var c Counters
	dst := mustAddrPort("10.199.1.3:9")
	if n := testing.AllocsPerRun(100, func() {
		_ = tmpl.SetDst(macB, dst)
		_, _ = tmpl.Build(buf, payload)
		_, _ = tmpl.BuildInPlace(buf, 100)
		c.Count(f.Parse(fr, &p))
		c.Count(Parse(fr, &p))
	}); n != 0 {
		t.Errorf("%v allocations per packet", n)
	}
}

func BenchmarkBuild(b *testing.B) {
	for _, size := range []int{64, 1024} {
		tmpl, _ := NewTemplate(testFlow())
		payload := make([]byte, size)
		buf := make([]byte, HeaderLen+size)
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tmpl.Build(buf, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(strconv.Itoa(size)+"/InPlace", func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tmpl.BuildInPlace(buf, size); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(strconv.Itoa(size)+"/SetDst", func(b *testing.B) {
			dsts := [2]netip.AddrPort{mustAddrPort("10.199.1.2:7000"), mustAddrPort("10.199.1.3:7001")}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if err := tmpl.SetDst(macB, dsts[i&1]); err != nil {
					b.Fatal(err)
				}
				if _, err := tmpl.BuildInPlace(buf, size); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	for _, size := range []int{64, 1024} {
		f := testFlow()
		tmpl, _ := NewTemplate(f)
		fr := make([]byte, HeaderLen+size)
		tmpl.Build(fr, make([]byte, size))
		filter, _ := NewFilter(f.DstMAC, f.Dst)
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			var p Packet
			for b.Loop() {
				if r := filter.Parse(fr, &p); r != OK {
					b.Fatal(r)
				}
			}
		})
	}
	b.Run("NotOurs", func(b *testing.B) {
		fr := goodFrame()
		fr[5]++
		filter := testFilter(b)
		b.ReportAllocs()
		var p Packet
		var c Counters
		for b.Loop() {
			c.Count(filter.Parse(fr, &p))
		}
	})
}
