//go:build linux

package stack

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/frame"
	"github.com/lowlat/lowlat/bypass/internal/gate"
	"github.com/lowlat/lowlat/bypass/internal/undo"
)

// Socket is a UDP endpoint on a Stack. It implements backend.PacketConn;
// see package backend for the rules on buffers and concurrency.
type Socket struct {
	st       *Stack
	laddr    netip.AddrPort
	key      flowKey
	spin     bool
	stamps   bool // receive stamps asked for (Options.Timestamps)
	txStamps bool // transmit stamps asked for (Options.TxTimestamps)
	info     backend.Info
	res      Reservation

	gate    gate.Pair // calls in flight; Close waits for them
	timeout atomic.Int64

	q      queue        // datagrams polled for this socket by others; under st.rxMu
	queued atomic.Int32 // q.len(), for lock-free looks

	w waiter // block mode: sleep in ppoll, woken by arrivals and Close

	tmpl       frame.Template // under st.txMu
	maxPayload int
	txSeq      uint64 // under st.txMu: the number of the last datagram stamped
	txStamp    int64  // under st.txMu: its ClockUser stamp; 0 for none

	mu     sync.Mutex   // joins and Close
	groups []membership // joined groups; changed under mu and st.rxMu, read by demux under st.rxMu
	undo   undo.Stack

	// Reader-owned and writer-owned counters on cache lines of their own.
	_                [128]byte
	rx, trunc, qdrop atomic.Uint64
	_                [128]byte
	tx, txFull       atomic.Uint64
	_                [128]byte
}

var (
	_ backend.PacketConn = (*Socket)(nil)
	_ backend.ReadyFD    = (*Socket)(nil)
	_ backend.TxStamper  = (*Socket)(nil)
)

// Hot-path errors.
var (
	errNotIPv4  = fmt.Errorf("%w: destination is not IPv4", backend.ErrNotSupported)
	errNoFrames = fmt.Errorf("%w: every transmit buffer is in flight and the device completed none", backend.ErrRingFull)
)

// maxKicks bounds the kicks one write spends waiting for the device to
// complete a frame when every transmit buffer is in flight.
const maxKicks = 1 << 12

// Listen opens a socket on the stack bound to laddr (an IPv4 address of
// the interface, or 0.0.0.0 for all of them; port 0 picks a free port).
// The port is reserved in the kernel for the socket's life, so the kernel
// neither gives it to another program nor answers its datagrams.
func (st *Stack) Listen(laddr netip.AddrPort, o backend.Options) (_ *Socket, err error) {
	a := laddr.Addr().Unmap()
	if !a.Is4() {
		return nil, backend.Unsupported("%s carries IPv4 only; %v is not IPv4", st.name, laddr.Addr())
	}
	if a.IsMulticast() {
		return nil, fmt.Errorf("bind to multicast address %v: bind to 0.0.0.0 or a local address and JoinGroup", a)
	}
	if !st.ref() {
		return nil, backend.ErrClosed
	}
	if o.ReuseAddr {
		st.Release()
		return nil, backend.Unsupported("%s: a user-space stack's ports are its own: address reuse (ReuseAddr) is for kernel sockets", st.name)
	}
	s := &Socket{st: st, spin: o.Wait != backend.WaitBlock, stamps: o.Timestamps != backend.TimestampsOff, txStamps: o.TxTimestamps}
	s.w.efd = -1
	u := &s.undo
	u.Add(st.Release)
	defer u.RunIfFailed(&err)

	if s.res, err = st.ports.Reserve(netip.AddrPortFrom(a, laddr.Port())); err != nil {
		return nil, err
	}
	u.Add(s.res.Close)
	s.laddr = netip.AddrPortFrom(a, s.res.Port())
	s.key = keyOf(s.laddr)
	src := st.iface.Src
	if !a.IsUnspecified() {
		src = a
	}
	s.tmpl, err = frame.NewTemplate(frame.Flow{
		SrcMAC:       st.iface.MAC,
		Src:          netip.AddrPortFrom(src, s.laddr.Port()),
		Dst:          netip.AddrPortFrom(src, s.laddr.Port()), // replaced per send
		DontFragment: true,
	})
	if err != nil {
		return nil, fmt.Errorf("transmit template: %w", err)
	}
	mtu := st.iface.MTU
	if mtu <= 0 {
		mtu = 1500
	}
	s.maxPayload = min(st.bufSize-frame.HeaderLen, mtu-frame.IPv4HeaderLen-frame.UDPHeaderLen)
	s.q = newQueue(st.qrecs, st.qbytes)
	if !s.spin {
		if len(st.waitFDs) == 0 {
			s.spin = true
		} else if err := s.w.init(st.waitFDs); err != nil {
			return nil, err
		}
		u.Add(s.w.close)
	}
	if err := st.addFlow(s, s.laddr); err != nil {
		return nil, err
	}
	u.AddFunc(func() { st.removeFlow(s, s.laddr) })
	if o.ReadTimeout > 0 {
		s.timeout.Store(int64(o.ReadTimeout))
	}
	if s.stamps {
		st.stampers.Add(1)
		u.AddFunc(func() { st.stampers.Add(-1) })
	}
	s.info = st.info
	s.info.Notes = slices.Clone(st.info.Notes)
	s.info.Wait = backend.WaitSpin
	if !s.spin {
		s.info.Wait = backend.WaitBlock
	} else if o.Wait == backend.WaitBlock {
		s.info.Notes = append(s.info.Notes, st.name+" on this device cannot sleep: the socket spins")
	}
	s.info.Skipped = o.Skipped
	return s, nil
}

// addFlow steers dst to s: it claims the key in the socket table first,
// so that two sockets racing for one key cannot both steer it, then steers
// it in the device, and gives the claim back if that fails.
func (st *Stack) addFlow(s *Socket, dst netip.AddrPort) error {
	k := keyOf(dst)
	st.rxMu.Lock()
	if st.socks[k] != nil {
		st.rxMu.Unlock()
		return fmt.Errorf("steer %v: %w (another socket on this stack has it)", dst, syscall.EADDRINUSE)
	}
	st.socks[k] = s
	st.rxMu.Unlock()
	if st.steer != nil {
		if err := st.steering(func() error { return st.steer.AddFlow(dst) }); err != nil {
			st.rxMu.Lock()
			delete(st.socks, k)
			st.rxMu.Unlock()
			return fmt.Errorf("steer %v: %w", dst, err)
		}
	}
	return nil
}

// removeFlow undoes addFlow, when s owns dst: the device stops steering
// dst to the stack at once, so the kernel gets that traffic back.
func (st *Stack) removeFlow(s *Socket, dst netip.AddrPort) error {
	k := keyOf(dst)
	st.rxMu.Lock()
	owned := st.socks[k] == s
	if owned {
		delete(st.socks, k)
	}
	st.rxMu.Unlock()
	if owned && st.steer != nil {
		if err := st.steering(func() error { return st.steer.RemoveFlow(dst) }); err != nil {
			return fmt.Errorf("unsteer %v: %w", dst, err)
		}
	}
	return nil
}

// serve moves datagrams for s into msgs, its receive queue first and then
// one poll of the device, and returns how many. Datagrams the poll finds
// for other sockets go to their queues. Called under st.rxMu.
func (s *Socket) serve(msgs []backend.Message) int {
	st := s.st
	got := 0
	if s.q.len() > 0 {
		for got < len(msgs) && s.q.len() > 0 {
			m := &msgs[got]
			n, r := s.q.pop(m.Buf)
			s.deliver(m, n, int(r.n), r.from, r.dst, r.stamp, r.nic)
			got++
		}
		s.queued.Store(int32(s.q.len()))
	}
	if got == len(msgs) {
		return got
	}
	if len(st.tcp.deferred) > 0 {
		st.flushDeferred() // a UDP reader's poll stands in for the TCP reader's
	}
	n := st.d.Poll(st.frames)
	batch := st.stamp(n)
	for i := range n {
		owner := st.demux(st.frames[i].Data)
		if owner == nil {
			continue
		}
		stamp, nic := batch, false
		if f := st.frames[i].Stamp; f != 0 {
			stamp, nic = f, true
		}
		p := st.pkt.Payload
		if owner == s && got < len(msgs) {
			m := &msgs[got]
			s.deliver(m, copy(m.Buf, p), len(p), st.pkt.Src, st.pkt.Dst.Addr(), stamp, nic)
			got++
			continue
		}
		st.enqueue(owner, s, stamp, nic)
	}
	if n > 0 {
		st.d.Release(st.frames[:n])
	}
	st.tcpAfterBatch(n)
	return got
}

// deliver fills in a message read by s: n bytes of a full-byte datagram.
func (s *Socket) deliver(m *backend.Message, n, full int, from netip.AddrPort, dst netip.Addr, stamp int64, nic bool) {
	m.N, m.Addr, m.Dst = n, from, dst
	m.Trunc = n < full
	if m.Trunc {
		s.trunc.Add(1)
	}
	m.Stamp = backend.Timestamp{}
	if s.stamps && stamp != 0 {
		m.Stamp = backend.Timestamp{Ns: stamp, Clock: backend.ClockUser}
		if nic {
			m.Stamp.Clock = backend.ClockNIC
		}
	}
}

// stamp reads the clock for a batch of n frames when a socket of the stack
// wants receive stamps (one read per batch), else returns 0.
func (st *Stack) stamp(n int) int64 {
	if n == 0 || st.stampers.Load() == 0 {
		return 0
	}
	return time.Now().UnixNano()
}

// enqueue puts the datagram in st.pkt on owner's queue, waking owner when
// it sleeps and is not the caller (nil when the caller is no socket).
// Called under st.rxMu.
func (st *Stack) enqueue(owner, caller *Socket, stamp int64, nic bool) {
	if !owner.q.push(st.pkt.Payload, st.pkt.Src, st.pkt.Dst.Addr(), stamp, nic) {
		owner.qdrop.Add(1)
		return
	}
	owner.queued.Store(int32(owner.q.len()))
	if owner != caller {
		owner.w.notify()
	}
}

// Pump polls the device once and queues every datagram on its socket; it
// returns how many frames it took. A poller serving many sockets of one
// stack pumps once per pass and then reads only the sockets that have
// something queued (Pending), instead of polling the device per socket.
func (st *Stack) Pump() int {
	st.rxMu.Lock()
	n := st.pollLocked() // 0 once the last socket closed: a poller still holding the stack finds their ErrClosed
	st.rxMu.Unlock()
	st.tcpKick()
	return n
}

// Pumper is the socket's stack, as a poller sees it.
func (s *Socket) Pumper() interface{ Pump() int } { return s.st }

// Pending reports, without a lock, whether datagrams wait in the socket's
// queue.
func (s *Socket) Pending() bool { return s.queued.Load() > 0 }

// TryReadBatch returns the datagrams waiting for the socket without
// waiting: one drain of its queue and one poll of the device.
func (s *Socket) TryReadBatch(msgs []backend.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	if !s.gate.R.Enter() {
		return 0, backend.ErrClosed
	}
	defer s.gate.R.Exit()
	s.st.rxMu.Lock()
	n := s.serve(msgs)
	s.st.rxMu.Unlock()
	s.st.tcpKick()
	s.rx.Add(uint64(n))
	return n, nil
}

// ReadBatch waits for at least one datagram and returns what else is ready.
func (s *Socket) ReadBatch(msgs []backend.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	if !s.gate.R.Enter() {
		return 0, backend.ErrClosed
	}
	defer s.gate.R.Exit()
	var start time.Time // when this read began to wait, for its timeout
	for spins := uint32(1); ; spins++ {
		s.st.rxMu.Lock()
		n := s.serve(msgs)
		s.st.rxMu.Unlock()
		s.st.tcpKick()
		if n > 0 {
			s.rx.Add(uint64(n))
			return n, nil
		}
		if err := s.idle(spins, &start); err != nil {
			return 0, err
		}
	}
}

// ReadFrom receives one datagram into b.
func (s *Socket) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	var m [1]backend.Message
	m[0].Buf = b
	if _, err := s.ReadBatch(m[:]); err != nil {
		return 0, netip.AddrPort{}, err
	}
	return m[0].N, m[0].Addr, nil
}

// idle runs after a poll that found nothing for the socket. Spinning, it
// checks for Close and the timeout every 64th time, reading the clock only
// then; blocking, it sleeps until the device or another socket's poll has
// something, Close, or the timeout.
func (s *Socket) idle(spins uint32, start *time.Time) error {
	if !s.spin {
		return s.sleep(start)
	}
	if spins&63 != 0 {
		return nil
	}
	if s.gate.R.Closed() {
		return backend.ErrClosed
	}
	if timedOut(start, time.Duration(s.timeout.Load())) {
		return backend.ErrTimeout
	}
	return nil
}

// timedOut starts a wait's clock at its first idle look (*start zero)
// and reports, at later looks, whether the wait has lasted to (0: no
// limit).
func timedOut(start *time.Time, to time.Duration) bool {
	if to <= 0 {
		return false
	}
	if start.IsZero() {
		*start = time.Now()
		return false
	}
	return time.Since(*start) >= to
}

// sleep waits in ppoll. The socket says it sleeps before it looks at its
// queue a last time, so that a datagram queued after the look wakes it.
func (s *Socket) sleep(start *time.Time) error {
	if s.gate.R.Closed() {
		return backend.ErrClosed
	}
	to := time.Duration(s.timeout.Load())
	var left time.Duration // 0: no timeout
	if to > 0 {
		if start.IsZero() {
			*start = time.Now()
		}
		if left = to - time.Since(*start); left <= 0 {
			return backend.ErrTimeout
		}
	}
	s.w.sleeping.Store(true)
	s.st.rxMu.Lock()
	queued := s.q.len() > 0
	s.st.rxMu.Unlock()
	if queued {
		s.w.sleeping.Store(false)
		return nil
	}
	woke, err := s.w.wait(left)
	s.w.sleeping.Store(false)
	if err != nil {
		return err
	}
	if s.gate.R.Closed() {
		return backend.ErrClosed
	}
	if !woke && to > 0 && time.Since(*start) >= to {
		return backend.ErrTimeout
	}
	return nil
}

// WriteTo sends b as one datagram to the given address.
func (s *Socket) WriteTo(b []byte, to netip.AddrPort) (int, error) {
	if !s.gate.W.Enter() {
		return 0, backend.ErrClosed
	}
	defer s.gate.W.Exit()
	st := s.st
	st.txMu.Lock()
	defer st.txMu.Unlock()
	sent := 0
	if err := s.stage(b, to, &sent); err != nil {
		return 0, err
	}
	if n, err := s.flush(); n == 0 {
		return 0, err
	}
	return len(b), nil
}

// WriteBatch sends msgs in order, handing them to the device once per
// batch, and returns how many were sent.
func (s *Socket) WriteBatch(msgs []backend.Message) (int, error) {
	if !s.gate.W.Enter() {
		return 0, backend.ErrClosed
	}
	defer s.gate.W.Exit()
	st := s.st
	st.txMu.Lock()
	defer st.txMu.Unlock()
	sent := 0
	for i := range msgs {
		if st.staged == st.batch {
			n, err := s.flush()
			sent += n
			if err != nil {
				return sent, err
			}
		}
		if err := s.stage(msgs[i].Buf, msgs[i].Addr, &sent); err != nil {
			n, ferr := s.flush()
			if ferr != nil {
				err = ferr
			}
			return sent + n, err
		}
	}
	n, err := s.flush()
	return sent + n, err
}

// stage builds one frame in a transmit buffer and commits it without
// kicking. When every buffer is in flight it kicks what is staged (adding
// what the device took to *sent) and waits a bounded time for
// completions. Called under st.txMu.
func (s *Socket) stage(b []byte, to netip.AddrPort, sent *int) error {
	st := s.st
	if len(b) > s.maxPayload {
		return backend.ErrMessageTooLong
	}
	dst := to.Addr().Unmap()
	if !dst.Is4() {
		return errNotIPv4
	}
	now := st.now()
	mac, ok := st.neigh.lookup(dst, now)
	if !ok {
		if err := st.neigh.recentFailure(dst, now); err != nil {
			return err
		}
		var err error
		if mac, err = st.resolve(dst); err != nil {
			st.neigh.fail(dst, err, st.now())
			return err
		}
		st.neigh.insert(dst, mac, st.now())
	}
	buf, id, ok := st.d.Reserve()
	if !ok {
		st.d.Reap()
		buf, id, ok = st.d.Reserve()
	}
	if !ok {
		s.txFull.Add(1)
		// Hand the device what is staged, so that it has frames to
		// complete, and kick until a buffer comes back.
		n, err := s.flush()
		*sent += n
		if err != nil {
			return err
		}
		for tries := 0; !ok; tries++ {
			if tries == maxKicks {
				return errNoFrames
			}
			if _, err := st.d.Kick(); err != nil {
				return err
			}
			st.d.Reap()
			buf, id, ok = st.d.Reserve()
		}
	}
	s.tmpl.SetDst(mac, netip.AddrPortFrom(dst, to.Port()))
	n, _ := s.tmpl.Build(buf, b)
	st.d.Commit(id, n)
	st.staged++
	return nil
}

// flush kicks the staged frames and reaps completions, every time, so that
// a device that frees transmit space only as it reports completions (X3)
// never wedges. Called under st.txMu.
func (s *Socket) flush() (int, error) {
	st := s.st
	if st.staged == 0 {
		return 0, nil
	}
	// Counted before the kick, so that a peer that answers at once never
	// finds the count behind; frames the device refused are taken back.
	s.tx.Add(uint64(st.staged))
	var stamp int64
	if s.txStamps {
		stamp = time.Now().UnixNano() // as the frames are handed over, before the kick's system call
	}
	n, err := st.d.Kick()
	if s.txStamps && n > 0 {
		s.txStamp = stamp
		s.txSeq = s.tx.Load() - uint64(st.staged-n) - 1
	}
	if n < st.staged {
		s.tx.Add(^uint64(st.staged - n - 1))
		if err == nil {
			err = errNoFrames
		}
	}
	st.staged = 0
	st.d.Reap()
	if err != nil && errors.Is(err, backend.ErrRingFull) {
		s.txFull.Add(1)
	}
	return n, err
}

// SetReadTimeout bounds each read; zero waits forever.
func (s *Socket) SetReadTimeout(d time.Duration) error {
	s.timeout.Store(int64(max(d, 0)))
	return nil
}

// JoinGroup subscribes the socket to an IPv4 multicast group: a membership
// in the kernel (IGMP, and the NIC's multicast filter), the group and the
// socket's port steered to the stack, and the group accepted by its frame
// filter.
func (s *Socket) JoinGroup(group netip.Addr) error {
	return s.join(group.Unmap(), netip.Addr{})
}

// JoinSourceGroup subscribes the socket to what source sends to an IPv4
// group (IGMPv3): the kernel joins for that source, and the stack, which
// steers the group's whole port, drops what other sources send.
func (s *Socket) JoinSourceGroup(group, source netip.Addr) error {
	source = source.Unmap()
	if !source.Is4() || source.IsMulticast() || source.IsUnspecified() {
		return fmt.Errorf("join group %v for source %v: the source must be a unicast IPv4 address", group, source)
	}
	return s.join(group.Unmap(), source)
}

// LeaveGroup undoes JoinGroup.
func (s *Socket) LeaveGroup(group netip.Addr) error {
	return s.leaveOne(group.Unmap(), netip.Addr{})
}

// LeaveSourceGroup undoes JoinSourceGroup for one source.
func (s *Socket) LeaveSourceGroup(group, source netip.Addr) error {
	return s.leaveOne(group.Unmap(), source.Unmap())
}

// membership is one group the socket joined: for any source (sources
// empty), or for the sources listed.
type membership struct {
	group   netip.Addr
	sources []netip.Addr
}

func (s *Socket) member(group netip.Addr) *membership {
	for i := range s.groups {
		if s.groups[i].group == group {
			return &s.groups[i]
		}
	}
	return nil
}

func (s *Socket) join(group, source netip.Addr) (err error) {
	if !group.Is4() || !group.IsMulticast() {
		return fmt.Errorf("join group %v: not an IPv4 multicast address", group)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate.Closed() {
		return backend.ErrClosed
	}
	m := s.member(group)
	switch {
	case m == nil:
	case len(m.sources) == 0 && !source.IsValid():
		return nil // joined already
	case len(m.sources) == 0 || !source.IsValid():
		return fmt.Errorf("join group %v: joined already for %s; leave it first", group, sourcesOf(m))
	case slices.Contains(m.sources, source):
		return nil
	}
	var u undo.Stack
	defer u.RunIfFailed(&err)
	if err := s.res.Join(group, source); err != nil {
		return fmt.Errorf("join group %v on %s: %w", group, s.st.iface.Name, err)
	}
	u.Add(func() error { return s.res.Leave(group, source) })
	if m == nil {
		if err := s.st.steerGroup(s, group); err != nil {
			return fmt.Errorf("join group %v: %w", group, err)
		}
		s.st.rxMu.Lock()
		s.groups = append(s.groups, membership{group: group})
		m = &s.groups[len(s.groups)-1]
		s.st.rxMu.Unlock()
	}
	if source.IsValid() {
		s.st.rxMu.Lock()
		m.sources = append(m.sources, source)
		s.st.rxMu.Unlock()
	}
	u.Take()
	return nil
}

func sourcesOf(m *membership) string {
	if len(m.sources) == 0 {
		return "any source"
	}
	return fmt.Sprintf("sources %v", m.sources)
}

func (s *Socket) leaveOne(group, source netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.member(group)
	if m == nil || (source.IsValid() && !slices.Contains(m.sources, source)) || (!source.IsValid() && len(m.sources) > 0) {
		if source.IsValid() {
			return fmt.Errorf("leave group %v for source %v: not joined", group, source)
		}
		return fmt.Errorf("leave group %v: not joined for any source", group)
	}
	err := s.res.Leave(group, source)
	if source.IsValid() {
		s.st.rxMu.Lock()
		m.sources = slices.DeleteFunc(m.sources, func(a netip.Addr) bool { return a == source })
		left := len(m.sources)
		s.st.rxMu.Unlock()
		if left > 0 {
			return err
		}
	}
	return errors.Join(err, s.dropGroup(group))
}

// dropGroup stops steering a group to the socket and forgets it.
func (s *Socket) dropGroup(group netip.Addr) error {
	err := s.st.unsteerGroup(s, group)
	s.st.rxMu.Lock()
	s.groups = slices.DeleteFunc(s.groups, func(m membership) bool { return m.group == group })
	s.st.rxMu.Unlock()
	return err
}

// steerGroup steers group and the socket's port to the stack and has the
// frame filter accept the group.
func (st *Stack) steerGroup(s *Socket, group netip.Addr) error {
	dst := netip.AddrPortFrom(group, s.laddr.Port())
	if err := st.addFlow(s, dst); err != nil {
		return err
	}
	st.rxMu.Lock()
	defer st.rxMu.Unlock()
	if st.groups[group] == 0 {
		f := st.filter.Clone()
		if err := f.Join(group); err != nil {
			st.rxMu.Unlock()
			st.removeFlow(s, dst)
			st.rxMu.Lock()
			return err
		}
		st.filter = *f
	}
	st.groups[group]++
	return nil
}

func (st *Stack) unsteerGroup(s *Socket, group netip.Addr) error {
	err := st.removeFlow(s, netip.AddrPortFrom(group, s.laddr.Port()))
	st.rxMu.Lock()
	if st.groups[group]--; st.groups[group] <= 0 {
		delete(st.groups, group)
		f := st.filter.Clone()
		f.Leave(group)
		st.filter = *f
	}
	st.rxMu.Unlock()
	return err
}

// admits reports whether a datagram from src to a multicast group passes
// the socket's source filter. Called under st.rxMu.
func (s *Socket) admits(group, src netip.Addr) bool {
	for i := range s.groups {
		m := &s.groups[i]
		if m.group == group {
			return len(m.sources) == 0 || slices.Contains(m.sources, src)
		}
	}
	return false
}

// LastTxStamp returns the user-space stamp taken when the socket's latest
// datagram was handed to the device (with Options.Timestamps), and its
// number, counting from 0.
func (s *Socket) LastTxStamp() (uint64, backend.Timestamp, bool) {
	s.st.txMu.Lock()
	defer s.st.txMu.Unlock()
	if s.txStamp == 0 {
		return 0, backend.Timestamp{}, false
	}
	return s.txSeq, backend.Timestamp{Ns: s.txStamp, Clock: backend.ClockUser}, true
}

// Closed reports whether Close has been called.
func (s *Socket) Closed() bool { return s.gate.Closed() }

// LocalAddr is the bound address, with the port chosen for port 0.
func (s *Socket) LocalAddr() netip.AddrPort { return s.laddr }

// Info says which backend and settings are in use.
func (s *Socket) Info() backend.Info { return s.info }

// Stack is the stack the socket is on.
func (s *Socket) Stack() *Stack { return s.st }

// ReadyFD returns the descriptor a blocking poller may sleep on: the
// stack's device descriptor (an AF_XDP socket), or -1 when the driver has
// none or several (a stack over several queues). It is never exact:
// another socket's poll may have queued datagrams for this one.
func (s *Socket) ReadyFD() (int, bool) {
	if len(s.st.waitFDs) != 1 {
		return -1, false
	}
	return s.st.waitFDs[0], false
}

// Stats returns the socket's counters together with the stack's: the
// Drop* counters before demultiplexing and the driver's counters are
// shared by every socket on the stack; DropQueueFull is this socket's.
func (s *Socket) Stats() backend.Stats {
	out := backend.Stats{
		RxPackets: s.rx.Load(), TxPackets: s.tx.Load(), RxTrunc: s.trunc.Load(),
		DropQueueFull: s.qdrop.Load(), TxRingFull: s.txFull.Load(),
	}
	if s.gate.W.Enter() {
		s.st.addStats(&out)
		s.gate.W.Exit()
	}
	return out
}

// closeWait bounds how long Close waits for calls in flight to leave.
const closeWait = 5 * time.Second

// shut is the start of every Close on a stack: it shuts the gate (ErrClosed
// the second time), wakes a sleeping caller and waits for the calls in
// flight to leave. When one does not, the object (what, for the error) is
// left open: releasing the stack under a live call could unmap its rings.
func shut(g *gate.Pair, w *waiter, backendName, what string) error {
	if !g.Shut() {
		return backend.ErrClosed
	}
	w.wake()
	if !g.Wait(closeWait) {
		return fmt.Errorf("%s: close: a call did not leave; %s left open", backendName, what)
	}
	return nil
}

// Close removes the socket's flows from the stack and the device (the
// kernel gets the traffic back at once), gives its port back, and releases
// the stack when it was the last socket. A reader waiting in another
// goroutine returns ErrClosed.
func (s *Socket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := shut(&s.gate, &s.w, s.st.name, "socket"); err != nil {
		return err
	}
	var errs []error
	for len(s.groups) > 0 {
		m := s.groups[len(s.groups)-1]
		for _, src := range m.sources {
			errs = append(errs, s.res.Leave(m.group, src))
		}
		if len(m.sources) == 0 {
			errs = append(errs, s.res.Leave(m.group, netip.Addr{}))
		}
		errs = append(errs, s.dropGroup(m.group))
	}
	errs = append(errs, s.undo.Run())
	return errors.Join(errs...)
}
