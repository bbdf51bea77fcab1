//go:build linux

package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/frame"
	"github.com/lowlat/lowlat/bypass/internal/mcast"
	"github.com/lowlat/lowlat/bypass/internal/nexthop"
)

// Interface is what a stack needs to know of the interface it serves.
type Interface struct {
	Name        string
	Index       int
	MAC         frame.MAC
	MTU         int
	Src         netip.Addr // source address of frames from sockets bound to 0.0.0.0
	NumRxQueues int
}

// FindInterface returns the interface named name, or, when name is empty,
// the one that owns laddr. It refuses what a user-space Ethernet stack
// cannot serve (loopback, a link that is down, no Ethernet address, no
// IPv4 address) with errors that say so; the ones another backend could
// serve wrap backend.ErrNotSupported. The source address is laddr when it
// is specified, else the interface's first IPv4 address.
func FindInterface(backendName, name string, laddr netip.Addr) (Interface, error) {
	laddr = laddr.Unmap()
	var ifi *net.Interface
	var err error
	if name == "" {
		if !laddr.IsValid() || laddr.IsUnspecified() {
			return Interface{}, backend.Unsupported("no interface named and the address %v is unspecified: name one with --iface", laddr)
		}
		if ifi, err = interfaceFor(laddr); err != nil {
			return Interface{}, err
		}
	} else if ifi, err = net.InterfaceByName(name); err != nil {
		return Interface{}, fmt.Errorf("interface %q: %w", name, err)
	}
	if ifi.Flags&net.FlagLoopback != 0 {
		return Interface{}, backend.Unsupported("interface %s is loopback, which carries no Ethernet frames for %s", ifi.Name, backendName)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return Interface{}, fmt.Errorf("interface %s is down: bring it up with `ip link set dev %s up`", ifi.Name, ifi.Name)
	}
	mac, ok := frame.MACFrom(ifi.HardwareAddr)
	if !ok {
		return Interface{}, backend.Unsupported("interface %s is not Ethernet", ifi.Name)
	}
	out := Interface{Name: ifi.Name, Index: ifi.Index, MAC: mac, MTU: ifi.MTU, NumRxQueues: 1}
	addrs, err := ifi.Addrs()
	if err != nil {
		return Interface{}, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
	}
	for _, ad := range addrs {
		if ipn, ok := ad.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap().Is4() {
				if !out.Src.IsValid() || ip.Unmap() == laddr {
					out.Src = ip.Unmap()
				}
			}
		}
	}
	if !out.Src.IsValid() {
		return Interface{}, fmt.Errorf("interface %s has no IPv4 address", ifi.Name)
	}
	if laddr.IsValid() && !laddr.IsUnspecified() && out.Src != laddr {
		return Interface{}, fmt.Errorf("interface %s has no address %v", ifi.Name, laddr)
	}
	if d, err := nexthop.Local(ifi.Name); err == nil && d.NumRxQueues > 0 {
		out.NumRxQueues = d.NumRxQueues
	}
	return out, nil
}

// interfaceFor finds the interface that owns a local address.
func interfaceFor(a netip.Addr) (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	for i := range ifs {
		addrs, err := ifs[i].Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == a {
					return &ifs[i], nil
				}
			}
		}
	}
	return nil, backend.Unsupported("no interface owns %v: name one with --iface", a)
}

// resolveTimeout bounds how long the first send to a new destination waits
// for the kernel to resolve its next hop.
const resolveTimeout = 3 * time.Second

// KernelResolver returns a next-hop lookup through the kernel's route and
// neighbour tables (starting ARP when the kernel has no entry) and the
// close of the netlink sockets it holds. Netlink sockets belong to the
// namespace they are opened in: open it on the thread that opens the
// stack, and lookups from any thread see that namespace.
func KernelResolver(ifname string) (func(netip.Addr) (frame.MAC, error), func() error, error) {
	res, err := nexthop.NewResolver()
	if err != nil {
		return nil, nil, err
	}
	resolve := func(dst netip.Addr) (frame.MAC, error) {
		ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
		defer cancel()
		hop, err := res.Resolve(ctx, ifname, dst)
		if err != nil {
			return frame.MAC{}, err
		}
		return frame.MAC(hop.DstMAC), nil
	}
	return resolve, res.Close, nil
}

// Ports reserves the ports of a stack's sockets.
type Ports interface {
	// Reserve takes laddr's port (a free one when it is 0) for a socket.
	Reserve(laddr netip.AddrPort) (Reservation, error)
}

// Reservation is one socket's hold on its port, and the kernel socket that
// carries its multicast memberships: any-source when source is the zero
// Addr, source-specific otherwise.
type Reservation interface {
	Port() uint16
	Join(group, source netip.Addr) error
	Leave(group, source netip.Addr) error
	Close() error
}

// KernelPorts reserves each port with a kernel UDP socket bound to it and
// kept for the socket's life: the kernel then neither hands the port to
// another program nor answers datagrams that the bypass missed with ICMP
// port unreachable, and the socket carries the IGMP memberships of joins
// and the ARP probes of next-hop resolution. Port 0 takes the port the
// kernel chooses.
type KernelPorts struct {
	Ifindex int // the interface memberships are joined on
}

type kernelPort struct {
	fd      int
	port    uint16
	ifindex int
}

// TCPPorts is implemented by Ports that reserve TCP ports too.
type TCPPorts interface {
	// ReserveTCP takes laddr's TCP port (a free one when it is 0).
	ReserveTCP(laddr netip.AddrPort) (Reservation, error)
}

// Reserve binds a kernel UDP socket to laddr.
func (k KernelPorts) Reserve(laddr netip.AddrPort) (Reservation, error) {
	return k.reserve(laddr, unix.SOCK_DGRAM, "udp")
}

// ReserveTCP binds a kernel TCP socket to laddr and leaves it unconnected
// and not listening: the kernel neither gives the port to another socket
// (an ephemeral connect included) nor accepts a connection on it, and the
// XDP program or adapter filter sends the port's segments to the stack.
// When the process dies the socket closes and the kernel has the port
// back.
func (k KernelPorts) ReserveTCP(laddr netip.AddrPort) (Reservation, error) {
	return k.reserve(laddr, unix.SOCK_STREAM, "tcp")
}

func (k KernelPorts) reserve(laddr netip.AddrPort, typ int, proto string) (Reservation, error) {
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reserve %s port: %w", proto, os.NewSyscallError("socket", err))
	}
	sa := &unix.SockaddrInet4{Port: int(laddr.Port()), Addr: laddr.Addr().Unmap().As4()}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("reserve %s port %v: %w", proto, laddr, os.NewSyscallError("bind", err))
	}
	p := &kernelPort{fd: fd, port: laddr.Port(), ifindex: k.Ifindex}
	if p.port == 0 {
		got, err := unix.Getsockname(fd)
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("reserve %s port: %w", proto, os.NewSyscallError("getsockname", err))
		}
		p.port = uint16(got.(*unix.SockaddrInet4).Port)
	}
	return p, nil
}

func (p *kernelPort) Port() uint16 { return p.port }

func (p *kernelPort) Join(group, source netip.Addr) error {
	return mcast.Membership(p.fd, true, p.ifindex, group, source)
}

func (p *kernelPort) Leave(group, source netip.Addr) error {
	err := mcast.Membership(p.fd, false, p.ifindex, group, source)
	if errors.Is(err, unix.EADDRNOTAVAIL) {
		return nil // not a member any more (the interface went away)
	}
	return err
}

func (p *kernelPort) Close() error {
	if err := unix.Close(p.fd); err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}
