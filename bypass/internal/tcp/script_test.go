package tcp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass/internal/frame"
)

// Packetdrill-style scripts: the test plays the peer. It builds each
// segment the peer sends by hand (flags, sequence and acknowledgment
// numbers, window, options, payload), feeds it to the connection, and
// asserts exactly the segments the connection sends back and its state.
// Time is simulated: every call gets an explicit now.

// Flags as a script writes them.
const (
	fS   = frame.TCPSyn
	fA   = frame.TCPAck
	fF   = frame.TCPFin
	fR   = frame.TCPRst
	fP   = frame.TCPPsh
	fSA  = fS | fA
	fFA  = fF | fA
	fRA  = fR | fA
	fPA  = fP | fA
	fFPA = fF | fP | fA
)

// The two sides' initial sequence numbers: the connection's (L) and the
// scripted peer's (P). Both sit just below 2^32, so that every script's
// sequence numbers wrap.
var (
	L uint32 = 0xffffff00
	P uint32 = 0xfffffc00
)

const (
	scAddrL = 0xc0a80001 // the connection's address
	scAddrP = 0xc0a80002 // the peer's
	scPortL = 8080
	scPortP = 51000
	scStart = int64(time.Hour) // the scripts' clock starts here
)

// patByte is the byte at sequence number seq of a scripted stream: every
// copy of a byte the peer sends (first send, retransmission, overlap)
// carries the same value, so what the connection delivers can be checked
// byte by byte.
func patByte(seq uint32) byte { return byte((seq * 2654435761) >> 24) }

// pat is n bytes of the scripted stream from seq.
func pat(seq uint32, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = patByte(seq + uint32(i))
	}
	return b
}

// capture is an Output that encodes each segment as the stack would (with
// its checksum), parses it back and keeps it.
type capture struct {
	src, dst uint32
	segs     []frame.TCPSegment
	bad      []string // segments that failed to encode or parse
	full     bool     // refuse every segment
}

func (o *capture) Send(h *frame.TCPSegment, p1, p2 []byte) bool {
	if o.full {
		return false
	}
	s := *h
	s.Payload = append(append([]byte(nil), p1...), p2...)
	b, err := frame.AppendTCP(nil, &s, o.src, o.dst)
	if err != nil {
		o.bad = append(o.bad, fmt.Sprintf("AppendTCP(%v): %v", fmtSeg(&s), err))
		return true
	}
	var got frame.TCPSegment
	if err := frame.ParseTCP(b, o.src, o.dst, &got); err != nil {
		o.bad = append(o.bad, fmt.Sprintf("ParseTCP(%v): %v", fmtSeg(&s), err))
		return true
	}
	o.segs = append(o.segs, got)
	return true
}

func fmtFlags(f uint8) string {
	var b []byte
	for i, c := range "FSRPAUEC" {
		if f&(1<<i) != 0 {
			b = append(b, byte(c))
		}
	}
	if len(b) == 0 {
		return "."
	}
	return string(b)
}

func fmtSeg(s *frame.TCPSegment) string {
	o := &s.Options
	str := fmt.Sprintf("%s seq %d ack %d win %d len %d", fmtFlags(s.Flags), s.Seq, s.Ack, s.Window, len(s.Payload))
	if o.MSS != 0 {
		str += fmt.Sprintf(" mss %d", o.MSS)
	}
	if o.HasWScale {
		str += fmt.Sprintf(" wscale %d", o.WScale)
	}
	if o.SACKPermitted {
		str += " sackOK"
	}
	if o.HasTimestamp {
		str += fmt.Sprintf(" TS val %d ecr %d", o.TSVal, o.TSEcr)
	}
	for i := range o.NSACK {
		str += fmt.Sprintf(" sack %d:%d", o.SACK[i].Left, o.SACK[i].Right)
	}
	return str
}

// script is one connection under test and the peer the test plays.
type script struct {
	t   *testing.T
	cfg Config
	c   *Conn
	out capture
	now int64
	// ts: the connection negotiated timestamps, so the peer's segments
	// carry them (TSVal tsVal) and the connection's must too (TSEcr
	// tsVal, unless a test says otherwise).
	ts    bool
	tsVal uint32
	wrote []byte // everything the application wrote, from L+1
}

func newScript(t *testing.T, cfg Config) *script {
	t.Helper()
	s := &script{t: t, cfg: cfg, now: scStart, tsVal: 5000}
	s.out = capture{src: scAddrL, dst: scAddrP}
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		for _, b := range s.out.bad {
			t.Errorf("bad segment: %s", b)
		}
		for i := range s.out.segs {
			t.Errorf("the script ended with an unexpected segment: %s", fmtSeg(&s.out.segs[i]))
		}
	})
	return s
}

// active opens the connection actively: it sends the SYN.
func (s *script) active() {
	s.c = NewActive(s.cfg, &s.out, scPortL, scPortP, L, s.now)
	s.check()
}

// passive builds the peer's SYN and opens the connection passively on it:
// it sends the SYN-ACK.
func (s *script) passive(win uint16, o frame.TCPOptions) {
	syn := s.segment(fS, P, 0, win, o, nil)
	s.c = NewPassive(s.cfg, &s.out, scPortL, scPortP, L, &syn, s.now)
	s.check()
}

// segment encodes and parses a segment from the peer, as the stack would
// hand it over.
func (s *script) segment(flags uint8, seq, ack uint32, win uint16, o frame.TCPOptions, payload []byte) frame.TCPSegment {
	s.t.Helper()
	h := frame.TCPSegment{SrcPort: scPortP, DstPort: scPortL, Seq: seq, Ack: ack, Flags: flags, Window: win, Options: o, Payload: payload}
	b, err := frame.AppendTCP(nil, &h, scAddrP, scAddrL)
	if err != nil {
		s.t.Fatalf("building %s: %v", fmtSeg(&h), err)
	}
	var seg frame.TCPSegment
	if err := frame.ParseTCP(b, scAddrP, scAddrL, &seg); err != nil {
		s.t.Fatalf("parsing %s: %v", fmtSeg(&h), err)
	}
	return seg
}

// tsOpt is the timestamp option alone.
func tsOpt(val, ecr uint32) frame.TCPOptions {
	return frame.TCPOptions{HasTimestamp: true, TSVal: val, TSEcr: ecr}
}

// none is no options (the peer's timestamps are still added when
// negotiated).
var none = frame.TCPOptions{}

// in delivers a segment from the peer, as one batch (Input, then Flush).
// When timestamps are negotiated and o has none, it carries the peer's
// current ones.
func (s *script) in(flags uint8, seq, ack uint32, win uint16, o frame.TCPOptions, payload []byte) {
	s.t.Helper()
	if s.ts && !o.HasTimestamp {
		o.HasTimestamp, o.TSVal, o.TSEcr = true, s.tsVal, s.c.tsNow()
	}
	seg := s.segment(flags, seq, ack, win, o, payload)
	s.c.Input(&seg, s.now)
	s.c.Flush(s.now)
	s.check()
}

// exp is what expect checks beyond flags, seq and ack.
type exp struct {
	win    int // -1: the window the receive buffer's free space makes
	opts   frame.TCPOptions
	exact  bool // opts was given whole
	length int
}

type mod func(s *script, e *exp)

// withWin expects window w (as sent, before scaling).
func withWin(w uint16) mod { return func(_ *script, e *exp) { e.win = int(w) } }

// withLen expects n bytes of payload (the bytes written at its sequence
// numbers).
func withLen(n int) mod { return func(_ *script, e *exp) { e.length = n } }

// withSACK expects SACK blocks, as left, right pairs, in order.
func withSACK(edges ...uint32) mod {
	return func(_ *script, e *exp) {
		e.opts.NSACK = len(edges) / 2
		for i := 0; i+1 < len(edges); i += 2 {
			e.opts.SACK[i/2] = frame.SACKBlock{Left: edges[i], Right: edges[i+1]}
		}
	}
}

// withOpts expects exactly the options o; a timestamp option in o gets the
// connection's current TSVal when o's is 0.
func withOpts(o frame.TCPOptions) mod {
	return func(s *script, e *exp) {
		if o.HasTimestamp && o.TSVal == 0 {
			o.TSVal = s.c.tsNow()
		}
		e.opts, e.exact = o, true
	}
}

// defaultWin is the window the free receive buffer makes.
func (s *script) defaultWin() int {
	c := s.c
	free := c.rbuf.size() - (c.rcvNxt - c.rcvRead)
	return int(min(free>>c.rcvShift, 65535))
}

// expect takes the next segment the connection sent and checks it: flags,
// seq and ack exactly; the window (the free buffer unless withWin); the
// options (only timestamps, when negotiated, unless withOpts or
// withSACK); the payload (none unless withLen, and then the bytes the
// application wrote there).
func (s *script) expect(flags uint8, seq, ack uint32, mods ...mod) frame.TCPSegment {
	s.t.Helper()
	if len(s.out.segs) == 0 {
		s.t.Fatalf("expected %s seq %d ack %d; the connection sent nothing (state %v)", fmtFlags(flags), seq, ack, s.c.State())
	}
	got := s.out.segs[0]
	s.out.segs = s.out.segs[1:]
	e := exp{win: s.defaultWin()}
	if s.ts {
		e.opts = tsOpt(s.c.tsNow(), s.tsVal)
	}
	for _, m := range mods {
		m(s, &e)
	}
	want := frame.TCPSegment{SrcPort: scPortL, DstPort: scPortP, Seq: seq, Ack: ack, Flags: flags, Window: uint16(e.win), Options: e.opts}
	ok := got.SrcPort == want.SrcPort && got.DstPort == want.DstPort && got.Flags == flags &&
		got.Seq == seq && got.Ack == ack && got.Window == want.Window && got.Options == e.opts &&
		len(got.Payload) == e.length && got.Urgent == 0
	if !ok {
		want.Payload = make([]byte, e.length)
		s.t.Fatalf("the connection sent\n\t%s\nwant\n\t%s", fmtSeg(&got), fmtSeg(&want))
	}
	if e.length > 0 {
		off := int(got.Seq - (L + 1))
		if off < 0 || off+e.length > len(s.wrote) || !bytes.Equal(got.Payload, s.wrote[off:off+e.length]) {
			s.t.Fatalf("segment %s: its payload is not the data written at offset %d", fmtSeg(&got), off)
		}
	}
	return got
}

// expectNone checks that the connection sent nothing.
func (s *script) expectNone() {
	s.t.Helper()
	if len(s.out.segs) > 0 {
		s.t.Fatalf("the connection sent %s; want nothing", fmtSeg(&s.out.segs[0]))
	}
}

// advance moves the clock by d and runs the timers.
func (s *script) advance(d time.Duration) {
	s.t.Helper()
	s.now += int64(d)
	s.c.Tick(s.now)
	s.check()
	if dl := s.c.NextDeadline(); dl != 0 && dl <= s.now {
		s.t.Fatalf("after Tick(%d) the next deadline %d has passed", s.now, dl)
	}
}

// deadlineIn checks that the next deadline is d from now.
func (s *script) deadlineIn(d time.Duration) {
	s.t.Helper()
	if got := s.c.NextDeadline(); got != s.now+int64(d) {
		s.t.Fatalf("next deadline in %v, want %v", time.Duration(got-s.now), d)
	}
}

// write has the application write n bytes (all of which must be taken).
func (s *script) write(n int) {
	s.t.Helper()
	b := pat(uint32(len(s.wrote))*7+1, n) // any bytes, remembered
	got, err := s.c.Write(b, s.now)
	if err != nil || got != n {
		s.t.Fatalf("Write(%d) = %d, %v", n, got, err)
	}
	s.wrote = append(s.wrote, b...)
	s.check()
}

// read has the application read everything readable and checks that it is
// the n bytes of the peer's stream from seq.
func (s *script) read(seq uint32, n int) {
	s.t.Helper()
	buf := make([]byte, n+100)
	got, err := s.c.Read(buf, s.now)
	if err != nil && !(err == io.EOF && n == 0) {
		s.t.Fatalf("Read: %v", err)
	}
	if got != n || !bytes.Equal(buf[:got], pat(seq, n)) {
		s.t.Fatalf("Read returned %d bytes (equal to the stream from %d: %v), want %d", got, seq, bytes.Equal(buf[:got], pat(seq, got)), n)
	}
	s.check()
}

// state checks the connection's state and error.
func (s *script) state(want State, err error) {
	s.t.Helper()
	if s.c.State() != want || !errors.Is(s.c.Err(), err) || (err == nil && s.c.Err() != nil) {
		s.t.Fatalf("state %v, err %v; want %v, %v", s.c.State(), s.c.Err(), want, err)
	}
}

// check asserts the invariants that hold after every call.
func (s *script) check() {
	s.t.Helper()
	if err := invariants(s.c, s.now, true); err != nil {
		s.t.Fatal(err)
	}
}

// invariants checks a connection's internal consistency at time now; live
// adds that a timer runs whenever data waits (which an Output that refused
// segments can break).
func invariants(c *Conn, now int64, live bool) error {
	if !seqLEQ(c.sndUna, c.sndNxt) || !seqLEQ(c.sndNxt, c.sndMax) {
		return fmt.Errorf("send sequence out of order: una %d nxt %d max %d", c.sndUna, c.sndNxt, c.sndMax)
	}
	fin := uint32(0)
	if c.finQueued {
		fin = 1
	}
	if !seqLEQ(c.sndMax, c.sndEnd+fin) {
		return fmt.Errorf("sent past the data: max %d end %d fin %v", c.sndMax, c.sndEnd, c.finQueued)
	}
	if q := c.sndEnd - c.sndStart(); q > c.sbuf.size() {
		return fmt.Errorf("send buffer holds %d bytes of %d", q, c.sbuf.size())
	}
	if r := c.Readable(); r < 0 || r > int(c.rbuf.size()) {
		return fmt.Errorf("Readable() = %d with a %d-byte buffer", r, c.rbuf.size())
	}
	if w := c.Writable(); w < 0 || w > int(c.sbuf.size()) {
		return fmt.Errorf("Writable() = %d with a %d-byte buffer", w, c.sbuf.size())
	}
	if c.ooo.n < 0 || c.ooo.n > maxBlocks {
		return fmt.Errorf("%d out-of-order blocks", c.ooo.n)
	}
	if c.state.synchronized() || c.state == SynReceived {
		prev := c.rcvNxt
		for i := range c.ooo.n {
			b := c.ooo.b[i]
			if !seqLT(prev, b.l) || !seqLT(b.l, b.r) || seqGT(b.r, c.rcvRead+c.rbuf.size()) {
				return fmt.Errorf("out-of-order blocks %v (rcv.nxt %d, read %d)", c.ooo.all(), c.rcvNxt, c.rcvRead)
			}
			prev = b.r
		}
	}
	if c.cwnd == 0 || c.mss <= 0 {
		return fmt.Errorf("cwnd %d mss %d", c.cwnd, c.mss)
	}
	dl := c.NextDeadline()
	if c.state == Closed && dl != 0 {
		return fmt.Errorf("closed with a timer at %d", dl)
	}
	span := int64(max(c.cfg.MaxRTO, c.cfg.TimeWait, c.cfg.Keepalive, c.cfg.DelayedACK))
	if dl != 0 && dl > now+span {
		return fmt.Errorf("next deadline %v away, past every timer's span", time.Duration(dl-now))
	}
	if !live {
		return nil
	}
	switch c.state {
	case SynSent, SynReceived, Established, FinWait1, CloseWait, Closing, LastAck:
		// A zero window with data in flight is watched by the persist
		// timer instead (probes, not timeouts).
		if c.sndUna != c.sndMax && c.rtoAt == 0 && !(c.sndWnd == 0 && c.persistAt != 0) {
			return fmt.Errorf("%v: %d unacknowledged and no retransmission timer", c.state, c.sndMax-c.sndUna)
		}
		if c.state.synchronized() && c.sndNxt == c.sndUna && seqLT(c.sndNxt, c.sndEnd+fin) && c.rtoAt == 0 && c.persistAt == 0 {
			return fmt.Errorf("%v: data waits (nxt %d end %d fin %v, window %d) and no timer runs", c.state, c.sndNxt, c.sndEnd, c.finQueued, c.sndWnd)
		}
	}
	return nil
}

// The configuration most scripts use: a 1012-byte MSS (1000 with
// timestamps), a 32 KiB receive buffer (window scale 0).
func scCfg() Config { return Config{MSS: 1012, RecvBuf: 32 << 10, SendBuf: 64 << 10} }

// peerOpts is what the scripted peer offers in its SYN or SYN-ACK: every
// option, MSS 1012 and window scale 0.
func peerOpts() frame.TCPOptions {
	return frame.TCPOptions{MSS: 1012, HasWScale: true, SACKPermitted: true, HasTimestamp: true, TSVal: 5000}
}

// establish opens the connection actively against a peer offering o
// (whose timestamp, if any, is 5000) with window 65535, and completes the
// handshake: the connection is ESTABLISHED at L+1, P+1.
func establish(t *testing.T, cfg Config, o frame.TCPOptions) *script {
	t.Helper()
	s := newScript(t, cfg)
	s.active()
	syn := s.expect(fS, L, 0, withWin(uint16(min(s.c.rbuf.size(), 65535))), withOpts(s.out.segs[0].Options))
	if o.HasTimestamp {
		o.TSEcr = syn.Options.TSVal
	}
	s.now += int64(10 * time.Millisecond)
	s.in(fSA, P, L+1, 65535, o, nil)
	s.ts = s.c.tsOK
	s.expect(fA, L+1, P+1)
	s.state(Established, nil)
	return s
}

type optSet struct {
	name              string
	mss, ws, sack, ts bool
}

var optSets = []optSet{
	{name: "all", mss: true, ws: true, sack: true, ts: true},
	{name: "none"},
	{name: "mss", mss: true},
	{name: "wscale", ws: true},
	{name: "sack", sack: true},
	{name: "ts", ts: true},
}

// peerOffer is what a peer offering set o sends in its SYN: MSS 1460,
// window scale 7, SACK, timestamp 5000 (echoing ecr).
func peerOffer(o optSet, ecr uint32) frame.TCPOptions {
	var opts frame.TCPOptions
	if o.mss {
		opts.MSS = 1460
	}
	if o.ws {
		opts.HasWScale, opts.WScale = true, 7
	}
	opts.SACKPermitted = o.sack
	if o.ts {
		opts.HasTimestamp, opts.TSVal, opts.TSEcr = true, 5000, ecr
	}
	return opts
}

// connConfig is a 1 MiB-buffer configuration (window scale 5) offering the
// options of set o (the MSS, 1012, always).
func connConfig(o optSet) Config {
	return Config{MSS: 1012, RecvBuf: 1 << 20, NoWindowScale: !o.ws, NoSACK: !o.sack, NoTimestamps: !o.ts}
}

// checkNegotiated checks what the connection agreed with the peer.
func checkNegotiated(t *testing.T, c *Conn, conn, peer optSet) {
	t.Helper()
	ws, sack, ts := conn.ws && peer.ws, conn.sack && peer.sack, conn.ts && peer.ts
	mss := 536
	if peer.mss {
		mss = 1012 // min(1460, 1012)
	}
	if ts {
		mss -= 12
	}
	var sndShift, rcvShift uint8
	if ws {
		sndShift, rcvShift = 7, 5
	}
	if c.wsOK != ws || c.sackOK != sack || c.tsOK != ts || c.mss != mss || c.sndShift != sndShift || c.rcvShift != rcvShift {
		t.Fatalf("negotiated ws %v sack %v ts %v mss %d shifts snd %d rcv %d; want %v %v %v %d %d %d",
			c.wsOK, c.sackOK, c.tsOK, c.mss, c.sndShift, c.rcvShift, ws, sack, ts, mss, sndShift, rcvShift)
	}
	if c.cwnd != initialWindow(uint32(mss)) {
		t.Fatalf("cwnd %d, want %d", c.cwnd, initialWindow(uint32(mss)))
	}
}

func TestScriptHandshakeActive(t *testing.T) {
	for _, conn := range optSets {
		if conn.name == "mss" {
			continue // the connection always sends its MSS: "none" is this
		}
		for _, peer := range optSets {
			t.Run("conn="+conn.name+"/peer="+peer.name, func(t *testing.T) {
				s := newScript(t, connConfig(conn))
				s.active()
				// SYN: MSS always; the rest as configured; the
				// window unscaled and capped at 65535.
				syn := s.expect(fS, L, 0, withWin(65535), withOpts(frame.TCPOptions{
					MSS: 1012, HasWScale: conn.ws, WScale: map[bool]uint8{true: 5}[conn.ws],
					SACKPermitted: conn.sack, HasTimestamp: conn.ts,
				}))
				s.state(SynSent, nil)
				s.deadlineIn(time.Second)

				s.now += int64(5 * time.Millisecond)
				s.in(fSA, P, L+1, 20000, peerOffer(peer, syn.Options.TSVal), nil)
				s.ts = conn.ts && peer.ts
				win := uint16(65535)
				if conn.ws && peer.ws {
					win = (1 << 20) >> 5
				}
				s.expect(fA, L+1, P+1, withWin(win))
				s.state(Established, nil)
				checkNegotiated(t, s.c, conn, peer)
				if s.c.sndWnd != 20000 {
					t.Fatalf("send window %d after the SYN-ACK, want its 20000 unscaled", s.c.sndWnd)
				}
				if s.c.NextDeadline() != 0 {
					t.Fatalf("a timer runs in an idle established connection: %d", s.c.NextDeadline())
				}
				// A window update is scaled by the peer's shift.
				s.in(fA, P+1, L+1, 100, none, nil)
				s.expectNone()
				if want := uint32(100) << s.c.sndShift; s.c.sndWnd != want {
					t.Fatalf("send window %d, want %d", s.c.sndWnd, want)
				}
			})
		}
	}
}

func TestScriptHandshakePassive(t *testing.T) {
	for _, conn := range optSets {
		if conn.name == "mss" {
			continue
		}
		for _, peer := range optSets {
			t.Run("conn="+conn.name+"/peer="+peer.name, func(t *testing.T) {
				s := newScript(t, connConfig(conn))
				s.passive(20000, peerOffer(peer, 0))
				ws, sack, ts := conn.ws && peer.ws, conn.sack && peer.sack, conn.ts && peer.ts
				// SYN-ACK: MSS always; the rest only as agreed.
				o := frame.TCPOptions{MSS: 1012, HasWScale: ws, SACKPermitted: sack}
				if ws {
					o.WScale = 5
				}
				if ts {
					o.HasTimestamp, o.TSEcr = true, 5000
				}
				s.expect(fSA, L, P+1, withWin(65535), withOpts(o))
				s.state(SynReceived, nil)
				s.deadlineIn(time.Second)
				if s.c.sndWnd != 20000 {
					t.Fatalf("send window %d after the SYN, want its 20000 unscaled", s.c.sndWnd)
				}

				s.ts = ts
				s.now += int64(5 * time.Millisecond)
				s.in(fA, P+1, L+1, 300, none, nil)
				s.expectNone()
				s.state(Established, nil)
				checkNegotiated(t, s.c, conn, peer)
				if want := uint32(300) << s.c.sndShift; s.c.sndWnd != want {
					t.Fatalf("send window %d, want %d", s.c.sndWnd, want)
				}
				if s.c.NextDeadline() != 0 {
					t.Fatalf("a timer runs in an idle established connection")
				}
			})
		}
	}
}

func TestScriptSimultaneousOpen(t *testing.T) {
	s := newScript(t, scCfg())
	s.active()
	syn := s.expect(fS, L, 0, withWin(32768), withOpts(frame.TCPOptions{MSS: 1012, HasWScale: true, SACKPermitted: true, HasTimestamp: true}))
	// The peer's SYN crosses ours: SYN-RECEIVED, and a SYN-ACK with the
	// same ISS and the options agreed.
	s.now += int64(time.Millisecond)
	s.in(fS, P, 0, 20000, frame.TCPOptions{MSS: 1012, HasWScale: true, WScale: 2, SACKPermitted: true, HasTimestamp: true, TSVal: 5000}, nil)
	s.state(SynReceived, nil)
	s.expect(fSA, L, P+1, withWin(32768), withOpts(frame.TCPOptions{MSS: 1012, HasWScale: true, SACKPermitted: true, HasTimestamp: true, TSEcr: 5000}))
	s.ts = true
	// The peer's SYN-ACK (RFC 9293 figure 7, line 6) acknowledges our SYN:
	// ESTABLISHED, with the window unscaled as in any SYN.
	s.now += int64(time.Millisecond)
	s.in(fSA, P, L+1, 20000, frame.TCPOptions{MSS: 1012, HasWScale: true, WScale: 2, SACKPermitted: true, HasTimestamp: true, TSVal: 5000, TSEcr: syn.Options.TSVal}, nil)
	s.state(Established, nil)
	s.expectNone()
	if s.c.sndWnd != 20000 || s.c.sndShift != 2 || s.c.sndUna != L+1 || s.c.NextDeadline() != 0 {
		t.Fatalf("after the SYN-ACK: window %d shift %d una %d deadline %d", s.c.sndWnd, s.c.sndShift, s.c.sndUna, s.c.NextDeadline())
	}
	// Data flows both ways.
	s.write(100)
	s.expect(fPA, L+1, P+1, withLen(100))
	s.in(fPA, P+1, L+101, 5000, none, pat(P+1, 10))
	s.expect(fA, L+101, P+11)
	s.read(P+1, 10)
	if s.c.sndWnd != 5000<<2 {
		t.Fatalf("send window %d, want %d", s.c.sndWnd, 5000<<2)
	}
}

// TestScriptSimultaneousOpenAck is the other order of simultaneous open: the
// peer's bare ACK of our SYN-ACK comes first (the peer's own SYN-ACK lost).
func TestScriptSimultaneousOpenAck(t *testing.T) {
	s := newScript(t, scCfg())
	s.active()
	s.expect(fS, L, 0, withWin(32768), withOpts(s.out.segs[0].Options))
	s.in(fS, P, 0, 20000, peerOpts(), nil)
	s.expect(fSA, L, P+1, withWin(32768), withOpts(frame.TCPOptions{MSS: 1012, HasWScale: true, SACKPermitted: true, HasTimestamp: true, TSEcr: 5000}))
	s.ts = true
	s.in(fA, P+1, L+1, 20000, none, nil)
	s.expectNone()
	s.state(Established, nil)
}

// TestScriptSimultaneousOpenTwoConns crosses two connections' SYNs.
func TestScriptSimultaneousOpenTwoConns(t *testing.T) {
	ab := &capture{src: scAddrL, dst: scAddrP}
	ba := &capture{src: scAddrP, dst: scAddrL}
	now := scStart
	a := NewActive(scCfg(), ab, scPortL, scPortP, L, now)
	b := NewActive(scCfg(), ba, scPortP, scPortL, P, now)
	for range 10 {
		now += int64(time.Millisecond)
		// Both directions' segments cross on the wire.
		sa, sb := ab.segs, ba.segs
		ab.segs, ba.segs = nil, nil
		for i := range sa {
			b.Input(&sa[i], now)
		}
		for i := range sb {
			a.Input(&sb[i], now)
		}
		if len(sa)+len(sb) == 0 {
			break
		}
	}
	if a.State() != Established || b.State() != Established {
		t.Fatalf("after simultaneous open: %v, %v", a.State(), b.State())
	}
	if a.Stats().Timeouts+b.Stats().Timeouts != 0 {
		t.Fatalf("simultaneous open needed a timeout")
	}
}

func TestScriptSimultaneousClose(t *testing.T) {
	t.Run("scripted", func(t *testing.T) {
		s := establish(t, Config{MSS: 1012, RecvBuf: 32 << 10, TimeWait: 10 * time.Second}, peerOpts())
		s.c.Close(s.now)
		s.expect(fFA, L+1, P+1)
		s.state(FinWait1, nil)
		// The peer's FIN crosses ours: it does not acknowledge ours.
		s.in(fFA, P+1, L+1, 65535, none, nil)
		s.expect(fA, L+2, P+2)
		s.state(Closing, nil)
		// Then its ACK of our FIN.
		s.in(fA, P+2, L+2, 65535, none, nil)
		s.expectNone()
		s.state(TimeWait, nil)
		s.deadlineIn(10 * time.Second)
		s.advance(10 * time.Second)
		s.state(Closed, nil)
		s.expectNone()
	})
	t.Run("two conns", func(t *testing.T) {
		cfg := Config{MSS: 1012, TimeWait: 5 * time.Second}
		ab := &capture{src: scAddrL, dst: scAddrP}
		ba := &capture{src: scAddrP, dst: scAddrL}
		now := scStart
		a := NewActive(cfg, ab, scPortL, scPortP, L, now)
		b := NewPassive(cfg, ba, scPortP, scPortL, P, &ab.segs[0], now)
		ab.segs = nil
		cross := func() {
			now += int64(time.Millisecond)
			sa, sb := ab.segs, ba.segs
			ab.segs, ba.segs = nil, nil
			for i := range sa {
				b.Input(&sa[i], now)
			}
			for i := range sb {
				a.Input(&sb[i], now)
			}
			a.Flush(now)
			b.Flush(now)
		}
		for range 3 {
			cross()
		}
		if a.State() != Established || b.State() != Established {
			t.Fatalf("not established: %v %v", a.State(), b.State())
		}
		a.Close(now)
		b.Close(now)
		if a.State() != FinWait1 || b.State() != FinWait1 || len(ab.segs) != 1 || len(ba.segs) != 1 {
			t.Fatalf("after Close: %v %v, %d and %d segments", a.State(), b.State(), len(ab.segs), len(ba.segs))
		}
		cross() // the FINs cross
		if a.State() != Closing || b.State() != Closing {
			t.Fatalf("after the FINs crossed: %v %v, want CLOSING on both", a.State(), b.State())
		}
		cross() // the ACKs cross
		if a.State() != TimeWait || b.State() != TimeWait {
			t.Fatalf("after the ACKs crossed: %v %v, want TIME-WAIT on both", a.State(), b.State())
		}
		if len(ab.segs)+len(ba.segs) != 0 {
			t.Fatalf("segments after both reached TIME-WAIT")
		}
		now += int64(5 * time.Second)
		a.Tick(now)
		b.Tick(now)
		if a.State() != Closed || b.State() != Closed || a.Err() != nil || b.Err() != nil {
			t.Fatalf("after TIME-WAIT: %v %v (%v, %v)", a.State(), b.State(), a.Err(), b.Err())
		}
	})
}

func TestScriptRstSynSent(t *testing.T) {
	t.Run("acceptable ACK", func(t *testing.T) {
		s := newScript(t, scCfg())
		s.active()
		s.expect(fS, L, 0, withWin(32768), withOpts(s.out.segs[0].Options))
		s.in(fRA, 0, L+1, 0, none, nil)
		s.expectNone()
		s.state(Closed, ErrRefused)
		if !errors.Is(s.c.Err(), syscall.ECONNREFUSED) || s.c.Stats().RstRecv != 1 || s.c.NextDeadline() != 0 {
			t.Fatalf("err %v, stats %+v", s.c.Err(), s.c.Stats())
		}
		if _, err := s.c.Write([]byte{1}, s.now); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("Write after a refusal: %v", err)
		}
	})
	for _, ack := range []uint32{L, L + 2, L - 1000} {
		t.Run(fmt.Sprintf("unacceptable ACK %+d", int32(ack-L-1)), func(t *testing.T) {
			s := newScript(t, scCfg())
			s.active()
			s.expect(fS, L, 0, withWin(32768), withOpts(s.out.segs[0].Options))
			s.in(fRA, 0, ack, 0, none, nil)
			s.expectNone()
			s.state(SynSent, nil)
			if s.c.Stats().RstRecv != 0 {
				t.Fatalf("a RST with an unacceptable ACK counted")
			}
			s.deadlineIn(time.Second)
		})
	}
	t.Run("no ACK", func(t *testing.T) {
		s := newScript(t, scCfg())
		s.active()
		s.expect(fS, L, 0, withWin(32768), withOpts(s.out.segs[0].Options))
		s.in(fR, 0, 0, 0, none, nil)
		s.expectNone()
		s.state(SynSent, nil)
	})
	t.Run("unacceptable ACK without RST", func(t *testing.T) {
		// RFC 9293: a reset answers an ACK of something never sent.
		s := newScript(t, scCfg())
		s.active()
		s.expect(fS, L, 0, withWin(32768), withOpts(s.out.segs[0].Options))
		s.in(fSA, P, L+50, 1000, peerOpts(), nil)
		s.expect(fR, L+50, 0, withWin(0), withOpts(none))
		s.state(SynSent, nil)
	})
}

func TestScriptRstEstablished(t *testing.T) {
	t.Run("at RCV.NXT", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.in(fR, P+1, 0, 0, none, nil)
		s.expectNone()
		s.state(Closed, ErrReset)
		if !errors.Is(s.c.Err(), syscall.ECONNRESET) || s.c.Stats().RstRecv != 1 {
			t.Fatalf("err %v stats %+v", s.c.Err(), s.c.Stats())
		}
		if _, err := s.c.Read(make([]byte, 10), s.now); !errors.Is(err, ErrReset) {
			t.Fatalf("Read after a reset: %v", err)
		}
		if _, err := s.c.Write(make([]byte, 10), s.now); !errors.Is(err, ErrReset) {
			t.Fatalf("Write after a reset: %v", err)
		}
	})
	t.Run("in window, not exact", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.in(fR, P+1+5000, 0, 0, none, nil)
		s.expect(fA, L+1, P+1) // the challenge ACK (RFC 5961 section 3.2)
		s.state(Established, nil)
		if st := s.c.Stats(); st.ChallengeAcks != 1 || st.RstRecv != 0 {
			t.Fatalf("stats %+v", st)
		}
		// The peer's answer, a RST at RCV.NXT, resets.
		s.in(fR, P+1, 0, 0, none, nil)
		s.state(Closed, ErrReset)
	})
	for _, off := range []int32{32768, 1 << 20, -1, -100000} {
		t.Run(fmt.Sprintf("out of window %+d", off), func(t *testing.T) {
			s := establish(t, scCfg(), peerOpts())
			s.in(fR, P+1+uint32(off), 0, 0, none, nil)
			s.expectNone()
			s.state(Established, nil)
			if st := s.c.Stats(); st.DropOutOfWindow != 1 || st.ChallengeAcks != 0 || st.RstRecv != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
	t.Run("RST+ACK with an old timestamp", func(t *testing.T) {
		// PAWS does not apply to a RST (RFC 7323 section 5.3).
		s := establish(t, scCfg(), peerOpts())
		s.in(fRA, P+1, L+1, 0, tsOpt(1, 0), nil)
		s.state(Closed, ErrReset)
	})
}

func TestScriptRstFinWait(t *testing.T) {
	t.Run("FIN-WAIT-1", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.c.Close(s.now)
		s.expect(fFA, L+1, P+1)
		s.state(FinWait1, nil)
		s.in(fR, P+1+10, 0, 0, none, nil) // in window, not exact
		s.expect(fA, L+2, P+1)
		s.state(FinWait1, nil)
		s.in(fRA, P+1, L+1, 0, none, nil)
		s.expectNone()
		s.state(Closed, ErrReset)
	})
	t.Run("FIN-WAIT-2", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.c.Close(s.now)
		s.expect(fFA, L+1, P+1)
		s.in(fA, P+1, L+2, 65535, none, nil)
		s.expectNone()
		s.state(FinWait2, nil)
		s.in(fR, P+1, 0, 0, none, nil)
		s.expectNone()
		s.state(Closed, ErrReset)
		if s.c.NextDeadline() != 0 {
			t.Fatalf("a timer after the reset")
		}
	})
}

func TestScriptSynInEstablished(t *testing.T) {
	for _, off := range []int32{0, 1000, -1, 40000} { // from RCV.NXT
		t.Run(fmt.Sprintf("seq %+d", off), func(t *testing.T) {
			s := establish(t, scCfg(), peerOpts())
			s.in(fS, P+1+uint32(off), 0, 1000, peerOpts(), nil)
			s.expect(fA, L+1, P+1)
			s.state(Established, nil)
			st := s.c.Stats()
			if off == -1 || off == 40000 { // out of window: a plain ACK
				if st.DropOutOfWindow != 1 || st.ChallengeAcks != 0 {
					t.Fatalf("stats %+v", st)
				}
			} else if st.ChallengeAcks != 1 { // RFC 5961 section 4
				t.Fatalf("stats %+v, want a challenge ACK", st)
			}
			if s.c.sndWnd != 65535 || s.c.rcvNxt != P+1 {
				t.Fatalf("the SYN changed the connection: window %d rcv.nxt %d", s.c.sndWnd, s.c.rcvNxt)
			}
		})
	}
}

func TestScriptZeroWindow(t *testing.T) {
	s := establish(t, scCfg(), peerOpts())
	s.in(fA, P+1, L+1, 0, none, nil) // the peer closes its window
	s.expectNone()
	if s.c.sndWnd != 0 {
		t.Fatalf("window %d", s.c.sndWnd)
	}
	s.write(3000)
	s.expectNone() // nothing fits
	// The persist timer runs at the RTO (1 s: no sample yet), then
	// backs off: 2 s, 4 s.
	s.deadlineIn(time.Second)
	s.advance(time.Second - 1)
	s.expectNone()
	s.advance(1)
	s.expect(fA, L, P+1) // the probe: SND.UNA-1, no data
	s.deadlineIn(2 * time.Second)
	s.in(fA, P+1, L+1, 0, none, nil) // the peer's answer: still closed
	s.expectNone()
	s.deadlineIn(2 * time.Second)
	s.advance(2 * time.Second)
	s.expect(fA, L, P+1)
	s.deadlineIn(4 * time.Second)
	s.advance(4 * time.Second)
	s.expect(fA, L, P+1)
	s.deadlineIn(8 * time.Second)
	if st := s.c.Stats(); st.WindowProbes != 3 || st.Retransmits != 0 || st.Timeouts != 0 {
		t.Fatalf("stats %+v", st)
	}
	// The peer opens its window to 2000: two segments flow; the rest
	// waits for the window.
	s.in(fA, P+1, L+1, 2000, none, nil)
	s.expect(fA, L+1, P+1, withLen(1000))
	s.expect(fA, L+1001, P+1, withLen(1000))
	s.expectNone()
	s.deadlineIn(time.Second) // the retransmission timer, not the persist timer
	s.in(fA, P+1, L+2001, 2000, none, nil)
	s.expect(fPA, L+2001, P+1, withLen(1000))
	s.in(fA, P+1, L+3001, 2000, none, nil)
	s.expectNone()
	if s.c.NextDeadline() != 0 || s.c.Unacked() != 0 {
		t.Fatalf("after everything was acknowledged: deadline %d, unacked %d", s.c.NextDeadline(), s.c.Unacked())
	}
}

// TestScriptZeroWindowFin: a FIN waits behind a closed window like data.
func TestScriptZeroWindowFin(t *testing.T) {
	s := establish(t, scCfg(), peerOpts())
	s.in(fA, P+1, L+1, 0, none, nil)
	s.c.CloseWrite(s.now)
	s.state(FinWait1, nil)
	// A FIN takes no window; a bare FIN is sent at once.
	s.expect(fFA, L+1, P+1)
}

func TestScriptOutOfWindow(t *testing.T) {
	t.Run("seq far ahead", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.in(fPA, P+1+100000, L+1, 65535, none, pat(P+1+100000, 100))
		s.expect(fA, L+1, P+1)
		if s.c.Readable() != 0 || s.c.Stats().DropOutOfWindow != 1 || s.c.Stats().OutOfOrder != 0 {
			t.Fatalf("readable %d stats %+v", s.c.Readable(), s.c.Stats())
		}
	})
	t.Run("seq just past the window", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.in(fPA, P+1+32768, L+1, 65535, none, pat(P+1+32768, 100))
		s.expect(fA, L+1, P+1)
		if s.c.Readable() != 0 || s.c.Stats().DropOutOfWindow != 1 {
			t.Fatalf("readable %d stats %+v", s.c.Readable(), s.c.Stats())
		}
	})
	t.Run("seq far behind", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.in(fPA, P+1, L+1, 65535, none, pat(P+1, 100))
		s.expect(fA, L+1, P+101)
		s.in(fPA, P+1-50000, L+1, 65535, none, pat(P+1-50000, 100))
		s.expect(fA, L+1, P+101)
		// An old duplicate, entirely below RCV.NXT.
		s.in(fPA, P+1, L+1, 65535, none, pat(P+1, 100))
		s.expect(fA, L+1, P+101)
		if st := s.c.Stats(); st.DropOutOfWindow != 2 || st.BytesIn != 100 {
			t.Fatalf("stats %+v", st)
		}
		s.read(P+1, 100)
	})
	t.Run("overlapping RCV.NXT", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.in(fPA, P+1, L+1, 65535, none, pat(P+1, 100))
		s.expect(fA, L+1, P+101)
		s.in(fPA, P+51, L+1, 65535, none, pat(P+51, 100)) // 50 old, 50 new
		s.expect(fA, L+1, P+151)
		s.read(P+1, 150)
	})
	t.Run("ACK for unsent data", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.write(100)
		s.expect(fPA, L+1, P+1, withLen(100))
		s.in(fPA, P+1, L+1+5000, 65535, none, pat(P+1, 100))
		s.expect(fA, L+101, P+1) // data dropped: RCV.NXT unmoved
		if st := s.c.Stats(); st.DropAckUnsent != 1 || s.c.Readable() != 0 || s.c.sndUna != L+1 {
			t.Fatalf("readable %d una %d stats %+v", s.c.Readable(), s.c.sndUna, st)
		}
		s.in(fPA, P+1, L+101, 65535, none, pat(P+1, 100))
		s.expect(fA, L+101, P+101)
		s.read(P+1, 100)
	})
	t.Run("no ACK flag", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.in(fP, P+1, 0, 65535, none, pat(P+1, 100))
		s.expectNone()
		if st := s.c.Stats(); st.DropNoAck != 1 || s.c.Readable() != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestScriptRetransmittedSynAck(t *testing.T) {
	s := establish(t, scCfg(), peerOpts())
	s.now += int64(time.Second)
	s.in(fSA, P, L+1, 65535, peerOpts(), nil)
	s.expect(fA, L+1, P+1) // a duplicate ACK
	s.state(Established, nil)
	if st := s.c.Stats(); st.DropOutOfWindow != 1 || st.ChallengeAcks != 0 || s.c.sndUna != L+1 || s.c.rcvNxt != P+1 {
		t.Fatalf("stats %+v", st)
	}
	s.write(10)
	s.expect(fPA, L+1, P+1, withLen(10))
	s.in(fA, P+1, L+11, 65535, none, nil)
	s.expectNone()
}

func TestScriptSynRetransmit(t *testing.T) {
	for _, retries := range []int{0, 2} {
		t.Run(fmt.Sprintf("SynRetries %d", retries), func(t *testing.T) {
			cfg := scCfg()
			cfg.SynRetries = retries
			if retries == 0 {
				retries = DefaultSynRetries
			}
			s := newScript(t, cfg)
			s.active()
			syn := s.expect(fS, L, 0, withWin(32768), withOpts(s.out.segs[0].Options))
			rto := time.Second
			for i := range retries {
				s.deadlineIn(rto)
				s.advance(rto - 1)
				s.expectNone()
				s.advance(1)
				o := syn.Options
				o.TSVal = 0 // the current time's
				s.expect(fS, L, 0, withWin(32768), withOpts(o))
				s.state(SynSent, nil)
				if st := s.c.Stats(); st.Timeouts != uint64(i+1) || st.Retransmits != uint64(i+1) {
					t.Fatalf("stats %+v", st)
				}
				rto = min(2*rto, DefaultMaxRTO)
			}
			s.deadlineIn(rto)
			s.advance(rto)
			s.expectNone()
			s.state(Closed, ErrTimedOut)
			if s.c.NextDeadline() != 0 {
				t.Fatalf("a timer after the timeout")
			}
		})
	}
	t.Run("SYN-ACK after retransmissions", func(t *testing.T) {
		s := newScript(t, scCfg())
		s.active()
		s.expect(fS, L, 0, withWin(32768), withOpts(s.out.segs[0].Options))
		s.advance(time.Second)
		s.expect(fS, L, 0, withWin(32768), withOpts(s.out.segs[0].Options))
		s.now += int64(100 * time.Millisecond)
		s.in(fSA, P, L+1, 65535, peerOpts(), nil)
		s.ts = true
		s.expect(fA, L+1, P+1)
		s.state(Established, nil)
		// Karn: no sample from the retransmitted SYN; the backoff is
		// cleared, the backed-off RTO kept until a sample.
		if s.c.srtt != 0 || s.c.backoff != 0 || s.c.rto != 2*time.Second {
			t.Fatalf("srtt %v backoff %d rto %v", s.c.srtt, s.c.backoff, s.c.rto)
		}
	})
}

// sample gives the connection an RTT sample of 10 ms: RTO then floors at
// MinRTO (200 ms).
func (s *script) sample() {
	s.t.Helper()
	s.write(100)
	s.expect(fPA, L+1+uint32(len(s.wrote)-100), P+1, withLen(100))
	s.now += int64(10 * time.Millisecond)
	s.in(fA, P+1, L+1+uint32(len(s.wrote)), 65535, none, nil)
	s.expectNone()
	if s.c.srtt != 10*time.Millisecond || s.c.rto != DefaultMinRTO {
		s.t.Fatalf("after a 10 ms sample: srtt %v rto %v", s.c.srtt, s.c.rto)
	}
}

func TestScriptRetransmitRTO(t *testing.T) {
	t.Run("backoff", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.sample()
		s.write(1000)
		s.expect(fPA, L+101, P+1, withLen(1000))
		rto := 200 * time.Millisecond
		for i := range 3 {
			s.deadlineIn(rto)
			s.advance(rto - 1)
			s.expectNone()
			s.advance(1)
			s.expect(fPA, L+101, P+1, withLen(1000))
			if st := s.c.Stats(); st.Timeouts != uint64(i+1) || st.Retransmits != uint64(i+1) {
				t.Fatalf("stats %+v", st)
			}
			rto *= 2
		}
		if s.c.cwnd != 1000 {
			t.Fatalf("cwnd %d after timeouts, want one segment", s.c.cwnd)
		}
		s.in(fA, P+1, L+1101, 65535, none, nil)
		s.expectNone()
		if s.c.NextDeadline() != 0 || s.c.backoff != 0 || s.c.srtt != 10*time.Millisecond {
			t.Fatalf("after the ACK: deadline %d backoff %d srtt %v (Karn: no sample)", s.c.NextDeadline(), s.c.backoff, s.c.srtt)
		}
	})
	t.Run("go back N", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.sample()
		s.write(3000)
		s.expect(fA, L+101, P+1, withLen(1000))
		s.expect(fA, L+1101, P+1, withLen(1000))
		s.expect(fPA, L+2101, P+1, withLen(1000))
		s.advance(200 * time.Millisecond)
		// cwnd one segment: only the first again.
		s.expect(fA, L+101, P+1, withLen(1000))
		s.expectNone()
		// Its ACK: slow start again, two more.
		s.in(fA, P+1, L+1101, 65535, none, nil)
		s.expect(fA, L+1101, P+1, withLen(1000))
		s.expect(fPA, L+2101, P+1, withLen(1000))
		s.in(fA, P+1, L+3101, 65535, none, nil)
		s.expectNone()
		if st := s.c.Stats(); st.Retransmits != 3 || st.Timeouts != 1 || st.BytesOut != 3100 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("MaxRetries", func(t *testing.T) {
		cfg := scCfg()
		cfg.MaxRetries = 2
		s := establish(t, cfg, peerOpts())
		s.sample()
		s.write(10)
		s.expect(fPA, L+101, P+1, withLen(10))
		s.advance(200 * time.Millisecond)
		s.expect(fPA, L+101, P+1, withLen(10))
		s.advance(400 * time.Millisecond)
		s.expect(fPA, L+101, P+1, withLen(10))
		s.advance(800 * time.Millisecond)
		s.expectNone()
		s.state(Closed, ErrTimedOut)
	})
}

// noSACK is peerOpts without SACK-permitted: the sender recovers the
// NewReno way.
func noSACK() frame.TCPOptions {
	o := peerOpts()
	o.SACKPermitted = false
	return o
}

func TestScriptFastRetransmit(t *testing.T) {
	s := establish(t, scCfg(), noSACK())
	s.write(4000) // the initial window: four segments
	s.expect(fA, L+1, P+1, withLen(1000))
	s.expect(fA, L+1001, P+1, withLen(1000))
	s.expect(fA, L+2001, P+1, withLen(1000))
	s.expect(fPA, L+3001, P+1, withLen(1000))
	// The first and second segments are lost; the third and fourth each
	// bring a duplicate ACK.
	s.in(fA, P+1, L+1, 65535, none, nil)
	s.expectNone()
	s.in(fA, P+1, L+1, 65535, none, nil)
	s.expectNone()
	// A third: fast retransmit of the first.
	s.in(fA, P+1, L+1, 65535, none, nil)
	s.expect(fA, L+1, P+1, withLen(1000))
	st := s.c.Stats()
	if st.FastRetransmits != 1 || st.DupAcks != 3 || st.Retransmits != 1 || st.Timeouts != 0 || !s.c.inRecovery {
		t.Fatalf("stats %+v", st)
	}
	if s.c.ssthresh != 2000 || s.c.cwnd != 5000 || s.c.recover != L+4001 {
		t.Fatalf("ssthresh %d cwnd %d recover %d", s.c.ssthresh, s.c.cwnd, s.c.recover)
	}
	// Partial ACK (NewReno): the next hole goes at once.
	s.in(fA, P+1, L+1001, 65535, none, nil)
	s.expect(fA, L+1001, P+1, withLen(1000))
	if st := s.c.Stats(); st.Retransmits != 2 || st.FastRetransmits != 1 || !s.c.inRecovery {
		t.Fatalf("stats %+v", st)
	}
	// Full ACK: recovery ends, cwnd deflates to ssthresh.
	s.in(fA, P+1, L+4001, 65535, none, nil)
	s.expectNone()
	if s.c.inRecovery || s.c.cwnd != 2000 || s.c.NextDeadline() != 0 {
		t.Fatalf("after recovery: in recovery %v cwnd %d deadline %d", s.c.inRecovery, s.c.cwnd, s.c.NextDeadline())
	}
}

// TestScriptFastRetransmitNewData: the duplicate ACKs past the third
// inflate the window and let new data out (RFC 6582 section 3.2 step 4).
func TestScriptFastRetransmitNewData(t *testing.T) {
	s := establish(t, scCfg(), noSACK())
	s.write(6000)
	s.expect(fA, L+1, P+1, withLen(1000))
	s.expect(fA, L+1001, P+1, withLen(1000))
	s.expect(fA, L+2001, P+1, withLen(1000))
	s.expect(fA, L+3001, P+1, withLen(1000))
	s.in(fA, P+1, L+1, 65535, none, nil)
	s.in(fA, P+1, L+1, 65535, none, nil)
	s.expectNone()
	s.in(fA, P+1, L+1, 65535, none, nil)
	s.expect(fA, L+1, P+1, withLen(1000))
	// cwnd 5000 (ssthresh 2000 + 3 segments) over 4000 in flight: one
	// new segment.
	s.expect(fA, L+4001, P+1, withLen(1000))
	s.expectNone()
	s.in(fA, P+1, L+1, 65535, none, nil)
	s.expect(fPA, L+5001, P+1, withLen(1000))
	s.in(fA, P+1, L+6001, 65535, none, nil)
	s.expectNone()
	if st := s.c.Stats(); st.FastRetransmits != 1 || st.Retransmits != 1 || st.DupAcks != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// TestScriptDupAckNotCounted: a segment with data, or a window change, is
// no duplicate ACK (RFC 5681 section 2).
func TestScriptDupAckNotCounted(t *testing.T) {
	s := establish(t, scCfg(), peerOpts())
	s.write(4000)
	for range 4 {
		s.out.segs = s.out.segs[1:]
	}
	s.in(fPA, P+1, L+1, 65535, none, pat(P+1, 10))
	s.expect(fA, L+4001, P+11)
	s.in(fA, P+11, L+1, 60000, none, nil)
	s.in(fA, P+11, L+1, 50000, none, nil)
	s.expectNone()
	if st := s.c.Stats(); st.DupAcks != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestScriptOutOfOrder(t *testing.T) {
	for _, sack := range []bool{true, false} {
		t.Run(fmt.Sprintf("sack %v", sack), func(t *testing.T) {
			o := peerOpts()
			o.SACKPermitted = sack
			s := establish(t, scCfg(), o)
			blocks := func(edges ...uint32) mod {
				if !sack {
					return withSACK()
				}
				return withSACK(edges...)
			}
			// A hole at P+1 (1000 bytes).
			s.in(fA, P+1001, L+1, 65535, none, pat(P+1001, 1000))
			s.expect(fA, L+1, P+1, blocks(P+1001, P+2001), withWin(32768))
			s.in(fA, P+2001, L+1, 65535, none, pat(P+2001, 1000))
			s.expect(fA, L+1, P+1, blocks(P+1001, P+3001), withWin(32768))
			// A second hole at P+3001.
			s.in(fA, P+4001, L+1, 65535, none, pat(P+4001, 1000))
			s.expect(fA, L+1, P+1, blocks(P+4001, P+5001, P+1001, P+3001), withWin(32768))
			// A third block; the most recent first.
			s.in(fA, P+6001, L+1, 65535, none, pat(P+6001, 500))
			s.expect(fA, L+1, P+1, blocks(P+6001, P+6501, P+1001, P+3001, P+4001, P+5001), withWin(32768))
			// A duplicate of a block's data: SACKed again, that block first.
			s.in(fA, P+1001, L+1, 65535, none, pat(P+1001, 1000))
			s.expect(fA, L+1, P+1, blocks(P+1001, P+3001, P+4001, P+5001, P+6001, P+6501), withWin(32768))
			if s.c.Readable() != 0 {
				t.Fatalf("readable %d before the hole is filled", s.c.Readable())
			}
			// The first hole filled: the ACK covers the first block.
			s.in(fA, P+1, L+1, 65535, none, pat(P+1, 1000))
			s.expect(fA, L+1, P+3001, blocks(P+4001, P+5001, P+6001, P+6501), withWin(32768-3000))
			// The rest.
			s.in(fA, P+3001, L+1, 65535, none, pat(P+3001, 1000))
			s.expect(fA, L+1, P+5001, blocks(P+6001, P+6501), withWin(32768-5000))
			s.in(fA, P+5001, L+1, 65535, none, pat(P+5001, 1000))
			s.expect(fA, L+1, P+6501, withWin(32768-6500))
			if st := s.c.Stats(); st.OutOfOrder != 5 || st.BytesIn != 6500 || s.c.ooo.n != 0 {
				t.Fatalf("stats %+v, %d blocks", st, s.c.ooo.n)
			}
			s.read(P+1, 6500)
			s.expectNone() // 6500 bytes read: not yet worth a window update
		})
	}
}

// TestScriptOutOfOrderSACKBlocks: the newest block first, then the others
// in order; with timestamps three blocks fit, without four.
func TestScriptOutOfOrderSACKBlocks(t *testing.T) {
	for _, ts := range []bool{true, false} {
		t.Run(fmt.Sprintf("timestamps %v", ts), func(t *testing.T) {
			o := peerOpts()
			o.HasTimestamp = ts
			s := establish(t, scCfg(), o)
			for i := range 5 {
				seq := P + 1 + uint32(2*i+1)*100
				s.in(fA, seq, L+1, 65535, none, pat(seq, 100))
				most := 4
				if ts {
					most = 3
				}
				// The newest block first, then the others in
				// sequence order.
				want := []uint32{seq, seq + 100}
				for j := 0; j < i && len(want) < 2*most; j++ {
					l := P + 1 + uint32(2*j+1)*100
					want = append(want, l, l+100)
				}
				s.expect(fA, L+1, P+1, withSACK(want...))
			}
		})
	}
}

func TestScriptFinOutOfOrder(t *testing.T) {
	t.Run("with data", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.in(fFPA, P+1001, L+1, 65535, none, pat(P+1001, 1000))
		s.expect(fA, L+1, P+1, withSACK(P+1001, P+2001)) // the FIN is in no block
		s.state(Established, nil)
		s.in(fA, P+1, L+1, 65535, none, pat(P+1, 1000))
		s.expect(fA, L+1, P+2002)
		s.state(CloseWait, nil)
		s.read(P+1, 2000)
		if _, err := s.c.Read(make([]byte, 1), s.now); err != io.EOF || !s.c.EOF() {
			t.Fatalf("Read after the FIN: %v", err)
		}
	})
	t.Run("bare FIN", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.in(fFA, P+501, L+1, 65535, none, nil)
		s.expect(fA, L+1, P+1)
		s.state(Established, nil)
		s.in(fPA, P+1, L+1, 65535, none, pat(P+1, 500))
		s.expect(fA, L+1, P+502)
		s.state(CloseWait, nil)
		s.read(P+1, 500)
		// Our side closes: LAST-ACK, then CLOSED on its ACK.
		s.c.Close(s.now)
		s.expect(fFA, L+1, P+502)
		s.state(LastAck, nil)
		s.in(fA, P+502, L+2, 65535, none, nil)
		s.expectNone()
		s.state(Closed, nil)
	})
	t.Run("filled in two steps", func(t *testing.T) {
		s := establish(t, scCfg(), peerOpts())
		s.in(fFA, P+2001, L+1, 65535, none, pat(P+2001, 100))
		s.expect(fA, L+1, P+1, withSACK(P+2001, P+2101))
		s.in(fA, P+1, L+1, 65535, none, pat(P+1, 1000))
		s.expect(fA, L+1, P+1001, withSACK(P+2001, P+2101))
		s.state(Established, nil)
		s.in(fA, P+1001, L+1, 65535, none, pat(P+1001, 1000))
		s.expect(fA, L+1, P+2102)
		s.state(CloseWait, nil)
		s.read(P+1, 2100)
	})
}

func TestScriptTimeWait(t *testing.T) {
	cfg := scCfg()
	cfg.TimeWait = 10 * time.Second
	s := establish(t, cfg, peerOpts())
	s.c.Close(s.now)
	s.expect(fFA, L+1, P+1)
	s.in(fA, P+1, L+2, 65535, none, nil)
	s.state(FinWait2, nil)
	s.in(fFA, P+1, L+2, 65535, none, nil)
	s.expect(fA, L+2, P+2)
	s.state(TimeWait, nil)
	s.deadlineIn(10 * time.Second)
	// The peer did not get our ACK: its FIN again, 4 s later. ACKed
	// again, and the wait starts over (RFC 9293 section 3.10.7.4).
	s.advance(4 * time.Second)
	s.expectNone()
	s.state(TimeWait, nil)
	s.in(fFA, P+1, L+2, 65535, none, nil)
	s.expect(fA, L+2, P+2)
	s.state(TimeWait, nil)
	s.deadlineIn(10 * time.Second)
	// A bare ACK is not answered and does not restart the wait.
	s.advance(time.Second)
	s.in(fA, P+2, L+2, 65535, none, nil)
	s.expectNone()
	s.deadlineIn(9 * time.Second)
	s.advance(9*time.Second - 1)
	s.state(TimeWait, nil)
	s.advance(1)
	s.expectNone()
	s.state(Closed, nil)
	s.in(fFA, P+1, L+2, 65535, none, nil)
	s.expectNone() // a closed connection says nothing (the stack answers)
}

func TestScriptCloseUnread(t *testing.T) {
	s := establish(t, scCfg(), peerOpts())
	s.in(fPA, P+1, L+1, 65535, none, pat(P+1, 100))
	s.expect(fA, L+1, P+101, withWin(32768-100))
	s.c.Close(s.now)
	// RFC 2525 section 2.17: unread data makes Close a reset.
	s.expect(fRA, L+1, P+101, withWin(32768-100))
	s.state(Closed, ErrAborted)
	if st := s.c.Stats(); st.RstSent != 1 || s.c.NextDeadline() != 0 {
		t.Fatalf("stats %+v", st)
	}
	s.in(fPA, P+101, L+1, 65535, none, pat(P+101, 100))
	s.expectNone()
}

func TestScriptCloseRead(t *testing.T) {
	// Everything read: Close is a FIN.
	s := establish(t, scCfg(), peerOpts())
	s.in(fPA, P+1, L+1, 65535, none, pat(P+1, 100))
	s.expect(fA, L+1, P+101, withWin(32768-100))
	s.read(P+1, 100)
	s.expectNone()
	s.c.Close(s.now)
	s.expect(fFA, L+1, P+101)
	s.state(FinWait1, nil)
}

func TestScriptHalfClose(t *testing.T) {
	s := establish(t, scCfg(), peerOpts())
	s.write(100)
	s.expect(fPA, L+1, P+1, withLen(100))
	s.c.CloseWrite(s.now)
	s.expect(fFA, L+101, P+1)
	s.state(FinWait1, nil)
	if _, err := s.c.Write([]byte{1}, s.now); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("Write after CloseWrite: %v", err)
	}
	// The peer acknowledges the data, not yet the FIN.
	s.in(fA, P+1, L+101, 65535, none, nil)
	s.state(FinWait1, nil)
	s.in(fPA, P+1, L+102, 65535, none, pat(P+1, 300))
	s.expect(fA, L+102, P+301, withWin(32768-300))
	s.state(FinWait2, nil)
	s.in(fPA, P+301, L+102, 65535, none, pat(P+301, 300))
	s.expect(fA, L+102, P+601, withWin(32768-600))
	s.read(P+1, 600)
	s.expectNone()
	s.in(fFA, P+601, L+102, 65535, none, nil)
	s.expect(fA, L+102, P+602)
	s.state(TimeWait, nil)
	if _, err := s.c.Read(make([]byte, 1), s.now); err != io.EOF {
		t.Fatalf("Read: %v", err)
	}
}

// TestScriptFinAckInFinWait1: the peer's FIN arrives in FIN-WAIT-1,
// acknowledging ours: straight to TIME-WAIT.
func TestScriptFinAckInFinWait1(t *testing.T) {
	s := establish(t, scCfg(), peerOpts())
	s.c.Close(s.now)
	s.expect(fFA, L+1, P+1)
	s.in(fFA, P+1, L+2, 65535, none, nil)
	s.expect(fA, L+2, P+2)
	s.state(TimeWait, nil)
}

func TestScriptPAWS(t *testing.T) {
	s := establish(t, scCfg(), peerOpts()) // the peer's TSVal 5000
	s.in(fPA, P+1, L+1, 65535, tsOpt(4999, 0), pat(P+1, 100))
	s.expect(fA, L+1, P+1) // dropped, ACKed; TSEcr still 5000
	if st := s.c.Stats(); st.DropPAWS != 1 || s.c.Readable() != 0 {
		t.Fatalf("stats %+v readable %d", st, s.c.Readable())
	}
	// A timestamp behind by more than 2^31 is newer, modulo 2^32.
	s.tsVal -= 1<<31 + 10 // 5000 - (2^31 + 10)
	s.in(fPA, P+1, L+1, 65535, none, pat(P+1, 100))
	s.expect(fA, L+1, P+101)
	// Equal is not old.
	s.in(fPA, P+101, L+1, 65535, none, pat(P+101, 100))
	s.expect(fA, L+1, P+201)
	// Newer: TS.Recent follows.
	s.tsVal += 7
	s.in(fPA, P+201, L+1, 65535, none, pat(P+201, 100))
	s.expect(fA, L+1, P+301)
	// An out-of-window segment with a newer timestamp does not move
	// TS.Recent.
	s.in(fPA, P+1+100000, L+1, 65535, tsOpt(s.tsVal+1000, 0), pat(P+1+100000, 10))
	s.expect(fA, L+1, P+301)
	s.read(P+1, 300)
	if st := s.c.Stats(); st.DropPAWS != 1 || st.DropOutOfWindow != 1 {
		t.Fatalf("stats %+v", st)
	}
	// A segment without timestamps is not checked (RFC 7323 allows
	// dropping it; Linux accepts it).
	s.ts = false
	s.in(fPA, P+301, L+1, 65535, none, pat(P+301, 10))
	s.ts = true
	s.expect(fA, L+1, P+311)
	s.read(P+301, 10)
}

func TestScriptKeepalive(t *testing.T) {
	cfg := scCfg()
	cfg.Keepalive = 10 * time.Second
	cfg.KeepaliveProbes = 3
	s := establish(t, cfg, peerOpts())
	s.deadlineIn(10 * time.Second)
	// Traffic from the peer pushes the first probe back.
	s.advance(5 * time.Second)
	s.in(fPA, P+1, L+1, 65535, none, pat(P+1, 10))
	s.expect(fA, L+1, P+11, withWin(32768-10))
	s.read(P+1, 10)
	s.deadlineIn(10 * time.Second)
	s.advance(10*time.Second - 1)
	s.expectNone()
	s.advance(1)
	s.expect(fA, L, P+11) // SND.UNA-1: the peer must answer
	// The peer answers: the count starts over.
	s.in(fA, P+11, L+1, 65535, none, nil)
	s.expectNone()
	s.deadlineIn(10 * time.Second)
	// Then it goes silent: three probes, then the end.
	for i := range 3 {
		s.advance(10 * time.Second)
		s.expect(fA, L, P+11)
		s.state(Established, nil)
		if s.c.kaProbes != i+1 {
			t.Fatalf("probes %d", s.c.kaProbes)
		}
	}
	s.advance(10 * time.Second)
	s.expectNone()
	s.state(Closed, ErrTimedOut)
	if st := s.c.Stats(); st.WindowProbes != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestScriptKeepaliveOff(t *testing.T) {
	s := establish(t, scCfg(), peerOpts())
	if s.c.NextDeadline() != 0 {
		t.Fatalf("a timer without keepalive")
	}
	s.advance(time.Hour)
	s.expectNone()
	s.state(Established, nil)
}

// TestScriptPassiveRetransmits: in SYN-RECEIVED, the SYN-ACK goes again
// on the retransmission timer, backing off, until the peer's ACK.
func TestScriptPassiveRetransmits(t *testing.T) {
	s := newScript(t, scCfg())
	s.passive(65535, peerOpts())
	synack := s.expect(fSA, L, P+1, withWin(32768), withOpts(frame.TCPOptions{MSS: 1012, HasWScale: true, SACKPermitted: true, HasTimestamp: true, TSEcr: 5000}))
	// The SYN-ACK is lost: it goes again after InitRTO, doubling.
	s.advance(time.Second)
	o := synack.Options
	o.TSVal = 0
	s.expect(fSA, L, P+1, withWin(32768), withOpts(o))
	s.advance(2 * time.Second)
	s.expect(fSA, L, P+1, withWin(32768), withOpts(o))
	s.deadlineIn(4 * time.Second)
	s.ts = true
	s.in(fA, P+1, L+1, 65535, none, nil)
	s.state(Established, nil)
	s.expectNone()
	if s.c.NextDeadline() != 0 {
		t.Fatalf("a timer after the handshake")
	}
}

func TestScriptSynReceivedRst(t *testing.T) {
	s := newScript(t, scCfg())
	s.passive(65535, peerOpts())
	s.expect(fSA, L, P+1, withWin(32768), withOpts(frame.TCPOptions{MSS: 1012, HasWScale: true, SACKPermitted: true, HasTimestamp: true, TSEcr: 5000}))
	s.ts = true
	// A bad ACK gets a reset at its ACK number.
	s.in(fA, P+1, L+7, 65535, none, nil)
	s.expect(fR, L+7, 0, withWin(0), withOpts(none))
	s.state(SynReceived, nil)
	s.in(fR, P+1, 0, 0, none, nil)
	s.expectNone()
	s.state(Closed, ErrRefused)
}

func TestScriptDelayedAck(t *testing.T) {
	cfg := scCfg()
	cfg.DelayedACK = 40 * time.Millisecond
	s := establish(t, cfg, peerOpts())
	s.in(fPA, P+1, L+1, 65535, none, pat(P+1, 100))
	s.expectNone()
	s.deadlineIn(40 * time.Millisecond)
	s.advance(40 * time.Millisecond)
	s.expect(fA, L+1, P+101, withWin(32768-100))
	// Two full segments: at once.
	s.in(fA, P+101, L+1, 65535, none, pat(P+101, 1012))
	s.expectNone()
	s.in(fA, P+1113, L+1, 65535, none, pat(P+1113, 1012))
	s.expect(fA, L+1, P+2125, withWin(32768-2124))
	if s.c.NextDeadline() != 0 {
		t.Fatalf("the delayed-ACK timer still runs")
	}
	s.read(P+1, 2124)
	// Reading opened the window by 2124 bytes, but the peer may still
	// send 30644: no update (receiver SWS avoidance).
	s.expectNone()
}

// TestScriptWindowUpdate: reading opens the window, and the connection says
// so once the window has grown enough to matter (receiver silly-window
// avoidance, RFC 9293 section 3.8.6.2.2: by min(RCV.BUFF/2, MSS) or more).
func TestScriptWindowUpdate(t *testing.T) {
	t.Run("large buffer", func(t *testing.T) {
		s := establish(t, Config{MSS: 1012, RecvBuf: 4096}, peerOpts())
		s.in(fA, P+1, L+1, 65535, none, pat(P+1, 1000))
		s.expect(fA, L+1, P+1001, withWin(3096))
		s.in(fA, P+1001, L+1, 65535, none, pat(P+1001, 1000))
		s.expect(fA, L+1, P+2001, withWin(2096))
		s.in(fA, P+2001, L+1, 65535, none, pat(P+2001, 1000))
		s.expect(fA, L+1, P+3001, withWin(1096))
		s.read(P+1, 3000)
		// The window grew by 3000, more than what the peer may still
		// send: an update.
		s.expect(fA, L+1, P+3001, withWin(4096))
	})
	t.Run("buffer under two segments", func(t *testing.T) {
		s := establish(t, Config{MSS: 1460, RecvBuf: 2048}, peerOpts())
		s.in(fA, P+1, L+1, 65535, none, pat(P+1, 1448))
		s.expect(fA, L+1, P+1449, withWin(600))
		s.in(fA, P+1449, L+1, 65535, none, pat(P+1449, 600))
		s.expect(fA, L+1, P+2049, withWin(0))
		s.read(P+1, 2048)
		// The window went from 0 to the whole buffer: the peer, which
		// is waiting on it, must hear at once rather than at its next
		// zero-window probe.
		s.expect(fA, L+1, P+2049, withWin(2048))
	})
}

// TestScriptReceiveZeroWindow: the connection's own buffer fills; the
// peer's probes get the zero window back until the application reads.
func TestScriptReceiveZeroWindow(t *testing.T) {
	s := establish(t, Config{MSS: 1012, RecvBuf: 2048}, peerOpts())
	s.in(fA, P+1, L+1, 65535, none, pat(P+1, 1000))
	s.expect(fA, L+1, P+1001, withWin(1048))
	s.in(fA, P+1001, L+1, 65535, none, pat(P+1001, 1048))
	s.expect(fA, L+1, P+2049, withWin(0))
	// A zero-window probe with one new byte: at RCV.NXT, so acceptable,
	// but no room for it.
	s.in(fA, P+2049, L+1, 65535, none, pat(P+2049, 1))
	s.expect(fA, L+1, P+2049, withWin(0))
	// One below RCV.NXT (the other probe form): an ACK too.
	s.in(fA, P+2048, L+1, 65535, none, nil)
	s.expect(fA, L+1, P+2049, withWin(0))
	if st := s.c.Stats(); st.DropOutOfWindow != 2 || st.BytesIn != 2048 {
		t.Fatalf("stats %+v", st)
	}
	s.read(P+1, 2048)
	s.expect(fA, L+1, P+2049, withWin(2048))
	s.in(fA, P+2049, L+1, 65535, none, pat(P+2049, 1))
	s.expect(fA, L+1, P+2050, withWin(2047))
}

// TestScriptSendBufferFull: Write takes what the buffer holds.
func TestScriptSendBufferFull(t *testing.T) {
	s := establish(t, Config{MSS: 1012, RecvBuf: 4096, SendBuf: 4096}, peerOpts())
	s.in(fA, P+1, L+1, 0, none, nil) // the peer's window closes
	b := pat(0, 5000)
	n, err := s.c.Write(b, s.now)
	if n != 4096 || err != nil || s.c.Writable() != 0 {
		t.Fatalf("Write = %d, %v; writable %d", n, err, s.c.Writable())
	}
	s.wrote = append(s.wrote, b[:n]...)
	if n, err := s.c.Write(b, s.now); n != 0 || err != nil {
		t.Fatalf("Write to a full buffer = %d, %v", n, err)
	}
	s.expectNone()
	s.in(fA, P+1, L+1, 2500, none, nil)
	s.expect(fA, L+1, P+1, withLen(1000))
	s.expect(fA, L+1001, P+1, withLen(1000))
	s.expectNone() // 500 more would be a runt behind data in flight
	s.in(fA, P+1, L+2001, 2500, none, nil)
	if s.c.Writable() != 2000 {
		t.Fatalf("writable %d after 2000 acknowledged", s.c.Writable())
	}
	s.expect(fA, L+2001, P+1, withLen(1000))
	s.expect(fA, L+3001, P+1, withLen(1000))
	s.expect(fPA, L+4001, P+1, withLen(96)) // the last bytes: no runt to avoid
	s.in(fA, P+1, L+4097, 2500, none, nil)
	s.expectNone()
	if s.c.Writable() != 4096 || s.c.NextDeadline() != 0 {
		t.Fatalf("writable %d, deadline %d", s.c.Writable(), s.c.NextDeadline())
	}
}

// TestScriptNagle: with Nagle, a small segment waits while data is
// unacknowledged.
func TestScriptNagle(t *testing.T) {
	cfg := scCfg()
	cfg.Nagle = true
	s := establish(t, cfg, peerOpts())
	s.write(10)
	s.expect(fPA, L+1, P+1, withLen(10)) // nothing in flight: at once
	s.write(10)
	s.write(10)
	s.expectNone()
	s.in(fA, P+1, L+11, 65535, none, nil)
	s.expect(fPA, L+11, P+1, withLen(20))
	s.write(2500) // full segments go; the 520-byte tail waits
	s.expect(fA, L+31, P+1, withLen(1000))
	s.expect(fA, L+1031, P+1, withLen(1000))
	s.expectNone()
	s.in(fA, P+1, L+2031, 65535, none, nil)
	s.expect(fPA, L+2031, P+1, withLen(500))
}

func TestScriptRstOtherStates(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(s *script)
		seq   uint32
	}{
		{"CLOSE-WAIT", func(s *script) {
			s.in(fFA, P+1, L+1, 65535, none, nil)
			s.expect(fA, L+1, P+2)
			s.state(CloseWait, nil)
		}, P + 2},
		{"LAST-ACK", func(s *script) {
			s.in(fFA, P+1, L+1, 65535, none, nil)
			s.expect(fA, L+1, P+2)
			s.c.Close(s.now)
			s.expect(fFA, L+1, P+2)
			s.state(LastAck, nil)
		}, P + 2},
		{"CLOSING", func(s *script) {
			s.c.Close(s.now)
			s.expect(fFA, L+1, P+1)
			s.in(fFA, P+1, L+1, 65535, none, nil)
			s.expect(fA, L+2, P+2)
			s.state(Closing, nil)
		}, P + 2},
		{"SYN-RECEIVED", nil, P + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s *script
			err := ErrReset
			if tc.setup == nil {
				s = newScript(t, scCfg())
				s.passive(65535, peerOpts())
				s.expect(fSA, L, P+1, withWin(32768), withOpts(s.out.segs[0].Options))
				s.ts = true
				err = ErrRefused
			} else {
				s = establish(t, scCfg(), peerOpts())
				tc.setup(s)
			}
			s.in(fR, tc.seq+1, 0, 0, none, nil) // in window, not exact
			s.expect(fA, s.c.sndNxt, tc.seq)
			s.in(fR, tc.seq, 0, 0, none, nil)
			s.expectNone()
			s.state(Closed, err)
			if s.c.NextDeadline() != 0 {
				t.Fatalf("a timer after the reset")
			}
		})
	}
}

// TestScriptSynRetransmittedToSynReceived: the peer's SYN again (our
// SYN-ACK lost) is out of window in SYN-RECEIVED: an ACK answers it (RFC
// 9293 section 3.10.7.4), and the SYN-ACK still goes on its timer.
func TestScriptSynRetransmittedToSynReceived(t *testing.T) {
	s := newScript(t, scCfg())
	s.passive(65535, peerOpts())
	o := s.expect(fSA, L, P+1, withWin(32768), withOpts(s.out.segs[0].Options)).Options
	s.now += int64(500 * time.Millisecond)
	s.ts = true
	// The peer's SYN again (our SYN-ACK was lost): the SYN-ACK again at
	// once, as Linux answers, not a bare ACK.
	s.in(fS, P, 0, 65535, peerOpts(), nil)
	o.TSVal = 0
	s.expect(fSA, L, P+1, withWin(32768), withOpts(o))
	s.state(SynReceived, nil)
	s.advance(500 * time.Millisecond)
	s.expect(fSA, L, P+1, withWin(32768), withOpts(o))
	s.in(fA, P+1, L+1, 65535, none, nil)
	s.state(Established, nil)
}

// TestScriptTinyMSS: a peer's MSS option below 48 is raised to 48 (Linux's
// tcp_min_snd_mss); an MSS of 12 with timestamps once left no room for data
// and hung output in a loop.
func TestScriptTinyMSS(t *testing.T) {
	for _, mss := range []uint16{1, 12, 13, 48, 60} {
		t.Run(fmt.Sprint(mss), func(t *testing.T) {
			o := peerOpts()
			o.MSS = mss
			s := establish(t, scCfg(), o)
			want := max(int(mss), 48) - 12
			if s.c.mss != want {
				t.Fatalf("mss %d, want %d", s.c.mss, want)
			}
			s.write(2 * want)
			s.expect(fA, L+1, P+1, withLen(want))
			s.expect(fPA, L+1+uint32(want), P+1, withLen(want))
		})
	}
}

// TestScriptSACKRecovery: with SACK, the sender repairs every hole the
// scoreboard shows as the pipe allows (RFC 6675), not one per round trip.
func TestScriptSACKRecovery(t *testing.T) {
	s := establish(t, scCfg(), peerOpts())
	s.write(4000)
	s.expect(fA, L+1, P+1, withLen(1000))
	s.expect(fA, L+1001, P+1, withLen(1000))
	s.expect(fA, L+2001, P+1, withLen(1000))
	s.expect(fPA, L+3001, P+1, withLen(1000))
	// The first two are lost; three duplicate ACKs report the last two.
	sack := func(r uint32) frame.TCPOptions {
		return frame.TCPOptions{NSACK: 1, SACK: [4]frame.SACKBlock{{Left: L + 2001, Right: r}}}
	}
	s.in(fA, P+1, L+1, 65535, sack(L+3001), nil)
	s.in(fA, P+1, L+1, 65535, sack(L+4001), nil)
	s.expectNone()
	s.in(fA, P+1, L+1, 65535, sack(L+4001), nil)
	// Both holes at once: cwnd = ssthresh = 2000, the pipe holds just them.
	s.expect(fA, L+1, P+1, withLen(1000))
	s.expect(fA, L+1001, P+1, withLen(1000))
	s.expectNone()
	if st := s.c.Stats(); st.FastRetransmits != 1 || st.Retransmits != 2 || !s.c.inRecovery || s.c.cwnd != 2000 {
		t.Fatalf("stats %+v cwnd %d", st, s.c.cwnd)
	}
	// A partial ACK: nothing left to repair.
	s.in(fA, P+1, L+1001, 65535, sack(L+4001), nil)
	s.expectNone()
	s.in(fA, P+1, L+4001, 65535, none, nil)
	s.expectNone()
	if s.c.inRecovery || s.c.board.n != 0 || s.c.NextDeadline() != 0 {
		t.Fatalf("after recovery: in recovery %v, %d blocks, deadline %d", s.c.inRecovery, s.c.board.n, s.c.NextDeadline())
	}
}
