//go:build linux

package stack

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/frame"
	"github.com/lowlat/lowlat/bypass/internal/gate"
	"github.com/lowlat/lowlat/bypass/internal/msgbuf"
	"github.com/lowlat/lowlat/bypass/internal/tcp"
)

// TCP on the stack. The protocol work is inline: a segment is processed by
// the goroutine whose poll of the device found it (a reader of any socket
// of the stack, a Poller's Pump), in the same pass; a Write builds and
// sends its segments on the writer's goroutine. Every connection's state
// is guarded by the stack's receive lock, as Onload guards a stack's
// protocol state by the stack lock. Timers are deadlines checked by the
// polling loop. One goroutine per stack, the keeper, wakes every few
// milliseconds while TCP is in use and polls only when nobody else has
// polled for that long: it drives connections whose application is not
// reading (their ACKs, retransmissions, the FIN handshake after Close,
// TIME-WAIT); it is never on the path of a connection that is read.

var _ TCPPorts = KernelPorts{}

// Limits of the TCP side of a stack.
const (
	// MaxTimeWait bounds the connections kept in TIME-WAIT; past it a
	// connection that enters TIME-WAIT is dropped at once (and counted),
	// as Linux's tcp_max_tw_buckets does.
	MaxTimeWait = 4096
	// keeperIdle is how long the stack may go unpolled before the keeper
	// polls it, and the longest the keeper sleeps.
	keeperIdle = 2 * time.Millisecond
	// keeperBusy is how long the keeper sleeps after finding the stack
	// polled by someone else.
	keeperBusy = 100 * time.Millisecond
	// orphanLinger bounds how long connections the application has
	// closed keep the stack open after everything else on it has closed:
	// then they are reset, and the stack closes.
	orphanLinger = 2 * time.Second
	// orphanLife bounds how long a connection the application closed may
	// take to finish its FIN handshake (a peer gone quiet in FIN-WAIT-2, a
	// zero window that never opens); TIME-WAIT follows on its own timer.
	orphanLife = 60 * time.Second
	// tcpCheckEvery is how many empty polls pass between timer checks.
	tcpCheckEvery = 64
)

// TCPStats are a stack's TCP counters: segments dropped before a
// connection was found, and what the listeners refused.
type TCPStats struct {
	DropChecksum    uint64 // bad TCP checksum
	DropMalformed   uint64 // short header, bad data offset, bad options
	DropNoPort      uint64 // to a port the stack does not hold
	NoConnReset     uint64 // RSTs sent for segments to a held port with no connection
	ListenOverflows uint64 // SYNs refused (with a RST) because the backlog was full
	TimeWaitDropped uint64 // connections dropped on entering a full TIME-WAIT table
	TxNoBuffer      uint64 // segments not sent because every transmit buffer was in flight
	UnsteerFailed   uint64 // ports kept from the kernel because the device would not stop steering them
}

// tcpKey demultiplexes a segment to its connection.
type tcpKey struct {
	lip, rip     [4]byte
	lport, rport uint16
}

// tcpPort is one local TCP port the stack holds: its kernel reservation
// and its steering, shared by a listener and the connections it accepted.
type tcpPort struct {
	local netip.AddrPort
	key   flowKey
	res   Reservation
	refs  int
}

// tcpSide is a stack's TCP state, under rxMu.
type tcpSide struct {
	on        bool // the driver steers TCP and the ports reserve it
	steer     TCPSteering
	ports     TCPPorts
	conns     map[tcpKey]*TCPConn
	listeners map[flowKey]*TCPListener
	held      map[flowKey]*tcpPort
	dirty     []*TCPConn
	deferred  []*TCPConn // ACKs left for the reader's next call (see recv)
	reader    *TCPConn   // the connection whose Read is polling, if any
	seg       frame.TCPSegment
	objects   int // connections and listeners
	orphans   int // connections the application has closed
	timeWait  int
	keeper    bool
	nextTimer int64
	now       int64 // this batch's clock, 0 until read
	idle      int   // empty polls since the last timer check
	epoch     time.Time
	lastPoll  atomic.Int64
	kick      atomic.Bool // TCP staged frames that no kick has sent yet
	rng       *rand.Rand

	dropChecksum, dropMalformed, dropNoPort, noConnReset atomic.Uint64
	listenOverflows, timeWaitDropped, txNoBuffer         atomic.Uint64
	unsteerFailed                                        atomic.Uint64
}

func (st *Stack) initTCP(cfg Config) {
	t := &st.tcp
	t.steer, _ = cfg.Driver.(TCPSteering)
	t.ports, _ = st.ports.(TCPPorts)
	t.on = t.steer != nil && t.ports != nil
	t.conns = make(map[tcpKey]*TCPConn)
	t.listeners = make(map[flowKey]*TCPListener)
	t.held = make(map[flowKey]*tcpPort)
	t.epoch = time.Now()
	t.rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	st.tcpCfg = cfg.TCP
	if st.tcpCfg.MSS <= 0 {
		mtu := st.iface.MTU
		if mtu <= 0 {
			mtu = 1500
		}
		st.tcpCfg.MSS = min(mtu, st.bufSize-frame.EthHeaderLen) - frame.IPv4HeaderLen - frame.TCPHeaderLen
	}
	if t.on {
		st.filter.AcceptTCP(true)
	}
}

// TCPStats returns the stack's TCP counters.
func (st *Stack) TCPStats() TCPStats {
	t := &st.tcp
	return TCPStats{
		DropChecksum: t.dropChecksum.Load(), DropMalformed: t.dropMalformed.Load(),
		DropNoPort: t.dropNoPort.Load(), NoConnReset: t.noConnReset.Load(),
		ListenOverflows: t.listenOverflows.Load(), TimeWaitDropped: t.timeWaitDropped.Load(),
		TxNoBuffer: t.txNoBuffer.Load(), UnsteerFailed: t.unsteerFailed.Load(),
	}
}

// clock is the stack's monotonic time in nanoseconds.
func (st *Stack) clock() int64 { return int64(time.Since(st.tcp.epoch)) }

// tcpNow is the current batch's clock, read once per batch. Under rxMu.
func (st *Stack) tcpNow() int64 {
	if st.tcp.now == 0 {
		st.tcp.now = st.clock()
	}
	return st.tcp.now
}

// tcpInput handles a TCP segment accepted by the frame filter (in
// st.pkt). Under rxMu.
func (st *Stack) tcpInput() {
	t := &st.tcp
	p := &st.pkt
	src, dst := frame.TCPAddrs(p)
	var err error
	if st.partial {
		err = frame.ParseTCPOffloaded(p.Payload, src, dst, &t.seg)
	} else {
		err = frame.ParseTCP(p.Payload, src, dst, &t.seg)
	}
	if err != nil {
		if errors.Is(err, frame.ErrTCPChecksum) {
			t.dropChecksum.Add(1)
		} else {
			t.dropMalformed.Add(1)
		}
		return
	}
	k := tcpKey{lip: p.Dst.Addr().As4(), rip: p.Src.Addr().As4(), lport: p.Dst.Port(), rport: p.Src.Port()}
	if c := t.conns[k]; c != nil {
		c.c.Input(&t.seg, st.tcpNow())
		if !c.dirty {
			c.dirty = true
			t.dirty = append(t.dirty, c)
		}
		return
	}
	fk := flowKey{ip: k.lip, port: k.lport}
	l := t.listeners[fk]
	if l == nil {
		l = t.listeners[flowKey{port: k.lport}]
	}
	if l != nil {
		l.input(k)
		return
	}
	if t.held[fk] == nil && t.held[flowKey{port: k.lport}] == nil {
		t.dropNoPort.Add(1) // not ours: the kernel may own the port
		return
	}
	if t.seg.Flags&frame.TCPRst == 0 {
		st.sendReset(k)
		t.noConnReset.Add(1)
	}
}

// sendReset answers the segment in t.seg, for key k, with a RST, to the
// MAC it came from.
func (st *Stack) sendReset(k tcpKey) {
	var h frame.TCPSegment
	tcp.RST(&st.tcp.seg, &h)
	tmpl, err := frame.NewTCPTemplate(st.iface.MAC, st.pkt.SrcMAC, netip.AddrFrom4(k.lip), netip.AddrFrom4(k.rip), 0)
	if err != nil {
		return
	}
	st.sendSegment(&tmpl, &h, nil, nil)
}

// sendSegment builds and queues one segment; false when no transmit
// buffer is free. The frames go out at the next kick (tcpKick).
func (st *Stack) sendSegment(tmpl *frame.TCPTemplate, h *frame.TCPSegment, p1, p2 []byte) bool {
	if frame.TCPHeadersLen+frame.TCPHeaderSize(h)+len(p1)+len(p2) > st.bufSize {
		st.tcp.txNoBuffer.Add(1)
		return false
	}
	st.txMu.Lock()
	defer st.txMu.Unlock()
	if st.rxClosed {
		return false
	}
	buf, id, ok := st.d.Reserve()
	if !ok {
		st.d.Reap()
		buf, id, ok = st.d.Reserve()
	}
	if !ok && st.staged > 0 {
		st.kickLocked()
		buf, id, ok = st.d.Reserve()
	}
	if !ok {
		st.tcp.txNoBuffer.Add(1)
		return false
	}
	n, err := tmpl.Build(buf, h, p1, p2)
	if err != nil {
		n = 0 // cannot happen: the size was checked; an empty frame is dropped by the device
	}
	st.d.Commit(id, n)
	st.staged++
	if st.staged >= st.batch {
		st.kickLocked()
	} else {
		st.tcp.kick.Store(true)
	}
	return true
}

// kickLocked hands the staged frames to the device and reaps. Frames the
// device refused are lost, as on a wire: TCP sends them again. Under txMu.
func (st *Stack) kickLocked() {
	if st.staged == 0 {
		return
	}
	st.d.Kick()
	st.staged = 0
	st.d.Reap()
}

// tcpKick sends what TCP staged; a load of a flag when it staged nothing.
func (st *Stack) tcpKick() {
	if !st.tcp.kick.Load() {
		return
	}
	st.txMu.Lock()
	st.tcp.kick.Store(false)
	if !st.rxClosed {
		st.kickLocked()
	}
	st.txMu.Unlock()
}

// tcpAfterBatch finishes a poll: it acknowledges the batch's segments
// once per connection, runs the timers when due, and settles connections
// whose state changed. polled is how many frames the poll took. Under
// rxMu; the caller kicks after unlocking (tcpKick), or the next one does.
func (st *Stack) tcpAfterBatch(polled int) {
	t := &st.tcp
	if t.objects == 0 {
		t.now = 0
		return
	}
	if polled == 0 {
		if t.idle++; t.idle < tcpCheckEvery {
			t.now = 0
			return
		}
	}
	t.idle = 0
	now := st.tcpNow()
	t.lastPoll.Store(now)
	for i, c := range t.dirty {
		c.dirty = false
		t.dirty[i] = nil
		if c == t.reader && !c.immediateACK && !c.deferred && c.c.Readable() > 0 {
			// The reader is about to take this data: its answer, if it
			// writes one before polling again, carries the ACK.
			c.deferred = true
			t.deferred = append(t.deferred, c)
			st.settle(c)
			continue
		}
		c.c.Flush(now)
		st.settle(c)
	}
	t.dirty = t.dirty[:0]
	if t.nextTimer != 0 && now >= t.nextTimer {
		st.tcpTimers(now)
	}
	t.now = 0
}

// tcpTimers ticks every connection whose deadline has passed and finds
// the next deadline. Under rxMu.
func (st *Stack) tcpTimers(now int64) {
	t := &st.tcp
	t.nextTimer = 0
	for _, c := range t.conns {
		if d := c.c.NextDeadline(); d != 0 && d <= now {
			c.c.Tick(now)
			st.settle(c)
		}
		if d := c.c.NextDeadline(); d != 0 && (t.nextTimer == 0 || d < t.nextTimer) {
			t.nextTimer = d
		}
	}
}

// settle follows a connection's state after a call: the next deadline,
// a handshake completed for a listener, TIME-WAIT's bound, the end. Under
// rxMu.
func (st *Stack) settle(c *TCPConn) {
	t := &st.tcp
	if c.gone {
		return
	}
	s := c.c.State()
	if s == tcp.TimeWait && !c.timeWait {
		c.timeWait = true
		if t.timeWait >= MaxTimeWait {
			t.timeWaitDropped.Add(1)
			st.remove(c)
			return
		}
		t.timeWait++
		c.countedTW = true
	}
	if c.orphan && s != tcp.Closed && c.c.Readable() > 0 {
		// Data for a connection the application closed: nobody will
		// read it; reset, as Linux does.
		c.c.Abort(st.tcpNow())
		s = c.c.State()
	}
	if s == tcp.Closed {
		st.remove(c)
		return
	}
	if d := c.c.NextDeadline(); d != 0 && (t.nextTimer == 0 || d < t.nextTimer) {
		t.nextTimer = d
	}
	if c.l != nil && s != tcp.SynReceived {
		c.l.established(c)
	}
	c.w.notify()
}

// remove takes a finished connection off the stack. Under rxMu.
func (st *Stack) remove(c *TCPConn) {
	t := &st.tcp
	if c.gone {
		return
	}
	c.gone = true
	delete(t.conns, c.key)
	if c.countedTW {
		t.timeWait--
	}
	if c.l != nil {
		c.l.forget(c) // never accepted: nobody else will close its eventfd
		c.w.close()
	}
	if c.orphan {
		t.orphans--
	}
	t.objects--
	st.unhold(c.port)
	c.w.wake()
}

// hold takes the local TCP port of laddr (port 0: a free one) for a
// listener or connection: a kernel reservation and the device's steering.
// Called without rxMu (it makes system calls).
func (st *Stack) hold(laddr netip.AddrPort) (*tcpPort, error) {
	t := &st.tcp
	res, err := t.ports.ReserveTCP(laddr)
	if err != nil {
		return nil, err
	}
	local := netip.AddrPortFrom(laddr.Addr(), res.Port())
	p := &tcpPort{local: local, key: keyOf(local), res: res, refs: 1}
	st.rxMu.Lock()
	if t.held[p.key] != nil {
		st.rxMu.Unlock()
		res.Close()
		return nil, fmt.Errorf("tcp port %v: held by another listener or connection of this stack", local)
	}
	t.held[p.key] = p
	st.rxMu.Unlock()
	if err := st.steering(func() error { return t.steer.AddTCPFlow(local) }); err != nil {
		st.rxMu.Lock()
		delete(t.held, p.key)
		st.rxMu.Unlock()
		res.Close()
		return nil, fmt.Errorf("steer tcp %v: %w", local, err)
	}
	return p, nil
}

// adopt takes a reference to a port the stack still holds for the
// connections of a listener that has closed (in TIME-WAIT, say), so that
// a new listener on it need not wait for them; nil when laddr's port is
// not held that way.
func (st *Stack) adopt(laddr netip.AddrPort) *tcpPort {
	if laddr.Port() == 0 {
		return nil
	}
	st.rxMu.Lock()
	defer st.rxMu.Unlock()
	k := keyOf(laddr)
	p := st.tcp.held[k]
	if p == nil || st.tcp.listeners[k] != nil || p.local != laddr {
		return nil
	}
	p.refs++
	return p
}

// unhold gives back one reference to a port; the last stops its steering
// and closes its reservation, so the kernel has the port back. Under rxMu.
func (st *Stack) unhold(p *tcpPort) {
	if p == nil {
		return
	}
	if p.refs--; p.refs > 0 {
		return
	}
	delete(st.tcp.held, p.key)
	if err := st.steering(func() error { return st.tcp.steer.RemoveTCPFlow(p.local) }); err != nil {
		// The device may still steer the port here: keep the kernel off
		// it (the reservation closes with the process) rather than let
		// the kernel's connections on it lose their segments.
		st.tcp.unsteerFailed.Add(1)
		return
	}
	p.res.Close()
}

// pollLocked polls the device once and dispatches every frame: UDP
// datagrams to their sockets' queues, TCP segments to their connections.
// Under rxMu.
func (st *Stack) pollLocked() int {
	if st.rxClosed {
		return 0
	}
	if len(st.tcp.deferred) > 0 {
		st.flushDeferred()
	}
	n := st.d.Poll(st.frames)
	batch := st.stamp(n)
	for i := range n {
		if owner := st.demux(st.frames[i].Data); owner != nil {
			stamp, nic := batch, false
			if f := st.frames[i].Stamp; f != 0 {
				stamp, nic = f, true
			}
			st.enqueue(owner, nil, stamp, nic)
		}
	}
	if n > 0 {
		st.d.Release(st.frames[:n])
	}
	st.tcpAfterBatch(n)
	return n
}

// flushDeferred sends the ACKs left for readers' next calls that no
// answer has carried. Under rxMu.
func (st *Stack) flushDeferred() {
	t := &st.tcp
	now := st.tcpNow()
	for i, c := range t.deferred {
		t.deferred[i] = nil
		c.deferred = false
		if !c.gone {
			c.c.Flush(now)
			st.settle(c)
		}
	}
	t.deferred = t.deferred[:0]
}

// addObject counts a new listener or connection, and reports whether the
// stack's keeper must be started for it (startKeeper, after rxMu is
// released): the keeper runs exactly while objects exist, and both are
// decided under rxMu, so that a keeper leaving as the last object went
// cannot miss a new one. Under rxMu.
func (st *Stack) addObject() (start bool) {
	t := &st.tcp
	t.objects++
	start = !t.keeper
	t.keeper = true
	return start
}

// startKeeper starts the keeper when addObject said so. The caller holds
// a stack reference (so ref cannot fail) and not rxMu.
func (st *Stack) startKeeper(start bool) {
	if start {
		st.ref()
		go st.keep()
	}
}

// keep is the keeper: it polls the stack when nobody else has for
// keeperIdle, until no TCP object is left; then it gives back its
// reference. When only connections the application closed are left and
// nothing else holds the stack, it gives them orphanLinger to finish and
// then resets them, so that a program's last Close does not leave its
// stack open for TIME-WAIT's minute.
func (st *Stack) keep() {
	t := &st.tcp
	var lingerSince int64
	sleep := keeperIdle
	for {
		time.Sleep(sleep)
		if lingerSince == 0 && st.clock()-t.lastPoll.Load() < int64(keeperIdle) {
			// Someone polls the stack and runs its timers: look again
			// later, without touching its locks. A keeper that woke every
			// 2 ms beside a spinning reader cost that reader its tail.
			sleep = keeperBusy
			continue
		}
		sleep = keeperIdle
		lone := st.refCount() == 1
		st.rxMu.Lock()
		now := st.clock()
		if now-t.lastPoll.Load() >= int64(keeperIdle) {
			t.idle = tcpCheckEvery
			st.pollLocked()
		}
		if lone && t.objects > 0 && t.objects == t.orphans {
			if lingerSince == 0 {
				lingerSince = now
			} else if now-lingerSince >= int64(orphanLinger) {
				for _, c := range t.conns {
					c.c.Abort(now)
					st.remove(c)
				}
			}
		} else {
			lingerSince = 0
		}
		done := t.objects == 0
		if done {
			t.keeper = false
		}
		st.rxMu.Unlock()
		st.tcpKick()
		if done {
			st.Release()
			return
		}
	}
}

// refCount reads the stack's reference count.
func (st *Stack) refCount() int {
	mu := st.lock()
	mu.Lock()
	defer mu.Unlock()
	return st.refs
}

// TCPConn is a TCP connection on a stack: a backend.Stream.
type TCPConn struct {
	st     *Stack
	c      *tcp.Conn // under st.rxMu
	key    tcpKey
	laddr  netip.AddrPort
	raddr  netip.AddrPort
	port   *tcpPort
	tmpl   frame.TCPTemplate // read by Send under st.rxMu
	spin   bool
	info   backend.Info
	gate   gate.Pair
	w      waiter
	rtmo   atomic.Int64
	wtmo   atomic.Int64
	rd     msgbuf.Reader
	prefix [msgbuf.Header]byte

	immediateACK bool // TCPOptions.ImmediateACK

	// Under st.rxMu.
	l         *TCPListener // the listener, until Accept takes it
	dirty     bool
	deferred  bool
	gone      bool
	orphan    bool
	timeWait  bool
	countedTW bool

	rxBytes, txBytes, rxMsgs, txMsgs atomic.Uint64
}

var (
	_ backend.Stream       = (*TCPConn)(nil)
	_ backend.StreamStater = (*TCPConn)(nil)
	_ tcp.Output           = (*TCPConn)(nil)
)

// Send is the connection's tcp.Output.
func (c *TCPConn) Send(h *frame.TCPSegment, p1, p2 []byte) bool {
	return c.st.sendSegment(&c.tmpl, h, p1, p2)
}

// newConn makes a connection's shell; its tcp.Conn is made by the caller
// under rxMu.
func (st *Stack) newConn(local, remote netip.AddrPort, dstMAC frame.MAC, o backend.Options) (*TCPConn, error) {
	tmpl, err := frame.NewTCPTemplate(st.iface.MAC, dstMAC, local.Addr(), remote.Addr(), 0)
	if err != nil {
		return nil, err
	}
	c := &TCPConn{st: st, laddr: local, raddr: remote, tmpl: tmpl, spin: o.Wait != backend.WaitBlock, immediateACK: o.TCP.ImmediateACK}
	c.key = tcpKey{lip: local.Addr().As4(), rip: remote.Addr().As4(), lport: local.Port(), rport: remote.Port()}
	c.w.efd = -1
	if !c.spin {
		if len(st.waitFDs) == 0 {
			c.spin = true
		} else if err := c.w.init(st.waitFDs); err != nil {
			return nil, err
		}
	}
	c.rtmo.Store(int64(max(o.ReadTimeout, 0)))
	c.wtmo.Store(int64(max(o.WriteTimeout, 0)))
	c.info = st.info
	c.info.Notes = slices.Clone(st.info.Notes)
	c.info.Wait = backend.WaitSpin
	if !c.spin {
		c.info.Wait = backend.WaitBlock
	}
	c.info.Skipped = o.Skipped
	return c, nil
}

func (st *Stack) tcpSupported() error {
	if !st.tcp.on {
		return backend.Unsupported("%s: this stack's driver does not steer TCP", st.name)
	}
	return nil
}

// DialTCP opens a connection to raddr from the stack's address and an
// ephemeral port reserved in the kernel, and waits for the handshake
// (until ctx ends, or o.DialTimeout).
func (st *Stack) DialTCP(ctx context.Context, raddr netip.AddrPort, o backend.Options) (_ *TCPConn, err error) {
	if err := st.tcpSupported(); err != nil {
		return nil, err
	}
	ra := raddr.Addr().Unmap()
	if !ra.Is4() || ra.IsMulticast() || ra.IsUnspecified() {
		return nil, backend.Unsupported("%s: tcp to %v: a unicast IPv4 address is needed", st.name, raddr.Addr())
	}
	raddr = netip.AddrPortFrom(ra, raddr.Port())
	if !st.ref() {
		return nil, backend.ErrClosed
	}
	defer func() {
		if err != nil {
			st.Release()
		}
	}()
	mac, err := st.nextHop(ra)
	if err != nil {
		return nil, fmt.Errorf("next hop of %v: %w", ra, err)
	}
	port, err := st.hold(netip.AddrPortFrom(st.iface.Src, 0))
	if err != nil {
		return nil, err
	}
	c, err := st.newConn(port.local, raddr, mac, o)
	if err != nil {
		st.rxMu.Lock()
		st.unhold(port)
		st.rxMu.Unlock()
		return nil, err
	}
	c.port = port
	st.rxMu.Lock()
	t := &st.tcp
	if t.conns[c.key] != nil { // cannot happen: the port is new
		st.unhold(port)
		st.rxMu.Unlock()
		c.w.close()
		return nil, fmt.Errorf("tcp %v->%v: connection exists", c.laddr, raddr)
	}
	t.conns[c.key] = c
	keeper := st.addObject()
	c.c = tcp.NewActive(st.tcpConfig(o), c, port.local.Port(), raddr.Port(), t.rng.Uint32(), st.tcpNow())
	st.settle(c)
	t.now = 0
	st.rxMu.Unlock()
	st.startKeeper(keeper)
	st.tcpKick()
	if o.DialTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.DialTimeout)
		defer cancel()
	}
	for spins := uint32(1); ; spins++ {
		st.rxMu.Lock()
		st.pollLocked()
		s, cerr := c.c.State(), c.c.Err()
		if s == tcp.SynSent && ctx.Err() != nil {
			c.c.Abort(st.clock())
			st.settle(c)
		}
		gone := c.gone
		st.rxMu.Unlock()
		st.tcpKick()
		switch {
		case s == tcp.Closed || gone:
			c.w.close()
			if cerr == nil {
				cerr = backend.ErrClosed
			}
			return nil, fmt.Errorf("%s: dial tcp %v: %w", st.name, raddr, cerr)
		case s != tcp.SynSent:
			return c, nil
		case ctx.Err() != nil:
			continue // aborted above; the next pass reports it
		}
		if !c.spin && spins%64 == 0 {
			c.w.wait(time.Millisecond)
		}
	}
}

// nextHop resolves a destination's MAC through the neighbour cache.
func (st *Stack) nextHop(dst netip.Addr) (frame.MAC, error) {
	st.txMu.Lock()
	defer st.txMu.Unlock()
	now := st.now()
	if mac, ok := st.neigh.lookup(dst, now); ok {
		return mac, nil
	}
	if err := st.neigh.recentFailure(dst, now); err != nil {
		return frame.MAC{}, err
	}
	mac, err := st.resolve(dst)
	if err != nil {
		st.neigh.fail(dst, err, st.now())
		return frame.MAC{}, err
	}
	st.neigh.insert(dst, mac, st.now())
	return mac, nil
}

// tcpConfig is the stack's TCP configuration for a connection opened
// with o.
func (st *Stack) tcpConfig(o backend.Options) tcp.Config {
	cfg := st.tcpCfg
	if o.RecvBuffer > 0 {
		cfg.RecvBuf = o.RecvBuffer
	}
	if o.SendBuffer > 0 {
		cfg.SendBuf = o.SendBuffer
	}
	t := o.TCP
	cfg.Nagle = cfg.Nagle || t.Nagle
	for _, f := range []struct {
		dst *time.Duration
		v   time.Duration
	}{{&cfg.DelayedACK, t.DelayedACK}, {&cfg.MinRTO, t.MinRTO}, {&cfg.Keepalive, t.Keepalive}, {&cfg.TimeWait, t.TimeWait}} {
		if f.v > 0 {
			*f.dst = f.v
		}
	}
	return cfg
}

// idle runs after a pass that found nothing to do. Spinning, it checks
// Close and the timeout every 64th time; blocking, it sleeps in ppoll on
// the device (at most a millisecond: timers need the poll).
func (c *TCPConn) idle(spins uint32, start *time.Time, timeout time.Duration, g *gate.Gate) error {
	if c.spin && spins&63 != 0 {
		return nil
	}
	if g.Closed() {
		return backend.ErrClosed
	}
	if timedOut(start, timeout) {
		return backend.ErrTimeout
	}
	if !c.spin {
		c.w.sleeping.Store(true)
		c.w.wait(time.Millisecond)
		c.w.sleeping.Store(false)
	}
	return nil
}

// Read reads what the connection has received: at least one byte, or
// io.EOF once the peer has closed and everything is read.
func (c *TCPConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if !c.gate.R.Enter() {
		return 0, backend.ErrClosed
	}
	defer c.gate.R.Exit()
	if n := c.rd.Buffered(b); n > 0 {
		return n, nil
	}
	return c.recv(b)
}

// Recv is Read without the framing buffer, for msgbuf.
func (c *TCPConn) Recv(b []byte) (int, error) { return c.recv(b) }

func (c *TCPConn) recv(b []byte) (int, error) {
	st := c.st
	var start time.Time
	for spins := uint32(1); ; spins++ {
		st.rxMu.Lock()
		n, err := c.c.Read(b, st.tcpNow())
		if n == 0 && err == nil {
			st.tcp.reader = c
			st.pollLocked()
			st.tcp.reader = nil
			n, err = c.c.Read(b, st.tcpNow())
		}
		st.settle(c)
		st.tcp.now = 0
		st.rxMu.Unlock()
		st.tcpKick()
		if n > 0 || err != nil {
			c.rxBytes.Add(uint64(n))
			return n, err
		}
		if err := c.idle(spins, &start, time.Duration(c.rtmo.Load()), &c.gate.R); err != nil {
			return 0, err
		}
	}
}

// Write sends b, waiting while the send buffer is full.
func (c *TCPConn) Write(b []byte) (int, error) {
	if !c.gate.W.Enter() {
		return 0, backend.ErrClosed
	}
	defer c.gate.W.Exit()
	return c.send(nil, b)
}

// send queues a then b and returns how much of them it sent.
func (c *TCPConn) send(a, b []byte) (int, error) {
	st := c.st
	total := len(a) + len(b)
	off := 0
	var start time.Time
	for spins := uint32(1); off < total; spins++ {
		st.rxMu.Lock()
		n, err := c.write2(a, b, off)
		if n == 0 && err == nil {
			st.pollLocked()
			n, err = c.write2(a, b, off)
		}
		st.settle(c)
		st.tcp.now = 0
		st.rxMu.Unlock()
		st.tcpKick()
		off += n
		c.txBytes.Add(uint64(n))
		if err != nil {
			return off - len(a), err
		}
		if n == 0 {
			if err := c.idle(spins, &start, time.Duration(c.wtmo.Load()), &c.gate.W); err != nil {
				return max(off-len(a), 0), err
			}
		} else {
			start = time.Time{}
		}
	}
	return total - len(a), nil
}

// write2 queues the bytes of a then b from offset off. Under rxMu.
func (c *TCPConn) write2(a, b []byte, off int) (int, error) {
	now := c.st.tcpNow()
	if off < len(a) {
		return c.c.Write2(a[off:], b, now)
	}
	return c.c.Write2(b[off-len(a):], nil, now)
}

// WriteMsg sends b with its 4-byte length prefix, in one segment when it
// fits one.
func (c *TCPConn) WriteMsg(b []byte) error {
	if len(b) > msgbuf.MaxMessage {
		return backend.ErrMessageTooLong
	}
	if !c.gate.W.Enter() {
		return backend.ErrClosed
	}
	defer c.gate.W.Exit()
	binary.BigEndian.PutUint32(c.prefix[:], uint32(len(b)))
	if _, err := c.send(c.prefix[:], b); err != nil {
		return err
	}
	c.txMsgs.Add(1)
	return nil
}

// ReadMsg returns the next framed message.
func (c *TCPConn) ReadMsg(b []byte) (int, error) {
	if !c.gate.R.Enter() {
		return 0, backend.ErrClosed
	}
	defer c.gate.R.Exit()
	n, err := c.rd.ReadMsg(b, c)
	if err == nil {
		c.rxMsgs.Add(1)
	}
	return n, err
}

// SetReadTimeout bounds each read; zero waits forever.
func (c *TCPConn) SetReadTimeout(d time.Duration) error {
	c.rtmo.Store(int64(max(d, 0)))
	return nil
}

// SetWriteTimeout bounds how long a write waits for room.
func (c *TCPConn) SetWriteTimeout(d time.Duration) error {
	c.wtmo.Store(int64(max(d, 0)))
	return nil
}

func (c *TCPConn) LocalAddr() netip.AddrPort  { return c.laddr }
func (c *TCPConn) RemoteAddr() netip.AddrPort { return c.raddr }
func (c *TCPConn) Info() backend.Info         { return c.info }

// Stats returns the stream's byte and message counters.
func (c *TCPConn) Stats() backend.StreamStats {
	return backend.StreamStats{RxBytes: c.rxBytes.Load(), TxBytes: c.txBytes.Load(), RxMessages: c.rxMsgs.Load(), TxMessages: c.txMsgs.Load()}
}

// TCPStats returns the connection's protocol counters and state.
func (c *TCPConn) TCPStats() (tcp.Stats, tcp.State) {
	c.st.rxMu.Lock()
	defer c.st.rxMu.Unlock()
	return c.c.Stats(), c.c.State()
}

// CloseWrite sends a FIN after the data written; reading goes on.
func (c *TCPConn) CloseWrite() error {
	if c.gate.Closed() {
		return backend.ErrClosed
	}
	st := c.st
	st.rxMu.Lock()
	c.c.CloseWrite(st.tcpNow())
	st.settle(c)
	st.tcp.now = 0
	st.rxMu.Unlock()
	st.tcpKick()
	return nil
}

// Close closes the connection as the kernel does: the FIN handshake (or
// TIME-WAIT) goes on in the stack after Close returns, driven by whoever
// polls the stack and by its keeper; unread data makes it a reset.
func (c *TCPConn) Close() error {
	if err := shut(&c.gate, &c.w, c.st.name, "connection"); err != nil {
		return err
	}
	st := c.st
	st.rxMu.Lock()
	if !c.gone {
		now := st.tcpNow()
		c.c.Close(now)
		// The keeper (running while the connection exists) drives the
		// orphan to its end, which may not take longer than orphanLife.
		c.c.AbortAfter(now, orphanLife)
		c.orphan = true
		st.tcp.orphans++
		st.settle(c)
	}
	st.tcp.now = 0
	c.w.close() // under rxMu: remove's wake must not write to a closed descriptor
	st.rxMu.Unlock()
	st.tcpKick()
	return st.Release()
}

// TCPListener accepts connections on a stack: a backend.StreamListener.
type TCPListener struct {
	st      *Stack
	laddr   netip.AddrPort
	key     flowKey
	port    *tcpPort
	backlog int
	opts    backend.Options
	gate    gate.Pair
	w       waiter

	// Under st.rxMu.
	pending int          // connections in SYN-RECEIVED
	ready   []*TCPConn   // established, waiting for Accept
	readyN  atomic.Int32 // len(ready), for a look without the lock
}

var _ backend.StreamListener = (*TCPListener)(nil)

// ListenTCP opens a listener on laddr (an address of the interface or
// 0.0.0.0; port 0 picks a free one) with a backlog of
// backend.DefaultBacklog connections.
func (st *Stack) ListenTCP(laddr netip.AddrPort, o backend.Options) (_ *TCPListener, err error) {
	if err := st.tcpSupported(); err != nil {
		return nil, err
	}
	a := laddr.Addr().Unmap()
	if !a.Is4() || a.IsMulticast() {
		return nil, backend.Unsupported("%s: listen tcp on %v: a local IPv4 address or 0.0.0.0 is needed", st.name, laddr.Addr())
	}
	if o.ReuseAddr {
		return nil, backend.Unsupported("%s: a user-space stack's ports are its own: address reuse (ReuseAddr) is for kernel sockets", st.name)
	}
	if !st.ref() {
		return nil, backend.ErrClosed
	}
	defer func() {
		if err != nil {
			st.Release()
		}
	}()
	port := st.adopt(netip.AddrPortFrom(a, laddr.Port()))
	if port == nil {
		if port, err = st.hold(netip.AddrPortFrom(a, laddr.Port())); err != nil {
			return nil, err
		}
	}
	l := &TCPListener{st: st, laddr: port.local, key: port.key, port: port, backlog: backend.DefaultBacklog, opts: o}
	if err := l.w.init(st.waitFDs); err != nil {
		st.rxMu.Lock()
		st.unhold(port)
		st.rxMu.Unlock()
		return nil, err
	}
	st.rxMu.Lock()
	st.tcp.listeners[l.key] = l
	keeper := st.addObject()
	st.rxMu.Unlock()
	st.startKeeper(keeper)
	return l, nil
}

// SetBacklog bounds the connections in the handshake or waiting for
// Accept; a SYN past it is refused with a RST (and counted).
func (l *TCPListener) SetBacklog(n int) {
	l.st.rxMu.Lock()
	l.backlog = max(n, 1)
	l.st.rxMu.Unlock()
}

// input answers a segment for no connection on the listener's port: a
// SYN opens one. Under rxMu.
func (l *TCPListener) input(k tcpKey) {
	st := l.st
	t := &st.tcp
	s := &t.seg
	switch {
	case s.Flags&frame.TCPRst != 0:
		return
	case s.Flags&frame.TCPAck != 0 || s.Flags&frame.TCPSyn == 0:
		st.sendReset(k)
		t.noConnReset.Add(1)
		return
	case l.pending+len(l.ready) >= l.backlog:
		t.listenOverflows.Add(1)
		st.sendReset(k)
		return
	}
	local := netip.AddrPortFrom(netip.AddrFrom4(k.lip), k.lport)
	remote := netip.AddrPortFrom(netip.AddrFrom4(k.rip), k.rport)
	c, err := st.newConn(local, remote, st.pkt.SrcMAC, l.opts)
	if err != nil {
		return
	}
	c.port = l.port
	l.port.refs++
	c.l = l
	l.pending++
	t.conns[k] = c
	t.objects++ // the listener's keeper runs: it is an object itself
	c.c = tcp.NewPassive(st.tcpConfig(l.opts), c, k.lport, k.rport, t.rng.Uint32(), s, st.tcpNow())
	st.settle(c)
}

// established moves a connection out of the handshake into the accept
// queue. Under rxMu.
func (l *TCPListener) established(c *TCPConn) {
	if slices.Contains(l.ready, c) {
		return
	}
	l.pending--
	l.ready = append(l.ready, c)
	l.readyN.Store(int32(len(l.ready)))
	l.w.notify()
}

// forget drops a connection that ended before Accept took it. Under rxMu.
func (l *TCPListener) forget(c *TCPConn) {
	if i := slices.Index(l.ready, c); i >= 0 {
		l.ready = slices.Delete(l.ready, i, i+1)
		l.readyN.Store(int32(len(l.ready)))
	} else {
		l.pending--
	}
	c.l = nil
}

// Accept waits for an established connection.
func (l *TCPListener) Accept() (backend.Stream, error) {
	c, err := l.AcceptTCP()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AcceptTCP is Accept returning the connection's own type. Accepting
// sleeps, whatever the wait mode (the connections it returns spin or
// sleep as Options.Wait says): a listener spinning beside a spinning
// reader would take CPU time from it. While other threads poll the stack
// it waits for them to complete a handshake; when nobody has polled for
// keeperIdle it polls itself and sleeps on the device.
func (l *TCPListener) AcceptTCP() (*TCPConn, error) {
	if !l.gate.R.Enter() {
		return nil, backend.ErrClosed
	}
	defer l.gate.R.Exit()
	st := l.st
	t := &st.tcp
	for {
		idle := st.clock()-t.lastPoll.Load() >= int64(keeperIdle)
		if idle || l.readyN.Load() > 0 {
			st.rxMu.Lock()
			if len(l.ready) == 0 && idle {
				st.pollLocked()
			}
			var c *TCPConn
			if len(l.ready) > 0 {
				c = l.ready[0]
				l.ready = slices.Delete(l.ready, 0, 1)
				l.readyN.Store(int32(len(l.ready)))
				c.l = nil
			}
			st.tcp.now = 0
			st.rxMu.Unlock()
			st.tcpKick()
			if c != nil {
				st.ref() // the connection's own; the listener holds one, so this cannot fail
				return c, nil
			}
		}
		if l.gate.R.Closed() {
			return nil, backend.ErrClosed
		}
		// Sleep: on the device too when nobody else polls, else on the
		// eventfd alone, which established (another thread's poll) and
		// Close signal; a timed-out wait touches no lock.
		l.w.sleeping.Store(true)
		if l.readyN.Load() == 0 && !l.gate.R.Closed() {
			if idle {
				l.w.wait(keeperIdle)
			} else {
				// The stack's keeper polls it if the others stop, and
				// its poll completes handshakes too.
				l.w.waitOwn(0)
			}
		}
		l.w.sleeping.Store(false)
	}
}

// Addr is the listener's address, with the port chosen for port 0.
func (l *TCPListener) Addr() netip.AddrPort { return l.laddr }

// Close stops listening: connections not yet accepted are reset, the
// port goes back to the kernel when no accepted connection still uses it.
func (l *TCPListener) Close() error {
	if err := shut(&l.gate, &l.w, l.st.name, "listener"); err != nil {
		return err
	}
	st := l.st
	st.rxMu.Lock()
	now := st.tcpNow()
	delete(st.tcp.listeners, l.key)
	st.tcp.objects--
	for _, c := range st.tcp.conns {
		if c.l == l {
			c.c.Abort(now)
			st.settle(c)
		}
	}
	st.unhold(l.port)
	st.tcp.now = 0
	st.rxMu.Unlock()
	st.tcpKick()
	l.w.close()
	return st.Release()
}

// LocalFor returns the local address the kernel's routes pick for
// reaching dst, so that a dial with no interface named opens the stack on
// the interface that route leaves by. Connecting a UDP socket sends
// nothing.
func LocalFor(dst netip.AddrPort) (netip.Addr, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("route to %v: %w", dst, os.NewSyscallError("socket", err))
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(max(dst.Port(), 1)), Addr: dst.Addr().Unmap().As4()}); err != nil {
		return netip.Addr{}, fmt.Errorf("route to %v: %w", dst, os.NewSyscallError("connect", err))
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("route to %v: %w", dst, os.NewSyscallError("getsockname", err))
	}
	return netip.AddrFrom4(sa.(*unix.SockaddrInet4).Addr), nil
}

// Dial opens a TCP connection on the stack acquire finds (or opens) for
// the local address routed to raddr; the acquired reference is given back,
// the connection holds its own.
func Dial(ctx context.Context, acquire func(netip.Addr) (*Stack, error), raddr netip.AddrPort, o backend.Options) (*TCPConn, error) {
	local := netip.IPv4Unspecified()
	if o.Interface == "" {
		a, err := LocalFor(raddr)
		if err != nil {
			return nil, err
		}
		local = a
	}
	st, err := acquire(local)
	if err != nil {
		return nil, err
	}
	defer st.Release()
	return st.DialTCP(ctx, raddr, o)
}

// Listen opens a TCP listener on the stack acquire finds (or opens) for
// laddr.
func Listen(acquire func(netip.Addr) (*Stack, error), laddr netip.AddrPort, o backend.Options) (*TCPListener, error) {
	st, err := acquire(laddr.Addr())
	if err != nil {
		return nil, err
	}
	defer st.Release()
	return st.ListenTCP(laddr, o)
}

var _ backend.TCPInfoer = (*TCPConn)(nil)

// TCPInfo returns the connection's state and counters.
func (c *TCPConn) TCPInfo() backend.TCPInfo {
	s, state := c.TCPStats()
	return backend.TCPInfo{
		State: state.String(), SRTT: s.SRTT, RTO: s.RTO, Cwnd: s.Cwnd, SndWnd: s.SndWnd,
		SegsIn: s.SegsIn, SegsOut: s.SegsOut, BytesIn: s.BytesIn, BytesOut: s.BytesOut,
		Retransmits: s.Retransmits, FastRetransmits: s.FastRetransmits, Timeouts: s.Timeouts,
		OutOfOrder: s.OutOfOrder, DupAcks: s.DupAcks, WindowProbes: s.WindowProbes,
		RstSent: s.RstSent, RstRecv: s.RstRecv,
		Dropped: s.DropOutOfWindow + s.DropPAWS + s.DropAckUnsent + s.DropOOOFull + s.DropNoAck,
	}
}
