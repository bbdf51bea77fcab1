package frame

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// seedFrames are valid and invalid frames for the fuzz corpus: a few good
// ones of different shapes and one of each drop.
func seedFrames() [][]byte {
	good := goodFrame()
	var seeds [][]byte
	add := func(fn func(fr []byte) []byte) {
		seeds = append(seeds, fn(bytes.Clone(good)))
	}
	add(func(fr []byte) []byte { return fr })
	add(func(fr []byte) []byte { return append(fr, make([]byte, 20)...) }) // padding
	add(func(fr []byte) []byte { return tag(fr, 0x0064) })
	add(func(fr []byte) []byte { fr[40], fr[41] = 0, 0; return fr })      // no UDP checksum
	add(func(fr []byte) []byte { fr[20] = 0; fixIP(fr[14:]); return fr }) // DF clear
	add(func(fr []byte) []byte { fr[20] |= 0x20; fixIP(fr[14:]); return fr })
	add(func(fr []byte) []byte { fr[14] = 0x46; fixIP(fr[14:]); return fr })
	add(func(fr []byte) []byte { fr[25] ^= 1; return fr })
	add(func(fr []byte) []byte { fr[41] ^= 1; return fr })
	add(func(fr []byte) []byte { fr[23] = 6; fixIP(fr[14:]); return fr })
	add(func(fr []byte) []byte { fr[17] = 30; fixIP(fr[14:]); return fr })
	add(func(fr []byte) []byte { return fr[:30] })
	return seeds
}

// FuzzParse checks that Parse never panics, that a destination filter only
// ever narrows what the unfiltered Parse accepts, and that what Parse
// accepts, a Template made from the parsed fields rebuilds byte for byte
// (the IPv4 datagram, without the VLAN tag and the Ethernet padding).
//
// Four header values a Flow cannot express are normalised in the expected
// bytes before comparing: the IP ID of a DF datagram (Build writes 0), the
// reserved IPv4 flag (Build writes 0), a TTL of 0 (a Flow's 0 means
// DefaultTTL) and a UDP checksum of 0 (Build always computes one). The IPv4 checksum of the expected bytes is then
// recomputed with the reference implementation; a valid header can carry
// either of the two one's-complement zeros there.
func FuzzParse(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, fr []byte) {
		var p Packet
		r := Parse(fr, &p)

		filter := testFilter(t)
		var q Packet
		if rf := filter.Parse(fr, &q); rf != r && rf != NotOurs {
			t.Fatalf("filtered Parse = %v, unfiltered %v", rf, r)
		}
		vf := testFilter(t)
		vf.SetVLAN(100)
		vf.Join(netip.MustParseAddr("239.1.2.3"))
		if rf := vf.Parse(fr, &q); rf != r && rf != NotOurs {
			t.Fatalf("VLAN filter Parse = %v, unfiltered %v", rf, r)
		}
		if r != OK {
			return
		}

		off := EthHeaderLen
		if binary.BigEndian.Uint16(fr[12:]) == etherTypeVLAN {
			off += VLANTagLen
		}
		ipLen := int(binary.BigEndian.Uint16(fr[off+2:]))
		want := append(bytes.Clone(fr[:12]), fr[off-2:off+ipLen]...)
		ip := want[EthHeaderLen:]
		if p.DF {
			ip[4], ip[5] = 0, 0
		}
		ip[6] &^= flagReserved >> 8
		if ip[8] == 0 {
			ip[8] = DefaultTTL // a Flow's TTL 0 means DefaultTTL
		}
		if ip[26] == 0 && ip[27] == 0 {
			fixUDP(ip)
		}
		fixIP(ip)

		tmpl, err := NewTemplate(Flow{
			SrcMAC: p.SrcMAC, DstMAC: p.DstMAC, Src: p.Src, Dst: p.Dst,
			TTL: p.TTL, TOS: p.TOS, DontFragment: p.DF, ID: p.ID,
		})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, HeaderLen+len(p.Payload))
		n, err := tmpl.Build(got, p.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:n], want) {
			t.Fatalf("rebuilt frame differs\n got % x\nwant % x", got[:n], want)
		}
	})
}

// FuzzBuildParse checks that whatever Build writes, Parse accepts with the
// endpoint's filter and returns the same payload, addresses and fields, and
// that BuildInPlace writes the same frame.
func FuzzBuildParse(f *testing.F) {
	f.Add([]byte{2, 0, 0, 0, 0, 1}, []byte{2, 0, 0, 0, 0, 2}, uint32(0x0ac70101), uint32(0x0ac70102),
		uint16(40000), uint16(7000), uint8(64), uint8(0), true, uint16(0), []byte("hello"))
	f.Add([]byte{0, 0, 0, 0, 0, 0}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint32(0), uint32(0xffffffff),
		uint16(0), uint16(0), uint8(1), uint8(0xff), false, uint16(0xffff), []byte{})
	f.Add([]byte{2, 0, 0, 0, 0, 1}, []byte{}, uint32(0xc0a80001), uint32(0xefff0001),
		uint16(1), uint16(65535), uint8(255), uint8(0xb8), false, uint16(7), make([]byte, 1473))
	f.Add([]byte{2, 0, 0, 0, 0, 1}, []byte{2, 0, 0, 0, 0, 2}, uint32(0x0a000001), uint32(0x0a000002),
		uint16(9), uint16(9), uint8(64), uint8(0), false, uint16(0), []byte{0xff, 0xff, 0xff})

	f.Fuzz(func(t *testing.T, smac, dmac []byte, sip, dip uint32, sport, dport uint16,
		ttl, tos uint8, df bool, id uint16, payload []byte) {
		var fl Flow
		copy(fl.SrcMAC[:], smac)
		copy(fl.DstMAC[:], dmac)
		fl.Src = netip.AddrPortFrom(addr4(sip), sport)
		fl.Dst = netip.AddrPortFrom(addr4(dip), dport)
		fl.TTL, fl.TOS, fl.DontFragment, fl.ID = ttl, tos, df, id
		dst := fl.Dst.Addr()
		if dst.IsMulticast() {
			fl.DstMAC, _ = MulticastMAC(dst)
		}

		tmpl, err := NewTemplate(fl)
		if err != nil {
			t.Fatal(err)
		}
		inPlace := tmpl
		buf := make([]byte, HeaderLen+len(payload))
		n, err := tmpl.Build(buf, payload)
		if len(payload) > MaxPayload {
			if err != ErrTooLong {
				t.Fatalf("Build of %d bytes: %v", len(payload), err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}

		buf2 := make([]byte, HeaderLen+len(payload))
		copy(buf2[HeaderLen:], payload)
		n2, err := inPlace.BuildInPlace(buf2, len(payload))
		if err != nil || !bytes.Equal(buf[:n], buf2[:n2]) {
			t.Fatalf("BuildInPlace differs (%v)\n% x\n% x", err, buf2[:n2], buf[:n])
		}

		filter, err := NewFilter(fl.DstMAC, fl.Dst)
		if err != nil {
			t.Fatal(err)
		}
		if dst.IsMulticast() {
			if err := filter.Join(dst); err != nil {
				t.Fatal(err)
			}
		}
		var p Packet
		if r := filter.Parse(buf[:n], &p); r != OK {
			t.Fatalf("Parse = %v for % x", r, buf[:n])
		}
		wantTTL := ttl
		if wantTTL == 0 {
			wantTTL = DefaultTTL
		}
		wantID := id
		if df {
			wantID = 0
		}
		switch {
		case !bytes.Equal(p.Payload, payload):
			t.Errorf("payload differs")
		case p.Src != fl.Src || p.Dst != fl.Dst:
			t.Errorf("addresses %v -> %v, want %v -> %v", p.Src, p.Dst, fl.Src, fl.Dst)
		case p.SrcMAC != fl.SrcMAC || p.DstMAC != fl.DstMAC:
			t.Errorf("MACs %v -> %v, want %v -> %v", p.SrcMAC, p.DstMAC, fl.SrcMAC, fl.DstMAC)
		case p.TTL != wantTTL || p.TOS != tos || p.DF != df || p.ID != wantID || p.VLAN != 0:
			t.Errorf("fields %+v", p)
		}
	})
}

func addr4(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}
