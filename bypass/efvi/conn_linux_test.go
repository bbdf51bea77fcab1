//go:build linux

package efvi

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/frame"
	"github.com/lowlat/lowlat/bypass/internal/stack"
)

const (
	testRxBufs  = 32
	testTxBufs  = 16
	testBufSize = 2048
)

var (
	localMAC  = frame.MAC{0x02, 0, 0, 0, 0, 1}
	peerMAC   = frame.MAC{0x02, 0, 0, 0, 0, 2}
	localAddr = netip.MustParseAddrPort("10.0.0.1:9000")
	peerAddr  = netip.MustParseAddrPort("10.0.0.2:7000")
)

type harness struct {
	c     *Conn
	d     *driver
	rx    *fakeRX
	tx    *fakeTX
	ports *stack.MemPorts
	undos []string
}

// newHarness makes a socket on a stack over fakes: RX buffers are ids
// 0..testRxBufs-1 and TX buffers the testTxBufs after them, in one memory.
func newHarness(t testing.TB, x3 bool) *harness {
	t.Helper()
	return newHarnessOpts(t, x3, backend.Options{})
}

// newHarnessOpts is newHarness with the socket's options.
func newHarnessOpts(t testing.TB, x3 bool, o backend.Options) *harness {
	t.Helper()
	n := testRxBufs + testTxBufs
	rx := newFakeRX(n, testBufSize)
	rx.x3 = x3
	rx.ring = testRxBufs
	tx := &fakeTX{mem: rx.mem, bufSize: testBufSize, ring: 64,
		inflight: make([]uint32, 0, 64), pending: make([]event, 0, 64)}
	h := &harness{rx: rx, tx: tx, ports: &stack.MemPorts{}}
	cfg := driverConfig{rxq: rx, txq: tx, mem: rx.mem, bufSize: testBufSize, batch: 8}
	if !x3 {
		for i := range testRxBufs {
			cfg.rxBufs = append(cfg.rxBufs, uint32(i))
		}
	}
	for i := range testTxBufs {
		cfg.txBufs = append(cfg.txBufs, uint32(testRxBufs+i))
	}
	d, err := newDriver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.undo.AddFunc(func() { h.undos = append(h.undos, "first") })
	d.undo.AddFunc(func() { h.undos = append(h.undos, "second") })
	d.undo.Add(tx.close)
	d.undo.Add(rx.close)
	h.d = d
	st, err := stack.New(stack.Config{
		Backend: "efvi", Driver: d, BufSize: testBufSize, Batch: 8, Ports: h.ports,
		Iface: stack.Interface{Name: "sfc0", MAC: localMAC, MTU: 1500, Src: localAddr.Addr()},
		Info:  backend.Info{Backend: "efvi"},
		Resolve: func(a netip.Addr) (frame.MAC, error) {
			if a == peerAddr.Addr() {
				return peerMAC, nil
			}
			return frame.MAC{}, errors.New("no route")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Release()
	c, err := st.Listen(localAddr, o)
	if err != nil {
		t.Fatal(err)
	}
	h.c = c
	t.Cleanup(func() { c.Close() })
	return h
}

func (h *harness) counters() Counters {
	k, ok := StackCounters(h.c)
	if !ok {
		panic("not an efvi connection")
	}
	return k
}

// udpFrame builds a frame from the peer to dst carrying payload.
func udpFrame(t testing.TB, dst netip.AddrPort, payload []byte) []byte {
	t.Helper()
	dmac := localMAC
	if m, ok := frame.MulticastMAC(dst.Addr()); ok {
		dmac = m
	}
	tm, err := frame.NewTemplate(frame.Flow{SrcMAC: peerMAC, DstMAC: dmac, Src: peerAddr, Dst: dst})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, frame.HeaderLen+len(payload))
	if _, err := tm.Build(b, payload); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewDriverPostsEveryReceiveBuffer(t *testing.T) {
	h := newHarness(t, false)
	if len(h.rx.posted) != testRxBufs {
		t.Fatalf("posted %d buffers, want %d", len(h.rx.posted), testRxBufs)
	}
	if len(h.d.free) != testTxBufs {
		t.Fatalf("%d free TX buffers, want %d", len(h.d.free), testTxBufs)
	}
}

func TestReadFromRX(t *testing.T) {
	h := newHarness(t, false)
	h.rx.deliver(udpFrame(t, localAddr, []byte("hello")))
	buf := make([]byte, 64)
	n, from, err := h.c.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "hello" || from != peerAddr {
		t.Fatalf("got %q from %v", buf[:n], from)
	}
	if s := h.c.Stats(); s.RxPackets != 1 || s.Dropped() != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestReceiveBufferBookkeeping pushes many more frames than there are
// buffers through reads of every size and checks that no buffer is lost
// or posted twice (the fake panics on a double post).
func TestReceiveBufferBookkeeping(t *testing.T) {
	h := newHarness(t, false)
	msgs := make([]backend.Message, 5)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 64)
	}
	got := 0
	for round := range 50 {
		for range round%7 + 1 {
			h.rx.deliver(udpFrame(t, localAddr, []byte{byte(round)}))
		}
		for len(h.rx.pending) > 0 || h.d.i < h.d.n {
			n, err := h.c.ReadBatch(msgs[:round%len(msgs)+1])
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
		// Consumed buffers not yet reposted are waiting in repost.
		if out := len(h.rx.posted) + len(h.d.repost); out != testRxBufs {
			t.Fatalf("round %d: %d posted + %d to repost, want %d", round, len(h.rx.posted), len(h.d.repost), testRxBufs)
		}
	}
	if s := h.c.Stats(); s.RxPackets != uint64(got) || s.FillRingEmpty != 0 {
		t.Fatalf("stats %+v after %d reads", s, got)
	}
	// A poll that finds nothing hands every consumed buffer back.
	h.c.SetReadTimeout(time.Millisecond)
	if _, _, err := h.c.ReadFrom(make([]byte, 64)); !errors.Is(err, backend.ErrTimeout) {
		t.Fatalf("read on empty queue: %v", err)
	}
	if len(h.rx.posted) != testRxBufs {
		t.Fatalf("after idle read: %d posted, want %d", len(h.rx.posted), testRxBufs)
	}
}

func TestRXDiscardsCountedAndReposted(t *testing.T) {
	h := newHarness(t, false)
	for _, sub := range []uint16{discardCsumBad, discardMcastMismatch, discardCRCBad, discardTrunc,
		discardRights, discardEvError, discardOther, discardInnerCsumBad, 99} {
		h.rx.discard(sub)
	}
	h.rx.deliver(udpFrame(t, localAddr, []byte("after")))
	buf := make([]byte, 64)
	if n, _, err := h.c.ReadFrom(buf); err != nil || string(buf[:n]) != "after" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	want := Counters{DiscardChecksum: 2, DiscardMcast: 1, DiscardCRC: 1, DiscardTrunc: 1, DiscardRights: 1, DiscardOther: 3}
	if k := h.counters(); k != want {
		t.Fatalf("counters %+v, want %+v", k, want)
	}
	s := h.c.Stats()
	if s.DropUDPChecksum != 2 || s.DropNotOurs != 2 || s.DropLength != 4 || s.DropCRC != 1 || s.RxPackets != 1 {
		t.Fatalf("stats %+v", s)
	}
	h.d.flushRX()
	if len(h.rx.posted) != testRxBufs {
		t.Fatalf("%d posted after discards, want %d", len(h.rx.posted), testRxBufs)
	}
}

func TestParseDropsCounted(t *testing.T) {
	h := newHarness(t, false)
	h.rx.deliver(udpFrame(t, netip.AddrPortFrom(localAddr.Addr(), 1), []byte("wrong port")))
	bad := udpFrame(t, localAddr, []byte("bad sum"))
	bad[len(bad)-1] ^= 0xff
	h.rx.deliver(bad)
	h.rx.deliver(udpFrame(t, localAddr, []byte("ok"))[:20])
	h.c.SetReadTimeout(time.Millisecond)
	if _, _, err := h.c.ReadFrom(make([]byte, 64)); !errors.Is(err, backend.ErrTimeout) {
		t.Fatalf("got %v, want a timeout", err)
	}
	s := h.c.Stats()
	if s.DropNotOurs != 1 || s.DropUDPChecksum != 1 || s.DropShort != 1 || s.RxPackets != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestScatteredNoDescOverflowUnknown(t *testing.T) {
	h := newHarness(t, false)
	id, _ := h.rx.take()
	h.rx.pending = append(h.rx.pending,
		event{kind: evRX, id: id, len: 100, sub: rxFlagSOP | rxFlagCont},
		event{kind: evRXNoDesc}, event{kind: evOverflow}, event{kind: evOther, sub: 42})
	h.c.SetReadTimeout(time.Millisecond)
	if _, _, err := h.c.ReadFrom(make([]byte, 64)); !errors.Is(err, backend.ErrTimeout) {
		t.Fatalf("got %v, want a timeout", err)
	}
	k := h.counters()
	if k.Scattered != 1 || k.NoDescriptor != 1 || k.Overflows != 1 || k.Unknown != 1 {
		t.Fatalf("counters %+v", k)
	}
	if s := h.c.Stats(); s.FillRingEmpty != 1 || s.DropLength != 1 {
		t.Fatalf("stats %+v", s)
	}
	if len(h.rx.posted) != testRxBufs {
		t.Fatalf("scattered buffer not reposted: %d posted", len(h.rx.posted))
	}
}

func TestX3RxRefAndDiscards(t *testing.T) {
	h := newHarness(t, true)
	if len(h.rx.posted) != 0 {
		t.Fatal("X3 queue got posted buffers")
	}
	h.rx.deliver(udpFrame(t, localAddr, []byte("x3")))
	for _, fl := range []uint16{refFCS, refLen, refL3Csum, refL4Csum, refInnerL4Csum, refL4Other, 0x10} {
		h.rx.discard(fl)
	}
	h.rx.deliver(udpFrame(t, localAddr, []byte("x3 again")))
	msgs := []backend.Message{{Buf: make([]byte, 64)}, {Buf: make([]byte, 64)}}
	n, err := h.c.ReadBatch(msgs)
	if err != nil || n != 2 {
		t.Fatalf("ReadBatch = %d, %v", n, err)
	}
	if string(msgs[0].Buf[:msgs[0].N]) != "x3" || string(msgs[1].Buf[:msgs[1].N]) != "x3 again" {
		t.Fatalf("got %q, %q", msgs[0].Buf[:msgs[0].N], msgs[1].Buf[:msgs[1].N])
	}
	h.d.flushRX()
	if i := slices.Index(h.rx.live, true); i >= 0 {
		t.Fatalf("packet %d never released", i)
	}
	want := Counters{DiscardCRC: 1, DiscardTrunc: 1, DiscardIPChecksum: 1, DiscardChecksum: 2, DiscardClass: 1, DiscardOther: 1}
	if k := h.counters(); k != want {
		t.Fatalf("counters %+v, want %+v", k, want)
	}
	if s := h.c.Stats(); s.DropIPChecksum != 1 || s.DropUDPChecksum != 2 || s.DropNotOurs != 1 || s.DropLength != 2 || s.DropCRC != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestTruncatedRead(t *testing.T) {
	h := newHarness(t, false)
	h.rx.deliver(udpFrame(t, localAddr, []byte("0123456789")))
	buf := make([]byte, 4)
	if n, _, err := h.c.ReadFrom(buf); err != nil || n != 4 {
		t.Fatalf("ReadFrom = %d, %v", n, err)
	}
	if s := h.c.Stats(); s.RxTrunc != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestWriteToBuildsFrame(t *testing.T) {
	h := newHarness(t, false)
	h.tx.record = true
	if n, err := h.c.WriteTo([]byte("ping"), peerAddr); err != nil || n != 4 {
		t.Fatalf("WriteTo = %d, %v", n, err)
	}
	if len(h.tx.sent) != 1 {
		t.Fatalf("%d frames sent", len(h.tx.sent))
	}
	f, err := frame.NewFilter(peerMAC, peerAddr)
	if err != nil {
		t.Fatal(err)
	}
	var p frame.Packet
	if r := f.Parse(h.tx.sent[0], &p); r != frame.OK {
		t.Fatalf("sent frame rejected: %v", r)
	}
	if string(p.Payload) != "ping" || p.Src != localAddr || p.SrcMAC != localMAC {
		t.Fatalf("sent %+v", p)
	}
	if _, err := h.c.WriteTo([]byte("x"), netip.MustParseAddrPort("10.9.9.9:1")); err == nil {
		t.Fatal("write to an unresolvable address succeeded")
	}
	if _, err := h.c.WriteTo([]byte("x"), netip.MustParseAddrPort("[::1]:1")); !errors.Is(err, backend.ErrNotSupported) {
		t.Fatalf("IPv6 write: %v", err)
	}
	if _, err := h.c.WriteTo(make([]byte, 1500), peerAddr); !errors.Is(err, backend.ErrMessageTooLong) {
		t.Fatalf("oversized write: %v", err)
	}
	if s := h.c.Stats(); s.TxPackets != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestTransmitCompletion fills every TX buffer, checks that the next write
// fails with ErrRingFull, then completes some and checks they are reused.
func TestTransmitCompletion(t *testing.T) {
	h := newHarness(t, false)
	for i := range testTxBufs {
		if _, err := h.c.WriteTo([]byte{byte(i)}, peerAddr); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if _, err := h.c.WriteTo([]byte("full"), peerAddr); !errors.Is(err, backend.ErrRingFull) {
		t.Fatalf("write with every buffer in flight: %v", err)
	}
	if s := h.c.Stats(); s.TxRingFull == 0 {
		t.Fatalf("stats %+v", s)
	}
	first := slices.Clone(h.tx.inflight[:5])
	h.tx.complete(5)
	for i := range 5 {
		if _, err := h.c.WriteTo([]byte{byte(i)}, peerAddr); err != nil {
			t.Fatalf("write after completion %d: %v", i, err)
		}
	}
	// Completed buffers come back in posting order, so the five reused
	// ids are the five first sent.
	if got := h.tx.inflight[len(h.tx.inflight)-5:]; !sameSet(got, first) {
		t.Fatalf("reused buffers %v", got)
	}
	h.tx.complete(testTxBufs)
	h.d.Reap()
	if len(h.d.free) != testTxBufs || h.d.head != h.d.tail {
		t.Fatalf("%d free, head %d tail %d", len(h.d.free), h.d.head, h.d.tail)
	}
}

func sameSet(a, b []uint32) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestTransmitErrorDoesNotFailNextWrite: a TX_ERROR is about a frame
// already handed over; it is counted and named in Counters, and the next
// write, which has nothing to do with it, is sent.
func TestTransmitErrorDoesNotFailNextWrite(t *testing.T) {
	h := newHarness(t, false)
	h.tx.record = true
	for range testTxBufs/2 + 1 {
		if _, err := h.c.WriteTo([]byte("a"), peerAddr); err != nil {
			t.Fatal(err)
		}
	}
	h.tx.fail(1, txErr2Big)
	h.d.Reap()
	h.tx.sent = nil
	if _, err := h.c.WriteTo([]byte("b"), peerAddr); err != nil {
		t.Fatalf("write after TX_ERROR: %v", err)
	}
	if len(h.tx.sent) != 1 {
		t.Fatalf("the write after a TX_ERROR sent %d frames, want 1", len(h.tx.sent))
	}
	if k := h.counters(); k.TxErrors != 1 || k.LastTxError != txErrs[txErr2Big] {
		t.Fatalf("counters %+v", k)
	}
}

// TestLazyCompletionsNeverWedge models X3, which frees transmit space only
// when TX events are polled: every write must go, far past the ring size.
func TestLazyCompletionsNeverWedge(t *testing.T) {
	h := newHarness(t, false)
	h.tx.lazy = true
	h.tx.ring = 4
	for i := range 1000 {
		if _, err := h.c.WriteTo(make([]byte, 300), peerAddr); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
}

// TestFloodOfForeignFramesStillTimesOut: one poll batch at a time, so a
// reader under a flood of frames for nobody reaches its timeout check.
func TestFloodOfForeignFramesStillTimesOut(t *testing.T) {
	h := newHarness(t, true) // X3: packets need no posted buffers
	foreign := udpFrame(t, netip.AddrPortFrom(localAddr.Addr(), 1), []byte("x"))
	for range 200000 {
		h.rx.deliver(foreign)
	}
	h.c.SetReadTimeout(time.Millisecond)
	done := make(chan error, 1)
	go func() {
		_, _, err := h.c.ReadFrom(make([]byte, 64))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, backend.ErrTimeout) {
			t.Fatalf("read under a flood: %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read under a flood never returned")
	}
}

func TestWriteBatchOneSendPerBatch(t *testing.T) {
	h := newHarness(t, false)
	msgs := make([]backend.Message, 12) // batch size 8: two sends
	for i := range msgs {
		msgs[i] = backend.Message{Buf: []byte{byte(i)}, Addr: peerAddr}
	}
	n, err := h.c.WriteBatch(msgs)
	if err != nil || n != 12 {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	if h.tx.sends != 2 {
		t.Fatalf("%d sends, want 2", h.tx.sends)
	}
	// A bad message stops the batch after sending those before it.
	msgs[3].Addr = netip.MustParseAddrPort("[::1]:1")
	h.tx.complete(12)
	if n, err := h.c.WriteBatch(msgs); n != 3 || !errors.Is(err, backend.ErrNotSupported) {
		t.Fatalf("WriteBatch with a bad message = %d, %v", n, err)
	}
}

func TestShortSendReturnsBuffers(t *testing.T) {
	h := newHarness(t, false)
	h.tx.ring = 2
	msgs := make([]backend.Message, 4)
	for i := range msgs {
		msgs[i] = backend.Message{Buf: []byte{byte(i)}, Addr: peerAddr}
	}
	n, err := h.c.WriteBatch(msgs)
	if n != 2 || !errors.Is(err, backend.ErrRingFull) {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	if len(h.d.free) != testTxBufs-2 {
		t.Fatalf("%d free, want %d", len(h.d.free), testTxBufs-2)
	}
}

func TestJoinGroup(t *testing.T) {
	h := newHarness(t, false)
	g := netip.MustParseAddr("239.1.2.3")
	if err := h.c.JoinGroup(g); err != nil {
		t.Fatal(err)
	}
	if err := h.c.JoinGroup(netip.MustParseAddr("10.1.1.1")); err == nil {
		t.Fatal("joined a unicast address")
	}
	if h.ports.Members(g) != 1 || !slices.Contains(h.rx.filters, fakeFilter{netip.AddrPortFrom(g, localAddr.Port()), unix.IPPROTO_UDP}) {
		t.Fatalf("members %d, filters %v", h.ports.Members(g), h.rx.filters)
	}
	h.rx.deliver(udpFrame(t, netip.AddrPortFrom(g, localAddr.Port()), []byte("mc")))
	buf := make([]byte, 16)
	if n, _, err := h.c.ReadFrom(buf); err != nil || string(buf[:n]) != "mc" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}

// TestTCPFlowFilters: the driver steers TCP flows with filters of protocol
// TCP, apart from the socket's UDP filter on the same address and port, and
// removes the one it is asked to.
func TestTCPFlowFilters(t *testing.T) {
	h := newHarness(t, false)
	var ts stack.TCPSteering = h.d
	udp := fakeFilter{localAddr, unix.IPPROTO_UDP}
	tcp := fakeFilter{localAddr, unix.IPPROTO_TCP}
	anyTCP := fakeFilter{netip.AddrPortFrom(netip.IPv4Unspecified(), 8080), unix.IPPROTO_TCP}
	if !slices.Equal(h.rx.filters, []fakeFilter{udp}) {
		t.Fatalf("filters %v before AddTCPFlow, want the socket's UDP filter only", h.rx.filters)
	}
	if err := ts.AddTCPFlow(tcp.dst); err != nil {
		t.Fatal(err)
	}
	if err := ts.AddTCPFlow(anyTCP.dst); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.rx.filters, []fakeFilter{udp, tcp, anyTCP}) {
		t.Fatalf("filters %v after AddTCPFlow, want %v", h.rx.filters, []fakeFilter{udp, tcp, anyTCP})
	}
	if err := ts.RemoveTCPFlow(tcp.dst); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.rx.filters, []fakeFilter{udp, anyTCP}) {
		t.Fatalf("filters %v after RemoveTCPFlow(%v), want the UDP filter on that port kept", h.rx.filters, tcp.dst)
	}
	if err := ts.RemoveTCPFlow(anyTCP.dst); err != nil {
		t.Fatal(err)
	}
	if err := ts.RemoveTCPFlow(anyTCP.dst); err == nil {
		t.Fatal("the fake removed a TCP filter twice")
	}
	// The UDP flow is the socket's: RemoveFlow takes it, not RemoveTCPFlow.
	if err := h.d.RemoveFlow(localAddr); err != nil {
		t.Fatal(err)
	}
	if len(h.rx.filters) != 0 {
		t.Fatalf("filters %v left", h.rx.filters)
	}
	if err := h.d.AddFlow(localAddr); err != nil { // the socket's, for its Close
		t.Fatal(err)
	}
}

func TestCloseWakesReaderAndUndoes(t *testing.T) {
	h := newHarness(t, false)
	done := make(chan error, 1)
	go func() {
		_, _, err := h.c.ReadFrom(make([]byte, 64))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := h.c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, backend.ErrClosed) {
			t.Fatalf("reader got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reader did not leave")
	}
	if !h.rx.closed || !h.tx.closed || !slices.Equal(h.undos, []string{"second", "first"}) {
		t.Fatalf("rx closed %v, tx closed %v, undo order %v", h.rx.closed, h.tx.closed, h.undos)
	}
	if err := h.c.Close(); !errors.Is(err, backend.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := h.c.WriteTo([]byte("x"), peerAddr); !errors.Is(err, backend.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if len(h.rx.filters) != 0 {
		t.Fatalf("filters %v left after Close", h.rx.filters)
	}
	if err := h.c.JoinGroup(netip.MustParseAddr("239.1.1.1")); !errors.Is(err, backend.ErrClosed) {
		t.Fatalf("join after Close: %v", err)
	}
}

// echo is one message's round trip through the Go side: a frame arrives,
// is read, a reply is sent and completed.
func echo(t testing.TB, h *harness, in []byte, buf []byte) {
	h.rx.deliver(in)
	n, from, err := h.c.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.WriteTo(buf[:n], from); err != nil {
		t.Fatal(err)
	}
	h.tx.complete(1)
}

func TestNoAllocsPerMessage(t *testing.T) {
	for _, x3 := range []bool{false, true} {
		h := newHarness(t, x3)
		in := udpFrame(t, localAddr, make([]byte, 64))
		buf := make([]byte, 2048)
		if x3 {
			// The X3 fake keeps every packet; give it room up front.
			h.rx.pkts = make([][]byte, 0, 1000)
			h.rx.live = make([]bool, 0, 1000)
			for range 1000 {
				h.rx.pkts = append(h.rx.pkts, in)
				h.rx.live = append(h.rx.live, false)
			}
			next := uint32(0)
			allocs := testing.AllocsPerRun(500, func() {
				h.rx.live[next] = true
				h.rx.pending = append(h.rx.pending, event{kind: evRXRef, id: next, len: uint32(len(in))})
				next++
				n, from, err := h.c.ReadFrom(buf)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := h.c.WriteTo(buf[:n], from); err != nil {
					t.Fatal(err)
				}
				h.tx.complete(1)
			})
			if allocs != 0 {
				t.Errorf("X3: %v allocations per message", allocs)
			}
			continue
		}
		echo(t, h, in, buf)
		if allocs := testing.AllocsPerRun(1000, func() { echo(t, h, in, buf) }); allocs != 0 {
			t.Errorf("X2: %v allocations per message", allocs)
		}
	}
}

func BenchmarkEchoFake(b *testing.B) {
	h := newHarness(b, false)
	in := udpFrame(b, localAddr, make([]byte, 64))
	buf := make([]byte, 2048)
	b.ReportAllocs()
	for b.Loop() {
		echo(b, h, in, buf)
	}
}

// TestShortSendMidBatchCounted fills the ring partway, then writes a batch
// that runs out of free TX buffers while frames are staged: the frames the
// adapter took before it stopped are counted in WriteBatch's result, so a
// caller that retries from there sends none of them twice.
func TestShortSendMidBatchCounted(t *testing.T) {
	h := newHarness(t, false)
	h.tx.record = true
	msgs := make([]backend.Message, 8)
	for i := range msgs {
		msgs[i] = backend.Message{Buf: []byte{byte(i)}, Addr: peerAddr}
	}
	// 12 of the 16 buffers in flight: the next batch stages 4, then finds
	// no free buffer and must send what it staged before waiting.
	if n, err := h.c.WriteBatch(msgs); n != 8 || err != nil {
		t.Fatalf("first batch: %d, %v", n, err)
	}
	if n, err := h.c.WriteBatch(msgs[:4]); n != 4 || err != nil {
		t.Fatalf("second batch: %d, %v", n, err)
	}
	// The adapter's ring has room for 2 more: of the 4 staged, 2 go.
	h.tx.ring = 14
	h.tx.sent = nil
	n, err := h.c.WriteBatch(msgs)
	if n != 2 || !errors.Is(err, backend.ErrRingFull) {
		t.Fatalf("WriteBatch with 2 ring slots left = %d, %v; want 2 and ErrRingFull", n, err)
	}
	if len(h.tx.sent) != n {
		t.Fatalf("adapter took %d frames, WriteBatch reported %d", len(h.tx.sent), n)
	}
	// Every buffer is in flight: the staged ones are sent, none is free.
	h.tx.ring = 64
	h.tx.sent = nil
	n, err = h.c.WriteBatch(msgs)
	if len(h.tx.sent) != n || !errors.Is(err, backend.ErrRingFull) {
		t.Fatalf("WriteBatch with every buffer in flight = %d, %v; adapter took %d", n, err, len(h.tx.sent))
	}
	// Completions free them all; a retry from n sends the rest once each.
	h.tx.complete(testTxBufs)
	h.tx.sent = nil
	m, err := h.c.WriteBatch(msgs[n:])
	if err != nil || m != len(msgs)-n || len(h.tx.sent) != m {
		t.Fatalf("retry = %d, %v; adapter took %d", m, err, len(h.tx.sent))
	}
}

// TestAdapterReceiveStamps: the adapter's stamp of an RX or RX_REF event
// reaches the message as a NIC stamp.
func TestAdapterReceiveStamps(t *testing.T) {
	for _, x3 := range []bool{false, true} {
		h := newHarnessOpts(t, x3, backend.Options{Timestamps: backend.TimestampsHardware})
		h.rx.deliver(udpFrame(t, localAddr, []byte("ts")))
		h.rx.pending[len(h.rx.pending)-1].ts = 1_700_000_000_123_456_789
		msgs := []backend.Message{{Buf: make([]byte, 16)}}
		if _, err := h.c.ReadBatch(msgs); err != nil {
			t.Fatal(err)
		}
		if st := msgs[0].Stamp; st.Clock != backend.ClockNIC || st.Ns != 1_700_000_000_123_456_789 {
			t.Fatalf("x3 %v: stamp %+v", x3, st)
		}
	}
}

// TestConcurrentSteering: sockets opened and closed on one stack from
// many goroutines at once add and remove adapter filters one call at a
// time (the queue keeps its filters in a plain map; -race finds a second
// writer).
func TestConcurrentSteering(t *testing.T) {
	h := newHarness(t, false)
	st := h.c.Stack()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				c, err := st.Listen(netip.AddrPortFrom(localAddr.Addr(), uint16(20000+g*100+i)), backend.Options{})
				if err != nil {
					t.Error(err)
					return
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	if n := len(h.rx.filters); n != 1 {
		t.Fatalf("%d filters left, want the harness socket's one", n)
	}
}
