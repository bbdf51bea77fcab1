package tcp

import "github.com/lowlat/lowlat/bypass/internal/frame"

// SACK-based loss recovery on the sending side, after RFC 6675: the
// blocks the peer reports received past a hole are kept on a scoreboard;
// in recovery, every hole below the highest block is taken as lost and
// sent again, as many at a time as the congestion window leaves room for
// by the pipe (the data estimated to be in the network), instead of
// NewReno's one hole per round trip.

// takeSACK records the SACK blocks of an acceptable ACK, clipped to the
// data outstanding.
func (c *Conn) takeSACK(o *frame.TCPOptions) {
	for i := range min(o.NSACK, len(o.SACK)) {
		l, r := o.SACK[i].Left, o.SACK[i].Right
		if seqLT(l, c.sndUna) {
			l = c.sndUna
		}
		if seqGT(r, c.sndMax) {
			r = c.sndMax
		}
		if seqLT(l, r) {
			c.board.add(l, r) // a block that fits in no slot is forgotten: the peer repeats it
		}
	}
}

// boardPrune drops what SND.UNA has passed.
func (c *Conn) boardPrune() {
	k := 0
	for k < c.board.n && seqLEQ(c.board.b[k].r, c.sndUna) {
		k++
	}
	c.board.drop(k)
	if c.board.n > 0 && seqLT(c.board.b[0].l, c.sndUna) {
		c.board.b[0].l = c.sndUna
	}
}

// highSack is the end of the highest block reported, or SND.UNA.
func (c *Conn) highSack() uint32 {
	if c.board.n == 0 {
		return c.sndUna
	}
	return c.board.b[c.board.n-1].r
}

// sackedIn counts the bytes of [a, b) on the scoreboard.
func (c *Conn) sackedIn(a, b uint32) uint32 {
	n := uint32(0)
	for _, blk := range c.board.all() {
		l, r := blk.l, blk.r
		if seqLT(l, a) {
			l = a
		}
		if seqGT(r, b) {
			r = b
		}
		if seqLT(l, r) {
			n += r - l
		}
	}
	return n
}

// pipe estimates the bytes in the network (RFC 6675's pipe, with every
// hole below the highest block taken as lost): what was sent above the
// highest block, and the holes sent again in this recovery and not yet
// reported.
func (c *Conn) pipe() uint32 {
	hs := c.highSack()
	p := c.sndMax - hs
	rx := c.highRxt
	if seqGT(rx, hs) {
		rx = hs
	}
	if seqGT(rx, c.sndUna) {
		p += rx - c.sndUna - c.sackedIn(c.sndUna, rx)
	}
	return p
}

// nextHole is the first range not on the scoreboard that starts at or
// past HighRxt and lies below the highest block: the next loss to repair.
func (c *Conn) nextHole() (seq, n uint32, ok bool) {
	s := c.highRxt
	if seqLT(s, c.sndUna) {
		s = c.sndUna
	}
	for _, blk := range c.board.all() {
		if seqLEQ(blk.r, s) {
			continue
		}
		if seqLT(s, blk.l) {
			return s, blk.l - s, true
		}
		s = blk.r
	}
	return 0, 0, false
}

// sackRecover repairs holes while the pipe leaves room in the congestion
// window; new data is left to output, which measures by the pipe too.
func (c *Conn) sackRecover() {
	for c.pipe() < c.cwnd {
		seq, n, ok := c.nextHole()
		if !ok {
			return
		}
		n = min(n, uint32(c.mss))
		c.rttTiming = false // Karn
		if !c.sendFrom(seq, n) {
			c.refused()
			return
		}
		c.highRxt = seq + n
	}
}
