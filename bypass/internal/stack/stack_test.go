//go:build linux

package stack

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/frame"
)

var (
	ourMAC  = frame.MAC{0x02, 0, 0, 0, 0, 1}
	peerMAC = frame.MAC{0x02, 0, 0, 0, 0, 2}
	ourIP   = netip.MustParseAddr("10.9.0.1")
	peerIP  = netip.MustParseAddr("10.9.0.2")
)

type rig struct {
	st       *Stack
	d        *MemDriver
	ports    *MemPorts
	resolves int
	mu       sync.Mutex
	now      time.Time
	undone   bool
}

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{d: NewMemDriver(2048, 256, 64), ports: &MemPorts{}, now: time.Unix(1000, 0)}
	cfg := Config{
		Backend: "mem", Driver: r.d, BufSize: 2048, Ports: r.ports,
		Iface: Interface{Name: "mem0", Index: 7, MAC: ourMAC, MTU: 1500, Src: ourIP},
		Info:  backend.Info{Backend: "mem", Interface: "mem0"},
		Resolve: func(dst netip.Addr) (frame.MAC, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.resolves++
			if dst == peerIP {
				return peerMAC, nil
			}
			if m, ok := frame.MulticastMAC(dst); ok {
				return m, nil
			}
			return frame.MAC{}, fmt.Errorf("resolve %v: no route", dst)
		},
		Now: func() time.Time { r.mu.Lock(); defer r.mu.Unlock(); return r.now },
	}
	cfg.Undo.AddFunc(func() { r.undone = true })
	st, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.st = st
	return r
}

// listen opens a socket and drops the stack reference the rig holds once
// the first socket is open, so that the last Close releases the stack.
func (r *rig) listen(t testing.TB, port uint16, o backend.Options) *Socket {
	t.Helper()
	s, err := r.st.Listen(netip.AddrPortFrom(netip.IPv4Unspecified(), port), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (r *rig) advance(d time.Duration) {
	r.mu.Lock()
	r.now = r.now.Add(d)
	r.mu.Unlock()
}

// udp builds a frame from the peer to dst.
func udp(t testing.TB, dst netip.AddrPort, payload []byte) []byte {
	t.Helper()
	dmac := ourMAC
	if m, ok := frame.MulticastMAC(dst.Addr()); ok {
		dmac = m
	}
	tm, err := frame.NewTemplate(frame.Flow{SrcMAC: peerMAC, DstMAC: dmac,
		Src: netip.AddrPortFrom(peerIP, 9999), Dst: dst, DontFragment: true})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, frame.HeaderLen+len(payload))
	n, err := tm.Build(b, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

func read(t testing.TB, s *Socket) string {
	t.Helper()
	s.SetReadTimeout(time.Second)
	buf := make([]byte, 2048)
	n, from, err := s.ReadFrom(buf)
	if err != nil {
		t.Fatalf("read on %v: %v", s.LocalAddr(), err)
	}
	if from != netip.AddrPortFrom(peerIP, 9999) {
		t.Fatalf("from %v", from)
	}
	return string(buf[:n])
}

func TestManySocketsDemultiplexed(t *testing.T) {
	r := newRig(t)
	var socks []*Socket
	for i := range 8 {
		socks = append(socks, r.listen(t, uint16(5000+i), backend.Options{}))
	}
	r.st.Release()
	if got := r.st.Sockets(); got != 8 {
		t.Fatalf("Sockets = %d, want 8", got)
	}
	// Every frame lands before any read: the first read's poll must queue
	// the others' datagrams for them.
	for i := range 8 {
		r.d.Deliver(udp(t, netip.AddrPortFrom(ourIP, uint16(5000+i)), []byte(fmt.Sprint("to", i))))
	}
	for i := 7; i >= 0; i-- {
		if got, want := read(t, socks[i]), fmt.Sprint("to", i); got != want {
			t.Fatalf("socket %d read %q, want %q", i, got, want)
		}
	}
	if r.d.Pending() != 0 || r.d.BadRelease != 0 {
		t.Fatalf("pending %d, bad releases %d", r.d.Pending(), r.d.BadRelease)
	}
	for i, s := range socks {
		if st := s.Stats(); st.RxPackets != 1 || st.Dropped() != 0 {
			t.Fatalf("socket %d stats %+v", i, st)
		}
	}
}

func TestExactBeforeWildcardAndStrangersDropped(t *testing.T) {
	r := newRig(t)
	wild := r.listen(t, 6000, backend.Options{})
	r.st.Release()
	other := netip.MustParseAddr("10.9.0.3")
	// A second address on the same port: the kernel reservation would
	// refuse it against the wildcard, so the in-memory ports must too.
	if _, err := r.st.Listen(netip.AddrPortFrom(other, 6000), backend.Options{}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second bind of port 6000: %v, want EADDRINUSE", err)
	}
	exact, err := r.st.Listen(netip.AddrPortFrom(other, 6001), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer exact.Close()
	r.d.Deliver(udp(t, netip.AddrPortFrom(other, 6001), []byte("exact")))
	r.d.Deliver(udp(t, netip.AddrPortFrom(ourIP, 6000), []byte("wild")))
	r.d.Deliver(udp(t, netip.AddrPortFrom(ourIP, 6001), []byte("nobody"))) // 6001 is bound to another address
	r.d.Deliver(udp(t, netip.AddrPortFrom(ourIP, 7777), []byte("nobody")))
	if got := read(t, wild); got != "wild" {
		t.Fatalf("wildcard read %q", got)
	}
	if got := read(t, exact); got != "exact" {
		t.Fatalf("exact read %q", got)
	}
	if n := wild.Stats().DropNotOurs; n != 2 {
		t.Fatalf("DropNotOurs = %d, want 2", n)
	}
}

func TestCloseGivesPortAndFlowBack(t *testing.T) {
	r := newRig(t)
	a := r.listen(t, 0, backend.Options{})
	b := r.listen(t, 0, backend.Options{})
	r.st.Release()
	if a.LocalAddr().Port() == 0 || a.LocalAddr().Port() == b.LocalAddr().Port() {
		t.Fatalf("ephemeral ports %v and %v", a.LocalAddr(), b.LocalAddr())
	}
	pa := a.LocalAddr()
	if !r.d.Steered(pa) || !r.ports.Taken(pa.Port()) {
		t.Fatal("an open socket's flow is not steered or its port not reserved")
	}
	r.d.Deliver(udp(t, netip.AddrPortFrom(ourIP, pa.Port()), []byte("late")))
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if r.d.Steered(pa) || r.ports.Taken(pa.Port()) {
		t.Fatal("a closed socket's flow is still steered or its port still reserved")
	}
	if _, _, err := a.ReadFrom(make([]byte, 10)); !errors.Is(err, backend.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	// The datagram for the closed port is dropped by the next poll.
	b.SetReadTimeout(20 * time.Millisecond)
	if _, _, err := b.ReadFrom(make([]byte, 10)); !errors.Is(err, backend.ErrTimeout) {
		t.Fatalf("read: %v, want timeout", err)
	}
	if b.Stats().DropNotOurs != 1 {
		t.Fatalf("datagram for a closed port: stats %+v", b.Stats())
	}
	if r.d.Closed() {
		t.Fatal("the stack closed with a socket still open")
	}
	b.Close()
	if !r.d.Closed() || !r.undone {
		t.Fatal("the last Close did not close the driver and run the stack's undo")
	}
	if err := b.Close(); !errors.Is(err, backend.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

func TestQueueFullDropsAndCounts(t *testing.T) {
	r := newRig(t)
	r.st.qrecs = 4 // before the sockets are made
	a := r.listen(t, 5000, backend.Options{})
	b := r.listen(t, 5001, backend.Options{})
	r.st.Release()
	for i := range 10 {
		r.d.Deliver(udp(t, netip.AddrPortFrom(ourIP, 5001), []byte{byte(i)}))
	}
	r.d.Deliver(udp(t, netip.AddrPortFrom(ourIP, 5000), []byte("a")))
	if got := read(t, a); got != "a" {
		t.Fatalf("a read %q", got)
	}
	if d := b.Stats().DropQueueFull; d != 6 {
		t.Fatalf("DropQueueFull = %d, want 6", d)
	}
	msgs := make([]backend.Message, 8)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 16)
	}
	n, err := b.TryReadBatch(msgs)
	if err != nil || n != 4 {
		t.Fatalf("TryReadBatch = %d, %v; want the 4 queued", n, err)
	}
	for i := range n {
		if msgs[i].N != 1 || msgs[i].Buf[0] != byte(i) {
			t.Fatalf("message %d: % x, want %d in order", i, msgs[i].Buf[:msgs[i].N], i)
		}
	}
	if n, err := b.TryReadBatch(msgs); n != 0 || err != nil {
		t.Fatalf("TryReadBatch on nothing = %d, %v", n, err)
	}
}

func TestMulticastJoinLeave(t *testing.T) {
	r := newRig(t)
	s := r.listen(t, 5000, backend.Options{})
	r.st.Release()
	g := netip.MustParseAddr("239.1.2.3")
	to := netip.AddrPortFrom(g, 5000)
	if err := s.JoinGroup(g); err != nil {
		t.Fatal(err)
	}
	if !r.d.Steered(to) || r.ports.Members(g) != 1 {
		t.Fatal("join did not steer the group or join it in the kernel")
	}
	r.d.Deliver(udp(t, to, []byte("md")))
	if got := read(t, s); got != "md" {
		t.Fatalf("read %q", got)
	}
	if err := s.LeaveGroup(g); err != nil {
		t.Fatal(err)
	}
	if r.d.Steered(to) || r.ports.Members(g) != 0 {
		t.Fatal("leave did not unsteer the group or leave it in the kernel")
	}
	r.d.Deliver(udp(t, to, []byte("md")))
	s.SetReadTimeout(10 * time.Millisecond)
	if _, _, err := s.ReadFrom(make([]byte, 10)); !errors.Is(err, backend.ErrTimeout) {
		t.Fatalf("read after leave: %v", err)
	}
	if s.Stats().DropNotOurs != 1 {
		t.Fatalf("stats %+v", s.Stats())
	}
	if err := s.JoinGroup(netip.MustParseAddr("10.0.0.1")); err == nil {
		t.Fatal("joined a unicast address")
	}
}

func parseSent(t *testing.T, f []byte) frame.Packet {
	t.Helper()
	var p frame.Packet
	if why := frame.Parse(f, &p); why != frame.OK {
		t.Fatalf("sent frame does not parse: %v", why)
	}
	return p
}

func TestWriteBuildsFramesAndCachesNextHop(t *testing.T) {
	r := newRig(t)
	s := r.listen(t, 5000, backend.Options{})
	r.st.Release()
	to := netip.AddrPortFrom(peerIP, 7000)
	for range 3 {
		if n, err := s.WriteTo([]byte("hello"), to); err != nil || n != 5 {
			t.Fatalf("WriteTo = %d, %v", n, err)
		}
	}
	sent := r.d.Sent()
	if len(sent) != 3 {
		t.Fatalf("%d frames sent", len(sent))
	}
	p := parseSent(t, sent[0])
	if p.Src != netip.AddrPortFrom(ourIP, 5000) || p.Dst != to || p.DstMAC != peerMAC || p.SrcMAC != ourMAC || string(p.Payload) != "hello" {
		t.Fatalf("frame %+v", p)
	}
	if r.resolves != 1 {
		t.Fatalf("%d resolutions for one destination", r.resolves)
	}
	// The entry expires: the next send asks the kernel again.
	r.advance(neighTTL + time.Second)
	s.WriteTo([]byte("x"), to)
	if r.resolves != 2 {
		t.Fatalf("%d resolutions after expiry, want 2", r.resolves)
	}
	// An unreachable destination fails once per failTTL, not every send.
	bad := netip.AddrPortFrom(netip.MustParseAddr("10.9.9.9"), 1)
	for range 3 {
		if _, err := s.WriteTo([]byte("x"), bad); err == nil {
			t.Fatal("write to an unresolvable destination succeeded")
		}
	}
	if r.resolves != 3 {
		t.Fatalf("%d resolutions, want one for the unreachable peer", r.resolves)
	}
	r.advance(failTTL + time.Millisecond)
	s.WriteTo([]byte("x"), bad)
	if r.resolves != 4 {
		t.Fatalf("%d resolutions, want a retry after failTTL", r.resolves)
	}
	if _, err := s.WriteTo(make([]byte, 1473), to); !errors.Is(err, backend.ErrMessageTooLong) {
		t.Fatalf("oversized write: %v", err)
	}
	if _, err := s.WriteTo([]byte("x"), netip.MustParseAddrPort("[::1]:5")); !errors.Is(err, backend.ErrNotSupported) {
		t.Fatalf("IPv6 write: %v", err)
	}
}

func TestRefusedKickDoesNotWedge(t *testing.T) {
	r := newRig(t)
	s := r.listen(t, 5000, backend.Options{})
	r.st.Release()
	to := netip.AddrPortFrom(peerIP, 7000)
	r.d.KickLimit = 1
	msgs := []backend.Message{{Buf: []byte("a"), Addr: to}, {Buf: []byte("b"), Addr: to}, {Buf: []byte("c"), Addr: to}}
	n, err := s.WriteBatch(msgs)
	if n != 1 || !errors.Is(err, backend.ErrRingFull) {
		t.Fatalf("WriteBatch = %d, %v; want 1 and ErrRingFull", n, err)
	}
	if r.d.Free() != 64 {
		t.Fatalf("%d buffers free after the refusal, want all 64 back", r.d.Free())
	}
	r.d.KickLimit = 0
	for i := range 200 { // far more than the buffers
		if _, err := s.WriteTo([]byte("x"), to); err != nil {
			t.Fatalf("write %d after a refusal: %v", i, err)
		}
	}
}

func TestBuffersInFlightWaitForCompletion(t *testing.T) {
	r := newRig(t)
	s := r.listen(t, 5000, backend.Options{})
	r.st.Release()
	to := netip.AddrPortFrom(peerIP, 7000)
	r.d.ManualComplete = true
	for i := range 64 {
		if _, err := s.WriteTo([]byte("x"), to); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if _, err := s.WriteTo([]byte("x"), to); !errors.Is(err, backend.ErrRingFull) {
		t.Fatalf("write with every buffer in flight: %v", err)
	}
	if s.Stats().TxRingFull == 0 {
		t.Fatal("TxRingFull not counted")
	}
	r.d.Complete(1)
	if _, err := s.WriteTo([]byte("x"), to); err != nil {
		t.Fatalf("write after a completion: %v", err)
	}
	if got := s.Stats().TxPackets; got != 65 {
		t.Fatalf("TxPackets = %d, want 65", got)
	}
}

func TestCloseWakesSpinningReader(t *testing.T) {
	r := newRig(t)
	s := r.listen(t, 5000, backend.Options{})
	r.st.Release()
	done := make(chan error, 1)
	go func() {
		_, _, err := s.ReadFrom(make([]byte, 10))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	s.Close()
	select {
	case err := <-done:
		if !errors.Is(err, backend.ErrClosed) {
			t.Fatalf("reader returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the reader")
	}
}

func TestBlockModeWithoutWaitFDsSpins(t *testing.T) {
	r := newRig(t)
	s := r.listen(t, 5000, backend.Options{Wait: backend.WaitBlock})
	r.st.Release()
	if s.Info().Wait != backend.WaitSpin || len(s.Info().Notes) == 0 {
		t.Fatalf("info %+v: want spin and a note saying why", s.Info())
	}
}

func TestMalformedFramesCounted(t *testing.T) {
	r := newRig(t)
	s := r.listen(t, 5000, backend.Options{})
	r.st.Release()
	good := udp(t, netip.AddrPortFrom(ourIP, 5000), []byte("ok"))
	short := good[:20]
	badSum := append([]byte(nil), good...)
	badSum[len(badSum)-1] ^= 0xff
	frag := append([]byte(nil), good...)
	frag[20] |= 0x20 // MF
	for _, f := range [][]byte{short, badSum, frag, {}, good} {
		r.d.Deliver(f)
	}
	if got := read(t, s); got != "ok" {
		t.Fatalf("read %q", got)
	}
	st := s.Stats()
	if st.DropShort != 2 || st.DropUDPChecksum != 1 || st.DropIPChecksum+st.DropFragment != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRegistrySharesAndReleases(t *testing.T) {
	var reg Registry
	opens := 0
	d := NewMemDriver(2048, 8, 8)
	open := func() (*Stack, error) {
		opens++
		return New(Config{Backend: "mem", Driver: d, BufSize: 2048, Ports: &MemPorts{},
			Iface:   Interface{Name: "mem0", MAC: ourMAC, MTU: 1500, Src: ourIP},
			Resolve: func(netip.Addr) (frame.MAC, error) { return peerMAC, nil }})
	}
	a, existing, err := reg.Acquire("k", open)
	if err != nil || existing {
		t.Fatal(err, existing)
	}
	b, existing, err := reg.Acquire("k", open)
	if err != nil || !existing || a != b || opens != 1 {
		t.Fatalf("second Acquire: %v %v same=%v opens=%d", err, existing, a == b, opens)
	}
	s, err := a.Listen(netip.MustParseAddrPort("0.0.0.0:1"), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a.Release()
	b.Release()
	if d.Closed() || reg.Len() != 1 {
		t.Fatal("the stack closed under an open socket")
	}
	s.Close()
	if !d.Closed() || reg.Len() != 0 {
		t.Fatal("the last release did not close and unregister the stack")
	}
	if _, err := a.Listen(netip.MustParseAddrPort("0.0.0.0:2"), backend.Options{}); !errors.Is(err, backend.ErrClosed) {
		t.Fatalf("Listen on a closed stack: %v", err)
	}
}

func TestNoAllocsPerMessage(t *testing.T) {
	r := newRig(t)
	s := r.listen(t, 5000, backend.Options{})
	other := r.listen(t, 5001, backend.Options{})
	r.st.Release()
	in := udp(t, netip.AddrPortFrom(ourIP, 5000), []byte("ping"))
	toOther := udp(t, netip.AddrPortFrom(ourIP, 5001), []byte("pong"))
	to := netip.AddrPortFrom(peerIP, 7000)
	buf := make([]byte, 64)
	msgs := []backend.Message{{Buf: make([]byte, 64)}}
	s.WriteTo(buf[:4], to) // resolve once
	r.d.Sent()
	r.d.OnSend = func([]byte) {}
	allocs := testing.AllocsPerRun(1000, func() {
		r.d.Deliver(toOther)
		r.d.Deliver(in)
		if _, _, err := s.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := other.TryReadBatch(msgs); err != nil {
			t.Fatal(err)
		}
		if _, err := s.WriteTo(buf[:4], to); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per message", allocs)
	}
}

// udpFrom builds a frame from src to dst.
func udpFrom(t testing.TB, src netip.AddrPort, dst netip.AddrPort, payload []byte) []byte {
	t.Helper()
	dmac := ourMAC
	if m, ok := frame.MulticastMAC(dst.Addr()); ok {
		dmac = m
	}
	tm, err := frame.NewTemplate(frame.Flow{SrcMAC: peerMAC, DstMAC: dmac, Src: src, Dst: dst, DontFragment: true})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, frame.HeaderLen+len(payload))
	n, _ := tm.Build(b, payload)
	return b[:n]
}

// TestMessageMetadata: a read says where each datagram was sent, whether
// it was cut, and, with stamps asked for, when its batch was polled;
// queued datagrams keep all of it.
func TestMessageMetadata(t *testing.T) {
	r := newRig(t)
	s := r.listen(t, 5000, backend.Options{Timestamps: backend.TimestampsSoftware, TxTimestamps: true})
	other := r.listen(t, 5001, backend.Options{})
	r.st.Release()
	g := netip.MustParseAddr("239.1.1.1")
	if err := s.JoinGroup(g); err != nil {
		t.Fatal(err)
	}
	before := time.Now().UnixNano()
	r.d.Deliver(udp(t, netip.AddrPortFrom(ourIP, 5001), []byte("other")))
	r.d.Deliver(udp(t, netip.AddrPortFrom(ourIP, 5000), []byte("0123456789")))
	r.d.Deliver(udp(t, netip.AddrPortFrom(g, 5000), []byte("group")))
	// other's read polls all three: s's two wait in its queue.
	if got := read(t, other); got != "other" {
		t.Fatal(got)
	}
	msgs := []backend.Message{{Buf: make([]byte, 4)}, {Buf: make([]byte, 64)}}
	n, err := s.TryReadBatch(msgs)
	if err != nil || n != 2 {
		t.Fatalf("TryReadBatch = %d, %v", n, err)
	}
	after := time.Now().UnixNano()
	if m := msgs[0]; m.Dst != ourIP || !m.Trunc || m.N != 4 {
		t.Fatalf("unicast message %+v: want destination %v, cut to 4", m, ourIP)
	}
	if m := msgs[1]; m.Dst != g || m.Trunc || string(m.Buf[:m.N]) != "group" {
		t.Fatalf("group message %+v", m)
	}
	for _, m := range msgs {
		if m.Stamp.Clock != backend.ClockUser || m.Stamp.Ns < before || m.Stamp.Ns > after {
			t.Fatalf("stamp %+v not a user-space stamp within [%d, %d]", m.Stamp, before, after)
		}
	}
	// A socket that did not ask gets no stamp.
	r.d.Deliver(udp(t, netip.AddrPortFrom(ourIP, 5001), []byte("x")))
	m := []backend.Message{{Buf: make([]byte, 8)}}
	if _, err := other.ReadBatch(m); err != nil || !m[0].Stamp.IsZero() {
		t.Fatalf("unstamped socket: %+v, %v", m[0], err)
	}
	// Transmit stamps: numbered from 0, taken as the frame goes out.
	if _, _, ok := s.LastTxStamp(); ok {
		t.Fatal("a transmit stamp before any send")
	}
	for range 3 {
		s.WriteTo([]byte("x"), netip.AddrPortFrom(peerIP, 1))
	}
	seq, ts, ok := s.LastTxStamp()
	if !ok || seq != 2 || ts.Clock != backend.ClockUser || ts.Ns < after {
		t.Fatalf("LastTxStamp = %d, %+v, %v", seq, ts, ok)
	}
	if _, err := r.st.Listen(netip.MustParseAddrPort("0.0.0.0:5002"), backend.Options{ReuseAddr: true}); !errors.Is(err, backend.ErrNotSupported) {
		t.Fatalf("ReuseAddr on a stack: %v, want ErrNotSupported", err)
	}
}

// TestSourceSpecificOnStack: a socket joined for one source gets only
// what that source sends to the group; any-source and source-specific
// joins of one group do not mix; leaving the last source stops delivery.
func TestSourceSpecificOnStack(t *testing.T) {
	r := newRig(t)
	s := r.listen(t, 5000, backend.Options{})
	r.st.Release()
	g := netip.MustParseAddr("232.7.7.7")
	good, bad := netip.MustParseAddr("10.9.0.50"), netip.MustParseAddr("10.9.0.51")
	if err := s.JoinSourceGroup(g, good); err != nil {
		t.Fatal(err)
	}
	if err := s.JoinGroup(g); err == nil {
		t.Fatal("an any-source join of a group joined for a source was accepted")
	}
	dst := netip.AddrPortFrom(g, 5000)
	r.d.Deliver(udpFrom(t, netip.AddrPortFrom(bad, 1), dst, []byte("bad")))
	r.d.Deliver(udpFrom(t, netip.AddrPortFrom(good, 1), dst, []byte("good")))
	buf := make([]byte, 16)
	s.SetReadTimeout(time.Second)
	n, from, err := s.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "good" || from.Addr() != good {
		t.Fatalf("read %q from %v, %v", buf[:n], from, err)
	}
	if s.Stats().DropNotOurs != 1 {
		t.Fatalf("the other source's datagram was not dropped: %+v", s.Stats())
	}
	if err := s.LeaveSourceGroup(g, good); err != nil {
		t.Fatal(err)
	}
	if r.d.Steered(dst) || r.ports.Members(g) != 0 {
		t.Fatal("leaving the last source left the group steered or joined")
	}
	if err := s.LeaveSourceGroup(g, good); err == nil {
		t.Fatal("a second leave succeeded")
	}
}

// BenchmarkStackReceive is one datagram delivered to the in-memory driver
// and read by its socket, with receive stamps off and on (one clock read
// per polled batch, here a batch of one).
func BenchmarkStackReceive(b *testing.B) {
	for _, ts := range []backend.TimestampMode{backend.TimestampsOff, backend.TimestampsSoftware} {
		b.Run(map[backend.TimestampMode]string{backend.TimestampsOff: "off", backend.TimestampsSoftware: "stamped"}[ts], func(b *testing.B) {
			r := newRig(b)
			s := r.listen(b, 5000, backend.Options{Timestamps: ts})
			r.st.Release()
			in := udp(b, netip.AddrPortFrom(ourIP, 5000), make([]byte, 64))
			msgs := []backend.Message{{Buf: make([]byte, 128)}}
			b.ReportAllocs()
			for b.Loop() {
				r.d.Deliver(in)
				if n, err := s.ReadBatch(msgs); n != 1 || err != nil {
					b.Fatal(n, err)
				}
			}
		})
	}
}

// TestNICStamps: a device's own receive stamp wins over the stack's clock
// read, for the datagram read at once and for one queued for another
// socket.
func TestNICStamps(t *testing.T) {
	r := newRig(t)
	s := r.listen(t, 5000, backend.Options{Timestamps: backend.TimestampsHardware})
	other := r.listen(t, 5001, backend.Options{Timestamps: backend.TimestampsHardware})
	r.st.Release()
	r.d.DeliverStamped(udp(t, netip.AddrPortFrom(ourIP, 5001), []byte("q")), 111)
	r.d.DeliverStamped(udp(t, netip.AddrPortFrom(ourIP, 5000), []byte("x")), 222)
	r.d.Deliver(udp(t, netip.AddrPortFrom(ourIP, 5000), []byte("y"))) // no device stamp
	msgs := []backend.Message{{Buf: make([]byte, 8)}, {Buf: make([]byte, 8)}}
	if n, err := s.ReadBatch(msgs); n != 2 || err != nil {
		t.Fatalf("ReadBatch = %d, %v", n, err)
	}
	if st := msgs[0].Stamp; st.Clock != backend.ClockNIC || st.Ns != 222 {
		t.Fatalf("stamp %+v, want the NIC's 222", st)
	}
	if st := msgs[1].Stamp; st.Clock != backend.ClockUser {
		t.Fatalf("stamp %+v, want the stack's own for a frame the device did not stamp", st)
	}
	if _, err := other.ReadBatch(msgs[:1]); err != nil {
		t.Fatal(err)
	}
	if st := msgs[0].Stamp; st.Clock != backend.ClockNIC || st.Ns != 111 {
		t.Fatalf("queued datagram's stamp %+v, want the NIC's 111", st)
	}
}

// TestFlowOwnership: a socket can neither take a flow another socket
// steers nor, by removing it, give that flow back to the kernel.
func TestFlowOwnership(t *testing.T) {
	r := newRig(t)
	a := r.listen(t, 5000, backend.Options{})
	b := r.listen(t, 5001, backend.Options{})
	r.st.Release()
	dst := netip.AddrPortFrom(netip.MustParseAddr("239.2.2.2"), 5000)
	if err := r.st.addFlow(a, dst); err != nil {
		t.Fatal(err)
	}
	if err := r.st.addFlow(b, dst); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("a second socket took a flow: %v", err)
	}
	if err := r.st.removeFlow(b, dst); err != nil || !r.d.Steered(dst) {
		t.Fatalf("a socket that does not own a flow removed it (%v, steered %v)", err, r.d.Steered(dst))
	}
	if err := r.st.removeFlow(a, dst); err != nil || r.d.Steered(dst) {
		t.Fatalf("the owner could not remove its flow (%v, steered %v)", err, r.d.Steered(dst))
	}
}
