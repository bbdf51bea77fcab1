//go:build linux

package afxdp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/frame"
	"github.com/lowlat/lowlat/bypass/internal/gate"
	"github.com/lowlat/lowlat/bypass/internal/nexthop"
	"github.com/lowlat/lowlat/internal/priv"
)

// Conn is a UDP endpoint served by one AF_XDP socket per bound queue.
// Frames are received on every socket and sent on the first.
// See package backend for the rules on buffers and concurrency.
type Conn struct {
	x      *xsk   // the socket that transmits: socks[0]
	socks  []*xsk // one per bound queue, each with its own UMEM
	next   int    // reader-owned: where the next receive scan starts
	steer  *steering
	ifi    *net.Interface
	mac    [6]byte
	laddr  netip.AddrPort
	src    netip.Addr // source address of frames we send
	queues []int
	spin   bool
	info   backend.Info

	gate     gate.Pair // calls inside the rings, reads and writes apart; Close waits for them
	timeout  atomic.Int64
	wake     int // eventfd that Close signals to wake a reader in poll(2)
	pollfds  []unix.PollFd
	rts      unix.Timespec // reader-owned: ppoll's timeout
	busyPoll bool          // spin loop drives NAPI with recvfrom (XDPOptions.BusyPoll)

	// rx is reader-owned state; tx is writer-owned. The UMEM halves and
	// rings each side touches are disjoint.
	rx rxState
	tx txState

	st counters

	res     *nexthop.Resolver // route and neighbour lookups in the creator's namespace
	mu      sync.Mutex        // guards joins and the kernel membership socket
	mcast   int               // kernel UDP socket holding IGMP memberships, or -1
	resolve func(netip.Addr) (frame.MAC, error)
}

type rxState struct {
	frame.Receiver
}

type txState struct {
	neigh      neighCache
	tmpl       frame.Template
	maxPayload int
}

// counters are updated by the reader or the writer and read by Stats.
type counters struct {
	// Reader-owned and writer-owned counters sit on cache lines of their
	// own, so that a reader and a writer on two CPUs do not share one.
	_                               [128]byte
	rx, trunc, fillEmpty, rxWakeups atomic.Uint64
	_                               [128]byte
	tx, txFull, txWakeups           atomic.Uint64
	_                               [128]byte
}

var _ backend.PacketConn = (*Conn)(nil)

func listen(laddr netip.AddrPort, o backend.Options) (_ *Conn, err error) {
	cfg, err := config(o)
	if err != nil {
		return nil, err
	}
	if !laddr.Addr().Unmap().Is4() {
		return nil, backend.Unsupported("afxdp carries IPv4 only; %v is not IPv4", laddr.Addr())
	}
	if err := supported(); err != nil {
		return nil, err
	}
	ifi, err := ifaceCheck(o.Interface, laddr)
	if err != nil {
		return nil, err
	}
	var notes []string
	// Netlink sockets belong to the namespace they are opened in: open the
	// resolver now, so that next-hop lookups from any thread see this one.
	res, err := nexthop.NewResolver()
	if err != nil {
		return nil, err
	}
	owned := false // set once c owns res and its Close releases it
	defer func() {
		if !owned {
			res.Close()
		}
	}()
	desc, err := res.Local(ifi.Name)
	if err != nil {
		return nil, err
	}
	nq := max(desc.NumRxQueues, 1)
	var queues []int
	switch {
	case o.Queue < 0:
		for q := range nq {
			queues = append(queues, q)
		}
	case o.Queue >= nq:
		return nil, fmt.Errorf("queue %d out of range: %s has %d receive queue(s)", o.Queue, ifi.Name, nq)
	default:
		queues = []int{o.Queue}
		if nq > 1 {
			notes = append(notes, fmt.Sprintf("%s has %d receive queues and only queue %d is served: steer the flow there (ethtool -N) or bind all with queue -1", ifi.Name, nq, o.Queue))
		}
	}
	cfg.ifindex = ifi.Index
	if err := fitMemlock(&cfg, len(queues), o.XDP.NumFrames != 0, &notes); err != nil {
		return nil, err
	}

	src, err := ipv4Of(ifi)
	if err != nil {
		return nil, err
	}
	if a := laddr.Addr().Unmap(); !a.IsUnspecified() {
		src = a
	}

	c := &Conn{
		ifi:      ifi,
		laddr:    netip.AddrPortFrom(laddr.Addr().Unmap(), laddr.Port()),
		src:      src,
		queues:   queues,
		spin:     o.Wait != backend.WaitBlock,
		busyPoll: o.XDP.BusyPoll && o.Wait != backend.WaitBlock,
		mcast:    -1,
		wake:     -1,
		res:      res,
	}
	owned = true
	copy(c.mac[:], ifi.HardwareAddr)
	c.resolve = c.resolveSlow
	defer func() {
		if err != nil {
			c.Close()
		}
	}()

	// A kernel UDP socket bound to the same port reserves it, so the
	// kernel stack neither hands the port to someone else nor answers
	// datagrams that XDP missed with ICMP port unreachable.
	if err := c.reservePort(); err != nil {
		return nil, err
	}
	if c.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	driver := driverOf(c.mcast, ifi.Name)
	if c.steer, err = attach(ifi.Index, nq, o.XDP.Mode, driver); err != nil {
		return nil, err
	}
	for _, q := range queues {
		cfg.queue = q
		x, err := openXSK(cfg)
		if err != nil {
			return nil, err
		}
		c.socks = append(c.socks, x)
		if err := c.steer.setSocket(q, x.fd); err != nil {
			return nil, err
		}
		if o.XDP.BusyPoll {
			notes = append(notes, applyBusyPoll(x.fd, o)...)
		}
	}
	c.x = c.socks[0]
	for _, x := range c.socks {
		c.pollfds = append(c.pollfds, unix.PollFd{Fd: int32(x.fd), Events: unix.POLLIN})
	}
	c.pollfds = append(c.pollfds, unix.PollFd{Fd: int32(c.wake), Events: unix.POLLIN})
	if err := c.steer.addFlow(keyFor(c.laddr.Addr(), c.laddr.Port())); err != nil {
		return nil, err
	}
	if o.ReadTimeout > 0 {
		c.timeout.Store(int64(o.ReadTimeout))
	}
	if err := c.initFraming(ifi.MTU, virtualLink[driver]); err != nil {
		return nil, err
	}
	if virtualLink[driver] {
		notes = append(notes, driver+": UDP checksums left to offload by the peer (pseudo-header only) are accepted")
	}
	wait := backend.WaitSpin
	if !c.spin {
		wait = backend.WaitBlock
	}
	queue := queues[0]
	if len(queues) > 1 {
		queue = -1
	}
	c.info = backend.Info{
		Backend: "afxdp", Wait: wait, Interface: ifi.Name, Queue: queue,
		XDPMode: c.steer.mode, BindMode: c.x.bindMode, Notes: notes, Skipped: o.Skipped,
	}
	return c, nil
}

// reservePort binds an ordinary UDP socket to the port on the same address
// (choosing one when the port is 0) and keeps it for the connection's life;
// it also carries the IGMP memberships of JoinGroup and the ARP probes of
// next-hop resolution.
func (c *Conn) reservePort() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	sa := &unix.SockaddrInet4{Port: int(c.laddr.Port()), Addr: c.laddr.Addr().As4()}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return fmt.Errorf("reserve udp port %v: %w", c.laddr, os.NewSyscallError("bind", err))
	}
	c.mcast = fd
	if c.laddr.Port() == 0 {
		// Port 0: serve the port the kernel just chose.
		got, err := unix.Getsockname(fd)
		if err != nil {
			return fmt.Errorf("reserve udp port: %w", os.NewSyscallError("getsockname", err))
		}
		c.laddr = netip.AddrPortFrom(c.laddr.Addr(), uint16(got.(*unix.SockaddrInet4).Port))
	}
	return nil
}

func applyBusyPoll(fd int, o backend.Options) []string {
	var notes []string
	us := o.BusyPollUS
	if us == 0 {
		us = backend.DefaultBusyUS
	}
	budget := o.BusyPollBudget
	if budget == 0 {
		budget = backend.DefaultBudget
	}
	set := func(name string, opt, v int) {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, v); err != nil {
			notes = append(notes, priv.Wrap("setsockopt "+name, "CAP_NET_ADMIN", os.NewSyscallError("setsockopt", err)).Error())
		}
	}
	if us > 0 {
		set("SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL, 1)
		set("SO_BUSY_POLL", unix.SO_BUSY_POLL, us)
	}
	if budget > 0 {
		set("SO_BUSY_POLL_BUDGET", unix.SO_BUSY_POLL_BUDGET, budget)
	}
	return notes
}

// ReadFrom returns the next datagram addressed to the connection. Frames
// that fail validation are dropped, counted, and their buffers recycled.
func (c *Conn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	if !c.gate.R.Enter() {
		return 0, netip.AddrPort{}, backend.ErrClosed
	}
	defer c.gate.R.Exit()
	var start time.Time // when this read began to wait, for its timeout
	for {
		x := c.ready()
		if x == nil {
			if err := c.wait(&start); err != nil {
				return 0, netip.AddrPort{}, err
			}
			continue
		}
		d := x.rx.descs[x.rx.cachedCons&x.rx.mask]
		payload, from, ok := c.rx.Parse(x.frame(d.Addr, d.Len))
		n := 0
		if ok {
			n = copy(b, payload)
			if n < len(payload) {
				c.st.trunc.Add(1)
			}
		}
		x.rx.release(1)
		c.fillOne(x, d.Addr)
		x.fill.submit(0)
		if ok {
			c.st.rx.Add(1)
			return n, from, nil
		}
	}
}

// ready returns a socket whose RX ring holds a frame, or nil. With several
// queues the scan starts after the socket served last, so that a busy queue
// cannot starve the others.
func (c *Conn) ready() *xsk {
	if len(c.socks) == 1 {
		if c.x.rx.avail() != 0 {
			return c.x
		}
		return nil
	}
	n := len(c.socks)
	for i := range n {
		j := c.next + i
		if j >= n {
			j -= n
		}
		if x := c.socks[j]; x.rx.avail() != 0 {
			c.next = j + 1
			if c.next == n {
				c.next = 0
			}
			return x
		}
	}
	return nil
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
	var start time.Time // when this read began to wait, for its timeout
	for got == 0 {
		x := c.ready()
		if x == nil {
			if err := c.wait(&start); err != nil {
				return 0, err
			}
			continue
		}
		avail := x.rx.avail()
		var i uint32
		for ; i < avail && got < len(msgs); i++ {
			d := x.rx.descs[(x.rx.cachedCons+i)&x.rx.mask]
			payload, from, ok := c.rx.Parse(x.frame(d.Addr, d.Len))
			if ok {
				m := &msgs[got]
				m.N = copy(m.Buf, payload)
				if m.N < len(payload) {
					c.st.trunc.Add(1)
				}
				m.Addr = from
				got++
			}
			c.fillOne(x, d.Addr)
		}
		x.rx.release(i)
		x.fill.submit(0)
	}
	c.st.rx.Add(uint64(got))
	return got, nil
}

// fillOne queues a received frame's chunk back on its socket's fill ring
// without publishing it.
func (c *Conn) fillOne(x *xsk, addr uint64) {
	if x.fill.free(1) == 0 {
		c.st.fillEmpty.Add(1)
		return // cannot happen: the fill ring is as large as the RX half
	}
	x.fill.addrs[x.fill.cachedProd&x.fill.mask] = addr &^ uint64(x.frameSize-1)
	x.fill.cachedProd++
}

// wait is called when the RX ring is empty. In spin mode it polls the
// rings until a frame arrives; in block mode it sleeps in ppoll(2). start is
// when the read began to wait (zero until then): it carries over the calls
// of one read, so that frames dropped along the way do not restart the
// timeout.
func (c *Conn) wait(start *time.Time) error {
	if c.gate.R.Closed() {
		return backend.ErrClosed
	}
	for _, x := range c.socks {
		if x.fill.needWakeup() {
			// The driver stopped for lack of fill entries: recvfrom wakes it.
			syscall.RawSyscall6(unix.SYS_RECVFROM, uintptr(x.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
			c.st.rxWakeups.Add(1)
		}
	}
	to := time.Duration(c.timeout.Load())
	if c.spin {
		return c.spinWait(to, start)
	}
	var ts unsafe.Pointer // nil: no timeout
	if to > 0 {
		if start.IsZero() {
			*start = time.Now()
		}
		left := to - time.Since(*start)
		if left <= 0 {
			return backend.ErrTimeout
		}
		c.rts = unix.NsecToTimespec(int64(left))
		ts = unsafe.Pointer(&c.rts)
	}
	fds := c.pollfds
	for {
		r, _, e := syscall.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), uintptr(len(fds)), uintptr(ts), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return os.NewSyscallError("ppoll", e)
		}
		if c.gate.R.Closed() {
			return backend.ErrClosed
		}
		if r == 0 {
			return backend.ErrTimeout
		}
		return nil
	}
}

// spinWait polls the RX rings' producer indexes until a frame arrives, the
// connection closes, or the timeout passes. The clock is read once per 64
// empty polls. With busy polling on, each empty poll also calls recvfrom,
// which lets the kernel run the NIC queue's NAPI poll in this thread.
func (c *Conn) spinWait(to time.Duration, start *time.Time) error {
	for spins := uint32(1); ; spins++ {
		if c.ready() != nil {
			c.next-- // let the caller take the frame ready() found
			if c.next < 0 {
				c.next = len(c.socks) - 1
			}
			return nil
		}
		if c.busyPoll {
			for _, x := range c.socks {
				syscall.RawSyscall6(unix.SYS_RECVFROM, uintptr(x.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
			}
		}
		if spins&63 != 0 {
			continue
		}
		if c.gate.R.Closed() {
			return backend.ErrClosed
		}
		if to == 0 {
			continue
		}
		if start.IsZero() {
			*start = time.Now()
		} else if time.Since(*start) >= to {
			return backend.ErrTimeout
		}
	}
}

// WriteTo builds one frame in the UMEM and queues it on the TX ring.
func (c *Conn) WriteTo(b []byte, to netip.AddrPort) (int, error) {
	if !c.gate.W.Enter() {
		return 0, backend.ErrClosed
	}
	defer c.gate.W.Exit()
	if err := c.queueTx(b, to); err != nil {
		return 0, err
	}
	if err := c.flush(); err != nil {
		return 0, err
	}
	return len(b), nil
}

// WriteBatch queues every message, then kicks the kernel once.
func (c *Conn) WriteBatch(msgs []backend.Message) (int, error) {
	if !c.gate.W.Enter() {
		return 0, backend.ErrClosed
	}
	defer c.gate.W.Exit()
	n := 0
	for i := range msgs {
		if err := c.queueTx(msgs[i].Buf, msgs[i].Addr); err != nil {
			if n > 0 {
				c.flush()
			}
			return n, err
		}
		n++
	}
	return n, c.flush()
}

// errNoFrames is returned when every TX frame is in flight and the kernel
// has completed none of them within the spin budget.
var errNotIPv4 = fmt.Errorf("afxdp: %w: destination is not IPv4", backend.ErrNotSupported)

var errNoFrames = fmt.Errorf("afxdp: %w: no free TX frame", backend.ErrRingFull)

// errLinkDown is returned by a transmit while the interface is down.
var errLinkDown = fmt.Errorf("afxdp: transmit: %w (interface down)", os.NewSyscallError("sendto", unix.ENETDOWN))

// maxKicks bounds the kicks one write spends waiting for the kernel to
// drain the TX ring or complete frames.
const maxKicks = 1024

func (c *Conn) txErr(e syscall.Errno) error {
	if e == unix.ENETDOWN {
		return errLinkDown
	}
	return os.NewSyscallError("sendto", e)
}

func (c *Conn) queueTx(b []byte, to netip.AddrPort) error {
	if len(b) > c.tx.maxPayload {
		return backend.ErrMessageTooLong
	}
	if !to.Addr().Unmap().Is4() {
		return errNotIPv4
	}
	mac, ok := c.tx.neigh.lookup(to.Addr())
	if !ok {
		if err := c.tx.neigh.recentFailure(to.Addr()); err != nil {
			return err
		}
		var err error
		if mac, err = c.resolve(to.Addr()); err != nil {
			c.tx.neigh.fail(to.Addr(), err)
			return err
		}
		c.tx.neigh.insert(to.Addr(), mac)
	}
	x := c.x
	if len(x.txFree) == 0 || x.tx.free(1) == 0 {
		x.reap()
		if len(x.txFree) == 0 || x.tx.free(1) == 0 {
			// Full: publish what this call queued so far, so that the
			// kernel has something to send and complete, and kick it.
			c.st.txFull.Add(1)
			x.tx.submit(0)
			for tries := 0; len(x.txFree) == 0 || x.tx.free(1) == 0; tries++ {
				if tries == maxKicks {
					return errNoFrames
				}
				if e := x.kick(); e != 0 {
					return c.txErr(e)
				}
				x.reap()
			}
		}
	}
	addr := x.txFree[len(x.txFree)-1]
	x.txFree = x.txFree[:len(x.txFree)-1]
	n := c.build(x.chunk(addr), b, to, mac)
	x.tx.descs[x.tx.cachedProd&x.tx.mask] = unix.XDPDesc{Addr: addr, Len: uint32(n)}
	x.tx.cachedProd++
	c.st.tx.Add(1)
	return nil
}

// flush publishes queued TX descriptors and kicks the kernel when it asked
// for it (always, in copy mode, where the kick is the transmit).
func (c *Conn) flush() error {
	x := c.x
	x.tx.submit(0)
	if !x.needWakeup || x.tx.needWakeup() {
		c.st.txWakeups.Add(1)
		if e := x.kick(); e != 0 {
			return c.txErr(e)
		}
		// In copy mode each kick sends at most one kernel batch: kick
		// until the kernel has taken every descriptor.
		for tries := 0; x.copyMode && x.pending(); tries++ {
			if tries == maxKicks {
				return errNoFrames
			}
			c.st.txWakeups.Add(1)
			if e := x.kick(); e != 0 {
				return c.txErr(e)
			}
		}
	}
	x.reap()
	return nil
}

// resolveTimeout bounds how long the first send to a new destination waits
// for the kernel to resolve its next hop.
const resolveTimeout = 3 * time.Second

// resolveSlow finds the next hop's MAC for a destination through the
// kernel's route and neighbour tables, starting ARP when the kernel has no
// entry; it runs once per destination, not per message.
func (c *Conn) resolveSlow(dst netip.Addr) (frame.MAC, error) {
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	hop, err := c.res.Resolve(ctx, c.ifi.Name, dst)
	if err != nil {
		return frame.MAC{}, err
	}
	return frame.MAC(hop.DstMAC), nil
}

// SetReadTimeout bounds each read; zero waits forever.
func (c *Conn) SetReadTimeout(d time.Duration) error {
	c.timeout.Store(int64(max(d, 0)))
	return nil
}

// JoinGroup subscribes the interface to an IPv4 multicast group through the
// kernel (IGMP, and the NIC's multicast filter) and steers the group's
// datagrams for the bound port to this socket.
func (c *Conn) JoinGroup(group netip.Addr) error {
	if !group.Is4() || !group.IsMulticast() {
		return fmt.Errorf("join group %v: not an IPv4 multicast address", group)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gate.Closed() {
		return backend.ErrClosed
	}
	mreq := &unix.IPMreqn{Multiaddr: group.As4(), Ifindex: int32(c.ifi.Index)}
	if err := unix.SetsockoptIPMreqn(c.mcast, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); err != nil {
		return fmt.Errorf("join group %v on %s: %w", group, c.ifi.Name, os.NewSyscallError("setsockopt IP_ADD_MEMBERSHIP", err))
	}
	leave := func() { unix.SetsockoptIPMreqn(c.mcast, unix.IPPROTO_IP, unix.IP_DROP_MEMBERSHIP, mreq) }
	if err := c.steer.addFlow(keyFor(group, c.laddr.Port())); err != nil {
		leave()
		return fmt.Errorf("join group %v: %w", group, err)
	}
	if err := c.rx.Join(group); err != nil {
		leave()
		return fmt.Errorf("join group %v: %w", group, err)
	}
	return nil
}

func (c *Conn) LocalAddr() netip.AddrPort { return c.laddr }
func (c *Conn) Info() backend.Info        { return c.info }

// Stats returns the connection's counters, with the kernel's own counts
// for each socket (XDP_STATISTICS: one getsockopt per socket per call).
func (c *Conn) Stats() backend.Stats {
	s := &c.st
	out := backend.Stats{
		RxPackets: s.rx.Load(), TxPackets: s.tx.Load(), RxTrunc: s.trunc.Load(),
		FillRingEmpty: s.fillEmpty.Load(), TxRingFull: s.txFull.Load(), Wakeups: s.rxWakeups.Load() + s.txWakeups.Load(),
	}
	if c.gate.W.Enter() {
		for _, x := range c.socks {
			if k, err := x.statistics(); err == nil {
				out.KernelDropped += k.Rx_dropped + k.Rx_ring_full + k.Rx_invalid_descs + k.Tx_invalid_descs
				out.FillRingEmpty += k.Rx_fill_ring_empty_descs
			}
		}
		c.gate.W.Exit()
	}
	c.rx.Drops().AddTo(&out)
	return out
}

// closeWait bounds how long Close waits for calls in flight to leave.
const closeWait = 5 * time.Second

// Close detaches the XDP program, closes the socket and frees the UMEM.
// A reader spinning or polling in another goroutine returns ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.gate.Shut() {
		return backend.ErrClosed
	}
	var errs []error
	if c.steer != nil {
		errs = append(errs, c.steer.close())
	}
	if c.wake >= 0 {
		one := [8]byte{1}
		unix.Write(c.wake, one[:])
	}
	if !c.gate.Wait(closeWait) {
		// Unmapping under a live reader would crash it: leak instead.
		return errors.Join(append(errs, errors.New("afxdp: close: a reader or writer did not leave; rings left mapped"))...)
	}
	for _, x := range c.socks {
		errs = append(errs, x.close())
	}
	if c.wake >= 0 {
		unix.Close(c.wake)
	}
	if c.mcast >= 0 {
		unix.Close(c.mcast)
	}
	if c.res != nil {
		c.res.Close()
	}
	return errors.Join(errs...)
}
