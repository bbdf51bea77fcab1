//go:build linux

package efvi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/frame"
	"github.com/lowlat/lowlat/bypass/internal/stack"
	"github.com/lowlat/lowlat/bypass/internal/tcp"
)

// TCP through the efvi driver: a stack over the fake queues, with the test
// playing the peer. It builds the peer's segments into frames and delivers
// them to the fake receive queue, and parses what the fake transmit queue
// was handed.
//
// With TCP the stack is polled by goroutines of its own (the keeper, and
// AcceptTCP, DialTCP and Read spinning) while the test delivers frames, so
// the fakes sit behind a mutex here: lockedRX and lockedTX.

// tcpWait bounds every wait of these tests; none of them asserts a time.
const tcpWait = 10 * time.Second

// lockedRX is a fakeRX whose every use takes a mutex.
type lockedRX struct {
	mu sync.Mutex
	f  *fakeRX
}

func (q *lockedRX) poll(evs []event) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.f.poll(evs)
}

func (q *lockedRX) post(ids []uint32) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.f.post(ids)
}

func (q *lockedRX) release(ids []uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.f.release(ids)
}

func (q *lockedRX) frame(ev *event) []byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.f.frame(ev)
}

func (q *lockedRX) refs() bool { return q.f.x3 }

func (q *lockedRX) addFilter(dst netip.AddrPort, proto uint8) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.f.addFilter(dst, proto)
}

func (q *lockedRX) removeFilter(dst netip.AddrPort, proto uint8) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.f.removeFilter(dst, proto)
}

func (q *lockedRX) close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.f.close()
}

func (q *lockedRX) deliver(fr []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.f.deliver(fr)
}

func (q *lockedRX) filters() []fakeFilter {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.f.filters)
}

func (q *lockedRX) closed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.f.closed
}

// lockedTX is a fakeTX whose every use takes a mutex.
type lockedTX struct {
	mu sync.Mutex
	f  *fakeTX
}

func (q *lockedTX) poll(evs []event) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.f.poll(evs)
}

func (q *lockedTX) send(d []txDesc) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.f.send(d)
}

func (q *lockedTX) close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.f.close()
}

// sentFrom returns the frames sent, from the i-th on.
func (q *lockedTX) sentFrom(i int) [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.f.sent[min(i, len(q.f.sent)):])
}

var (
	_ rxQueue = (*lockedRX)(nil)
	_ txQueue = (*lockedTX)(nil)
)

// tcpHarness is a stack over the efvi driver and locked fakes, with
// kernel ports in memory and a Resolve that knows the peer.
type tcpHarness struct {
	st    *stack.Stack
	rx    *lockedRX
	tx    *lockedTX
	ports *stack.MemPorts
	out   frame.Filter // what the peer accepts: frames to peerMAC and peerAddr
	seen  int          // sent frames already looked at by next
}

// tcpTimeWait keeps TIME-WAIT short, so that a test's connections are
// gone, and the stack closed, soon after the test ends.
const tcpTimeWait = 20 * time.Millisecond

// newTCPHarness makes the stack. Its cleanup gives back the test's
// reference and waits (bounded) for the stack to close the driver, which
// it does once every listener and connection is gone: the keeper is then
// gone too. Register listeners' and connections' Close after this, so
// that they run before it.
func newTCPHarness(t testing.TB, x3 bool) *tcpHarness {
	t.Helper()
	n := testRxBufs + testTxBufs
	frx := newFakeRX(n, testBufSize)
	frx.x3 = x3
	frx.ring = testRxBufs
	// Lazy: every send completes when next polled, so the test never
	// has to complete transmits by hand while the stack runs.
	ftx := &fakeTX{mem: frx.mem, bufSize: testBufSize, ring: 64, record: true, lazy: true,
		inflight: make([]uint32, 0, 64), pending: make([]event, 0, 64)}
	h := &tcpHarness{rx: &lockedRX{f: frx}, tx: &lockedTX{f: ftx}, ports: &stack.MemPorts{}}
	cfg := driverConfig{rxq: h.rx, txq: h.tx, mem: frx.mem, bufSize: testBufSize, batch: 8}
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
	d.undo.Add(h.tx.close)
	d.undo.Add(h.rx.close)
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
		TCP: tcp.Config{TimeWait: tcpTimeWait},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.st = st
	h.out, err = frame.NewFilter(peerMAC, netip.AddrPortFrom(peerAddr.Addr(), 0))
	if err != nil {
		t.Fatal(err)
	}
	h.out.AcceptTCP(true)
	t.Cleanup(func() {
		if err := st.Release(); err != nil {
			t.Errorf("release the test's reference: %v", err)
		}
		if !waitUntil(h.rx.closed) {
			t.Errorf("the stack did not close (a listener or connection left): filters %v", h.rx.filters())
		}
	})
	return h
}

// waitUntil polls cond until it holds or tcpWait passes.
func waitUntil(cond func() bool) bool {
	deadline := time.Now().Add(tcpWait)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

func segString(s *frame.TCPSegment) string {
	var f []byte
	for i, c := range "FSRPAUEC" {
		if s.Flags&(1<<i) != 0 {
			f = append(f, byte(c))
		}
	}
	return fmt.Sprintf("%d->%d [%s] seq %d ack %d win %d len %d opts %+v",
		s.SrcPort, s.DstPort, f, s.Seq, s.Ack, s.Window, len(s.Payload), s.Options)
}

// next waits for the next segment the stack sends that match accepts and
// returns it; segments before it that match does not accept (a
// retransmission on a slow run, say) are passed over, except a RST, which
// fails the test. Every frame sent must be a valid TCP/IPv4 frame from the
// stack's MAC and address to the peer's, with a good checksum.
func (h *tcpHarness) next(t testing.TB, what string, match func(s *frame.TCPSegment) bool) frame.TCPSegment {
	t.Helper()
	var passed []string
	deadline := time.Now().Add(tcpWait)
	for {
		for _, f := range h.tx.sentFrom(h.seen) {
			h.seen++
			var p frame.Packet
			if r := h.out.Parse(f, &p); r != frame.OK {
				t.Fatalf("stack sent a frame the peer rejects (%v): % x", r, f)
			}
			if p.Proto != frame.ProtoTCP || p.SrcMAC != localMAC || p.Src.Addr() != localAddr.Addr() {
				t.Fatalf("stack sent %+v, want TCP from %v at %v", p, localAddr.Addr(), localMAC)
			}
			var s frame.TCPSegment
			src, dst := frame.TCPAddrs(&p)
			if err := frame.ParseTCP(p.Payload, src, dst, &s); err != nil {
				t.Fatalf("stack sent a bad TCP segment: %v", err)
			}
			if match(&s) {
				return s
			}
			if s.Flags&frame.TCPRst != 0 {
				t.Fatalf("waiting for %s, stack sent a RST: %s", what, segString(&s))
			}
			passed = append(passed, segString(&s))
		}
		if time.Now().After(deadline) {
			t.Fatalf("stack never sent %s; passed over: %q", what, passed)
		}
		time.Sleep(time.Millisecond)
	}
}

// tcpPeer is the far end of one connection, played by the test.
type tcpPeer struct {
	h      *tcpHarness
	tmpl   frame.TCPTemplate
	port   uint16 // the peer's
	remote uint16 // the stack's
	seq    uint32 // next sequence number to send
	ack    uint32 // what the peer acknowledges
	tsVal  uint32
	tsEcr  uint32
	ts     bool // timestamps agreed
}

func newTCPPeer(t testing.TB, h *tcpHarness, port, remote uint16, isn uint32) *tcpPeer {
	t.Helper()
	tmpl, err := frame.NewTCPTemplate(peerMAC, localMAC, peerAddr.Addr(), localAddr.Addr(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return &tcpPeer{h: h, tmpl: tmpl, port: port, remote: remote, seq: isn, tsVal: 1000, ts: true}
}

// build makes a frame carrying s (its ports filled in) and payload.
func (p *tcpPeer) build(t testing.TB, s frame.TCPSegment, payload []byte) []byte {
	t.Helper()
	s.SrcPort, s.DstPort = p.port, p.remote
	b := make([]byte, testBufSize)
	n, err := p.tmpl.Build(b, &s, payload, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

// segment is the peer's next segment with flags: its sequence number, its
// acknowledgment when flags has ACK, a window of 1024 (scaled by the
// peer's shift of 7: 128 KiB), timestamps when agreed. It advances the
// peer's sequence number past the segment.
func (p *tcpPeer) segment(flags uint8, payload []byte) frame.TCPSegment {
	s := frame.TCPSegment{Seq: p.seq, Flags: flags, Window: 1024}
	if flags&frame.TCPAck != 0 {
		s.Ack = p.ack
	}
	if p.ts {
		p.tsVal++
		s.Options.HasTimestamp, s.Options.TSVal, s.Options.TSEcr = true, p.tsVal, p.tsEcr
	}
	p.seq += uint32(len(payload))
	if flags&frame.TCPSyn != 0 {
		p.seq++
	}
	if flags&frame.TCPFin != 0 {
		p.seq++
	}
	return s
}

// send delivers the peer's next segment to the fake receive queue.
func (p *tcpPeer) send(t testing.TB, flags uint8, payload []byte) {
	t.Helper()
	s := p.segment(flags, payload)
	p.h.rx.deliver(p.build(t, s, payload))
}

// synOptions are the options of the peer's SYN or SYN-ACK: an MSS, a
// window shift of 7, SACK permitted, timestamps.
func (p *tcpPeer) synOptions(s *frame.TCPSegment) {
	s.Window = 65535 // never scaled in a SYN
	s.Options.MSS = 1400
	s.Options.HasWScale, s.Options.WScale = true, 7
	s.Options.SACKPermitted = true
}

// saw takes what the stack's segment tells the peer: its timestamp, to
// echo.
func (p *tcpPeer) saw(s *frame.TCPSegment) {
	if s.Options.HasTimestamp {
		p.tsEcr = s.Options.TSVal
	}
}

// readAll reads exactly len(want) bytes from c (bounded by its read
// timeout) and compares them with want.
func readAll(t testing.TB, c *stack.TCPConn, want []byte) {
	t.Helper()
	got := make([]byte, 0, len(want))
	buf := make([]byte, 256)
	for len(got) < len(want) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read after %q: %v", got, err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
}

func tcpFilter(port uint16) fakeFilter {
	return fakeFilter{netip.AddrPortFrom(localAddr.Addr(), port), unix.IPPROTO_TCP}
}

type acceptResult struct {
	c   *stack.TCPConn
	err error
}

// acceptAsync runs AcceptTCP on a goroutine. The listener's Close,
// registered by the caller, ends it if the test fails first.
func acceptAsync(l *stack.TCPListener) <-chan acceptResult {
	ch := make(chan acceptResult, 1)
	go func() {
		c, err := l.AcceptTCP()
		ch <- acceptResult{c, err}
	}()
	return ch
}

// await waits for a goroutine's result.
func await[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(tcpWait):
		t.Fatalf("%s did not return", what)
		panic("unreachable")
	}
}

// closeConnInCleanup closes c when the test ends, if it has not: an
// accepted or dialed connection holds the stack open.
func closeConnInCleanup(t testing.TB, c *stack.TCPConn) {
	t.Cleanup(func() { c.Close() })
}

// closeFromStack closes c first: the stack sends its FIN, the peer answers
// with its own FIN and the ACK of the stack's, and the stack acknowledges
// that with the last ACK (and sits in TIME-WAIT).
func closeFromStack(t testing.TB, h *tcpHarness, p *tcpPeer, c *stack.TCPConn, sndNxt uint32) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	fin := h.next(t, "the stack's FIN", func(s *frame.TCPSegment) bool { return s.Flags&frame.TCPFin != 0 })
	if fin.Flags != frame.TCPFin|frame.TCPAck || fin.Seq != sndNxt || fin.Ack != p.seq || len(fin.Payload) != 0 {
		t.Fatalf("FIN %s, want FIN|ACK seq %d ack %d", segString(&fin), sndNxt, p.seq)
	}
	p.saw(&fin)
	p.ack = fin.Seq + 1
	p.send(t, frame.TCPFin|frame.TCPAck, nil)
	last := h.next(t, "the ACK of the peer's FIN", func(s *frame.TCPSegment) bool {
		return s.Flags == frame.TCPAck && s.Ack == p.seq
	})
	if last.Seq != sndNxt+1 || len(last.Payload) != 0 {
		t.Fatalf("last ACK %s, want seq %d", segString(&last), sndNxt+1)
	}
}

// waitClosed waits until c has left TIME-WAIT (or LAST-ACK) and is off
// the stack.
func waitClosed(t testing.TB, c *stack.TCPConn) {
	t.Helper()
	var st tcp.State
	if !waitUntil(func() bool { _, st = c.TCPStats(); return st == tcp.Closed }) {
		t.Fatalf("connection still %v", st)
	}
}

// TestTCPPassiveOpenOverEFVI: a listener steers its port with a TCP
// filter, answers a SYN with a SYN-ACK that agrees the peer's options,
// accepts the connection, delivers and acknowledges the peer's data,
// sends its own, closes with a FIN and the last ACK; closing the listener
// removes the filter. On the X2 fake (posted buffers) and the X3 one
// (RX_REF).
func TestTCPPassiveOpenOverEFVI(t *testing.T) {
	for _, x3 := range []bool{false, true} {
		t.Run(map[bool]string{false: "x2", true: "x3"}[x3], func(t *testing.T) {
			testTCPPassiveOpen(t, x3)
		})
	}
}

func testTCPPassiveOpen(t *testing.T, x3 bool) {
	h := newTCPHarness(t, x3)
	const port = 8080
	laddr := netip.AddrPortFrom(localAddr.Addr(), port)
	l, err := h.st.ListenTCP(laddr, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if f := h.rx.filters(); !slices.Equal(f, []fakeFilter{tcpFilter(port)}) {
		t.Fatalf("filters %v after ListenTCP, want one TCP filter for %v", f, laddr)
	}
	if !h.ports.TakenTCP(port) {
		t.Fatal("ListenTCP reserved no TCP port")
	}
	if l.Addr() != laddr {
		t.Fatalf("listener on %v, want %v", l.Addr(), laddr)
	}

	// The peer's SYN, with every option; its ISN is near the wrap, so that
	// the sequence numbers of the exchange wrap.
	const isn = 0xfffffff0
	p := newTCPPeer(t, h, peerAddr.Port(), port, isn)
	syn := p.segment(frame.TCPSyn, nil)
	p.synOptions(&syn)
	h.rx.deliver(p.build(t, syn, nil))
	accepted := acceptAsync(l)

	sa := h.next(t, "the SYN-ACK", func(s *frame.TCPSegment) bool { return s.Flags&frame.TCPSyn != 0 })
	switch o := sa.Options; {
	case sa.Flags != frame.TCPSyn|frame.TCPAck:
		t.Fatalf("SYN-ACK flags: %s", segString(&sa))
	case sa.SrcPort != port || sa.DstPort != peerAddr.Port():
		t.Fatalf("SYN-ACK ports: %s", segString(&sa))
	case sa.Ack != isn+1:
		t.Fatalf("SYN-ACK acknowledges %d, want ISN+1 = %d", sa.Ack, uint32(isn+1))
	case len(sa.Payload) != 0 || sa.Window == 0:
		t.Fatalf("SYN-ACK %s", segString(&sa))
	case o.MSS != 1460:
		t.Fatalf("SYN-ACK MSS %d, want 1460 (MTU 1500 less 40)", o.MSS)
	case !o.HasWScale || o.WScale > 14:
		t.Fatalf("SYN-ACK window scale %v %d, want one (the peer offered it)", o.HasWScale, o.WScale)
	case !o.SACKPermitted:
		t.Fatal("SYN-ACK without SACK-permitted (the peer offered it)")
	case !o.HasTimestamp || o.TSEcr != syn.Options.TSVal:
		t.Fatalf("SYN-ACK timestamps %v echo %d, want the peer's %d echoed", o.HasTimestamp, o.TSEcr, syn.Options.TSVal)
	}
	iss := sa.Seq
	p.saw(&sa)
	p.ack = iss + 1

	// The ACK that completes the handshake, then data.
	in := []byte("hello from the peer")
	p.send(t, frame.TCPAck, nil)
	p.send(t, frame.TCPAck|frame.TCPPsh, in)
	r := await(t, "AcceptTCP", accepted)
	if r.err != nil {
		t.Fatalf("accept: %v", r.err)
	}
	c := r.c
	closeConnInCleanup(t, c)
	if c.LocalAddr() != laddr || c.RemoteAddr() != peerAddr {
		t.Fatalf("accepted %v -> %v, want %v -> %v", c.LocalAddr(), c.RemoteAddr(), laddr, peerAddr)
	}
	c.SetReadTimeout(tcpWait)
	c.SetWriteTimeout(tcpWait)
	readAll(t, c, in)
	if p.seq != isn+1+uint32(len(in)) || p.seq > isn { // it wrapped
		t.Fatalf("peer at %d: the sequence numbers did not wrap", p.seq)
	}
	ack := h.next(t, "the ACK of the peer's data", func(s *frame.TCPSegment) bool {
		return s.Flags&frame.TCPAck != 0 && s.Ack == p.seq
	})
	if ack.Flags != frame.TCPAck || ack.Seq != iss+1 || len(ack.Payload) != 0 {
		t.Fatalf("ACK %s, want a pure ACK at seq %d", segString(&ack), iss+1)
	}
	p.saw(&ack)

	// The stack's data.
	out := []byte("hello from the stack")
	if n, err := c.Write(out); err != nil || n != len(out) {
		t.Fatalf("write = %d, %v", n, err)
	}
	data := h.next(t, "the stack's data", func(s *frame.TCPSegment) bool { return len(s.Payload) > 0 })
	if data.Seq != iss+1 || data.Ack != p.seq || data.Flags&(frame.TCPAck|frame.TCPSyn|frame.TCPFin|frame.TCPRst) != frame.TCPAck ||
		!bytes.Equal(data.Payload, out) || !data.Options.HasTimestamp {
		t.Fatalf("data %s %q, want seq %d ack %d %q with timestamps", segString(&data), data.Payload, iss+1, p.seq, out)
	}
	p.saw(&data)
	p.ack = data.Seq + uint32(len(out))
	p.send(t, frame.TCPAck, nil)

	closeFromStack(t, h, p, c, iss+1+uint32(len(out)))
	waitClosed(t, c)

	// The accepted connection is gone; the listener still holds the port
	// and its filter until it closes.
	if f := h.rx.filters(); !slices.Equal(f, []fakeFilter{tcpFilter(port)}) {
		t.Fatalf("filters %v with the listener open, want its TCP filter", f)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if f := h.rx.filters(); len(f) != 0 {
		t.Fatalf("filters %v after the listener's Close, want none", f)
	}
	if h.ports.TakenTCP(port) {
		t.Fatal("TCP port still reserved after the listener's Close")
	}
	if s := h.st.TCPStats(); s != (stack.TCPStats{}) {
		t.Fatalf("TCP stats %+v, want zero", s)
	}
	if cs, _ := c.TCPStats(); cs.BytesIn != uint64(len(in)) || cs.BytesOut != uint64(len(out)) || cs.RstSent != 0 {
		t.Fatalf("connection stats %+v", cs)
	}
}

type dialResult struct {
	c   *stack.TCPConn
	err error
}

// dial opens a connection from the stack to peerAddr, the test answering
// its SYN, and returns it with the peer and the stack's next sequence
// number. It checks the SYN, the TCP filter on the ephemeral port, and the
// ACK that ends the handshake.
func dial(t *testing.T, h *tcpHarness, peerISN uint32) (*stack.TCPConn, *tcpPeer, uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), tcpWait)
	ch := make(chan dialResult, 1)
	go func() {
		c, err := h.st.DialTCP(ctx, peerAddr, backend.Options{})
		ch <- dialResult{c, err}
	}()
	waited := false
	t.Cleanup(func() {
		cancel()
		if !waited { // a dial the test failed to wait for
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}
	})

	syn := h.next(t, "the SYN", func(s *frame.TCPSegment) bool { return s.Flags&frame.TCPSyn != 0 })
	switch o := syn.Options; {
	case syn.Flags != frame.TCPSyn:
		t.Fatalf("SYN flags: %s", segString(&syn))
	case syn.DstPort != peerAddr.Port() || syn.SrcPort == 0:
		t.Fatalf("SYN ports: %s", segString(&syn))
	case o.MSS != 1460 || !o.HasWScale || !o.SACKPermitted || !o.HasTimestamp || o.TSEcr != 0:
		t.Fatalf("SYN options %+v, want MSS 1460, window scale, SACK-permitted, timestamps", o)
	}
	eport := syn.SrcPort
	if f := h.rx.filters(); !slices.Contains(f, tcpFilter(eport)) {
		t.Fatalf("filters %v while dialing from port %d, want a TCP filter for it", f, eport)
	}
	if !h.ports.TakenTCP(eport) {
		t.Fatalf("ephemeral port %d not reserved", eport)
	}
	iss := syn.Seq

	p := newTCPPeer(t, h, peerAddr.Port(), eport, peerISN)
	p.saw(&syn)
	p.ack = iss + 1
	sa := p.segment(frame.TCPSyn|frame.TCPAck, nil)
	p.synOptions(&sa)
	h.rx.deliver(p.build(t, sa, nil))

	r := await(t, "DialTCP", (<-chan dialResult)(ch))
	waited = true
	if r.err != nil {
		t.Fatalf("dial: %v", r.err)
	}
	c := r.c
	closeConnInCleanup(t, c)
	if c.RemoteAddr() != peerAddr || c.LocalAddr() != netip.AddrPortFrom(localAddr.Addr(), eport) {
		t.Fatalf("dialed %v -> %v", c.LocalAddr(), c.RemoteAddr())
	}
	c.SetReadTimeout(tcpWait)
	c.SetWriteTimeout(tcpWait)
	ack := h.next(t, "the ACK of the SYN-ACK", func(s *frame.TCPSegment) bool { return s.Flags&frame.TCPAck != 0 })
	if ack.Flags != frame.TCPAck || ack.Seq != iss+1 || ack.Ack != peerISN+1 || len(ack.Payload) != 0 ||
		!ack.Options.HasTimestamp || ack.Options.TSEcr != sa.Options.TSVal {
		t.Fatalf("ACK %s, want seq %d ack %d echoing %d", segString(&ack), iss+1, peerISN+1, sa.Options.TSVal)
	}
	p.saw(&ack)
	return c, p, iss + 1
}

// TestTCPActiveOpenOverEFVI: DialTCP sends a SYN from an ephemeral port it
// steers with a TCP filter, completes the handshake on the peer's
// SYN-ACK, and exchanges a message each way; the peer closes first, the
// stack answers with its FIN, and the filter and port go back when the
// connection ends.
func TestTCPActiveOpenOverEFVI(t *testing.T) {
	h := newTCPHarness(t, false)
	c, p, snd := dial(t, h, 77000)
	eport := c.LocalAddr().Port()

	ping := []byte("ping")
	if n, err := c.Write(ping); err != nil || n != len(ping) {
		t.Fatalf("write = %d, %v", n, err)
	}
	data := h.next(t, "the stack's message", func(s *frame.TCPSegment) bool { return len(s.Payload) > 0 })
	if data.Seq != snd || data.Ack != p.seq || data.Flags&frame.TCPAck == 0 || !bytes.Equal(data.Payload, ping) {
		t.Fatalf("data %s %q, want seq %d ack %d %q", segString(&data), data.Payload, snd, p.seq, ping)
	}
	snd += uint32(len(ping))
	p.saw(&data)
	p.ack = snd

	pong := []byte("pong")
	p.send(t, frame.TCPAck|frame.TCPPsh, pong)
	readAll(t, c, pong)
	ack := h.next(t, "the ACK of the peer's message", func(s *frame.TCPSegment) bool {
		return s.Flags&frame.TCPAck != 0 && s.Ack == p.seq
	})
	if ack.Seq != snd || len(ack.Payload) != 0 {
		t.Fatalf("ACK %s, want seq %d", segString(&ack), snd)
	}
	p.saw(&ack)

	// The peer closes first: the stack acknowledges its FIN, Read reports
	// the end, and Close sends the stack's FIN; the peer's ACK of it ends
	// the connection (no TIME-WAIT on this side).
	p.send(t, frame.TCPFin|frame.TCPAck, nil)
	if n, err := c.Read(make([]byte, 16)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read after the peer's FIN = %d, %v; want io.EOF", n, err)
	}
	fa := h.next(t, "the ACK of the peer's FIN", func(s *frame.TCPSegment) bool {
		return s.Flags&frame.TCPAck != 0 && s.Ack == p.seq
	})
	if fa.Flags != frame.TCPAck || fa.Seq != snd {
		t.Fatalf("ACK of FIN %s, want a pure ACK at seq %d", segString(&fa), snd)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	fin := h.next(t, "the stack's FIN", func(s *frame.TCPSegment) bool { return s.Flags&frame.TCPFin != 0 })
	if fin.Flags != frame.TCPFin|frame.TCPAck || fin.Seq != snd || fin.Ack != p.seq {
		t.Fatalf("FIN %s, want FIN|ACK seq %d ack %d", segString(&fin), snd, p.seq)
	}
	p.saw(&fin)
	p.ack = snd + 1
	p.send(t, frame.TCPAck, nil)
	waitClosed(t, c)
	if !waitUntil(func() bool { return len(h.rx.filters()) == 0 && !h.ports.TakenTCP(eport) }) {
		t.Fatalf("after the connection ended: filters %v, port %d reserved %v", h.rx.filters(), eport, h.ports.TakenTCP(eport))
	}
	if s := h.st.TCPStats(); s != (stack.TCPStats{}) {
		t.Fatalf("TCP stats %+v, want zero", s)
	}
}

// TestTCPResetsAndChecksumDrops: a segment for a port the stack holds with
// no connection for it gets a RST (from a listener's port and from a
// dialed connection's); one for a port it does not hold is left alone (the
// kernel may own it), as is a RST; a segment with a bad TCP checksum is
// dropped and counted, and the good copy after it is delivered.
func TestTCPResetsAndChecksumDrops(t *testing.T) {
	h := newTCPHarness(t, false)
	const lport = 8080
	l, err := h.st.ListenTCP(netip.AddrPortFrom(localAddr.Addr(), lport), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c, p, snd := dial(t, h, 5000)
	eport := c.LocalAddr().Port()

	// A SYN to a port the stack does not hold: dropped, counted, no RST.
	// Then a bare ACK to the listener's port, from a peer port with no
	// connection: RST at the ACK's number. Frames are handled in order,
	// so the first RST seen answers the ACK.
	other := newTCPPeer(t, h, 7001, 9999, 123456)
	other.ts = false
	other.send(t, frame.TCPSyn, nil)
	stray := newTCPPeer(t, h, 7001, lport, 424242)
	stray.ts = false
	stray.ack = 99999
	stray.send(t, frame.TCPAck, nil)
	rst := h.next(t, "a RST for the listener's port", func(s *frame.TCPSegment) bool { return s.Flags&frame.TCPRst != 0 })
	if rst.Flags != frame.TCPRst || rst.Seq != 99999 || rst.SrcPort != lport || rst.DstPort != 7001 || len(rst.Payload) != 0 {
		t.Fatalf("RST %s, want RST seq 99999 %d->7001", segString(&rst), lport)
	}
	if s := h.st.TCPStats(); s.DropNoPort != 1 || s.NoConnReset != 1 {
		t.Fatalf("stats %+v, want DropNoPort 1, NoConnReset 1", s)
	}

	// A RST to the dialed port from another peer port: not answered.
	// Then a SYN with data to the same port: RST|ACK acknowledging it.
	quiet := newTCPPeer(t, h, 7002, eport, 1<<20)
	quiet.ts = false
	quiet.send(t, frame.TCPRst, nil)
	refused := newTCPPeer(t, h, 7003, eport, 1<<21)
	refused.ts = false
	refused.send(t, frame.TCPSyn, []byte("abc"))
	rst = h.next(t, "a RST for the dialed port", func(s *frame.TCPSegment) bool { return s.Flags&frame.TCPRst != 0 })
	if rst.Flags != frame.TCPRst|frame.TCPAck || rst.Seq != 0 || rst.Ack != 1<<21+4 || rst.SrcPort != eport || rst.DstPort != 7003 {
		t.Fatalf("RST %s, want RST|ACK seq 0 ack %d %d->7003", segString(&rst), 1<<21+4, eport)
	}
	if s := h.st.TCPStats(); s.NoConnReset != 2 || s.DropNoPort != 1 {
		t.Fatalf("stats %+v, want NoConnReset 2, DropNoPort 1", s)
	}

	// A data segment with a bad checksum (one payload byte changed after
	// the checksum; the IPv4 header is intact): dropped and counted. The
	// good copy after it is the one delivered.
	good := []byte("good")
	seg := p.segment(frame.TCPAck|frame.TCPPsh, good)
	bad := p.build(t, seg, good)
	bad[len(bad)-1] ^= 0x20 // "goo" + 'G'
	h.rx.deliver(bad)
	if !waitUntil(func() bool { return h.st.TCPStats().DropChecksum == 1 }) {
		t.Fatalf("stats %+v, want DropChecksum 1", h.st.TCPStats())
	}
	h.rx.deliver(p.build(t, seg, good))
	readAll(t, c, good)
	if s := h.st.TCPStats(); s.DropChecksum != 1 || s.DropMalformed != 0 {
		t.Fatalf("stats %+v, want DropChecksum 1, DropMalformed 0", s)
	}
	ack := h.next(t, "the ACK of the good copy", func(s *frame.TCPSegment) bool {
		return s.Flags&frame.TCPAck != 0 && s.Ack == p.seq
	})
	p.saw(&ack)

	closeFromStack(t, h, p, c, snd)
	waitClosed(t, c)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if f := h.rx.filters(); len(f) != 0 {
		t.Fatalf("filters %v left", f)
	}
}
