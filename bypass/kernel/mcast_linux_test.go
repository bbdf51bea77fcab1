//go:build linux

package kernel_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/kernel"
	"github.com/lowlat/lowlat/internal/testnet"
)

// mcastPair is a veth pair whose A side has a second address to send
// from, and whose B side routes back to it (so that reverse-path checks
// keep its datagrams).
type mcastPair struct {
	*testnet.Pair
	second netip.Addr
}

func newMcastPair(t *testing.T) mcastPair {
	p := testnet.NewPair(t, testnet.Config{})
	second := netip.MustParseAddr("10.198.7.1")
	p.Exec(t, p.A, "ip", "addr", "add", second.String()+"/32", "dev", p.A.Link)
	p.Exec(t, p.B, "ip", "route", "add", "10.198.7.0/24", "dev", p.B.Link)
	return mcastPair{p, second}
}

// listenIn opens a kernel UDP socket inside ns.
func listenIn(t *testing.T, ns *testnet.NS, laddr netip.AddrPort, o backend.Options) backend.PacketConn {
	t.Helper()
	var c backend.PacketConn
	if err := ns.Do(func() (err error) {
		c, err = kernel.Kernel{}.ListenUDP(laddr, o)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sender opens a socket in A bound to src that sends multicast out of A's
// link.
func (p mcastPair) sender(t *testing.T, src netip.Addr) backend.PacketConn {
	return listenIn(t, p.A, netip.AddrPortFrom(src, 0), backend.Options{Multicast: backend.MulticastOptions{Interface: p.A.Link, TTL: 2}})
}

// drain reads what c receives within d and returns the payloads.
func drain(t *testing.T, c backend.PacketConn, d time.Duration) []backend.Message {
	t.Helper()
	c.SetReadTimeout(d)
	var got []backend.Message
	for {
		msgs := []backend.Message{{Buf: make([]byte, 64)}}
		n, err := c.ReadBatch(msgs)
		if errors.Is(err, backend.ErrTimeout) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, msgs[:n]...)
	}
}

func payloads(ms []backend.Message) string {
	var s []string
	for _, m := range ms {
		s = append(s, string(m.Buf[:m.N]))
	}
	return strings.Join(s, ",")
}

// TestSourceSpecificJoin: a receiver joined for one source gets what that
// source sends to the group and not what another sends; leaving stops
// delivery.
func TestSourceSpecificJoin(t *testing.T) {
	p := newMcastPair(t)
	group := netip.MustParseAddr("232.1.2.3")
	rx := listenIn(t, p.B, netip.AddrPortFrom(netip.IPv4Unspecified(), 7400), backend.Options{Interface: p.B.Link})
	if err := rx.JoinSourceGroup(group, p.A.Addr); err != nil {
		t.Fatal(err)
	}
	allowed, other := p.sender(t, p.A.Addr), p.sender(t, p.second)
	dst := netip.AddrPortFrom(group, 7400)
	for i := range 3 {
		allowed.WriteTo([]byte(fmt.Sprint("yes", i)), dst)
		other.WriteTo([]byte(fmt.Sprint("no", i)), dst)
	}
	got := drain(t, rx, 300*time.Millisecond)
	if payloads(got) != "yes0,yes1,yes2" {
		t.Fatalf("received %q, want only the allowed source's three", payloads(got))
	}
	for _, m := range got {
		if m.Dst != group || m.Addr.Addr() != p.A.Addr {
			t.Fatalf("message %+v: want destination %v from %v", m, group, p.A.Addr)
		}
	}
	if err := rx.LeaveSourceGroup(group, p.A.Addr); err != nil {
		t.Fatal(err)
	}
	allowed.WriteTo([]byte("after"), dst)
	if got := drain(t, rx, 200*time.Millisecond); len(got) != 0 {
		t.Fatalf("received %q after leaving", payloads(got))
	}
	if err := rx.JoinSourceGroup(group, netip.MustParseAddr("239.0.0.1")); err == nil {
		t.Fatal("a multicast source was accepted")
	}
}

// TestSharedGroupPort: two receivers with ReuseAddr on one group's port
// each get every datagram; one that leaves stops getting them, the other
// does not.
func TestSharedGroupPort(t *testing.T) {
	p := newMcastPair(t)
	group := netip.MustParseAddr("239.5.5.5")
	laddr := netip.AddrPortFrom(netip.IPv4Unspecified(), 7500)
	o := backend.Options{Interface: p.B.Link, ReuseAddr: true}
	a, b := listenIn(t, p.B, laddr, o), listenIn(t, p.B, laddr, o)
	for _, c := range []backend.PacketConn{a, b} {
		if err := c.JoinGroup(group); err != nil {
			t.Fatal(err)
		}
	}
	tx := p.sender(t, p.A.Addr)
	dst := netip.AddrPortFrom(group, 7500)
	tx.WriteTo([]byte("one"), dst)
	for name, c := range map[string]backend.PacketConn{"a": a, "b": b} {
		if got := payloads(drain(t, c, 200*time.Millisecond)); got != "one" {
			t.Fatalf("receiver %s got %q, want one", name, got)
		}
	}
	if err := a.LeaveGroup(group); err != nil {
		t.Fatal(err)
	}
	tx.WriteTo([]byte("two"), dst)
	if got := payloads(drain(t, b, 200*time.Millisecond)); got != "two" {
		t.Fatalf("the receiver still joined got %q", got)
	}
	if got := drain(t, a, 100*time.Millisecond); len(got) != 0 {
		t.Fatalf("the receiver that left got %q", payloads(got))
	}
}

// TestReceiveStamps: kernel software stamps on a round trip across veth
// namespaces lie in order and between the send and the reply's read.
func TestReceiveStamps(t *testing.T) {
	p := testnet.NewPair(t, testnet.Config{})
	o := backend.Options{Timestamps: backend.TimestampsSoftware, TxTimestamps: true, ReadTimeout: 2 * time.Second}
	srv := listenIn(t, p.B, netip.AddrPortFrom(p.B.Addr, 7600), o)
	cli := listenIn(t, p.A, netip.AddrPortFrom(p.A.Addr, 0), o)
	// The kernel turns receive stamping on for the host a moment after
	// the first socket asks (a deferred static key): wait for it.
	for deadline := time.Now().Add(5 * time.Second); ; {
		cli.WriteTo([]byte("warm"), srv.LocalAddr())
		in := []backend.Message{{Buf: make([]byte, 64)}}
		if _, err := srv.ReadBatch(in); err != nil {
			t.Fatal(err)
		}
		if !in[0].Stamp.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the kernel never stamped a datagram")
		}
		time.Sleep(time.Millisecond)
	}
	cli.(backend.TxStamper).LastTxStamp() // drain the warm-up's stamps
	var last int64
	for i := range 20 {
		before := time.Now().UnixNano()
		if _, err := cli.WriteTo([]byte(fmt.Sprint(i)), srv.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		in := []backend.Message{{Buf: make([]byte, 64)}}
		if _, err := srv.ReadBatch(in); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.WriteTo(in[0].Buf[:in[0].N], in[0].Addr); err != nil {
			t.Fatal(err)
		}
		out := []backend.Message{{Buf: make([]byte, 64)}}
		if _, err := cli.ReadBatch(out); err != nil {
			t.Fatal(err)
		}
		after := time.Now().UnixNano()
		s1, s2 := in[0].Stamp, out[0].Stamp
		if s1.Clock != backend.ClockKernel || s2.Clock != backend.ClockKernel {
			t.Fatalf("round trip %d: stamps %+v, %+v; want kernel software stamps", i, s1, s2)
		}
		if !(before <= s1.Ns && s1.Ns <= s2.Ns && s2.Ns <= after && last <= s1.Ns) {
			t.Fatalf("round trip %d: stamps %d, %d not in order within [%d, %d] after %d", i, s1.Ns, s2.Ns, before, after, last)
		}
		if in[0].Dst != p.B.Addr || out[0].Dst != p.A.Addr {
			t.Fatalf("destinations %v, %v", in[0].Dst, out[0].Dst)
		}
		// Transmit stamps: the client's request left after the send call
		// and before the server's receive stamp; the server's reply after
		// its receive stamp and before the client's.
		cseq, ctx, cok := cli.(backend.TxStamper).LastTxStamp()
		sseq, stx, sok := srv.(backend.TxStamper).LastTxStamp()
		if !cok || !sok || sseq != uint64(i) {
			t.Fatalf("round trip %d: transmit stamps #%d (%v), #%d (%v)", i, cseq, cok, sseq, sok)
		}
		if !(before <= ctx.Ns && ctx.Ns <= s1.Ns && s1.Ns <= stx.Ns && stx.Ns <= s2.Ns) || ctx.Clock != backend.ClockKernel {
			t.Fatalf("round trip %d: send %d, tx %d, rx %d, tx %d, rx %d: out of order", i, before, ctx.Ns, s1.Ns, stx.Ns, s2.Ns)
		}
		last = s2.Ns
	}
}

// TestReceiveBufferDrops: datagrams the kernel drops for a full receive
// buffer show in Stats, as many as /proc/net/udp says.
func TestReceiveBufferDrops(t *testing.T) {
	rx, err := kernel.Kernel{}.ListenUDP(lo, backend.Options{RecvBuffer: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	tx, err := kernel.Kernel{}.ListenUDP(lo, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	for range 500 {
		tx.WriteTo(make([]byte, 200), rx.LocalAddr())
	}
	want := procDrops(t, rx.LocalAddr().Port())
	if want == 0 {
		t.Fatal("the flood dropped nothing: the test cannot tell")
	}
	if got := rx.Stats().DropRecvBuffer; got != want {
		t.Fatalf("Stats().DropRecvBuffer = %d, /proc/net/udp says %d", got, want)
	}
	if s := rx.Stats(); s.Dropped() < want {
		t.Fatalf("Dropped() = %d leaves out the receive-buffer drops", s.Dropped())
	}
}

// procDrops reads the drops column of /proc/net/udp for a local port.
func procDrops(t *testing.T, port uint16) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(":%04X ", port)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 13 && strings.HasSuffix(f[1]+" ", want) {
			n, err := strconv.ParseUint(f[len(f)-1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("port %d not in /proc/net/udp", port)
	return 0
}

// BenchmarkReceiveStamps is one send and one batch read of a 64-byte
// datagram on loopback, with receive stamps off and on (the kernel's
// software stamp through SO_TIMESTAMPING): the difference is the cost of a
// stamp per message.
//
//	go test -run XXX -bench ReceiveStamps -count 5 ./bypass/kernel/
func BenchmarkReceiveStamps(b *testing.B) {
	for _, ts := range []backend.TimestampMode{backend.TimestampsOff, backend.TimestampsSoftware} {
		name := map[backend.TimestampMode]string{backend.TimestampsOff: "off", backend.TimestampsSoftware: "software"}[ts]
		b.Run(name, func(b *testing.B) {
			o := backend.Options{Wait: backend.WaitSpin, Timestamps: ts, ReadTimeout: time.Second}
			tx, err := kernel.BusyPoll{}.ListenUDP(lo, o)
			if err != nil {
				b.Fatal(err)
			}
			defer tx.Close()
			rx, err := kernel.BusyPoll{}.ListenUDP(lo, o)
			if err != nil {
				b.Fatal(err)
			}
			defer rx.Close()
			msg := make([]byte, 64)
			msgs := []backend.Message{{Buf: make([]byte, 128)}}
			dst := rx.LocalAddr()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tx.WriteTo(msg, dst); err != nil {
					b.Fatal(err)
				}
				if _, err := rx.ReadBatch(msgs); err != nil {
					b.Fatal(err)
				}
			}
			if ts != backend.TimestampsOff && msgs[0].Stamp.IsZero() {
				b.Fatal("no stamp")
			}
		})
	}
}

// TestIPv6Group: a kernel socket joins an IPv6 group (MLD) and receives
// what the peer namespace sends to it; after leaving it does not.
func TestIPv6Group(t *testing.T) {
	p := testnet.NewPair(t, testnet.Config{})
	for _, side := range []struct {
		ns   *testnet.NS
		addr string
	}{{p.A, "fd00:199::1/64"}, {p.B, "fd00:199::2/64"}} {
		p.Exec(t, side.ns, "ip", "-6", "addr", "add", side.addr, "dev", side.ns.Link, "nodad")
	}
	group := netip.MustParseAddr("ff15::7:7")
	rx := listenIn(t, p.B, netip.MustParseAddrPort("[::]:7700"), backend.Options{Interface: p.B.Link})
	if err := rx.JoinGroup(group); err != nil {
		t.Fatal(err)
	}
	tx := listenIn(t, p.A, netip.MustParseAddrPort("[fd00:199::1]:0"), backend.Options{Multicast: backend.MulticastOptions{Interface: p.A.Link}})
	dst := netip.AddrPortFrom(group, 7700)
	var got []backend.Message
	for try := 0; try < 20 && len(got) == 0; try++ { // MLD and neighbour discovery settle first
		tx.WriteTo([]byte("v6"), dst)
		got = drain(t, rx, 100*time.Millisecond)
	}
	if len(got) == 0 || string(got[0].Buf[:got[0].N]) != "v6" || got[0].Dst != group {
		t.Fatalf("received %q; want the group's datagram with destination %v", payloads(got), group)
	}
	if err := rx.LeaveGroup(group); err != nil {
		t.Fatal(err)
	}
	drain(t, rx, 50*time.Millisecond)
	tx.WriteTo([]byte("after"), dst)
	if got := drain(t, rx, 200*time.Millisecond); len(got) != 0 {
		t.Fatalf("received %q after leaving", payloads(got))
	}
}
