package bypass

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lowlat/lowlat/bypass/backend"
)

// NetPacketConn adapts a PacketConn to net.PacketConn (and net.Conn, for
// code such as x/net/ipv4 that asks for one) for code that wants the
// standard interfaces. It allocates (net.Addr values), so keep it off hot
// paths.
//
// Deadlines follow the net package's rules: a deadline set while a read
// or write waits applies to it at once (so the context.AfterFunc →
// SetReadDeadline(time.Now()) cancel idiom works), an expired deadline
// fails with an error that wraps os.ErrDeadlineExceeded, and the
// adapter never changes the connection's own read timeout: it waits
// through TryReadBatch and, where the connection has a descriptor, in
// ppoll(2) with a wake-up that SetReadDeadline and Close signal.
//
// The returned value also implements syscall.Conn when the connection does
// (kernel sockets), for options lowlat does not wrap.
func NetPacketConn(c PacketConn) net.PacketConn {
	p := &netPacketConn{c: c, fd: -1}
	if r, ok := c.(backend.ReadyFD); ok {
		p.fd, p.exact = r.ReadyFD()
	}
	initWakeup(&p.w, p)
	if sc, ok := c.(syscall.Conn); ok {
		return &netPacketSyscallConn{netPacketConn: p, sc: sc}
	}
	return p
}

type netPacketConn struct {
	c      PacketConn
	fd     int          // a descriptor that polls readable when a datagram may have come; -1: none
	exact  bool         // fd is readable exactly while one waits
	rdl    atomic.Int64 // read deadline, UnixNano; 0: none
	wdl    atomic.Int64 // write deadline, UnixNano; 0: none
	closed atomic.Bool
	w      wakeup
	rmu    sync.Mutex // reads: net.PacketConn allows several at once; msg and the wait are one reader's
	msg    [1]Message
}

// netPacketSyscallConn adds SyscallConn for connections that have one.
type netPacketSyscallConn struct {
	*netPacketConn
	sc syscall.Conn
}

// SyscallConn returns the connection's raw descriptor access.
func (p *netPacketSyscallConn) SyscallConn() (syscall.RawConn, error) { return p.sc.SyscallConn() }

// ReadMsgUDP reads one datagram as net.UDPConn's does (x/net/ipv4 and
// ipv6 ask for it), without control messages: oobn is always 0; flags
// carries MSG_TRUNC when the datagram was cut. Message.Dst and Stamp,
// through ReadBatch, are lowlat's own way to the same information.
func (p *netPacketSyscallConn) ReadMsgUDP(b, _ []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	n, from, trunc, err := p.readTrunc(b)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	if trunc {
		flags = msgTrunc
	}
	return n, 0, flags, net.UDPAddrFromAddrPort(from), nil
}

var (
	_ net.PacketConn = (*netPacketConn)(nil)
	_ net.Conn       = (*netPacketConn)(nil)
	_ syscall.Conn   = (*netPacketSyscallConn)(nil)
)

// msgTrunc is MSG_TRUNC, as ReadMsgUDP reports it.
const msgTrunc = 0x20

// maxSlice bounds one wait on a descriptor that does not say exactly when
// a datagram waits (a user-space stack's), and on none at all.
const maxSlice = time.Millisecond

func (p *netPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := p.read(b)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

func (p *netPacketConn) read(b []byte) (int, netip.AddrPort, error) {
	n, from, _, err := p.readTrunc(b)
	return n, from, err
}

// readTrunc is read, also saying whether the datagram was cut.
func (p *netPacketConn) readTrunc(b []byte) (int, netip.AddrPort, bool, error) {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	n, from, err := p.readLocked(b)
	return n, from, p.msg[0].Trunc, err
}

func (p *netPacketConn) readLocked(b []byte) (int, netip.AddrPort, error) {
	p.msg[0].Buf = b
	defer func() { p.msg[0].Buf = nil }()
	for {
		n, err := p.c.TryReadBatch(p.msg[:])
		if err != nil {
			return 0, netip.AddrPort{}, opErr("read", err)
		}
		if n > 0 {
			return p.msg[0].N, p.msg[0].Addr, nil
		}
		if p.closed.Load() {
			return 0, netip.AddrPort{}, opErr("read", net.ErrClosed)
		}
		wait := time.Duration(-1) // no deadline
		if dl := p.rdl.Load(); dl != 0 {
			if wait = time.Until(time.Unix(0, dl)); wait <= 0 {
				return 0, netip.AddrPort{}, opErr("read", os.ErrDeadlineExceeded)
			}
		}
		if !p.exact && (wait < 0 || wait > maxSlice) {
			wait = maxSlice
		}
		if err := p.w.wait(p.fd, false, wait); err != nil {
			return 0, netip.AddrPort{}, opErr("read", err)
		}
	}
}

func (p *netPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var to netip.AddrPort
	switch a := addr.(type) {
	case *net.UDPAddr:
		to = a.AddrPort()
	case nil:
		return 0, opErr("write", errors.New("no destination address"))
	default:
		ap, err := netip.ParseAddrPort(addr.String())
		if err != nil {
			return 0, opErr("write", err)
		}
		to = ap
	}
	if dl := p.wdl.Load(); dl != 0 && time.Now().UnixNano() >= dl {
		return 0, opErr("write", os.ErrDeadlineExceeded)
	}
	n, err := p.c.WriteTo(b, to)
	if err != nil {
		return 0, opErr("write", err)
	}
	return n, nil
}

// Read reads one datagram, for code that treats the adapter as a net.Conn.
func (p *netPacketConn) Read(b []byte) (int, error) {
	n, _, err := p.read(b)
	return n, err
}

// Write fails: the connection is not connected to one peer; use WriteTo.
func (p *netPacketConn) Write([]byte) (int, error) {
	return 0, opErr("write", errors.New("not connected: use WriteTo"))
}

// RemoteAddr is nil: the connection is not connected to one peer.
func (p *netPacketConn) RemoteAddr() net.Addr { return nil }

// Close closes the connection and wakes a read waiting on the adapter.
func (p *netPacketConn) Close() error {
	if p.closed.Swap(true) {
		return opErr("close", net.ErrClosed)
	}
	p.w.wake()
	return p.c.Close()
}

func (p *netPacketConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(p.c.LocalAddr()) }

func (p *netPacketConn) SetDeadline(t time.Time) error {
	p.SetWriteDeadline(t)
	return p.SetReadDeadline(t)
}

// SetReadDeadline moves the deadline of reads, the one waiting included.
func (p *netPacketConn) SetReadDeadline(t time.Time) error {
	p.rdl.Store(unixNano(t))
	p.w.wake()
	return nil
}

// SetWriteDeadline bounds writes: a write after the deadline fails. Writes
// on every backend hand the datagram over without waiting for the peer.
func (p *netPacketConn) SetWriteDeadline(t time.Time) error {
	p.wdl.Store(unixNano(t))
	return nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	if n := t.UnixNano(); n != 0 {
		return n
	}
	return 1
}

func opErr(op string, err error) error {
	if errors.Is(err, ErrClosed) {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "udp", Err: err}
}
