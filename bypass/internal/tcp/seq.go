package tcp

// Sequence-number comparisons modulo 2^32 (RFC 9293 section 3.4).
func seqLT(a, b uint32) bool  { return int32(a-b) < 0 }
func seqLEQ(a, b uint32) bool { return int32(a-b) <= 0 }
func seqGT(a, b uint32) bool  { return int32(a-b) > 0 }
func seqGEQ(a, b uint32) bool { return int32(a-b) >= 0 }

// seqMax is the later of a and b.
func seqMax(a, b uint32) uint32 {
	if seqGT(a, b) {
		return a
	}
	return b
}

// ring is a byte buffer of a power-of-two size addressed by sequence
// number: the byte with sequence s sits at b[s&mask]. Its memory is
// allocated by alloc, so that a connection still in its handshake (a
// SYN flood's) costs no buffers.
type ring struct {
	b    []byte
	mask uint32
}

// newRing returns a ring of size bytes rounded up to a power of two,
// not yet allocated.
func newRing(size int) ring {
	n := 1
	for n < size {
		n <<= 1
	}
	return ring{mask: uint32(n - 1)}
}

// alloc gives the ring its memory, once.
func (r *ring) alloc() {
	if r.b == nil {
		r.b = make([]byte, r.mask+1)
	}
}

func (r *ring) size() uint32 { return r.mask + 1 }

// put copies p to the sequence space starting at s.
func (r *ring) put(s uint32, p []byte) {
	for len(p) > 0 {
		i := s & r.mask
		n := copy(r.b[i:], p)
		p = p[n:]
		s += uint32(n)
	}
}

// get copies the n bytes from s into p (len(p) >= n).
func (r *ring) get(s uint32, p []byte) {
	for len(p) > 0 {
		i := s & r.mask
		n := copy(p, r.b[i:])
		p = p[n:]
		s += uint32(n)
	}
}

// span returns the n bytes from s as one or two slices of the ring.
func (r *ring) span(s uint32, n int) (p1, p2 []byte) {
	i := int(s & r.mask)
	if i+n <= len(r.b) {
		return r.b[i : i+n], nil
	}
	return r.b[i:], r.b[:n-(len(r.b)-i)]
}
