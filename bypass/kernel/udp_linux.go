//go:build linux

package kernel

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/mcast"
	"github.com/lowlat/lowlat/bypass/internal/sockaddr"
	"github.com/lowlat/lowlat/internal/priv"
)

// Kernel is the "kernel" backend: blocking sockets by default.
type Kernel struct{}

// BusyPoll is the "busypoll" backend: spinning sockets with the kernel's
// busy-poll socket options.
type BusyPoll struct{}

func (Kernel) Name() string   { return "kernel" }
func (BusyPoll) Name() string { return "busypoll" }

var (
	_ backend.StreamBackend = Kernel{}
	_ backend.StreamBackend = BusyPoll{}
	_ backend.PacketConn    = (*UDPConn)(nil)
	_ backend.ReadyFD       = (*UDPConn)(nil)
	_ backend.TxStamper     = (*UDPConn)(nil)
)

// ListenUDP opens a UDP socket bound to laddr; wait mode defaults to block.
func (Kernel) ListenUDP(laddr netip.AddrPort, o backend.Options) (backend.PacketConn, error) {
	return listenUDP(laddr, o, "kernel", o.Wait == backend.WaitSpin, false)
}

// ListenUDP opens a spinning UDP socket bound to laddr with the busy-poll
// options applied where the host allows them.
func (BusyPoll) ListenUDP(laddr netip.AddrPort, o backend.Options) (backend.PacketConn, error) {
	return listenUDP(laddr, o, "busypoll", o.Wait != backend.WaitBlock, true)
}

// UDPConn is a kernel UDP socket. See package backend for the rules on
// buffers and concurrency.
type UDPConn struct {
	sock
	v6      bool
	laddr   netip.AddrPort
	info    backend.Info
	iface   string
	ifindex int // iface's index in the socket's namespace, 0 for none

	// Reader-owned state.
	rsa    sockaddr.Raw
	rsalen uint32
	rmsgs  []unix.Mmsghdr
	riov   []unix.Iovec
	rnames []sockaddr.Raw
	rctl   []byte // ctlSize bytes of control messages per message

	// Writer-owned state.
	txs    txStamps
	wsa    sockaddr.Raw
	wmsgs  []unix.Mmsghdr
	wiov   []unix.Iovec
	wnames []sockaddr.Raw

	// Reader-owned and writer-owned counters on cache lines of their own.
	_         [128]byte
	rx, trunc atomic.Uint64
	_         [128]byte
	tx        atomic.Uint64
	_         [128]byte
}

func listenUDP(laddr netip.AddrPort, o backend.Options, name string, spin, busy bool) (_ *UDPConn, err error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("%s: listen udp %v: %w", name, laddr, err)
	}
	if !laddr.IsValid() {
		return nil, fmt.Errorf("%s: listen udp: invalid local address", name)
	}
	family, v6 := sockaddr.Family(laddr)
	fd, err := newSocket(family, unix.SOCK_DGRAM, spin)
	if err != nil {
		return nil, fmt.Errorf("%s: listen udp %v: %w", name, laddr, err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	wait := backend.WaitBlock
	if spin {
		wait = backend.WaitSpin
	}
	c := &UDPConn{
		sock:  sock{fd: fd, spin: spin},
		v6:    v6,
		info:  backend.Info{Backend: name, Wait: wait, Interface: o.Interface, Queue: -1, Skipped: o.Skipped},
		iface: o.Interface,
	}
	if err := applyCommon(fd, o, busy, &c.info); err != nil {
		return nil, fmt.Errorf("%s: listen udp %v: %w", name, laddr, err)
	}
	if err := setupUDP(fd, v6, o, &c.info); err != nil {
		return nil, fmt.Errorf("%s: listen udp %v: %w", name, laddr, err)
	}
	if o.Interface != "" {
		// Looked up now: the namespace is the caller's, as the socket's.
		ifi, err := net.InterfaceByName(o.Interface)
		if err != nil {
			return nil, fmt.Errorf("%s: listen udp %v: %w", name, laddr, err)
		}
		c.ifindex = ifi.Index
	}
	if err := unix.Bind(fd, sockaddr.To(laddr, v6)); err != nil {
		return nil, fmt.Errorf("%s: listen udp %v: %w", name, laddr, os.NewSyscallError("bind", err))
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("%s: listen udp %v: %w", name, laddr, os.NewSyscallError("getsockname", err))
	}
	c.laddr = sockaddr.From(sa)
	if o.ReadTimeout > 0 {
		if err := c.setReadTimeout(o.ReadTimeout); err != nil {
			return nil, fmt.Errorf("%s: listen udp %v: %w", name, laddr, err)
		}
	}
	if err := c.setWriteTimeout(o.WriteTimeout); err != nil {
		return nil, fmt.Errorf("%s: listen udp %v: %w", name, laddr, err)
	}
	b := o.Batch()
	c.rmsgs, c.riov, c.rnames = make([]unix.Mmsghdr, b), make([]unix.Iovec, b), make([]sockaddr.Raw, b)
	c.rctl = make([]byte, b*ctlSize)
	c.wmsgs, c.wiov, c.wnames = make([]unix.Mmsghdr, b), make([]unix.Iovec, b), make([]sockaddr.Raw, b)
	for i := range b {
		c.rmsgs[i].Hdr.Iov, c.rmsgs[i].Hdr.Iovlen = &c.riov[i], 1
		c.rmsgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&c.rnames[i]))
		c.wmsgs[i].Hdr.Iov, c.wmsgs[i].Hdr.Iovlen = &c.wiov[i], 1
		c.wmsgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&c.wnames[i]))
	}
	return c, nil
}

// applyCommon sets the buffer sizes and, for busypoll, the busy-poll options.
// Busy-poll options the host refuses become notes, not errors.
func applyCommon(fd int, o backend.Options, busy bool, info *backend.Info) error {
	if o.RecvBuffer > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, o.RecvBuffer); err != nil {
			return os.NewSyscallError("setsockopt SO_RCVBUF", err)
		}
	}
	if o.SendBuffer > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, o.SendBuffer); err != nil {
			return os.NewSyscallError("setsockopt SO_SNDBUF", err)
		}
	}
	if !busy {
		return nil
	}
	us := o.BusyPollUS
	if us == 0 {
		us = backend.DefaultBusyUS
	}
	budget := o.BusyPollBudget
	if budget == 0 {
		budget = backend.DefaultBudget
	}
	note := func(err error) { info.Notes = append(info.Notes, err.Error()) }
	if us > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUSY_POLL, us); err != nil {
			note(priv.Wrap("setsockopt SO_BUSY_POLL", "CAP_NET_ADMIN", os.NewSyscallError("setsockopt", err)))
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PREFER_BUSY_POLL, 1); err != nil {
			note(priv.Wrap("setsockopt SO_PREFER_BUSY_POLL", "CAP_NET_ADMIN", os.NewSyscallError("setsockopt", err)))
		}
	}
	if budget > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUSY_POLL_BUDGET, budget); err != nil {
			note(priv.Wrap("setsockopt SO_BUSY_POLL_BUDGET", "CAP_NET_ADMIN", os.NewSyscallError("setsockopt", err)))
		}
	}
	return nil
}

// ReadFrom wraps recvfrom(2).
func (c *UDPConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	c.rsalen = unix.SizeofSockaddrInet6
	r, e := c.call(unix.SYS_RECVFROM, p, uintptr(len(b)), unix.MSG_TRUNC, unsafe.Pointer(&c.rsa),
		unsafe.Pointer(&c.rsalen), 0, true)
	if e != 0 {
		return 0, netip.AddrPort{}, c.mapErr("recvfrom", e)
	}
	n := int(r)
	if n > len(b) {
		n = len(b)
		c.trunc.Add(1)
	}
	if n == 0 && c.gate.Closed() {
		return 0, netip.AddrPort{}, backend.ErrClosed
	}
	c.rx.Add(1)
	return n, sockaddr.Decode(&c.rsa), nil
}

// WriteTo wraps sendto(2).
func (c *UDPConn) WriteTo(b []byte, to netip.AddrPort) (int, error) {
	l := sockaddr.Encode(&c.wsa, to, c.v6)
	if l == 0 {
		return 0, errAddrFamily
	}
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	r, e := c.call(unix.SYS_SENDTO, p, uintptr(len(b)), unix.MSG_NOSIGNAL, unsafe.Pointer(&c.wsa), nil, uintptr(l), false)
	if e != 0 {
		return 0, c.mapErr("sendto", e)
	}
	c.tx.Add(1)
	return int(r), nil
}

var errAddrFamily = &net.AddrError{Err: "address family does not match the socket", Addr: "destination"}

// ReadBatch wraps recvmmsg(2). In block mode it sleeps until the first
// datagram (MSG_WAITFORONE) and returns what else is already queued.
func (c *UDPConn) ReadBatch(msgs []backend.Message) (int, error) {
	n := c.prepRecv(msgs)
	if n == 0 {
		return 0, nil
	}
	flags := uintptr(0)
	if !c.spin {
		flags = unix.MSG_WAITFORONE
	}
	r, e := c.call(unix.SYS_RECVMMSG, unsafe.Pointer(&c.rmsgs[0]), uintptr(n), flags, nil, nil, 0, true)
	if e != 0 {
		return 0, c.mapErr("recvmmsg", e)
	}
	return c.finishRecv(msgs, int(r))
}

// TryReadBatch is one recvmmsg(2) with MSG_DONTWAIT: the datagrams already
// queued, or 0 at once.
func (c *UDPConn) TryReadBatch(msgs []backend.Message) (int, error) {
	n := c.prepRecv(msgs)
	if n == 0 {
		return 0, nil
	}
	if !c.gate.R.Enter() {
		return 0, backend.ErrClosed
	}
	r, _, e := syscall.RawSyscall6(unix.SYS_RECVMMSG, uintptr(c.fd), uintptr(unsafe.Pointer(&c.rmsgs[0])), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
	c.gate.R.Exit()
	switch e {
	case 0:
	case unix.EAGAIN, unix.EINTR:
		return 0, nil
	default:
		return 0, c.mapErr("recvmmsg", e)
	}
	return c.finishRecv(msgs, int(r))
}

// Closed reports whether Close has been called.
func (c *UDPConn) Closed() bool { return c.gate.Closed() }

// ReadyFD returns the socket: it polls readable exactly while a datagram
// is queued.
func (c *UDPConn) ReadyFD() (int, bool) { return c.fd, true }

// prepRecv points the reader's iovecs at msgs' buffers and returns how
// many messages one recvmmsg may fill.
func (c *UDPConn) prepRecv(msgs []backend.Message) int {
	n := min(len(msgs), len(c.rmsgs))
	for i := range n {
		buf := msgs[i].Buf
		if len(buf) > 0 {
			c.riov[i].Base = &buf[0]
		} else {
			c.riov[i].Base = nil
		}
		c.riov[i].SetLen(len(buf))
		c.rmsgs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		c.rmsgs[i].Hdr.Flags = 0
		c.rmsgs[i].Hdr.Control = &c.rctl[i*ctlSize]
		c.rmsgs[i].Hdr.SetControllen(ctlSize)
	}
	return n
}

// finishRecv fills msgs from the got headers recvmmsg filled.
func (c *UDPConn) finishRecv(msgs []backend.Message, got int) (int, error) {
	if c.gate.Closed() {
		// Woken by Close's shutdown, which reads as one empty message
		// with no sender: that is no datagram.
		return 0, backend.ErrClosed
	}
	for i := range got {
		m := &msgs[i]
		h := &c.rmsgs[i].Hdr
		m.N = int(c.rmsgs[i].Len)
		m.Trunc = h.Flags&unix.MSG_TRUNC != 0
		if m.Trunc {
			c.trunc.Add(1)
		}
		m.Addr = sockaddr.Decode(&c.rnames[i])
		m.Dst, m.Stamp = netip.Addr{}, backend.Timestamp{}
		parseControl(c.rctl[i*ctlSize:i*ctlSize+int(h.Controllen)], m)
		c.riov[i].Base = nil
	}
	c.rx.Add(uint64(got))
	return got, nil
}

// WriteBatch wraps sendmmsg(2): it sends every message, in chunks of the
// batch size, and returns how many were sent.
func (c *UDPConn) WriteBatch(msgs []backend.Message) (int, error) {
	sent := 0
	for sent < len(msgs) {
		n, err := c.writeChunk(msgs[sent:min(len(msgs), sent+len(c.wmsgs))])
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

func (c *UDPConn) writeChunk(msgs []backend.Message) (int, error) {
	n := len(msgs)
	for i := range n {
		p := msgs[i].Buf
		if len(p) > 0 {
			c.wiov[i].Base = &p[0]
		} else {
			c.wiov[i].Base = nil
		}
		c.wiov[i].SetLen(len(p))
		l := sockaddr.Encode(&c.wnames[i], msgs[i].Addr, c.v6)
		if l == 0 {
			return 0, errAddrFamily
		}
		c.wmsgs[i].Hdr.Namelen = l
	}
	sent := 0
	for sent < n {
		r, e := c.call(unix.SYS_SENDMMSG, unsafe.Pointer(&c.wmsgs[sent]), uintptr(n-sent), unix.MSG_NOSIGNAL, nil, nil, 0, false)
		if e != 0 {
			c.tx.Add(uint64(sent))
			return sent, c.mapErr("sendmmsg", e)
		}
		sent += int(r)
	}
	for i := range n {
		c.wiov[i].Base = nil
	}
	c.tx.Add(uint64(sent))
	return sent, nil
}

// SetReadTimeout sets SO_RCVTIMEO in block mode; spin mode checks the clock
// while it spins.
func (c *UDPConn) SetReadTimeout(d time.Duration) error { return c.setReadTimeout(d) }

// JoinGroup joins a multicast group (IPv4 or IPv6) on the connection's
// interface, or the kernel's choice when none was named (MCAST_JOIN_GROUP).
func (c *UDPConn) JoinGroup(group netip.Addr) error {
	return c.member(true, group, netip.Addr{})
}

// JoinSourceGroup joins group for datagrams from source only
// (MCAST_JOIN_SOURCE_GROUP: IGMPv3, MLDv2).
func (c *UDPConn) JoinSourceGroup(group, source netip.Addr) error {
	if !source.IsValid() || source.IsMulticast() || source.IsUnspecified() {
		return fmt.Errorf("join group %v for source %v: the source must be a unicast address", group, source)
	}
	return c.member(true, group, source)
}

// LeaveGroup leaves a group joined with JoinGroup.
func (c *UDPConn) LeaveGroup(group netip.Addr) error {
	return c.member(false, group, netip.Addr{})
}

// LeaveSourceGroup leaves one source of a group joined with
// JoinSourceGroup.
func (c *UDPConn) LeaveSourceGroup(group, source netip.Addr) error {
	return c.member(false, group, source)
}

func (c *UDPConn) member(join bool, group, source netip.Addr) error {
	op := "leave"
	if join {
		op = "join"
	}
	if !group.IsMulticast() {
		return fmt.Errorf("%s group %v: not a multicast address", op, group)
	}
	if source.IsValid() && group.Unmap().Is4() != source.Unmap().Is4() {
		return fmt.Errorf("%s group %v for source %v: the two families differ", op, group, source)
	}
	if !c.v6 && !group.Unmap().Is4() {
		return fmt.Errorf("%s group %v: an IPv6 group on an IPv4 socket", op, group)
	}
	if !c.gate.R.Enter() {
		return backend.ErrClosed
	}
	defer c.gate.R.Exit()
	if err := mcast.Membership(c.fd, join, c.ifindex, group, source); err != nil {
		if source.IsValid() {
			return fmt.Errorf("%s group %v for source %v: %w", op, group, source, err)
		}
		return fmt.Errorf("%s group %v: %w", op, group, err)
	}
	return nil
}

func (c *UDPConn) LocalAddr() netip.AddrPort { return c.laddr }
func (c *UDPConn) Info() backend.Info        { return c.info }

// Stats returns the counters, with the datagrams the kernel dropped for a
// full receive buffer (SO_MEMINFO: one getsockopt per call).
func (c *UDPConn) Stats() backend.Stats {
	s := backend.Stats{RxPackets: c.rx.Load(), TxPackets: c.tx.Load(), RxTrunc: c.trunc.Load()}
	if c.gate.R.Enter() {
		if d, err := memDrops(c.fd); err == nil {
			s.DropRecvBuffer = d
		}
		c.gate.R.Exit()
	}
	return s
}

// Close closes the socket; a reader waiting in another goroutine returns
// ErrClosed.
func (c *UDPConn) Close() error { return c.close() }

// LastTxStamp returns the kernel's software transmit stamp of the latest
// datagram whose stamp has reached the error queue (Options.Timestamps).
// seq counts from 0, the first datagram the socket sent.
func (c *UDPConn) LastTxStamp() (uint64, backend.Timestamp, bool) {
	if c.gate.W.Enter() {
		c.txs.drain(c.fd)
		c.gate.W.Exit()
	}
	return c.txs.seq, c.txs.stamp, c.txs.ok
}

// SyscallConn returns the socket's raw descriptor access, for options
// lowlat does not wrap.
func (c *UDPConn) SyscallConn() (syscall.RawConn, error) { return rawConn{&c.sock}, nil }
