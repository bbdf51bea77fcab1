package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
)

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

var (
	macA = MAC{0x02, 0x00, 0x00, 0x00, 0x00, 0x0a}
	macB = MAC{0x02, 0x00, 0x00, 0x00, 0x00, 0x0b}
)

func testFlow() Flow {
	return Flow{
		SrcMAC: macA,
		DstMAC: macB,
		Src:    mustAddrPort("10.199.1.1:40000"),
		Dst:    mustAddrPort("10.199.1.2:7000"),
		TTL:    17,
		TOS:    0xb8, // DSCP EF
	}
}

// checkFrame verifies every header field of an untagged frame against f and
// both checksums against the reference implementation.
func checkFrame(t *testing.T, fr []byte, f Flow, id uint16, payload []byte) {
	t.Helper()
	if len(fr) != HeaderLen+len(payload) {
		t.Fatalf("frame length %d, want %d", len(fr), HeaderLen+len(payload))
	}
	ttl := f.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	var flags uint16
	if f.DontFragment {
		flags = flagDF
	}
	src, dst := f.Src.Addr().As4(), f.Dst.Addr().As4()
	want := []struct {
		name      string
		got, want any
	}{
		{"dst MAC", MAC(fr[0:6]), f.DstMAC},
		{"src MAC", MAC(fr[6:12]), f.SrcMAC},
		{"EtherType", binary.BigEndian.Uint16(fr[12:]), uint16(0x0800)},
		{"version/IHL", fr[14], byte(0x45)},
		{"TOS", fr[15], f.TOS},
		{"total length", binary.BigEndian.Uint16(fr[16:]), uint16(28 + len(payload))},
		{"ID", binary.BigEndian.Uint16(fr[18:]), id},
		{"flags", binary.BigEndian.Uint16(fr[20:]), flags},
		{"TTL", fr[22], ttl},
		{"protocol", fr[23], byte(17)},
		{"IP checksum", binary.BigEndian.Uint16(fr[24:]), refIPChecksum(fr[14:34])},
		{"src IP", [4]byte(fr[26:30]), src},
		{"dst IP", [4]byte(fr[30:34]), dst},
		{"src port", binary.BigEndian.Uint16(fr[34:]), f.Src.Port()},
		{"dst port", binary.BigEndian.Uint16(fr[36:]), f.Dst.Port()},
		{"UDP length", binary.BigEndian.Uint16(fr[38:]), uint16(8 + len(payload))},
		{"UDP checksum", binary.BigEndian.Uint16(fr[40:]), refUDPChecksum(fr[14:])},
	}
	for _, w := range want {
		if w.got != w.want {
			t.Errorf("%s = %v, want %v", w.name, w.got, w.want)
		}
	}
	if !bytes.Equal(fr[HeaderLen:], payload) {
		t.Errorf("payload differs")
	}
}

// refIPChecksum computes the checksum of an IPv4 header as if its checksum
// field were zero.
func refIPChecksum(h []byte) uint16 {
	c := bytes.Clone(h)
	c[10], c[11] = 0, 0
	return refChecksum(c)
}

// refUDPChecksum computes the UDP checksum of the IPv4 datagram ip (header
// without options) as if its checksum field were zero, the slow way: build
// the pseudo-header and segment in a new buffer.
func refUDPChecksum(ip []byte) uint16 {
	ipLen := int(binary.BigEndian.Uint16(ip[2:]))
	seg := bytes.Clone(ip[20:ipLen])
	seg[6], seg[7] = 0, 0
	ph := make([]byte, 0, 12+len(seg))
	ph = append(ph, ip[12:20]...)
	ph = append(ph, 0, 17)
	ph = binary.BigEndian.AppendUint16(ph, uint16(len(seg)))
	ph = append(ph, seg...)
	c := refChecksum(ph)
	if c == 0 {
		c = 0xffff
	}
	return c
}

func TestBuild(t *testing.T) {
	for _, size := range []int{0, 1, 2, 3, 18, 64, 1024, 1472, 9000, MaxPayload} {
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i*31 + size)
		}
		for _, df := range []bool{false, true} {
			f := testFlow()
			f.DontFragment = df
			f.ID = 0xfffe
			tmpl, err := NewTemplate(f)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, HeaderLen+size+10)
			for i, wantID := range []uint16{0xfffe, 0xffff, 0} { // wraps
				if df {
					wantID = 0
				}
				n, err := tmpl.Build(buf, payload)
				if err != nil {
					t.Fatal(err)
				}
				t.Run(fmt.Sprintf("payload=%d/df=%v/frame=%d", size, df, i), func(t *testing.T) {
					checkFrame(t, buf[:n], f, wantID, payload)
				})
			}
		}
	}
}

func TestBuildDefaults(t *testing.T) {
	tmpl, err := NewTemplate(Flow{
		Src: netip.AddrPortFrom(netip.MustParseAddr("::ffff:10.0.0.1"), 1),
		Dst: mustAddrPort("10.0.0.2:2"),
	})
	if err != nil {
		t.Fatal(err)
	}
	fr := make([]byte, HeaderLen)
	if _, err := tmpl.Build(fr, nil); err != nil {
		t.Fatal(err)
	}
	if fr[22] != DefaultTTL {
		t.Errorf("TTL %d, want DefaultTTL", fr[22])
	}
	if got := netip.AddrFrom4([4]byte(fr[26:30])); got != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("IPv4-mapped source written as %v", got)
	}
	got := tmpl.Flow()
	if got.TTL != DefaultTTL || got.Src != mustAddrPort("10.0.0.1:1") || got.Dst != mustAddrPort("10.0.0.2:2") || got.ID != 1 {
		t.Errorf("Flow() = %+v", got)
	}
}

func TestBuildInPlace(t *testing.T) {
	payload := []byte("in place payload, odd length")
	t1, _ := NewTemplate(testFlow())
	t2 := t1 // a Template copies as a value
	want := make([]byte, 100)
	n1, err := t1.Build(want, payload)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 100)
	copy(got[HeaderLen:], payload)
	n2, err := t2.BuildInPlace(got, len(payload))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:n2], want[:n1]) {
		t.Errorf("BuildInPlace\n% x\nBuild\n% x", got[:n2], want[:n1])
	}
}

func TestSetDst(t *testing.T) {
	f := testFlow()
	tmpl, _ := NewTemplate(f)
	g := f
	g.DstMAC = MAC{0x02, 1, 2, 3, 4, 5}
	g.Dst = mustAddrPort("192.0.2.200:65535")
	if err := tmpl.SetDst(g.DstMAC, g.Dst); err != nil {
		t.Fatal(err)
	}
	fresh, _ := NewTemplate(g)
	if fresh != tmpl {
		t.Errorf("SetDst template differs from a new one:\n%+v\n%+v", tmpl, fresh)
	}
	buf := make([]byte, 200)
	n, _ := tmpl.Build(buf, []byte("to another client"))
	checkFrame(t, buf[:n], g, 0, []byte("to another client"))
	if err := tmpl.SetDst(macB, mustAddrPort("[2001:db8::1]:1")); !errors.Is(err, ErrNotIPv4) {
		t.Errorf("SetDst(IPv6) = %v, want ErrNotIPv4", err)
	}
}

func TestBuildErrors(t *testing.T) {
	tmpl, _ := NewTemplate(testFlow())
	if _, err := tmpl.Build(make([]byte, HeaderLen+3), make([]byte, 4)); err != ErrShortBuffer {
		t.Errorf("Build into a short buffer: %v", err)
	}
	if _, err := tmpl.Build(make([]byte, 70000), make([]byte, MaxPayload+1)); err != ErrTooLong {
		t.Errorf("Build of MaxPayload+1: %v", err)
	}
	if _, err := tmpl.BuildInPlace(make([]byte, 50), 9); err != ErrShortBuffer {
		t.Errorf("BuildInPlace into a short buffer: %v", err)
	}
	if _, err := tmpl.BuildInPlace(make([]byte, 50), -1); err != ErrTooLong {
		t.Errorf("BuildInPlace(-1): %v", err)
	}
	f := testFlow()
	f.Src = mustAddrPort("[2001:db8::1]:1")
	if _, err := NewTemplate(f); err != ErrNotIPv4 {
		t.Errorf("NewTemplate(IPv6 source) = %v", err)
	}
	f = testFlow()
	f.Dst = netip.AddrPort{}
	if _, err := NewTemplate(f); err != ErrNotIPv4 {
		t.Errorf("NewTemplate(zero destination) = %v", err)
	}
}

func TestMAC(t *testing.T) {
	m := MAC{0x02, 0xab, 0x00, 0xff, 0x10, 0x9c}
	if got := m.String(); got != "02:ab:00:ff:10:9c" {
		t.Errorf("String() = %q", got)
	}
	hw, _ := net.ParseMAC("02:ab:00:ff:10:9c")
	if got, ok := MACFrom(hw); !ok || got != m {
		t.Errorf("MACFrom(%v) = %v, %v", hw, got, ok)
	}
	if !bytes.Equal(m.HardwareAddr(), hw) {
		t.Errorf("HardwareAddr() = %v", m.HardwareAddr())
	}
	if _, ok := MACFrom(hw[:5]); ok {
		t.Error("MACFrom accepted 5 bytes")
	}
	for _, c := range []struct {
		group string
		want  string
		ok    bool
	}{
		{"224.0.0.1", "01:00:5e:00:00:01", true},
		{"239.255.255.250", "01:00:5e:7f:ff:fa", true},
		{"224.128.1.2", "01:00:5e:00:01:02", true}, // bit 24 is dropped
		{"232.129.2.3", "01:00:5e:01:02:03", true},
		{"::ffff:239.1.1.1", "01:00:5e:01:01:01", true},
		{"10.0.0.1", "00:00:00:00:00:00", false},
		{"255.255.255.255", "00:00:00:00:00:00", false},
		{"ff02::1", "00:00:00:00:00:00", false},
	} {
		got, ok := MulticastMAC(netip.MustParseAddr(c.group))
		if got.String() != c.want || ok != c.ok {
			t.Errorf("MulticastMAC(%s) = %v, %v; want %s, %v", c.group, got, ok, c.want, c.ok)
		}
	}
}
