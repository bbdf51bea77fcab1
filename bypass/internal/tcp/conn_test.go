package tcp

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass/internal/frame"
)

const (
	addrA = 0x0a000001
	addrB = 0x0a000002
	portA = 40000
	portB = 5001
)

// wire is one direction of a simulated link: segments are encoded with
// their checksums, as the stack would send them, and queued for the peer.
type wire struct {
	src, dst uint32
	q        [][]byte
	full     bool // refuse every segment (a transmit ring with no room)
}

func (w *wire) Send(h *frame.TCPSegment, p1, p2 []byte) bool {
	if w.full {
		return false
	}
	s := *h
	s.Payload = append(append([]byte(nil), p1...), p2...)
	b, err := frame.AppendTCP(nil, &s, w.src, w.dst)
	if err != nil {
		panic(err)
	}
	w.q = append(w.q, b)
	return true
}

// take removes and parses the segments queued on w.
func (w *wire) take(t testing.TB) []frame.TCPSegment {
	t.Helper()
	var out []frame.TCPSegment
	for _, b := range w.q {
		var s frame.TCPSegment
		if err := frame.ParseTCP(b, w.src, w.dst, &s); err != nil {
			t.Fatalf("a segment the connection sent does not parse: %v", err)
		}
		out = append(out, s)
	}
	w.q = nil
	return out
}

// impair decides each segment's fate from a seeded generator.
type impair struct {
	rng                 *rand.Rand
	loss, reorder, dupl float64
	dropped, reordered  int
	duplicated          int
}

// net is two connections on a simulated link with a simulated clock.
type net struct {
	t      testing.TB
	now    int64
	ab, ba wire // a's output toward b, b's toward a
	a, b   *Conn
	imp    *impair
	held   [2][]byte // a reordered segment per direction, sent after the next
}

func newNet(t testing.TB, ca, cb Config, imp *impair) *net {
	n := &net{t: t, now: int64(time.Hour), imp: imp}
	n.ab = wire{src: addrA, dst: addrB}
	n.ba = wire{src: addrB, dst: addrA}
	n.a = NewActive(ca, &n.ab, portA, portB, 1000, n.now)
	syns := n.ab.take(t)
	if len(syns) != 1 || syns[0].Flags != frame.TCPSyn {
		t.Fatalf("active open sent %v, want one SYN", syns)
	}
	n.b = NewPassive(cb, &n.ba, portB, portA, 900000, &syns[0], n.now)
	return n
}

// deliver moves queued segments across, with the impairment; it returns
// how many were moved.
func (n *net) deliver() int {
	moved := 0
	for dir, w := range []*wire{&n.ab, &n.ba} {
		to := n.b
		if dir == 1 {
			to = n.a
		}
		q := w.q
		w.q = nil
		var out [][]byte
		for _, b := range q {
			if n.imp != nil {
				r := n.imp.rng.Float64()
				switch {
				case r < n.imp.loss:
					n.imp.dropped++
					continue
				case r < n.imp.loss+n.imp.reorder && n.held[dir] == nil:
					n.imp.reordered++
					n.held[dir] = b
					continue
				case r < n.imp.loss+n.imp.reorder+n.imp.dupl:
					n.imp.duplicated++
					out = append(out, b)
				}
			}
			out = append(out, b)
			if n.held[dir] != nil {
				out = append(out, n.held[dir])
				n.held[dir] = nil
			}
		}
		if len(q) == 0 && n.held[dir] != nil {
			out = append(out, n.held[dir])
			n.held[dir] = nil
		}
		for _, b := range out {
			var s frame.TCPSegment
			if err := frame.ParseTCP(b, w.src, w.dst, &s); err != nil {
				n.t.Fatalf("parse: %v", err)
			}
			to.Input(&s, n.now)
			moved++
		}
		to.Flush(n.now)
	}
	return moved
}

// settle delivers until the link is quiet, then runs the earliest timer;
// it stops when cond holds, and fails after limit rounds.
func (n *net) settle(cond func() bool, limit int) {
	n.t.Helper()
	for range limit {
		if cond() {
			return
		}
		n.now += int64(10 * time.Microsecond)
		if n.deliver() > 0 || n.held[0] != nil || n.held[1] != nil {
			continue
		}
		d := n.a.NextDeadline()
		if e := n.b.NextDeadline(); e != 0 && (d == 0 || e < d) {
			d = e
		}
		if d == 0 {
			if cond() {
				return
			}
			n.t.Fatalf("stuck: no segment in flight, no timer; a %v b %v", n.a.State(), n.b.State())
		}
		if d > n.now {
			n.now = d
		}
		n.a.Tick(n.now)
		n.b.Tick(n.now)
	}
	n.t.Fatalf("not settled after %d rounds: a %v %+v b %v %+v", limit, n.a.State(), n.a.Stats(), n.b.State(), n.b.Stats())
}

func established(n *net) func() bool {
	return func() bool { return n.a.State() == Established && n.b.State() == Established }
}

func TestHandshakeNegotiatesOptions(t *testing.T) {
	for _, tc := range []struct {
		name          string
		a, b          Config
		ws, ts, sack  bool
		mssA, mssB    int
		shiftA, shift uint8
	}{
		{"all", Config{MSS: 1460}, Config{MSS: 1460}, true, true, true, 1448, 1448, 3, 3},
		{"no timestamps at server", Config{MSS: 1460}, Config{MSS: 1460, NoTimestamps: true}, true, false, true, 1460, 1460, 3, 3},
		{"no window scaling at client", Config{MSS: 1460, NoWindowScale: true}, Config{MSS: 1460}, false, true, true, 1448, 1448, 0, 0},
		{"no SACK", Config{MSS: 1460, NoSACK: true}, Config{MSS: 1460}, true, true, false, 1448, 1448, 3, 3},
		{"none", Config{MSS: 8960, NoSACK: true, NoTimestamps: true, NoWindowScale: true}, Config{MSS: 1460}, false, false, false, 1460, 1460, 0, 0},
		{"big buffers", Config{MSS: 1460, RecvBuf: 4 << 20}, Config{MSS: 1460, RecvBuf: 16 << 20}, true, true, true, 1448, 1448, 7, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNet(t, tc.a, tc.b, nil)
			n.settle(established(n), 100)
			for _, c := range []*Conn{n.a, n.b} {
				if c.wsOK != tc.ws || c.tsOK != tc.ts || c.sackOK != tc.sack {
					t.Errorf("port %d: ws %v ts %v sack %v, want %v %v %v", c.lport, c.wsOK, c.tsOK, c.sackOK, tc.ws, tc.ts, tc.sack)
				}
			}
			if n.a.mss != tc.mssA || n.b.mss != tc.mssB {
				t.Errorf("mss %d, %d; want %d, %d", n.a.mss, n.b.mss, tc.mssA, tc.mssB)
			}
			if n.a.sndShift != tc.shift || n.b.sndShift != tc.shiftA {
				t.Errorf("send shifts %d, %d; want %d, %d", n.a.sndShift, n.b.sndShift, tc.shift, tc.shiftA)
			}
		})
	}
}

// pump writes src into c as the buffer allows and reads what the peer
// received into dst.
func transfer(t *testing.T, n *net, size int) {
	rng := rand.New(rand.NewPCG(7, 8))
	srcA, srcB := make([]byte, size), make([]byte, size)
	for i := range srcA {
		srcA[i], srcB[i] = byte(rng.Uint32()), byte(rng.Uint32())
	}
	var gotA, gotB bytes.Buffer // gotB: what b received (from a)
	offA, offB := 0, 0
	buf := make([]byte, 64<<10)
	closed := [2]bool{}
	n.settle(func() bool {
		if offA < size {
			w, err := n.a.Write(srcA[offA:], n.now)
			if err != nil {
				t.Fatalf("a write: %v", err)
			}
			offA += w
		} else if !closed[0] {
			n.a.CloseWrite(n.now)
			closed[0] = true
		}
		if offB < size {
			w, err := n.b.Write(srcB[offB:], n.now)
			if err != nil {
				t.Fatalf("b write: %v", err)
			}
			offB += w
		}
		for _, rd := range []struct {
			c   *Conn
			out *bytes.Buffer
		}{{n.b, &gotB}, {n.a, &gotA}} {
			for {
				r, err := rd.c.Read(buf, n.now)
				rd.out.Write(buf[:r])
				if err == io.EOF {
					if rd.c == n.b && !closed[1] && offB == size {
						n.b.Close(n.now)
						closed[1] = true
					}
					break
				}
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if r == 0 {
					break
				}
			}
		}
		return closed[0] && closed[1] && gotA.Len() == size && gotB.Len() == size &&
			(n.a.State() == TimeWait || n.a.State() == Closed) && n.b.State() == Closed
	}, 50_000_000)
	if !bytes.Equal(gotB.Bytes(), srcA) || !bytes.Equal(gotA.Bytes(), srcB) {
		t.Fatalf("data differs: a->b %d bytes (equal %v), b->a %d (equal %v)", gotB.Len(), bytes.Equal(gotB.Bytes(), srcA), gotA.Len(), bytes.Equal(gotA.Bytes(), srcB))
	}
}

func TestTransferClean(t *testing.T) {
	n := newNet(t, Config{MSS: 1460}, Config{MSS: 1460}, nil)
	n.settle(established(n), 100)
	transfer(t, n, 4<<20)
	if s := n.a.Stats(); s.Retransmits != 0 || s.Timeouts != 0 {
		t.Errorf("retransmits on a clean link: %+v", s)
	}
}

func TestTransferImpaired(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"all options", Config{MSS: 1460, MinRTO: 5 * time.Millisecond}},
		{"no options", Config{MSS: 1460, MinRTO: 5 * time.Millisecond, NoSACK: true, NoTimestamps: true, NoWindowScale: true}},
		{"small buffers", Config{MSS: 1460, MinRTO: 5 * time.Millisecond, RecvBuf: 8 << 10, SendBuf: 8 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(1); seed <= 3; seed++ {
				imp := &impair{rng: rand.New(rand.NewPCG(seed, 99)), loss: 0.01, reorder: 0.01, dupl: 0.005}
				n := newNet(t, tc.cfg, tc.cfg, imp)
				n.settle(established(n), 100_000)
				transfer(t, n, 2<<20)
				sa, sb := n.a.Stats(), n.b.Stats()
				t.Logf("seed %d: a %+v\n b %+v\n imp %+v", seed, sa, sb, *imp)
				if sa.Retransmits == 0 || sb.Retransmits == 0 || sa.OutOfOrder+sb.OutOfOrder == 0 || imp.dropped == 0 || imp.duplicated == 0 {
					t.Errorf("seed %d: impairment not exercised: a %+v b %+v imp %+v", seed, sa, sb, imp)
				}
			}
		})
	}
}

func TestTimeWaitEnds(t *testing.T) {
	n := newNet(t, Config{MSS: 1460, TimeWait: time.Second}, Config{MSS: 1460}, nil)
	n.settle(established(n), 100)
	n.a.Close(n.now)
	n.settle(func() bool { return n.a.State() == FinWait2 && n.b.State() == CloseWait }, 100)
	if _, err := n.b.Read(make([]byte, 1), n.now); err != io.EOF {
		t.Fatalf("read after FIN: %v, want EOF", err)
	}
	n.b.Close(n.now)
	n.settle(func() bool { return n.a.State() == TimeWait && n.b.State() == Closed }, 100)
	start := n.now
	n.settle(func() bool { return n.a.State() == Closed }, 100)
	if d := time.Duration(n.now - start); d < time.Second-time.Millisecond || d > time.Second {
		t.Errorf("TIME-WAIT lasted %v, want 1s", d)
	}
	if !errors.Is(n.a.Err(), nil) || n.b.Err() != nil {
		t.Errorf("clean close left errors %v, %v", n.a.Err(), n.b.Err())
	}
}

// TestRefusedOutputRetries: a segment the output refuses (every transmit
// buffer in flight) with nothing else in flight is tried again by a
// timer, not left until the next call.
func TestRefusedOutputRetries(t *testing.T) {
	n := newNet(t, Config{MSS: 1460}, Config{MSS: 1460}, nil)
	n.settle(established(n), 100)
	n.ab.full = true
	if w, err := n.a.Write([]byte("order"), n.now); w != 5 || err != nil {
		t.Fatalf("write: %d, %v", w, err)
	}
	d := n.a.NextDeadline()
	if len(n.ab.q) != 0 || d == 0 || d-n.now > int64(time.Millisecond) {
		t.Fatalf("refused: %d segments queued, next deadline in %v", len(n.ab.q), time.Duration(d-n.now))
	}
	n.ab.full = false
	n.now = d
	n.a.Tick(n.now)
	if segs := n.ab.take(t); len(segs) != 1 || string(segs[0].Payload) != "order" {
		t.Fatalf("after the retry: %v", segs)
	}
}

// TestKeepaliveOnlyWhenIdle: keepalive probes an established connection
// with nothing unacknowledged, and stops when it leaves ESTABLISHED.
func TestKeepaliveOnlyWhenIdle(t *testing.T) {
	n := newNet(t, Config{MSS: 1460, Keepalive: time.Second}, Config{MSS: 1460}, nil)
	n.settle(established(n), 100)
	if n.a.kaAt == 0 {
		t.Fatal("no keepalive timer on an idle established connection")
	}
	n.a.Write([]byte("x"), n.now)
	if n.a.kaAt != 0 {
		t.Fatal("keepalive runs while data is unacknowledged")
	}
	n.settle(func() bool { return n.a.Unacked() == 0 }, 100)
	n.a.CloseWrite(n.now)
	if n.a.kaAt != 0 {
		t.Fatal("keepalive runs in FIN-WAIT-1")
	}
}

// TestHandshakeHoldsNoBuffers: a passive open costs no buffer memory until
// its handshake completes, so that a SYN flood up to the backlog costs
// connections' headers, not their buffers.
func TestHandshakeHoldsNoBuffers(t *testing.T) {
	n := newNet(t, Config{MSS: 1460}, Config{MSS: 1460}, nil)
	if n.b.State() != SynReceived || n.b.rbuf.b != nil || n.b.sbuf.b != nil {
		t.Fatalf("SYN-RECEIVED with buffers: %v, %d, %d", n.b.State(), len(n.b.rbuf.b), len(n.b.sbuf.b))
	}
	n.settle(established(n), 100)
	if len(n.b.rbuf.b) != DefaultBuffer || len(n.b.sbuf.b) != DefaultBuffer {
		t.Fatalf("established without buffers: %d, %d", len(n.b.rbuf.b), len(n.b.sbuf.b))
	}
}

// TestOrphanLifeBounded: AbortAfter ends a connection stuck in
// FIN-WAIT-2 (a peer that never closes) with a RST.
func TestOrphanLifeBounded(t *testing.T) {
	n := newNet(t, Config{MSS: 1460}, Config{MSS: 1460}, nil)
	n.settle(established(n), 100)
	n.a.Close(n.now)
	n.a.AbortAfter(n.now, time.Minute)
	n.settle(func() bool { return n.a.State() == FinWait2 }, 100)
	start := n.now
	n.settle(func() bool { return n.a.State() == Closed }, 100)
	if d := time.Duration(n.now - start); d > time.Minute || !errors.Is(n.a.Err(), ErrTimedOut) || n.a.Stats().RstSent != 1 {
		t.Fatalf("after %v: %v, %v, %+v", d, n.a.State(), n.a.Err(), n.a.Stats())
	}
}

// TestZeroWindowWithDataInFlight: a peer that shrinks its window to zero
// while data is in flight is probed, not timed out: the connection
// outlives many times MaxRetries timeouts.
func TestZeroWindowWithDataInFlight(t *testing.T) {
	n := newNet(t, Config{MSS: 1460, MaxRetries: 3}, Config{MSS: 1460}, nil)
	n.settle(established(n), 100)
	n.a.Write(make([]byte, 8000), n.now)
	n.ab.take(t) // in flight, never delivered
	ack := frame.TCPSegment{SrcPort: portB, DstPort: portA, Seq: n.a.rcvNxt, Ack: n.a.sndUna, Flags: frame.TCPAck, Window: 0,
		Options: frame.TCPOptions{HasTimestamp: true, TSVal: n.a.tsRecent}}
	n.a.Input(&ack, n.now)
	if n.a.sndWnd != 0 || n.a.sndMax == n.a.sndUna {
		t.Fatalf("window %d, in flight %d", n.a.sndWnd, n.a.sndMax-n.a.sndUna)
	}
	for range 40 {
		d := n.a.NextDeadline()
		if d == 0 {
			t.Fatal("no timer while data waits for a window")
		}
		n.now = d
		n.a.Tick(n.now)
		n.ab.take(t)
	}
	if n.a.State() != Established || n.a.Stats().WindowProbes == 0 {
		t.Fatalf("%v (%v), %+v", n.a.State(), n.a.Err(), n.a.Stats())
	}
}

// TestTimeWaitFreesBuffers: a connection in TIME-WAIT keeps no send
// buffer, nor a receive buffer with nothing left to read.
func TestTimeWaitFreesBuffers(t *testing.T) {
	n := newNet(t, Config{MSS: 1460}, Config{MSS: 1460}, nil)
	n.settle(established(n), 100)
	n.a.Close(n.now)
	n.settle(func() bool { return n.b.State() == CloseWait }, 100)
	n.b.Close(n.now)
	n.settle(func() bool { return n.a.State() == TimeWait }, 100)
	if n.a.sbuf.b != nil || n.a.rbuf.b != nil {
		t.Fatal("TIME-WAIT holds its buffers")
	}
}
