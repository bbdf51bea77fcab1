//go:build linux

package nexthop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Resolver looks up interfaces and next hops in the network namespace it
// was created in, whichever thread later calls it: a network namespace is a
// property of a thread, and a netlink socket stays in the namespace it was
// opened in. A backend makes one while it sets up (inside the namespace it
// serves) and uses it from its writer goroutine. A Resolver is safe for use
// by one goroutine at a time.
type Resolver struct {
	h     *netlink.Handle
	probe int // UDP socket in the same namespace, for the datagram that starts ARP
}

// NewResolver opens a netlink socket and a UDP socket in the calling
// thread's network namespace.
func NewResolver() (*Resolver, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink route socket: %w", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		h.Close()
		return nil, os.NewSyscallError("socket", err)
	}
	return &Resolver{h: h, probe: fd}, nil
}

// Close releases the resolver's sockets.
func (r *Resolver) Close() error {
	r.h.Close()
	return unix.Close(r.probe)
}

// with runs fn on a resolver opened for this one call.
func with[T any](fn func(*Resolver) (T, error)) (T, error) {
	r, err := NewResolver()
	if err != nil {
		var zero T
		return zero, err
	}
	defer r.Close()
	return fn(r)
}

// Local is Resolver.Local in the calling thread's namespace.
func Local(ifname string) (Interface, error) {
	return with(func(r *Resolver) (Interface, error) { return r.Local(ifname) })
}

// InterfaceFor is Resolver.InterfaceFor in the calling thread's namespace.
func InterfaceFor(addr netip.Addr) (string, error) {
	return with(func(r *Resolver) (string, error) { return r.InterfaceFor(addr) })
}

// Resolve is Resolver.Resolve in the calling thread's namespace.
func Resolve(ctx context.Context, ifname string, dst netip.Addr) (Hop, error) {
	return with(func(r *Resolver) (Hop, error) { return r.Resolve(ctx, ifname, dst) })
}

// Local describes the interface named ifname, as `ip -d addr show dev
// IFNAME` would (RTM_GETLINK, RTM_GETADDR). A missing interface gives an
// error wrapping ErrNotFound. An interface that is down gives an error
// wrapping ErrDown, together with its filled-in description.
func (r *Resolver) Local(ifname string) (Interface, error) {
	link, err := r.h.LinkByName(ifname)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return Interface{}, fmt.Errorf("interface %s: %w", ifname, ErrNotFound)
		}
		return Interface{}, fmt.Errorf("interface %s: netlink RTM_GETLINK: %w", ifname, err)
	}
	return r.describe(link)
}

func (r *Resolver) describe(link netlink.Link) (Interface, error) {
	a := link.Attrs()
	ifc := Interface{
		Name:        a.Name,
		Index:       a.Index,
		MAC:         a.HardwareAddr,
		MTU:         a.MTU,
		NumRxQueues: a.NumRxQueues,
		NumTxQueues: a.NumTxQueues,
	}
	addrs, err := r.h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return ifc, fmt.Errorf("interface %s: netlink RTM_GETADDR: %w", a.Name, err)
	}
	for _, ad := range addrs {
		if ad.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(ad.IP.To4())
		if !ok {
			continue
		}
		ones, _ := ad.Mask.Size()
		ifc.IPv4 = append(ifc.IPv4, netip.PrefixFrom(ip, ones))
	}

	adminUp := a.Flags&net.FlagUp != 0
	operUp := a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown
	ifc.Up = adminUp && operUp
	switch {
	case !adminUp:
		return ifc, fmt.Errorf("interface %s: %w (administratively; `ip link set %s up` brings it up)", a.Name, ErrDown, a.Name)
	case !operUp:
		return ifc, fmt.Errorf("interface %s: %w (operational state %s: no carrier, or its veth peer is down)", a.Name, ErrDown, a.OperState)
	}
	return ifc, nil
}

// InterfaceFor returns the name of the interface that carries the local IPv4
// address addr, as `ip -o addr show to ADDR` would (RTM_GETADDR).
func (r *Resolver) InterfaceFor(addr netip.Addr) (string, error) {
	addr = addr.Unmap()
	if !addr.Is4() {
		return "", fmt.Errorf("address %s: %w", addr, ErrNotIPv4)
	}
	if addr.IsUnspecified() {
		return "", fmt.Errorf("address %s is on every interface: name the interface", addr)
	}
	addrs, err := r.h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", fmt.Errorf("address %s: netlink RTM_GETADDR: %w", addr, err)
	}
	for _, ad := range addrs {
		if ad.IPNet == nil {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ad.IP.To4()); ok && ip == addr {
			link, err := r.h.LinkByIndex(ad.LinkIndex)
			if err != nil {
				return "", fmt.Errorf("address %s: interface index %d: netlink RTM_GETLINK: %w", addr, ad.LinkIndex, err)
			}
			return link.Attrs().Name, nil
		}
	}
	return "", fmt.Errorf("address %s: %w on any interface", addr, ErrNotFound)
}

// Resolve finds the next hop for the IPv4 destination dst through interface
// ifname. When ctx has no deadline, Resolve waits at most DefaultTimeout for
// the neighbour.
//
// Multicast destinations and 255.255.255.255 map to their Ethernet
// addresses at once. Otherwise it asks the kernel `ip route get DST` (an
// address of this host, on any interface, is an error wrapping ErrLocal),
// then `ip route get fibmatch DST oif IFNAME` (a route must exist that sends
// dst through ifname, else ErrNoRoute: without fibmatch the kernel would
// assume any destination on-link), then `ip route get DST oif IFNAME` for the
// route type, gateway and source address. A subnet broadcast address needs
// no ARP either.
//
// For a unicast route it reads the neighbour entry of the gateway, or of dst
// when the route has none. While that entry is missing or unresolved it
// sends, once a second, a one-byte UDP datagram to port 9 (discard) of the
// neighbour from a socket bound to ifname (SO_BINDTODEVICE, unprivileged
// since Linux 5.7), which makes the kernel send ARP requests, and polls the
// table until the entry is reachable, stale, delayed, probing or permanent.
// The datagram reaches the neighbour once it is resolved; the neighbour
// drops it or answers with an ICMP port unreachable. A timeout gives an error
// that names the address and interface and wraps ErrUnresolved and the
// context's error.
func (r *Resolver) Resolve(ctx context.Context, ifname string, dst netip.Addr) (Hop, error) {
	dst = dst.Unmap()
	if !dst.Is4() {
		return Hop{}, fmt.Errorf("resolve %s on %s: %w", dst, ifname, ErrNotIPv4)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	ifc, err := r.Local(ifname)
	if err != nil {
		return Hop{}, err
	}
	if len(ifc.MAC) != 6 {
		return Hop{}, fmt.Errorf("resolve %s on %s: %w", dst, ifname, ErrNoEthernet)
	}
	hop := Hop{Iface: ifc}
	if len(ifc.IPv4) > 0 {
		hop.SrcIP = ifc.IPv4[0].Addr()
	}
	if dst.IsUnspecified() {
		return Hop{}, fmt.Errorf("resolve %s on %s: not a destination", dst, ifname)
	}
	if dst.IsMulticast() || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		if rt, err := r.routeGet(dst, ifc.Index, false); err == nil && rt.Src != nil {
			hop.SrcIP = addrOf(rt.Src)
		}
		hop.DstMAC = broadcastMAC
		if dst.IsMulticast() {
			hop.DstMAC = multicastMAC(dst)
		}
		return hop, nil
	}

	// Without oif first: an address of this host is local whichever
	// interface carries it.
	plain, plainErr := r.routeGet(dst, 0, false)
	if plainErr == nil && plain.Type == unix.RTN_LOCAL {
		return Hop{}, fmt.Errorf("resolve %s on %s: %w", dst, ifname, ErrLocal)
	}
	if _, err := r.routeGet(dst, ifc.Index, true); err != nil {
		via := ""
		if plainErr == nil {
			if l, err := r.h.LinkByIndex(plain.LinkIndex); err == nil {
				via = " (the kernel routes it via " + l.Attrs().Name + ")"
			}
		}
		return Hop{}, fmt.Errorf("resolve %s on %s: %w%s: %w", dst, ifname, ErrNoRoute, via, err)
	}
	rt, err := r.routeGet(dst, ifc.Index, false)
	if err != nil {
		return Hop{}, fmt.Errorf("resolve %s on %s: %w", dst, ifname, err)
	}
	switch rt.Type {
	case unix.RTN_LOCAL:
		return Hop{}, fmt.Errorf("resolve %s on %s: %w", dst, ifname, ErrLocal)
	case unix.RTN_BROADCAST:
		hop.DstMAC = broadcastMAC
		if rt.Src != nil {
			hop.SrcIP = addrOf(rt.Src)
		}
		return hop, nil
	case unix.RTN_UNICAST:
	default:
		return Hop{}, fmt.Errorf("resolve %s on %s: %w (route type %d)", dst, ifname, ErrNoRoute, rt.Type)
	}
	if rt.LinkIndex != ifc.Index {
		return Hop{}, fmt.Errorf("resolve %s on %s: %w (route leaves through interface index %d)", dst, ifname, ErrNoRoute, rt.LinkIndex)
	}
	if rt.Src != nil {
		hop.SrcIP = addrOf(rt.Src)
	}
	target := dst
	what := dst.String()
	if rt.Gw != nil {
		hop.Gateway = addrOf(rt.Gw)
		target = hop.Gateway
		what = "gateway " + target.String() + " (for " + dst.String() + ")"
	}
	mac, err := r.neighbour(ctx, ifc, target)
	if err != nil {
		return Hop{}, fmt.Errorf("resolve %s on %s: %w", what, ifname, err)
	}
	hop.DstMAC = mac
	return hop, nil
}

// routeGet is `ip route get [fibmatch] DST [oif IF]` (RTM_GETROUTE).
func (r *Resolver) routeGet(dst netip.Addr, oif int, fibMatch bool) (netlink.Route, error) {
	op := "netlink RTM_GETROUTE"
	if fibMatch {
		op += " (fibmatch)"
	}
	routes, err := r.h.RouteGetWithOptions(net.IP(dst.AsSlice()), &netlink.RouteGetOptions{
		OifIndex: oif,
		FIBMatch: fibMatch,
	})
	if err != nil {
		return netlink.Route{}, fmt.Errorf("%s: %w", op, err)
	}
	if len(routes) == 0 {
		return netlink.Route{}, fmt.Errorf("%s: empty answer", op)
	}
	return routes[0], nil
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip.To4())
	return a
}

// Neighbour states whose entry holds a usable link-layer address.
const usableStates = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY |
	netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

// How often neighbour waits poll the table (doubling up to the maximum) and
// how often they resend the datagram that starts ARP.
const (
	pollFirst     = time.Millisecond
	pollMax       = 50 * time.Millisecond
	probeInterval = time.Second
)

// neighbour returns the MAC of target on ifc, making the kernel resolve it
// when the table has no usable entry.
func (r *Resolver) neighbour(ctx context.Context, ifc Interface, target netip.Addr) (net.HardwareAddr, error) {
	start := time.Now()
	var lastProbe time.Time
	var probeErr error
	state := -1 // no entry
	delay := pollFirst
	for {
		n, found, err := r.lookupNeigh(ifc.Index, target)
		if err != nil {
			return nil, err
		}
		if found {
			state = n.State
			if n.State&usableStates != 0 && len(n.HardwareAddr) == 6 {
				return n.HardwareAddr, nil
			}
		}
		if time.Since(lastProbe) >= probeInterval {
			lastProbe = time.Now()
			probeErr = r.sendProbe(ifc.Name, target)
		}

		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			msg := fmt.Sprintf("%v: no ARP reply after %v (neighbour state %s)", ErrUnresolved, time.Since(start).Round(time.Millisecond), stateName(state))
			if probeErr != nil {
				msg += "; the datagram that starts ARP failed: " + probeErr.Error()
			}
			return nil, &unresolvedError{msg: msg, cause: ctx.Err(), probe: probeErr}
		case <-t.C:
		}
		delay = min(2*delay, pollMax)
	}
}

// unresolvedError matches ErrUnresolved, the context's error and the probe's
// error with errors.Is.
type unresolvedError struct {
	msg   string
	cause error
	probe error
}

func (e *unresolvedError) Error() string { return e.msg }

func (e *unresolvedError) Unwrap() []error {
	errs := []error{ErrUnresolved, e.cause}
	if e.probe != nil {
		errs = append(errs, e.probe)
	}
	return errs
}

// lookupNeigh is `ip neigh show dev IF` (RTM_GETNEIGH) filtered to target.
func (r *Resolver) lookupNeigh(ifindex int, target netip.Addr) (netlink.Neigh, bool, error) {
	neighs, err := r.h.NeighList(ifindex, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return netlink.Neigh{}, false, fmt.Errorf("netlink RTM_GETNEIGH: %w", err)
	}
	for _, n := range neighs {
		if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok && ip == target {
			return n, true, nil
		}
	}
	return netlink.Neigh{}, false, nil
}

// sendProbe sends one byte to UDP port 9 of target from a socket bound to
// ifname, which makes the kernel resolve target's MAC; the shell equivalent
// is `echo -n x | socat - UDP4-SENDTO:TARGET:9,so-bindtodevice=IFNAME`.
func (r *Resolver) sendProbe(ifname string, target netip.Addr) error {
	fd := r.probe
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
		return os.NewSyscallError("setsockopt SO_BINDTODEVICE", err)
	}
	// A queued datagram waiting for ARP counts as sent; EAGAIN (the
	// neighbour's queue is full) still means ARP is under way.
	err := unix.Sendto(fd, []byte{'x'}, 0, &unix.SockaddrInet4{Port: 9, Addr: target.As4()})
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		return os.NewSyscallError("sendto", err)
	}
	return nil
}

func stateName(s int) string {
	if s < 0 {
		return "none: no entry"
	}
	switch s {
	case netlink.NUD_NONE:
		return "NONE"
	case netlink.NUD_INCOMPLETE:
		return "INCOMPLETE"
	case netlink.NUD_FAILED:
		return "FAILED"
	case netlink.NUD_REACHABLE:
		return "REACHABLE"
	case netlink.NUD_STALE:
		return "STALE"
	case netlink.NUD_DELAY:
		return "DELAY"
	case netlink.NUD_PROBE:
		return "PROBE"
	case netlink.NUD_PERMANENT:
		return "PERMANENT"
	case netlink.NUD_NOARP:
		return "NOARP"
	}
	return fmt.Sprintf("%#x", s)
}
