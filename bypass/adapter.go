package bypass

import (
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// NetPacketConn adapts a PacketConn to net.PacketConn for code that wants
// the standard interface. It allocates (net.Addr values) and converts
// deadlines into timeouts at each call, so keep it off hot paths.
func NetPacketConn(c PacketConn) net.PacketConn { return &netPacketConn{c: c} }

// A deadline set while a read waits applies from the next read on: the
// read already waiting keeps the timeout it started with.
type netPacketConn struct {
	c        PacketConn
	deadline atomic.Int64 // UnixNano; 0: none
}

func (p *netPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if dl := p.deadline.Load(); dl != 0 {
		d := time.Until(time.Unix(0, dl))
		if d <= 0 {
			return 0, nil, opErr("read", ErrTimeout)
		}
		if err := p.c.SetReadTimeout(d); err != nil {
			return 0, nil, opErr("read", err)
		}
	}
	n, from, err := p.c.ReadFrom(b)
	if err != nil {
		return 0, nil, opErr("read", err)
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

func (p *netPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var to netip.AddrPort
	switch a := addr.(type) {
	case *net.UDPAddr:
		to = a.AddrPort()
	default:
		ap, err := netip.ParseAddrPort(addr.String())
		if err != nil {
			return 0, opErr("write", err)
		}
		to = ap
	}
	n, err := p.c.WriteTo(b, to)
	if err != nil {
		return 0, opErr("write", err)
	}
	return n, nil
}

func (p *netPacketConn) Close() error        { return p.c.Close() }
func (p *netPacketConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(p.c.LocalAddr()) }

func (p *netPacketConn) SetDeadline(t time.Time) error { return p.SetReadDeadline(t) }

func (p *netPacketConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		p.deadline.Store(0)
		return p.c.SetReadTimeout(0)
	}
	p.deadline.Store(t.UnixNano())
	return nil
}

// SetWriteDeadline is accepted and ignored: writes do not wait for long on
// any backend.
func (p *netPacketConn) SetWriteDeadline(time.Time) error { return nil }

func opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Err: err}
}
