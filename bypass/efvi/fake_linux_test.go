//go:build linux

package efvi

import (
	"fmt"
	"net/netip"
	"slices"
)

// fakeRX is an in-memory receive queue. Buffers posted to it form a FIFO
// that deliver fills, as an X2 adapter does; with x3 set it delivers
// RX_REF events naming packets it keeps itself.
type fakeRX struct {
	mem     []byte
	bufSize int
	prefix  int
	ring    int // receive ring capacity
	x3      bool

	posted   []uint32 // FIFO of posted buffers
	pending  []event
	pkts     [][]byte // X3 packets by id
	live     []bool   // X3 packets delivered and not yet released
	filters  []fakeFilter
	polls    int
	posts    int
	releases int
	closed   bool
}

func newFakeRX(nbufs, bufSize int) *fakeRX {
	return &fakeRX{
		mem: make([]byte, nbufs*bufSize), bufSize: bufSize, prefix: 14, ring: nbufs,
		pending: make([]event, 0, 4096), posted: make([]uint32, 0, nbufs),
	}
}

func (f *fakeRX) poll(evs []event) int {
	f.polls++
	n := copy(evs, f.pending)
	m := copy(f.pending, f.pending[n:])
	f.pending = f.pending[:m]
	return n
}

func (f *fakeRX) post(ids []uint32) int {
	f.posts++
	n := min(len(ids), f.ring-len(f.posted))
	for _, id := range ids[:n] {
		if slices.Contains(f.posted, id) {
			panic("buffer posted twice")
		}
	}
	f.posted = append(f.posted, ids[:n]...)
	return n
}

func (f *fakeRX) release(ids []uint32) {
	f.releases++
	for _, id := range ids {
		if !f.live[id] {
			panic("packet released twice")
		}
		f.live[id] = false
	}
}

func (f *fakeRX) frame(ev *event) []byte {
	if ev.kind == evRXRef {
		return f.pkts[ev.id][:ev.len]
	}
	off := int(ev.id)*f.bufSize + f.prefix
	return f.mem[off : off+int(ev.len)]
}

func (f *fakeRX) refs() bool { return f.x3 }

// fakeFilter is a filter the fake was asked for: the address and port and
// the IP protocol.
type fakeFilter struct {
	dst   netip.AddrPort
	proto uint8
}

func (f *fakeRX) addFilter(dst netip.AddrPort, proto uint8) error {
	f.filters = append(f.filters, fakeFilter{dst, proto})
	return nil
}

func (f *fakeRX) removeFilter(dst netip.AddrPort, proto uint8) error {
	i := slices.Index(f.filters, fakeFilter{dst, proto})
	if i < 0 {
		return fmt.Errorf("fake: no %s filter for %v", protoName(proto), dst)
	}
	f.filters = slices.Delete(f.filters, i, i+1)
	return nil
}

func (f *fakeRX) close() error { f.closed = true; return nil }

// take removes the oldest posted buffer, as the adapter does on receipt.
func (f *fakeRX) take() (uint32, bool) {
	if len(f.posted) == 0 {
		return 0, false
	}
	id := f.posted[0]
	f.posted = f.posted[:copy(f.posted, f.posted[1:])]
	return id, true
}

// deliver receives one frame: into the next posted buffer (X2), or as a
// new X3 packet. Without a posted buffer it raises RX_NO_DESC_TRUNC.
func (f *fakeRX) deliver(fr []byte) {
	if f.x3 {
		id := uint32(len(f.pkts))
		f.pkts = append(f.pkts, append([]byte(nil), fr...))
		f.live = append(f.live, true)
		f.pending = append(f.pending, event{kind: evRXRef, id: id, len: uint32(len(fr))})
		return
	}
	id, ok := f.take()
	if !ok {
		f.pending = append(f.pending, event{kind: evRXNoDesc})
		return
	}
	off := int(id)*f.bufSize + f.prefix
	copy(f.mem[off:], fr)
	f.pending = append(f.pending, event{kind: evRX, id: id, len: uint32(len(fr)), sub: rxFlagSOP})
}

// discard raises an RX_DISCARD (or, X3, RX_REF_DISCARD) event.
func (f *fakeRX) discard(sub uint16) {
	if f.x3 {
		id := uint32(len(f.pkts))
		f.pkts = append(f.pkts, make([]byte, 64))
		f.live = append(f.live, true)
		f.pending = append(f.pending, event{kind: evRXRefDiscard, id: id, len: 64, sub: sub})
		return
	}
	id, _ := f.take()
	f.pending = append(f.pending, event{kind: evRXDiscard, id: id, len: 64, sub: sub})
}

// fakeTX is an in-memory transmit queue that records the frames it sends
// and completes them when told.
type fakeTX struct {
	mem      []byte
	bufSize  int
	ring     int
	inflight []uint32
	sent     [][]byte
	record   bool
	pending  []event
	sends    int
	closed   bool
	// lazy frees ring space only when completions are polled, as X3
	// does: a send raises its completion event at once, but the slot
	// stays taken until poll hands the event over.
	lazy bool
}

func (f *fakeTX) poll(evs []event) int {
	if f.lazy {
		for _, ev := range f.pending[:min(len(evs), len(f.pending))] {
			f.inflight = f.inflight[:copy(f.inflight, f.inflight[ev.len:])]
		}
	}
	n := copy(evs, f.pending)
	f.pending = f.pending[:copy(f.pending, f.pending[n:])]
	return n
}

func (f *fakeTX) send(d []txDesc) int {
	f.sends++
	n := min(len(d), f.ring-len(f.inflight))
	for _, x := range d[:n] {
		f.inflight = append(f.inflight, x.id)
		if f.lazy {
			f.pending = append(f.pending, event{kind: evTX, len: 1})
		}
		if f.record {
			off := int(x.id) * f.bufSize
			f.sent = append(f.sent, append([]byte(nil), f.mem[off:off+int(x.len)]...))
		}
	}
	return n
}

// complete reports the n oldest sends done, in one TX event.
func (f *fakeTX) complete(n int) {
	n = min(n, len(f.inflight))
	f.inflight = f.inflight[:copy(f.inflight, f.inflight[n:])]
	f.pending = append(f.pending, event{kind: evTX, len: uint32(n)})
}

func (f *fakeTX) fail(n int, sub uint16) {
	f.inflight = f.inflight[:copy(f.inflight, f.inflight[n:])]
	f.pending = append(f.pending, event{kind: evTXError, len: uint32(n), sub: sub})
}

func (f *fakeTX) close() error { f.closed = true; return nil }
