//go:build linux

package afxdp

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/internal/frame"
)

// Next-hop resolution runs once per destination (the result is cached by
// the writer), so it may take its time; it never runs per message.
const (
	resolveTimeout = 3 * time.Second
	resolvePoll    = 5 * time.Millisecond
)

// usable neighbour states: the kernel has a MAC it is willing to send to.
const usable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY |
	netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

// resolveNextHop returns the MAC that frames to dst must carry on ifi: the
// group's MAC for multicast, broadcast for the limited broadcast address,
// otherwise the kernel's neighbour entry for the route's next hop (the
// gateway, or dst itself when it is on-link). When the kernel has no entry
// it is made to resolve one: a zero-length datagram to the discard port
// from probe (an ordinary UDP socket in the same namespace) starts ARP, and
// the neighbour table is polled until the entry is usable or the timeout
// passes. h is a netlink handle opened in the connection's namespace.
func resolveNextHop(h *netlink.Handle, probe int, ifi *net.Interface, dst netip.Addr) (frame.MAC, error) {
	dst = dst.Unmap()
	if m, ok := frame.MulticastMAC(dst); ok {
		return m, nil
	}
	if dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return frame.Broadcast, nil
	}
	hop := dst
	routes, err := h.RouteGet(dst.AsSlice())
	if err != nil {
		return frame.MAC{}, fmt.Errorf("route to %v: %w", dst, err)
	}
	if len(routes) > 0 {
		r := routes[0]
		if r.LinkIndex != 0 && r.LinkIndex != ifi.Index {
			return frame.MAC{}, fmt.Errorf("route to %v: leaves through interface %d, not %s", dst, r.LinkIndex, ifi.Name)
		}
		if gw, ok := netip.AddrFromSlice(r.Gw.To4()); ok && r.Gw != nil {
			hop = gw
		}
		if src, ok := netip.AddrFromSlice(r.Src.To4()); ok && r.Src != nil && src == dst {
			return frame.MAC{}, fmt.Errorf("resolve %v: it is this host's own address", dst)
		}
	}
	deadline := time.Now().Add(resolveTimeout)
	for probed := false; ; {
		neighs, err := h.NeighList(ifi.Index, netlink.FAMILY_V4)
		if err != nil {
			return frame.MAC{}, fmt.Errorf("neighbours of %s: %w", ifi.Name, err)
		}
		for _, n := range neighs {
			a, ok := netip.AddrFromSlice(n.IP.To4())
			if ok && a == hop && len(n.HardwareAddr) == 6 && n.State&usable != 0 {
				return frame.MAC(n.HardwareAddr), nil
			}
		}
		if !probed {
			probed = true
			if err := unix.Sendto(probe, nil, unix.MSG_DONTWAIT, &unix.SockaddrInet4{Port: 9, Addr: hop.As4()}); err != nil {
				return frame.MAC{}, fmt.Errorf("resolve next hop %v on %s: start ARP: %w", hop, ifi.Name, err)
			}
		}
		if time.Now().After(deadline) {
			return frame.MAC{}, fmt.Errorf("resolve next hop %v (for %v) on %s: no ARP reply within %v", hop, dst, ifi.Name, resolveTimeout)
		}
		time.Sleep(resolvePoll)
	}
}
