//go:build linux

package efvi

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/stack"
	"github.com/lowlat/lowlat/bypass/internal/undo"
)

// Conn is a UDP socket on an efvi stack.
type Conn = stack.Socket

// driver is the stack's Driver over two VIs in one protection domain: one
// that only receives and one that only transmits, each with its own event
// queue, so that the stack's receive and transmit sides never share ef_vi
// state. It crosses into C once per batch: one poll returns many event
// records, one call posts many buffers or sends many frames.
type driver struct {
	rxq rxQueue
	txq txQueue

	// Receive-owned.
	evs    []event // the current batch of event records
	i, n   int     // evs[i:n] are still to be handled
	repost []uint32
	refs   []uint32

	// Transmit-owned.
	mem        []byte // packet memory: TX buffer id lives at id*bufSize
	bufSize    int
	free       []uint32 // TX buffers not in flight
	fifo       []uint32 // TX buffers in flight, in posting order (a ring)
	head, tail uint32   // fifo[head&mask] is the oldest in flight
	mask       uint32
	descs      []txDesc // committed, not yet sent
	tevs       []event

	st   counters
	undo undo.Stack // the VIs and what they live in (memory, protection domain, driver handle), released by Close
}

var (
	_ stack.Driver      = (*driver)(nil)
	_ stack.Steering    = (*driver)(nil)
	_ stack.TCPSteering = (*driver)(nil)
)

// counters are updated by the receive or the transmit side and read by
// Stats, each side's on cache lines of its own.
type counters struct {
	_                                      [128]byte
	noDesc, scattered, overflow, unknown   atomic.Uint64
	discardCsum, discardIPCsum, discardCRC atomic.Uint64
	discardTrunc, discardMcast             atomic.Uint64
	discardRights, discardClass            atomic.Uint64
	discardOther                           atomic.Uint64
	_                                      [128]byte
	txErrors, txOverflow, txUnknown        atomic.Uint64
	lastTxErr                              atomic.Uint32 // 1 + the type of the last TX_ERROR; 0 for none
	_                                      [128]byte
}

// Counters are the ef_vi-specific counters of a stack. Stats folds them
// into the closest backend.Stats fields; Counters keeps them apart.
type Counters struct {
	DiscardChecksum   uint64 // NIC: bad UDP/TCP checksum (RX_DISCARD CSUM_BAD, RX_REF L4)
	DiscardIPChecksum uint64 // NIC (X3): bad IPv4 header checksum
	DiscardCRC        uint64 // NIC: bad Ethernet FCS, as CTPIO poisoning produces
	DiscardTrunc      uint64 // NIC: frame truncated or of a bad length
	DiscardMcast      uint64 // NIC: multicast frame no filter asked for
	DiscardRights     uint64 // NIC: frame the VI has no rights to
	DiscardClass      uint64 // NIC (X3): not Ethernet/IPv4/UDP as classified
	DiscardOther      uint64 // NIC: any other discard reason
	Scattered         uint64 // frames spread over several receive buffers (jumbo)
	NoDescriptor      uint64 // frames dropped for want of a posted receive buffer
	TxErrors          uint64 // TX_ERROR events: frames the adapter reported it could not send
	LastTxError       error  // the last TX_ERROR's type, nil when there was none
	Overflows         uint64 // event queue overflows
	Unknown           uint64 // events of types the backend does not use
}

// TX error types, reported through Counters.LastTxError. A TX_ERROR is
// about a frame already handed over; it is counted, and never fails a
// later write that has nothing to do with it.
var (
	txErrs = [...]error{
		txErrRights: errors.New("efvi: TX_ERROR: rights (the buffer is not registered in the VI's protection domain)"),
		txErrOflow:  errors.New("efvi: TX_ERROR: overflow of the transmit path"),
		txErr2Big:   errors.New("efvi: TX_ERROR: frame too big for the adapter"),
		txErrBus:    errors.New("efvi: TX_ERROR: bus error reading the frame"),
	}
	errTxOther = errors.New("efvi: TX_ERROR of an unknown type")
	errTxFull  = fmt.Errorf("efvi: %w: the adapter's TX ring had no slot for the rest of the batch (not sent)", backend.ErrRingFull)
)

// driverConfig is what newDriver needs; the cgo setup (or a test) fills it.
type driverConfig struct {
	rxq     rxQueue
	txq     txQueue
	rxBufs  []uint32 // receive buffer ids to post first (none with X3)
	mem     []byte   // packet memory, for the TX buffers
	bufSize int
	txBufs  []uint32 // transmit buffer ids
	batch   int
}

// newDriver posts the receive buffers. On error the caller still owns
// cfg's resources.
func newDriver(cfg driverConfig) (*driver, error) {
	if len(cfg.txBufs) == 0 || len(cfg.txBufs)&(len(cfg.txBufs)-1) != 0 {
		return nil, fmt.Errorf("efvi: %d TX buffers: want a power of two", len(cfg.txBufs))
	}
	batch := cfg.batch
	if batch <= 0 {
		batch = backend.DefaultBatch
	}
	d := &driver{rxq: cfg.rxq, txq: cfg.txq, mem: cfg.mem, bufSize: cfg.bufSize}
	d.evs = make([]event, max(batch, 64))
	d.repost = make([]uint32, 0, len(cfg.rxBufs)+len(d.evs))
	d.refs = make([]uint32, 0, len(d.evs)+1)
	d.free = append(make([]uint32, 0, len(cfg.txBufs)), cfg.txBufs...)
	d.fifo = make([]uint32, len(cfg.txBufs))
	d.mask = uint32(len(cfg.txBufs) - 1)
	d.descs = make([]txDesc, 0, len(cfg.txBufs))
	d.tevs = make([]event, 64)
	if len(cfg.rxBufs) > 0 {
		if n := d.rxq.post(cfg.rxBufs); n == 0 {
			return nil, errors.New("efvi: the receive ring took none of the receive buffers")
		}
	}
	return d, nil
}

// refBit marks an X3 packet id in Frame.ID; the rest is the buffer or
// packet id.
const refBit = 1 << 32

// Poll handles at most one batch of events from the receive event queue:
// the frames go to fs, discards are counted and their buffers reposted.
// One batch only, so that a reader under a flood of frames for nobody
// returns to its Close and timeout checks.
func (d *driver) Poll(fs []stack.Frame) int {
	if d.i == d.n {
		d.i, d.n = 0, d.rxq.poll(d.evs)
	}
	got := 0
	for d.i < d.n && got < len(fs) {
		ev := &d.evs[d.i]
		d.i++
		switch ev.kind {
		case evRX:
			if ev.sub&rxFlagCont != 0 || ev.sub&rxFlagSOP == 0 {
				// Part of a frame spread over several buffers: larger
				// than the buffers this backend posts, so never ours.
				d.st.scattered.Add(1)
				d.repost = append(d.repost, ev.id)
				continue
			}
			fs[got] = stack.Frame{Data: d.rxq.frame(ev), ID: uint64(ev.id), Stamp: ev.ts}
			got++
		case evRXRef:
			fs[got] = stack.Frame{Data: d.rxq.frame(ev), ID: refBit | uint64(ev.id), Stamp: ev.ts}
			got++
		case evRXDiscard:
			d.repost = append(d.repost, ev.id)
			d.countDiscard(ev.sub)
		case evRXRefDiscard:
			d.refs = append(d.refs, ev.id)
			d.countRefDiscard(ev.sub)
		case evRXNoDesc:
			d.st.noDesc.Add(1)
		case evOverflow:
			d.st.overflow.Add(1)
		default:
			d.st.unknown.Add(1)
		}
	}
	if got == 0 {
		d.flushRX()
	}
	return got
}

// Release hands the frames' buffers (X2) or packets (X3) back, with the
// discards collected since the last time, in one call each.
func (d *driver) Release(fs []stack.Frame) {
	for _, f := range fs {
		if f.ID&refBit != 0 {
			d.refs = append(d.refs, uint32(f.ID))
		} else {
			d.repost = append(d.repost, uint32(f.ID))
		}
	}
	d.flushRX()
}

func (d *driver) flushRX() {
	if len(d.repost) > 0 {
		n := d.rxq.post(d.repost)
		// A buffer the ring could not take (it cannot happen: the ring is
		// as large as the buffer set) waits for the next flush.
		d.repost = d.repost[:copy(d.repost, d.repost[n:])]
	}
	if len(d.refs) > 0 {
		d.rxq.release(d.refs)
		d.refs = d.refs[:0]
	}
}

func (d *driver) countDiscard(sub uint16) {
	s := &d.st
	switch sub {
	case discardCsumBad, discardInnerCsumBad:
		s.discardCsum.Add(1)
	case discardCRCBad:
		s.discardCRC.Add(1)
	case discardTrunc:
		s.discardTrunc.Add(1)
	case discardMcastMismatch:
		s.discardMcast.Add(1)
	case discardRights:
		s.discardRights.Add(1)
	default:
		s.discardOther.Add(1)
	}
}

func (d *driver) countRefDiscard(flags uint16) {
	s := &d.st
	switch {
	case flags&refFCS != 0:
		s.discardCRC.Add(1)
	case flags&refLen != 0:
		s.discardTrunc.Add(1)
	case flags&(refL3Csum|refInnerL3Csum) != 0:
		s.discardIPCsum.Add(1)
	case flags&(refL4Csum|refInnerL4Csum) != 0:
		s.discardCsum.Add(1)
	case flags&(refL2Other|refL3Other|refL4Other) != 0:
		s.discardClass.Add(1)
	default:
		s.discardOther.Add(1)
	}
}

// Reserve returns a free TX buffer.
func (d *driver) Reserve() ([]byte, uint64, bool) {
	if len(d.free) == 0 {
		return nil, 0, false
	}
	id := d.free[len(d.free)-1]
	d.free = d.free[:len(d.free)-1]
	off := int(id) * d.bufSize
	return d.mem[off : off+d.bufSize : off+d.bufSize], uint64(id), true
}

// Commit stages a descriptor for the next Kick.
func (d *driver) Commit(id uint64, n int) {
	d.descs = append(d.descs, txDesc{id: uint32(id), len: uint32(n)})
}

// Kick sends the staged descriptors in one call. Frames the adapter did
// not take (its ring, or on X3 its cut-through FIFO, had no room) were not
// sent at all; their buffers are free again.
func (d *driver) Kick() (int, error) {
	if len(d.descs) == 0 {
		return 0, nil
	}
	k := d.txq.send(d.descs)
	for _, x := range d.descs[:k] {
		d.fifo[d.tail&d.mask] = x.id
		d.tail++
	}
	var err error
	for _, x := range d.descs[k:] {
		d.free = append(d.free, x.id)
		err = errTxFull
	}
	d.descs = d.descs[:0]
	return k, err
}

// Reap polls the transmit event queue once and returns completed buffers
// to the free list. Completions arrive in posting order.
func (d *driver) Reap() int {
	n := d.txq.poll(d.tevs)
	done := 0
	for i := range n {
		ev := &d.tevs[i]
		switch ev.kind {
		case evTX, evTXError:
			k := min(ev.len, d.tail-d.head)
			for range k {
				d.free = append(d.free, d.fifo[d.head&d.mask])
				d.head++
			}
			done += int(k)
			if ev.kind == evTXError {
				d.st.txErrors.Add(1)
				d.st.lastTxErr.Store(uint32(ev.sub) + 1)
			}
		case evOverflow:
			d.st.txOverflow.Add(1)
		default:
			d.st.txUnknown.Add(1)
		}
	}
	return done
}

// Stats folds the NIC's discards into the closest backend.Stats fields:
// checksum discards into DropUDPChecksum (DropIPChecksum for X3's IPv4
// header flag), multicast-mismatch, rights and classification discards
// into DropNotOurs, FCS discards into DropCRC, length and other discards
// and scattered frames into DropLength; frames that found no receive buffer count as
// FillRingEmpty.
func (d *driver) Stats(s *backend.Stats) {
	k := d.counters()
	s.FillRingEmpty += k.NoDescriptor
	s.DropUDPChecksum += k.DiscardChecksum
	s.DropIPChecksum += k.DiscardIPChecksum
	s.DropNotOurs += k.DiscardMcast + k.DiscardRights + k.DiscardClass
	s.DropCRC += k.DiscardCRC
	s.DropLength += k.DiscardTrunc + k.DiscardOther + k.Scattered
}

func (d *driver) counters() Counters {
	s := &d.st
	c := Counters{
		DiscardChecksum: s.discardCsum.Load(), DiscardIPChecksum: s.discardIPCsum.Load(),
		DiscardCRC: s.discardCRC.Load(), DiscardTrunc: s.discardTrunc.Load(),
		DiscardMcast: s.discardMcast.Load(), DiscardRights: s.discardRights.Load(),
		DiscardClass: s.discardClass.Load(), DiscardOther: s.discardOther.Load(),
		Scattered: s.scattered.Load(), NoDescriptor: s.noDesc.Load(),
		TxErrors: s.txErrors.Load(), Overflows: s.overflow.Load() + s.txOverflow.Load(),
		Unknown: s.unknown.Load() + s.txUnknown.Load(),
	}
	if t := s.lastTxErr.Load(); t != 0 {
		if int(t-1) < len(txErrs) {
			c.LastTxError = txErrs[t-1]
		} else {
			c.LastTxError = errTxOther
		}
	}
	return c
}

// StackCounters returns the ef_vi-specific counters of the stack a
// connection is on, or false when c is not an efvi connection.
func StackCounters(c backend.PacketConn) (Counters, bool) {
	s, ok := c.(*Conn)
	if !ok {
		return Counters{}, false
	}
	d, ok := s.Stack().Driver().(*driver)
	if !ok {
		return Counters{}, false
	}
	return d.counters(), true
}

// AddFlow adds an adapter filter steering dst's UDP datagrams to the
// receive VI.
func (d *driver) AddFlow(dst netip.AddrPort) error {
	return d.rxq.addFilter(dst, unix.IPPROTO_UDP)
}

// RemoveFlow removes dst's UDP filter: the kernel gets its datagrams back.
func (d *driver) RemoveFlow(dst netip.AddrPort) error {
	return d.rxq.removeFilter(dst, unix.IPPROTO_UDP)
}

// AddTCPFlow adds an adapter filter steering TCP segments to local to the
// receive VI, apart from any UDP filter on the same port.
func (d *driver) AddTCPFlow(local netip.AddrPort) error {
	return d.rxq.addFilter(local, unix.IPPROTO_TCP)
}

// RemoveTCPFlow removes local's TCP filter: the kernel gets its segments
// back.
func (d *driver) RemoveTCPFlow(local netip.AddrPort) error {
	return d.rxq.removeFilter(local, unix.IPPROTO_TCP)
}

// Close frees both VIs, then what they live in, in reverse order of
// allocation.
func (d *driver) Close() error { return d.undo.Run() }
