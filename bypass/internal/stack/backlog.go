package stack

import "net/netip"

// queue is a socket's receive queue: datagrams that another socket's poll
// took off the stack's ring for this one. Payloads sit back to back in a
// byte arena used as a ring; a record per datagram says where. Both sides
// run under the stack's receive lock.
type queue struct {
	buf        []byte
	recs       []qrec
	mask       uint32
	head, tail uint32 // recs[head&mask] is the oldest
	rd, wr     int    // the oldest payload starts at rd; the next goes at wr or 0
}

type qrec struct {
	off, n int32
	from   netip.AddrPort
	dst    netip.Addr
	stamp  int64 // nanoseconds; 0: not stamped
	nic    bool  // stamp is the NIC's (ClockNIC), else the stack's (ClockUser)
}

// newQueue returns a queue of at most records datagrams (a power of two)
// holding at most bytes bytes of payload.
func newQueue(records, bytes int) queue {
	return queue{buf: make([]byte, bytes), recs: make([]qrec, records), mask: uint32(records - 1)}
}

func (q *queue) len() int { return int(q.tail - q.head) }

// push copies p in and reports false when there is no room.
func (q *queue) push(p []byte, from netip.AddrPort, dst netip.Addr, stamp int64, nic bool) bool {
	if q.len() == len(q.recs) {
		return false
	}
	if q.len() == 0 {
		q.rd, q.wr = 0, 0
	}
	n := len(p)
	var off int
	switch {
	case q.rd <= q.wr && q.wr+n <= len(q.buf): // after the live bytes
		off = q.wr
	case q.rd <= q.wr && n < q.rd: // wrap to the start, before the oldest
		off = 0
	case q.rd > q.wr && q.wr+n < q.rd: // wrapped: between the newest and the oldest
		off = q.wr
	default:
		return false
	}
	copy(q.buf[off:], p)
	q.wr = off + n
	q.recs[q.tail&q.mask] = qrec{off: int32(off), n: int32(n), from: from, dst: dst, stamp: stamp, nic: nic}
	q.tail++
	return true
}

// pop copies the oldest datagram into b and returns the bytes copied and
// its record (whose n is more than the bytes copied when b was too short).
func (q *queue) pop(b []byte) (int, qrec) {
	r := q.recs[q.head&q.mask]
	n := copy(b, q.buf[r.off:r.off+r.n])
	q.head++
	if q.len() > 0 {
		q.rd = int(q.recs[q.head&q.mask].off)
	}
	return n, r
}
