//go:build linux

package efvi

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/frame"
	"github.com/lowlat/lowlat/bypass/internal/gate"
)

// Conn is a UDP endpoint served by one receive VI and one transmit VI. See
// package backend for the rules on buffers and concurrency: the reader owns
// the receive VI and its event queue, the writer the transmit VI and its
// TX buffers, so the two never share ef_vi state.
type Conn struct {
	rxq   rxQueue
	txq   txQueue
	laddr netip.AddrPort
	info  backend.Info

	gate    gate.Pair // calls inside the queues, reads and writes apart; Close waits for them
	timeout atomic.Int64

	rx rxState
	tx txState
	st counters

	mu      sync.Mutex // guards JoinGroup and Close
	undo    []func() error
	join    func(group netip.Addr) error // kernel IGMP membership
	resolve func(netip.Addr) (frame.MAC, error)
}

// repostBatch is how many received buffers (or X3 packets) the reader
// collects before handing them back in one call, when the event batch has
// not run out first.
const repostBatch = 16

type rxState struct {
	evs    []event // the current batch of event records
	i, n   int     // evs[i:n] are still to be handled
	repost []uint32
	refs   []uint32
	frame.Receiver
}

type txState struct {
	mem        []byte // packet memory: TX buffer id lives at id*bufSize
	bufSize    int
	free       []uint32 // TX buffers not in flight
	fifo       []uint32 // TX buffers in flight, in posting order (a ring)
	head, tail uint32   // fifo[head&mask] is the oldest in flight
	mask       uint32
	descs      []txDesc
	evs        []event
	tmpl       frame.Template
	neigh      neighCache
	maxPayload int
	err        error // a TX_ERROR not yet reported
}

// counters are updated by the reader or the writer and read by Stats.
type counters struct {
	rx, tx, trunc      atomic.Uint64
	noDesc, txFull     atomic.Uint64
	discardCsum        atomic.Uint64
	discardIPCsum      atomic.Uint64
	discardCRC         atomic.Uint64
	discardTrunc       atomic.Uint64
	discardMcast       atomic.Uint64
	discardRights      atomic.Uint64
	discardClass       atomic.Uint64
	discardOther       atomic.Uint64
	scattered          atomic.Uint64
	txErrors, overflow atomic.Uint64
	unknown            atomic.Uint64
}

// Counters are the ef_vi-specific counters of a connection. Stats folds
// them into the closest backend.Stats fields; Counters keeps them apart.
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
	TxErrors          uint64 // TX_ERROR events
	Overflows         uint64 // event queue overflows
	Unknown           uint64 // events of types the backend does not use
}

var _ backend.PacketConn = (*Conn)(nil)

// Hot-path errors.
var (
	errNotIPv4  = fmt.Errorf("efvi: %w: destination is not IPv4", backend.ErrNotSupported)
	errNoBuffer = fmt.Errorf("efvi: %w: every TX buffer is in flight and none completed", backend.ErrRingFull)
	errTxFull   = fmt.Errorf("efvi: %w: the adapter's TX ring had no slot for the rest of the batch (not sent)", backend.ErrRingFull)
	txErrs      = [...]error{
		txErrRights: errors.New("efvi: TX_ERROR: rights (the buffer is not registered in the VI's protection domain)"),
		txErrOflow:  errors.New("efvi: TX_ERROR: overflow of the transmit path"),
		txErr2Big:   errors.New("efvi: TX_ERROR: frame too big for the adapter"),
		txErrBus:    errors.New("efvi: TX_ERROR: bus error reading the frame"),
	}
	errTxOther = errors.New("efvi: TX_ERROR of an unknown type")
)

// connConfig is what newConn needs; the cgo setup (or a test) fills it.
type connConfig struct {
	rxq     rxQueue
	txq     txQueue
	rxBufs  []uint32 // receive buffer ids to post first (none with X3)
	mem     []byte   // packet memory, for the TX buffers
	bufSize int
	txBufs  []uint32 // transmit buffer ids
	mac     frame.MAC
	laddr   netip.AddrPort // bound address; an unspecified address takes src
	src     netip.Addr     // source address of frames sent
	mtu     int
	batch   int
	timeout time.Duration
	info    backend.Info
	undo    []func() error // run in reverse by Close, after the queues
	join    func(netip.Addr) error
	resolve func(netip.Addr) (frame.MAC, error)
}

// newConn builds a connection over two queues and posts the receive
// buffers. On error the caller still owns cfg's resources.
func newConn(cfg connConfig) (*Conn, error) {
	if len(cfg.txBufs) == 0 || len(cfg.txBufs)&(len(cfg.txBufs)-1) != 0 {
		return nil, fmt.Errorf("efvi: %d TX buffers: want a power of two", len(cfg.txBufs))
	}
	if cfg.bufSize < frame.HeaderLen+1 {
		return nil, fmt.Errorf("efvi: buffer size %d too small", cfg.bufSize)
	}
	batch := cfg.batch
	if batch <= 0 {
		batch = backend.DefaultBatch
	}
	c := &Conn{
		rxq: cfg.rxq, txq: cfg.txq, laddr: cfg.laddr, info: cfg.info,
		undo: cfg.undo, join: cfg.join, resolve: cfg.resolve,
	}
	c.timeout.Store(int64(max(cfg.timeout, 0)))
	c.rx.evs = make([]event, max(batch, 64))
	c.rx.repost = make([]uint32, 0, len(cfg.rxBufs)+1)
	c.rx.refs = make([]uint32, 0, max(len(c.rx.evs), repostBatch)+1)
	f, err := frame.NewFilter(cfg.mac, cfg.laddr)
	if err != nil {
		return nil, fmt.Errorf("efvi: receive filter: %w", err)
	}
	c.rx.Init(f)

	t := &c.tx
	t.mem, t.bufSize = cfg.mem, cfg.bufSize
	t.free = append(make([]uint32, 0, len(cfg.txBufs)), cfg.txBufs...)
	t.fifo = make([]uint32, len(cfg.txBufs))
	t.mask = uint32(len(cfg.txBufs) - 1)
	t.descs = make([]txDesc, 0, max(batch, 1))
	t.evs = make([]event, 64)
	t.tmpl, err = frame.NewTemplate(frame.Flow{
		SrcMAC:       cfg.mac,
		Src:          netip.AddrPortFrom(cfg.src, cfg.laddr.Port()),
		Dst:          netip.AddrPortFrom(cfg.src, cfg.laddr.Port()), // replaced per send
		DontFragment: true,
	})
	if err != nil {
		return nil, fmt.Errorf("efvi: transmit template: %w", err)
	}
	mtu := cfg.mtu
	if mtu <= 0 {
		mtu = 1500
	}
	t.maxPayload = min(cfg.bufSize-frame.HeaderLen, mtu-frame.IPv4HeaderLen-frame.UDPHeaderLen)

	if len(cfg.rxBufs) > 0 {
		if n := c.rxq.post(cfg.rxBufs); n == 0 {
			return nil, errors.New("efvi: the receive ring took none of the receive buffers")
		}
	}
	return c, nil
}

// next returns the next accepted datagram: its payload aliases packet
// memory and stays valid until the next call of next or flushRX. It returns
// ok == false when the event queue has nothing more, after handing every
// consumed buffer back to the adapter.
func (c *Conn) next() (payload []byte, from netip.AddrPort, ok bool) {
	r := &c.rx
	if len(r.repost) >= repostBatch || len(r.refs) >= repostBatch {
		c.flushRX()
	}
	for {
		if r.i == r.n {
			c.flushRX()
			r.i, r.n = 0, c.rxq.poll(r.evs)
			if r.n == 0 {
				return nil, netip.AddrPort{}, false
			}
		}
		ev := &r.evs[r.i]
		r.i++
		switch ev.kind {
		case evRX:
			r.repost = append(r.repost, ev.id)
			if ev.sub&rxFlagCont != 0 || ev.sub&rxFlagSOP == 0 {
				// Part of a frame spread over several buffers: larger
				// than the buffers this backend posts, so never ours.
				c.st.scattered.Add(1)
				continue
			}
			if p, from, ok := c.rx.Parse(c.rxq.frame(ev)); ok {
				return p, from, true
			}
		case evRXRef:
			r.refs = append(r.refs, ev.id)
			if p, from, ok := c.rx.Parse(c.rxq.frame(ev)); ok {
				return p, from, true
			}
		case evRXDiscard:
			r.repost = append(r.repost, ev.id)
			c.countDiscard(ev.sub)
		case evRXRefDiscard:
			r.refs = append(r.refs, ev.id)
			c.countRefDiscard(ev.sub)
		case evRXNoDesc:
			c.st.noDesc.Add(1)
		case evOverflow:
			c.st.overflow.Add(1)
		default:
			c.st.unknown.Add(1)
		}
	}
}

// flushRX hands consumed receive buffers and X3 packets back.
func (c *Conn) flushRX() {
	r := &c.rx
	if len(r.repost) > 0 {
		n := c.rxq.post(r.repost)
		// A buffer the ring could not take (it cannot happen: the ring is
		// as large as the buffer set) waits for the next flush.
		m := copy(r.repost, r.repost[n:])
		r.repost = r.repost[:m]
	}
	if len(r.refs) > 0 {
		c.rxq.release(r.refs)
		r.refs = r.refs[:0]
	}
}

func (c *Conn) countDiscard(sub uint16) {
	s := &c.st
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

func (c *Conn) countRefDiscard(flags uint16) {
	s := &c.st
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

// ReadFrom returns the next datagram addressed to the connection.
func (c *Conn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	if !c.gate.R.Enter() {
		return 0, netip.AddrPort{}, backend.ErrClosed
	}
	defer c.gate.R.Exit()
	var start time.Time
	for spins := uint32(1); ; spins++ {
		if p, from, ok := c.next(); ok {
			n := copy(b, p)
			if n < len(p) {
				c.st.trunc.Add(1)
			}
			c.st.rx.Add(1)
			return n, from, nil
		}
		if err := c.idle(spins, &start); err != nil {
			return 0, netip.AddrPort{}, err
		}
	}
}

// ReadBatch waits for at least one datagram and returns what else is ready.
func (c *Conn) ReadBatch(msgs []backend.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	if !c.gate.R.Enter() {
		return 0, backend.ErrClosed
	}
	defer c.gate.R.Exit()
	got := 0
	var start time.Time
	for spins := uint32(1); ; spins++ {
		for got < len(msgs) {
			p, from, ok := c.next()
			if !ok {
				break
			}
			m := &msgs[got]
			m.N = copy(m.Buf, p)
			if m.N < len(p) {
				c.st.trunc.Add(1)
			}
			m.Addr = from
			got++
		}
		if got > 0 {
			c.st.rx.Add(uint64(got))
			return got, nil
		}
		if err := c.idle(spins, &start); err != nil {
			return 0, err
		}
	}
}

// idle runs between empty polls: every 64th it checks for Close and the
// read timeout, reading the clock only then.
func (c *Conn) idle(spins uint32, start *time.Time) error {
	if spins&63 != 0 {
		return nil
	}
	if c.gate.R.Closed() {
		return backend.ErrClosed
	}
	to := time.Duration(c.timeout.Load())
	if to == 0 {
		return nil
	}
	if start.IsZero() {
		*start = time.Now()
	} else if time.Since(*start) >= to {
		return backend.ErrTimeout
	}
	return nil
}

// WriteTo sends b as one datagram.
func (c *Conn) WriteTo(b []byte, to netip.AddrPort) (int, error) {
	if !c.gate.W.Enter() {
		return 0, backend.ErrClosed
	}
	defer c.gate.W.Exit()
	if err := c.takeTxErr(); err != nil {
		return 0, err
	}
	if err := c.stage(b, to); err != nil {
		return 0, err
	}
	if n, err := c.flushTX(); n == 0 {
		return 0, err
	}
	return len(b), nil
}

// WriteBatch sends msgs in order, crossing into the adapter once per
// batch-size group of messages.
func (c *Conn) WriteBatch(msgs []backend.Message) (int, error) {
	if !c.gate.W.Enter() {
		return 0, backend.ErrClosed
	}
	defer c.gate.W.Exit()
	if err := c.takeTxErr(); err != nil {
		return 0, err
	}
	sent := 0
	for i := range msgs {
		// Send what is staged when the batch is full, or before stage
		// waits for a free buffer: the frames staged so far go first and
		// count in sent whatever stage then finds.
		if len(c.tx.descs) == cap(c.tx.descs) || len(c.tx.descs) > 0 && len(c.tx.free) == 0 {
			n, err := c.flushTX()
			sent += n
			if err != nil {
				return sent, err
			}
		}
		if err := c.stage(msgs[i].Buf, msgs[i].Addr); err != nil {
			n, ferr := c.flushTX()
			if ferr != nil {
				// msgs[sent+n] is one the ring refused, not msgs[i].
				err = ferr
			}
			return sent + n, err
		}
	}
	n, err := c.flushTX()
	return sent + n, err
}

// takeTxErr returns, once, a TX_ERROR the adapter reported for an earlier
// frame.
func (c *Conn) takeTxErr() error {
	err := c.tx.err
	c.tx.err = nil
	return err
}

// spinBudget bounds how many times a writer that found every TX buffer in
// flight polls for completions before giving up with ErrRingFull.
const spinBudget = 1 << 16

// stage builds one frame in a free TX buffer and queues its descriptor
// without sending it. When no buffer is free it reaps completions, so the
// caller sends what is staged first (stage itself never sends: the caller
// counts what was sent).
func (c *Conn) stage(b []byte, to netip.AddrPort) error {
	t := &c.tx
	if len(b) > t.maxPayload {
		return backend.ErrMessageTooLong
	}
	if !to.Addr().Unmap().Is4() {
		return errNotIPv4
	}
	mac, ok := t.neigh.lookup(to.Addr())
	if !ok {
		var err error
		if mac, err = c.resolve(to.Addr()); err != nil {
			return err
		}
		t.neigh.insert(to.Addr(), mac)
	}
	if len(t.free) == 0 {
		c.reap()
		for tries := 0; len(t.free) == 0; tries++ {
			if tries == 0 {
				c.st.txFull.Add(1)
			}
			if tries == spinBudget {
				return errNoBuffer
			}
			c.reap()
		}
	}
	id := t.free[len(t.free)-1]
	t.free = t.free[:len(t.free)-1]
	off := int(id) * t.bufSize
	buf := t.mem[off : off+t.bufSize]
	t.tmpl.SetDst(mac, to)
	n, _ := t.tmpl.Build(buf, b)
	t.descs = append(t.descs, txDesc{id: id, len: uint32(n)})
	return nil
}

// flushTX sends the staged descriptors in one call and returns how many
// the adapter took. It reaps completions when half the buffers are in
// flight.
func (c *Conn) flushTX() (int, error) {
	t := &c.tx
	if len(t.descs) == 0 {
		return 0, nil
	}
	k := c.txq.send(t.descs)
	for _, d := range t.descs[:k] {
		t.fifo[t.tail&t.mask] = d.id
		t.tail++
	}
	var err error
	for _, d := range t.descs[k:] {
		t.free = append(t.free, d.id)
		err = errTxFull
	}
	t.descs = t.descs[:0]
	c.st.tx.Add(uint64(k))
	if len(t.free) <= len(t.fifo)/2 {
		c.reap()
	}
	if err != nil {
		c.st.txFull.Add(1)
	}
	return k, err
}

// reap polls the transmit event queue once and returns completed buffers
// to the free list. Completions arrive in posting order.
func (c *Conn) reap() {
	t := &c.tx
	n := c.txq.poll(t.evs)
	for i := range n {
		ev := &t.evs[i]
		switch ev.kind {
		case evTX, evTXError:
			done := min(ev.len, t.tail-t.head)
			for range done {
				t.free = append(t.free, t.fifo[t.head&t.mask])
				t.head++
			}
			if ev.kind == evTXError {
				c.st.txErrors.Add(1)
				if int(ev.sub) < len(txErrs) {
					t.err = txErrs[ev.sub]
				} else {
					t.err = errTxOther
				}
			}
		case evOverflow:
			c.st.overflow.Add(1)
		default:
			c.st.unknown.Add(1)
		}
	}
}

// SetReadTimeout bounds each read; zero waits forever.
func (c *Conn) SetReadTimeout(d time.Duration) error {
	c.timeout.Store(int64(max(d, 0)))
	return nil
}

// JoinGroup subscribes to an IPv4 multicast group: an IGMP membership
// through the kernel, an ef_vi filter for the group and the bound port, and
// the group added to the frame filter.
func (c *Conn) JoinGroup(group netip.Addr) error {
	group = group.Unmap()
	if !group.Is4() || !group.IsMulticast() {
		return fmt.Errorf("join group %v: not an IPv4 multicast address", group)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gate.Closed() {
		return backend.ErrClosed
	}
	if c.join != nil {
		if err := c.join(group); err != nil {
			return fmt.Errorf("join group %v: %w", group, err)
		}
	}
	if err := c.rxq.addFilter(netip.AddrPortFrom(group, c.laddr.Port())); err != nil {
		return fmt.Errorf("join group %v: %w", group, err)
	}
	if err := c.rx.Join(group); err != nil {
		return fmt.Errorf("join group %v: %w", group, err)
	}
	return nil
}

// LocalAddr returns the bound address.
func (c *Conn) LocalAddr() netip.AddrPort { return c.laddr }

// Info says which backend and settings are in use.
func (c *Conn) Info() backend.Info { return c.info }

// Stats returns the connection's counters. NIC discards are folded in:
// checksum discards into DropUDPChecksum (DropIPChecksum for X3's IPv4
// header flag), multicast-mismatch, rights and classification discards into
// DropNotOurs, FCS, length and other discards and scattered frames into
// DropLength; frames that found no receive buffer count as FillRingEmpty
// and transmits that found no free buffer or ring slot as TxRingFull.
func (c *Conn) Stats() backend.Stats {
	s := &c.st
	out := backend.Stats{
		RxPackets: s.rx.Load(), TxPackets: s.tx.Load(), RxTrunc: s.trunc.Load(),
		FillRingEmpty: s.noDesc.Load(), TxRingFull: s.txFull.Load(),
	}
	c.rx.Drops().AddTo(&out)
	k := c.Counters()
	out.DropUDPChecksum += k.DiscardChecksum
	out.DropIPChecksum += k.DiscardIPChecksum
	out.DropNotOurs += k.DiscardMcast + k.DiscardRights + k.DiscardClass
	out.DropLength += k.DiscardCRC + k.DiscardTrunc + k.DiscardOther + k.Scattered
	return out
}

// Counters returns the ef_vi-specific counters.
func (c *Conn) Counters() Counters {
	s := &c.st
	return Counters{
		DiscardChecksum: s.discardCsum.Load(), DiscardIPChecksum: s.discardIPCsum.Load(),
		DiscardCRC: s.discardCRC.Load(), DiscardTrunc: s.discardTrunc.Load(),
		DiscardMcast: s.discardMcast.Load(), DiscardRights: s.discardRights.Load(),
		DiscardClass: s.discardClass.Load(), DiscardOther: s.discardOther.Load(),
		Scattered: s.scattered.Load(), NoDescriptor: s.noDesc.Load(),
		TxErrors: s.txErrors.Load(), Overflows: s.overflow.Load(), Unknown: s.unknown.Load(),
	}
}

// closeWait bounds how long Close waits for calls in flight to leave.
const closeWait = 5 * time.Second

// Close frees both VIs, their filters, the registered memory and the
// driver handle, in reverse order of their allocation. A reader spinning
// in another goroutine returns ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.gate.Shut() {
		return backend.ErrClosed
	}
	if !c.gate.Wait(closeWait) {
		// Freeing the VIs under a live reader would crash it: leak.
		return errors.New("efvi: close: a reader or writer did not leave; VIs left allocated")
	}
	errs := []error{c.rxq.close(), c.txq.close()}
	for i := len(c.undo) - 1; i >= 0; i-- {
		errs = append(errs, c.undo[i]())
	}
	return errors.Join(errs...)
}

// TryReadBatch returns what is ready without waiting.
func (c *Conn) TryReadBatch(msgs []backend.Message) (int, error) {
	if !c.gate.R.Enter() {
		return 0, backend.ErrClosed
	}
	defer c.gate.R.Exit()
	got := 0
	for got < len(msgs) {
		p, from, ok := c.next()
		if !ok {
			break
		}
		m := &msgs[got]
		m.N = copy(m.Buf, p)
		m.Addr = from
		got++
	}
	return got, nil
}
