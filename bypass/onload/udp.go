//go:build linux && onload && cgo

package onload

/*
#include "ll_onload.h"
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/sockaddr"
)

// UDPConn is a UDP socket whose every operation is a C library call, so
// that Onload, when preloaded, runs it on its own stack. See package
// backend for the rules on buffers and concurrency.
type UDPConn struct {
	sock
	v6    bool
	laddr netip.AddrPort
	info  backend.Info
	stat  Stat
	iface string

	// Reader-owned state: what the C calls write into.
	rsa   sockaddr.Raw
	ralen C.uint32_t
	rmsgs []C.struct_ll_msg

	// Writer-owned state.
	wsa   sockaddr.Raw
	wsent C.int
	wmsgs []C.struct_ll_msg

	// Reader-owned and writer-owned counters on cache lines of their own.
	_         [128]byte
	rx, trunc atomic.Uint64
	_         [128]byte
	tx        atomic.Uint64
	_         [128]byte
}

var (
	_ backend.PacketConn = (*UDPConn)(nil)
	_ stater             = (*UDPConn)(nil)
)

func listenUDP(laddr netip.AddrPort, o backend.Options) (_ *UDPConn, err error) {
	if !laddr.IsValid() {
		return nil, fmt.Errorf("invalid local address")
	}
	if _, err := KeepSignal(); err != nil {
		return nil, err
	}
	family, v6 := sockaddr.Family(laddr)
	spin := o.Wait != backend.WaitBlock
	s, err := openSock(C.int(family), unix.SOCK_DGRAM, spin, o.Batch(), o.WriteTimeout)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			discard(s)
		}
	}()
	c := &UDPConn{
		sock:  sock{s: s, fd: s.fd, spin: spin},
		v6:    v6,
		iface: o.Interface,
		info:  backend.Info{Backend: "onload", Wait: waitOf(spin), Interface: o.Interface, Queue: -1, Skipped: o.Skipped},
	}
	if err := applyOptions(c.fd, o, v6, &c.info); err != nil {
		return nil, err
	}
	l := sockaddr.Encode(&c.wsa, laddr, v6)
	if rc := C.ll_bind(c.fd, unsafe.Pointer(&c.wsa), C.uint32_t(l)); rc < 0 {
		return nil, os.NewSyscallError("bind", errnoOf(rc))
	}
	c.ralen = C.uint32_t(unsafe.Sizeof(c.rsa))
	if rc := C.ll_getsockname(c.fd, unsafe.Pointer(&c.rsa), &c.ralen); rc < 0 {
		return nil, os.NewSyscallError("getsockname", errnoOf(rc))
	}
	c.laddr = sockaddr.Decode(&c.rsa)
	c.timeout.Store(int64(o.ReadTimeout))
	c.stat = statFD(c.fd)
	c.info.Notes = append(c.info.Notes, onloadNotes(c.stat)...)
	b := o.Batch()
	c.rmsgs = make([]C.struct_ll_msg, b)
	c.wmsgs = make([]C.struct_ll_msg, b)
	return c, nil
}

func waitOf(spin bool) backend.WaitMode {
	if spin {
		return backend.WaitSpin
	}
	return backend.WaitBlock
}

// applyOptions sets the socket options the Options ask for, each through
// the C library. Settings this backend does not carry become notes.
func applyOptions(fd C.int, o backend.Options, v6 bool, info *backend.Info) error {
	if o.RecvBuffer > 0 {
		if err := setInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, o.RecvBuffer, "SO_RCVBUF"); err != nil {
			return err
		}
	}
	if o.SendBuffer > 0 {
		if err := setInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, o.SendBuffer, "SO_SNDBUF"); err != nil {
			return err
		}
	}
	if o.ReuseAddr {
		if err := setInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"); err != nil {
			return err
		}
		if err := setInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1, "SO_REUSEPORT"); err != nil {
			return err
		}
	}
	if o.Timestamps != backend.TimestampsOff {
		info.Notes = append(info.Notes, "timestamps: not carried by the onload backend (Onload's own are SO_TIMESTAMPING with ONLOAD_SOF_TIMESTAMPING_STREAM)")
	}
	m := o.Multicast
	lvl, ttl, loop := unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, unix.IP_MULTICAST_LOOP
	if v6 {
		lvl, ttl, loop = unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, unix.IPV6_MULTICAST_LOOP
	}
	if m.TTL > 0 {
		if err := setInt(fd, lvl, ttl, m.TTL, "multicast TTL"); err != nil {
			return err
		}
	}
	if m.NoLoopback {
		if err := setInt(fd, lvl, loop, 0, "multicast loop"); err != nil {
			return err
		}
	}
	if m.Interface != "" {
		ifi, err := net.InterfaceByName(m.Interface)
		if err != nil {
			return fmt.Errorf("multicast interface: %w", err)
		}
		if v6 {
			return setInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifi.Index, "IPV6_MULTICAST_IF")
		}
		var mreq [12]byte // struct ip_mreqn: group, address, ifindex
		binary.NativeEndian.PutUint32(mreq[8:], uint32(ifi.Index))
		if rc := C.ll_setsockopt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, unsafe.Pointer(&mreq[0]), C.uint32_t(len(mreq))); rc < 0 {
			return os.NewSyscallError("setsockopt IP_MULTICAST_IF", errnoOf(rc))
		}
	}
	return nil
}

// ReadFrom is one recvfrom(3) call, repeated while nothing has arrived
// (spin) or after poll(3) says something has (block).
func (c *UDPConn) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	if !c.gate.R.Enter() {
		return 0, netip.AddrPort{}, backend.ErrClosed
	}
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	c.ralen = C.uint32_t(unsafe.Sizeof(c.rsa))
	r := C.ll_recvfrom(c.s, p, C.size_t(len(b)), unsafe.Pointer(&c.rsa), &c.ralen, C.int64_t(c.timeout.Load()))
	c.gate.R.Exit()
	if r < 0 {
		return 0, netip.AddrPort{}, c.mapErr("recvfrom", errnoOf(r))
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

// WriteTo is one sendto(3) call (repeated while the socket has no room).
func (c *UDPConn) WriteTo(b []byte, to netip.AddrPort) (int, error) {
	if !c.gate.W.Enter() {
		return 0, backend.ErrClosed
	}
	defer c.gate.W.Exit()
	l := sockaddr.Encode(&c.wsa, to, c.v6)
	if l == 0 {
		return 0, errAddrFamily
	}
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	r := C.ll_sendto(c.s, p, C.size_t(len(b)), unsafe.Pointer(&c.wsa), C.uint32_t(l))
	if r < 0 {
		return 0, c.mapErr("sendto", errnoOf(r))
	}
	c.tx.Add(1)
	return int(r), nil
}

var errAddrFamily = &net.AddrError{Err: "address family does not match the socket", Addr: "destination"}

// ReadBatch waits for a datagram and takes what else is queued: one
// recvmmsg(3) call per attempt.
func (c *UDPConn) ReadBatch(msgs []backend.Message) (int, error) { return c.readBatch(msgs, 1) }

// TryReadBatch is one recvmmsg(3) call that never waits.
func (c *UDPConn) TryReadBatch(msgs []backend.Message) (int, error) {
	return c.readBatch(msgs, 0)
}

func (c *UDPConn) readBatch(msgs []backend.Message, wait C.int) (int, error) {
	n := min(len(msgs), len(c.rmsgs))
	if n == 0 {
		return 0, nil
	}
	if !c.gate.R.Enter() {
		return 0, backend.ErrClosed
	}
	for i := range n {
		setBuf(&c.rmsgs[i], msgs[i].Buf)
	}
	got := C.ll_recvmmsg(c.s, &c.rmsgs[0], C.int(n), wait, C.int64_t(c.timeout.Load()))
	// The buffers' addresses went to C as integers: msgs keeps them alive
	// until the call has returned.
	runtime.KeepAlive(msgs)
	c.gate.R.Exit()
	if got < 0 {
		if e := errnoOf(got); e == syscall.EAGAIN {
			return 0, nil
		} else {
			return 0, c.mapErr("recvmmsg", e)
		}
	}
	if c.gate.Closed() {
		// Woken by Close's shutdown, which reads as an empty datagram.
		return 0, backend.ErrClosed
	}
	for i := range int(got) {
		m, r := &msgs[i], &c.rmsgs[i]
		m.N = int(r.len)
		m.Dst, m.Stamp = netip.Addr{}, backend.Timestamp{}
		m.Trunc = r.flags&unix.MSG_TRUNC != 0
		if m.Trunc {
			c.trunc.Add(1)
		}
		m.Addr = sockaddr.Decode((*sockaddr.Raw)(unsafe.Pointer(&r.addr[0])))
	}
	c.rx.Add(uint64(got))
	return int(got), nil
}

// setBuf points a batch entry at a Go buffer. The address travels as an
// integer: a pointer stored in Go memory handed to C would break cgo's
// rules; the caller keeps the buffer referenced for the call, Go's heap
// does not move, and a goroutine's stack does not move while it is in a
// C call.
func setBuf(m *C.struct_ll_msg, b []byte) {
	m.base = 0
	if len(b) > 0 {
		m.base = C.uintptr_t(uintptr(unsafe.Pointer(&b[0])))
	}
	m.len = C.uint32_t(len(b))
	m.flags = 0
}

// WriteBatch sends msgs in order, in chunks of the batch size, one
// sendmmsg(3) call per chunk (more when the stack takes part of one), and
// returns how many were sent.
func (c *UDPConn) WriteBatch(msgs []backend.Message) (int, error) {
	if !c.gate.W.Enter() {
		return 0, backend.ErrClosed
	}
	defer c.gate.W.Exit()
	sent := 0
	for sent < len(msgs) {
		chunk := msgs[sent:min(len(msgs), sent+len(c.wmsgs))]
		for i := range chunk {
			m := &c.wmsgs[i]
			setBuf(m, chunk[i].Buf)
			l := sockaddr.Encode((*sockaddr.Raw)(unsafe.Pointer(&m.addr[0])), chunk[i].Addr, c.v6)
			if l == 0 {
				c.tx.Add(uint64(sent))
				return sent, errAddrFamily
			}
			m.alen = C.uint32_t(l)
		}
		rc := C.ll_sendmmsg(c.s, &c.wmsgs[0], C.int(len(chunk)), &c.wsent)
		runtime.KeepAlive(chunk)
		sent += int(c.wsent)
		if rc < 0 {
			c.tx.Add(uint64(sent))
			return sent, c.mapErr("sendmmsg", errnoOf(rc))
		}
	}
	c.tx.Add(uint64(sent))
	return sent, nil
}

// SetReadTimeout bounds each read; the wait loops in C check it.
func (c *UDPConn) SetReadTimeout(d time.Duration) error { return c.setReadTimeout(d) }

// JoinGroup joins group on the connection's interface (or the stack's
// choice) with MCAST_JOIN_GROUP. Joining twice is not an error.
func (c *UDPConn) JoinGroup(group netip.Addr) error {
	return c.mcast("join group", unix.MCAST_JOIN_GROUP, group, netip.Addr{})
}

// JoinSourceGroup joins what source sends to group (MCAST_JOIN_SOURCE_GROUP).
func (c *UDPConn) JoinSourceGroup(group, source netip.Addr) error {
	return c.mcast("join source group", unix.MCAST_JOIN_SOURCE_GROUP, group, source)
}

// LeaveGroup undoes JoinGroup (MCAST_LEAVE_GROUP).
func (c *UDPConn) LeaveGroup(group netip.Addr) error {
	return c.mcast("leave group", unix.MCAST_LEAVE_GROUP, group, netip.Addr{})
}

// LeaveSourceGroup undoes JoinSourceGroup for source (MCAST_LEAVE_SOURCE_GROUP).
func (c *UDPConn) LeaveSourceGroup(group, source netip.Addr) error {
	return c.mcast("leave source group", unix.MCAST_LEAVE_SOURCE_GROUP, group, source)
}

// mcast is one setsockopt(3) with a struct group_req or group_source_req:
// the interface index, then one or two sockaddr_storage (128 bytes, at
// offsets 8 and 136).
func (c *UDPConn) mcast(op string, opt int, group, source netip.Addr) error {
	if !group.IsMulticast() {
		return fmt.Errorf("onload: %s %v: not a multicast address", op, group)
	}
	if !c.gate.W.Enter() {
		return backend.ErrClosed
	}
	defer c.gate.W.Exit()
	var req [8 + 128 + 128]byte
	if c.iface != "" {
		ifi, err := net.InterfaceByName(c.iface)
		if err != nil {
			return fmt.Errorf("onload: %s %v: %w", op, group, err)
		}
		binary.NativeEndian.PutUint32(req[:], uint32(ifi.Index))
	}
	put := func(at int, a netip.Addr) bool {
		var ra sockaddr.Raw
		l := sockaddr.Encode(&ra, netip.AddrPortFrom(a, 0), c.v6)
		copy(req[at:at+int(l)], (*[unsafe.Sizeof(ra)]byte)(unsafe.Pointer(&ra))[:l])
		return l != 0
	}
	size := 8 + 128
	if !put(8, group) {
		return fmt.Errorf("onload: %s %v: %w", op, group, errAddrFamily)
	}
	if source.IsValid() {
		if !put(136, source) {
			return fmt.Errorf("onload: %s %v source %v: %w", op, group, source, errAddrFamily)
		}
		size = len(req)
	}
	lvl := unix.IPPROTO_IP
	if c.v6 {
		lvl = unix.IPPROTO_IPV6
	}
	rc := C.ll_setsockopt(c.fd, C.int(lvl), C.int(opt), unsafe.Pointer(&req[0]), C.uint32_t(size))
	if rc < 0 {
		e := errnoOf(rc)
		if e == syscall.EADDRINUSE && (opt == unix.MCAST_JOIN_GROUP || opt == unix.MCAST_JOIN_SOURCE_GROUP) {
			return nil // joined already
		}
		return fmt.Errorf("onload: %s %v: %w", op, group, os.NewSyscallError("setsockopt", e))
	}
	return nil
}

// LocalAddr is the bound address.
func (c *UDPConn) LocalAddr() netip.AddrPort { return c.laddr }

// Info names the backend, its wait mode, and whether Onload has the socket.
func (c *UDPConn) Info() backend.Info { return c.info }

// Onload is what Onload said about the socket when it was bound.
func (c *UDPConn) Onload() Stat { return c.stat }

// Stats returns the connection's counters.
func (c *UDPConn) Stats() backend.Stats {
	return backend.Stats{RxPackets: c.rx.Load(), TxPackets: c.tx.Load(), RxTrunc: c.trunc.Load()}
}

// Close closes the socket; a reader waiting in another goroutine returns
// ErrClosed.
func (c *UDPConn) Close() error { return c.close() }
