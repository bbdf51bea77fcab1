package tcp

import (
	"fmt"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass/internal/frame"
)

// FuzzConnInput drives one connection, ESTABLISHED or SYN-RECEIVED, with
// segments and calls decoded from the fuzz input: arbitrary flags,
// sequence and acknowledgment numbers near the connection's own (or
// anywhere), windows, payloads and options, interleaved with Write, Read,
// Close, Tick and a transmit path that refuses segments. After every step
// the connection's invariants must hold, every segment it sent must
// encode and parse, the data it sends must be the data written at those
// sequence numbers, and the data it delivers must be the peer's stream.
func FuzzConnInput(f *testing.F) {
	// Seeds: a mode byte (configuration and starting state), then ops.
	seg := func(flags, seqSel, ackSel, plen, opts byte) []byte {
		// op 0: segment; flags; seq selector + 2 offset bytes; ack
		// selector + 2 offset bytes; window; length; options.
		return []byte{0, flags, seqSel, 0, 0, ackSel, 0, 0, 0xff, 0xff, plen, opts}
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	// segAck is seg with an acknowledgment ackOff from the selected base.
	segAck := func(flags, seqSel, ackSel byte, ackOff int16, plen, opts byte) []byte {
		b := seg(flags, seqSel, ackSel, plen, opts)
		b[6], b[7] = byte(uint16(ackOff)>>8), byte(ackOff)
		return b
	}
	write := func(n uint16) []byte { return []byte{4, byte(n >> 8), byte(n)} }
	read := []byte{5, 0xff, 0xff}
	tick := func(d byte) []byte { return []byte{6, d} }
	// good is the well-formed segment op: flags by index (A, PA, FA,
	// FPA, A, PA, A, RA), in sequence, acknowledging frac/255 of what is
	// outstanding, window byte (0: as before), n*8 bytes of payload.
	good := func(flagIdx, frac, winb, n byte) []byte { return []byte{2 | flagIdx<<4, 0, frac, winb, n} }
	close := []byte{7, 0}
	const est, synSent, synRcvd = 0, 1, 2
	f.Add(uint8(0), uint8(est), []byte{})
	f.Add(uint8(0), uint8(est), cat(seg(fPA, 0, 0, 100, 0), read, write(3000), tick(255), tick(255)))
	f.Add(uint8(1), uint8(synRcvd), cat(seg(fA, 0, 0, 0, 0), write(5000), seg(fA, 0, 0, 0, 0), seg(fA, 0, 0, 0, 0), seg(fA, 0, 0, 0, 0)))
	f.Add(uint8(2), uint8(est), cat(seg(fPA, 1, 0, 50, 1), seg(fFA, 1, 0, 20, 3), seg(fPA, 0, 0, 200, 0), read))
	f.Add(uint8(0x20), uint8(est), cat(write(40000), tick(200), seg(fA, 4, 4, 0, 2), tick(255), []byte{7, 1}, tick(255)))
	f.Add(uint8(0x81), uint8(synRcvd), cat(seg(fR, 0, 0, 0, 0), seg(fS, 1, 0, 0, 0x1f), seg(fSA, 2, 1, 0, 0)))
	f.Add(uint8(0x10), uint8(est), cat(seg(fA, 0, 0, 0, 0), write(9000), tick(255), tick(255), []byte{7, 4}, write(100), tick(255), []byte{7, 4}, tick(255)))
	f.Add(uint8(0x44), uint8(est), cat(write(100), close, seg(fFA, 0, 1, 0, 0), tick(250), seg(fFA, 2, 1, 0, 0), tick(255)))
	// Fast retransmit, a partial ACK, the full ACK.
	f.Add(uint8(0), uint8(est), cat(write(8000), good(0, 0, 0, 0), good(0, 0, 0, 0), good(0, 0, 0, 0), good(0, 0, 0, 0), good(0, 40, 0, 0), good(0, 255, 0, 0)))
	// Simultaneous close; then LAST-ACK.
	f.Add(uint8(0), uint8(est), cat(write(100), close, good(2, 0, 0, 0), good(0, 255, 0, 0), tick(255)))
	f.Add(uint8(0x02), uint8(est), cat(good(3, 0, 0, 100), read, close, good(0, 255, 0, 0), tick(255)))
	// Zero window, probes, reopening.
	f.Add(uint8(0x08), uint8(est), cat(good(0, 0, 0, 0), []byte{2, 0, 0, 1, 0}, write(5000), tick(255), tick(255), good(0, 0, 200, 0), good(0, 255, 0, 0)))
	// SYN-SENT: the SYN-ACK, a RST, a SYN (simultaneous open).
	// (Option byte 0x1d: timestamp, MSS, window scale, SACK permitted;
	// then the timestamp's delta, the MSS, the shift.)
	synOpts := []byte{1, 0x05, 0xb4, 7}
	f.Add(uint8(0), uint8(synSent), cat(segAck(fSA, 2, 1, 1, 0, 0x1d), synOpts, write(10)))
	f.Add(uint8(0), uint8(synSent), cat(write(3000), segAck(fSA, 2, 1, 1, 0, 0x1d), synOpts, good(0, 255, 0, 0)))
	f.Add(uint8(0), uint8(synSent), cat(seg(fS, 2, 0, 0, 0x1d), synOpts, segAck(fSA, 8, 1, 1, 0, 0x1d), synOpts, write(10)))
	f.Add(uint8(0), uint8(synSent), cat(tick(255), tick(255), segAck(fRA, 2, 1, 1, 0, 0)))
	f.Fuzz(func(t *testing.T, mode, start uint8, ops []byte) {
		fuzzConn(t, mode, start, ops)
	})
}

// fuzzIn reads the fuzz input; past its end it reads zeros.
type fuzzIn struct{ b []byte }

func (r *fuzzIn) u8() uint8 {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *fuzzIn) u16() uint16 { return uint16(r.u8())<<8 | uint16(r.u8()) }

// near is a sequence number: one of bases (by the selector's high bits)
// plus a small, a medium or a wide offset, or any number at all.
func (r *fuzzIn) near(bases ...uint32) uint32 {
	sel := r.u8()
	base := bases[int(sel>>2)%len(bases)]
	off := int32(int16(r.u16()))
	switch sel & 3 {
	case 0:
		return base + uint32(int32(int8(off)))
	case 1:
		return base + uint32(off)
	case 2:
		return base + uint32(off)*64
	}
	return base + uint32(off)<<16 ^ uint32(sel)
}

// wByte is the byte the fuzzed application writes at sequence number seq.
func wByte(seq uint32) byte { return patByte(seq ^ 0x5a5a5a5a) }

type fuzzer struct {
	t       *testing.T
	c       *Conn
	out     capture
	now     int64
	peerTS  uint32
	sawFull bool
	edge    uint32 // the right edge of the window last advertised
	edgeSet bool
	rd      []byte
	lastWin uint16
}

func fuzzConn(t *testing.T, mode, start uint8, ops []byte) {
	cfg := Config{MSS: 1012, NoTimestamps: mode&2 != 0, NoSACK: mode&4 != 0, NoWindowScale: mode&8 != 0}
	if mode&0x10 != 0 {
		cfg.RecvBuf, cfg.SendBuf = 4096, 4096
	} else {
		cfg.RecvBuf, cfg.SendBuf = 128<<10, 64<<10
	}
	if mode&0x20 != 0 {
		cfg.DelayedACK = 40 * time.Millisecond
	}
	if mode&0x40 != 0 {
		cfg.Nagle = true
	}
	if mode&0x80 != 0 {
		cfg.Keepalive, cfg.KeepaliveProbes = 5*time.Second, 2
		cfg.MinRTO = 5 * time.Millisecond
	}
	z := &fuzzer{t: t, now: scStart, peerTS: 5000, rd: make([]byte, 70000), lastWin: 65535}
	z.out = capture{src: scAddrL, dst: scAddrP}
	peer := frame.TCPOptions{MSS: 1460, HasWScale: true, WScale: 3, SACKPermitted: true, HasTimestamp: true, TSVal: z.peerTS}
	build := func(flags uint8, seq, ack uint32, win uint16, o frame.TCPOptions, payload []byte) frame.TCPSegment {
		h := frame.TCPSegment{SrcPort: scPortP, DstPort: scPortL, Seq: seq, Ack: ack, Flags: flags, Window: win, Options: o, Payload: payload}
		b, err := frame.AppendTCP(nil, &h, scAddrP, scAddrL)
		for err == frame.ErrTCPOptions && h.Options.NSACK > 0 {
			h.Options.NSACK--
			b, err = frame.AppendTCP(nil, &h, scAddrP, scAddrL)
		}
		if err != nil {
			t.Fatalf("building %s: %v", fmtSeg(&h), err)
		}
		var s frame.TCPSegment
		if err := frame.ParseTCP(b, scAddrP, scAddrL, &s); err != nil {
			t.Fatalf("parsing %s: %v", fmtSeg(&h), err)
		}
		return s
	}
	switch start % 3 {
	case 0:
		z.c = NewActive(cfg, &z.out, scPortL, scPortP, L, z.now)
		z.drain("NewActive")
		z.now += int64(time.Millisecond)
		s := build(fSA, P, L+1, 65535, peer, nil)
		z.c.Input(&s, z.now)
		z.drain("SYN-ACK")
		if z.c.State() != Established {
			t.Fatalf("not established: %v", z.c.State())
		}
	case 1:
		z.c = NewActive(cfg, &z.out, scPortL, scPortP, L, z.now)
		z.drain("NewActive")
		if z.c.State() != SynSent {
			t.Fatalf("not in SYN-SENT: %v", z.c.State())
		}
	default:
		s := build(fS, P, 0, 65535, peer, nil)
		z.c = NewPassive(cfg, &z.out, scPortL, scPortP, L, &s, z.now)
		z.drain("NewPassive")
		if z.c.State() != SynReceived {
			t.Fatalf("not in SYN-RECEIVED: %v", z.c.State())
		}
	}
	z.check("setup")

	r := &fuzzIn{b: ops}
	for step := 0; len(r.b) > 0 && step < 500; step++ {
		c := z.c
		closed := c.State() == Closed
		op := r.u8()
		var what string
		switch op & 7 {
		case 2, 3:
			// A well-formed segment: in sequence (or a hole ahead),
			// acknowledging part of what was sent, with the peer's
			// current timestamp.
			flags := [...]uint8{fA, fPA, fFA, fFPA, fA, fPA, fA, fRA}[op>>4&7]
			sel := r.u8()
			seq := c.rcvNxt
			if sel&1 != 0 {
				seq += uint32(r.u8()) * 100
			}
			ack := c.sndUna
			if f := r.u8(); f != 0 {
				ack += uint32(uint64(c.sndMax-c.sndUna) * uint64(f) / 255)
			}
			win := z.lastWin // 0: the window as before (duplicate ACKs); 1: zero
			if b := r.u8(); b != 0 {
				win = uint16(b)<<8 | uint16(b)
				if b == 1 {
					win = 0
				}
				z.lastWin = win
			}
			n := int(r.u8()) * 8
			var o frame.TCPOptions
			if c.tsOK {
				z.peerTS++
				o.HasTimestamp, o.TSVal, o.TSEcr = true, z.peerTS, c.tsNow()
			}
			s := build(flags, seq, ack, win, o, pat(seq, n))
			what = "Input " + fmtSeg(&s)
			c.Input(&s, z.now)
			c.Flush(z.now)
		case 0, 1:
			flags := r.u8()
			seq := r.near(c.rcvNxt, c.rcvRead, c.irs, c.rcvAdv)
			ack := r.near(c.sndUna, c.sndMax, c.iss, c.sndEnd)
			win := r.u16()
			n := int(r.u8()) * 9
			ob := r.u8()
			var o frame.TCPOptions
			if ob&1 != 0 {
				d := int8(r.u8())
				val := z.peerTS + uint32(int32(d))
				if d > 0 {
					z.peerTS = val
				}
				o.HasTimestamp, o.TSVal, o.TSEcr = true, val, c.tsNow()
			}
			if ob&2 != 0 {
				o.NSACK = 1 + int(r.u8()%4)
				for i := range o.NSACK {
					l := r.near(c.sndUna, c.sndMax)
					o.SACK[i] = frame.SACKBlock{Left: l, Right: l + uint32(r.u8())*8}
				}
			}
			if ob&4 != 0 {
				o.MSS = r.u16()
			}
			if ob&8 != 0 {
				o.HasWScale, o.WScale = true, r.u8()
			}
			o.SACKPermitted = ob&16 != 0
			s := build(flags, seq, ack, win, o, pat(seq, n))
			what = "Input " + fmtSeg(&s)
			c.Input(&s, z.now)
			if op&8 != 0 {
				c.Flush(z.now)
			}
		case 4:
			n := int(r.u16())
			b := make([]byte, n)
			for i := range b {
				b[i] = wByte(c.sndEnd + uint32(i))
			}
			what = fmt.Sprintf("Write(%d)", n)
			w, err := c.Write(b, z.now)
			if w < 0 || w > n || (err != nil && w != 0) {
				t.Fatalf("Write(%d) = %d, %v", n, w, err)
			}
		case 5:
			n := int(r.u16())
			what = fmt.Sprintf("Read(%d)", n)
			from, before := c.rcvRead, c.Readable()
			got, err := c.Read(z.rd[:min(n, len(z.rd))], z.now)
			if got < 0 || got > before || (err != nil && got != 0) {
				t.Fatalf("Read(%d) = %d, %v with %d readable", n, got, err, before)
			}
			for i := range got {
				if z.rd[i] != patByte(from+uint32(i)) {
					t.Fatalf("Read returned a byte at %d that is not the peer's (offset %d of %d)", from+uint32(i), i, got)
				}
			}
		case 6:
			d := r.u8()
			switch {
			case d < 100:
				z.now += int64(d) * int64(time.Millisecond)
			case d < 200:
				z.now += int64(d-99) * int64(time.Second)
			default:
				if dl := c.NextDeadline(); dl > z.now {
					z.now = dl
				}
			}
			what = fmt.Sprintf("Tick(+%d)", d)
			c.Tick(z.now)
			if dl := c.NextDeadline(); dl != 0 && dl <= z.now {
				t.Fatalf("after Tick(%d) the deadline %d has passed", z.now, dl)
			}
		case 7:
			switch k := r.u8(); k % 8 {
			case 0:
				what = "Close"
				c.Close(z.now)
			case 1:
				what = "CloseWrite"
				c.CloseWrite(z.now)
			case 2:
				what = "Abort"
				c.Abort(z.now)
			case 3:
				what = "Flush"
				c.Flush(z.now)
			case 4:
				z.out.full = !z.out.full
				z.sawFull = true
				what = fmt.Sprintf("full=%v", z.out.full)
			default:
				d := int64(r.u8()) * int64(time.Microsecond) * 100
				z.now += d
				what = fmt.Sprintf("now+%v", time.Duration(d))
			}
		}
		if closed && len(z.out.segs) > 0 {
			t.Fatalf("step %d (%s): a closed connection sent %s", step, what, fmtSeg(&z.out.segs[0]))
		}
		z.drain(what)
		z.check(fmt.Sprintf("step %d (%s)", step, what))
	}
}

// drain checks and removes the segments the connection sent.
func (z *fuzzer) drain(what string) {
	t, c := z.t, z.c
	for _, b := range z.out.bad {
		t.Fatalf("%s: %s", what, b)
	}
	for i := range z.out.segs {
		s := &z.out.segs[i]
		if s.SrcPort != scPortL || s.DstPort != scPortP || s.Urgent != 0 {
			t.Fatalf("%s: sent %s with ports %d>%d", what, fmtSeg(s), s.SrcPort, s.DstPort)
		}
		if s.Flags&fS != 0 && s.Seq != c.iss {
			t.Fatalf("%s: sent a SYN at %d, not the ISS %d", what, s.Seq, c.iss)
		}
		if s.Flags&fS != 0 && s.Flags&fF != 0 || s.Flags&fR != 0 && len(s.Payload) > 0 {
			t.Fatalf("%s: sent %s", what, fmtSeg(s))
		}
		if s.Flags&(fS|fR) == 0 && s.Flags&fA == 0 {
			t.Fatalf("%s: sent %s without ACK", what, fmtSeg(s))
		}
		o := &s.Options
		if s.Flags&fS == 0 && (o.MSS != 0 || o.HasWScale || o.SACKPermitted) {
			t.Fatalf("%s: SYN options on %s", what, fmtSeg(s))
		}
		if o.NSACK > 0 && !c.sackOK || o.HasTimestamp && !c.tsOK && s.Flags&fS == 0 {
			t.Fatalf("%s: options not agreed on %s", what, fmtSeg(s))
		}
		for j := range o.NSACK {
			b := o.SACK[j]
			if !seqLT(s.Ack, b.Left) || !seqLT(b.Left, b.Right) {
				t.Fatalf("%s: SACK block %d:%d on %s", what, b.Left, b.Right, fmtSeg(s))
			}
		}
		for j, v := range s.Payload {
			if v != wByte(s.Seq+uint32(j)) {
				t.Fatalf("%s: %s carries a byte at %d that was not written there", what, fmtSeg(s), s.Seq+uint32(j))
			}
		}
		if n := uint32(len(s.Payload)); n > 0 && (seqLT(s.Seq, c.iss+1) || seqGT(s.Seq+n, c.sndEnd) || int(n) > c.mss) {
			t.Fatalf("%s: %s outside the data written (iss %d end %d) or over the MSS %d", what, fmtSeg(s), c.iss, c.sndEnd, c.mss)
		}
		if s.Flags&fSA == fSA {
			// A SYN-ACK's window is unscaled, capped at 65535: it may
			// offer less than an ACK before it did.
			z.edge, z.edgeSet = s.Ack+uint32(s.Window), true
		} else if s.Flags&(fS|fR) == 0 {
			// The window's right edge never moves left (RFC 9293
			// section 3.8.6.2.2 asks that it not shrink), but for
			// less than one unit of the window scale: window()
			// rounds the window up when it keeps the old edge, and
			// does not move RCV.ADV to the rounded edge (RFC 7323
			// section 2.4 allows that much).
			edge := s.Ack + uint32(s.Window)<<c.rcvShift
			if z.edgeSet && seqLT(edge+(1<<c.rcvShift)-1, z.edge) {
				t.Fatalf("%s: %s moves the window's edge left from %d to %d", what, fmtSeg(s), z.edge, edge)
			}
			if !z.edgeSet || seqGT(edge, z.edge) {
				z.edge, z.edgeSet = edge, true
			}
		}
	}
	z.out.segs = z.out.segs[:0]
}

func (z *fuzzer) check(what string) {
	if err := invariants(z.c, z.now, !z.sawFull); err != nil {
		z.t.Fatalf("%s: %v", what, err)
	}
}
