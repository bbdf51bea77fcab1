//go:build linux

package efvi

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/internal/frame"
)

// kernelHop finds next-hop MACs through the kernel's route and neighbour
// tables (same as `ip route get DST` and `ip neigh show dev IF`). It runs
// once per destination; the writer caches the answer.
type kernelHop struct {
	nl    *netlink.Handle
	ifi   *net.Interface
	probe int // a UDP socket on the interface, to make the kernel ARP
}

// Neighbour states in which the kernel holds a MAC it sends to.
const neighUsable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY |
	netlink.NUD_PROBE | netlink.NUD_PERMANENT | netlink.NUD_NOARP

const (
	arpWait = 3 * time.Second
	arpPoll = 5 * time.Millisecond
)

func (k *kernelHop) resolve(dst netip.Addr) (frame.MAC, error) {
	dst = dst.Unmap()
	if m, ok := frame.MulticastMAC(dst); ok {
		return m, nil
	}
	if dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return frame.Broadcast, nil
	}
	gw := dst
	routes, err := k.nl.RouteGet(dst.AsSlice())
	if err != nil {
		return frame.MAC{}, fmt.Errorf("route to %v: %w", dst, err)
	}
	if len(routes) > 0 {
		r := routes[0]
		if r.LinkIndex != 0 && r.LinkIndex != k.ifi.Index {
			return frame.MAC{}, fmt.Errorf("route to %v leaves through interface %d, not %s", dst, r.LinkIndex, k.ifi.Name)
		}
		if a, ok := netip.AddrFromSlice(r.Gw.To4()); ok && r.Gw != nil {
			gw = a
		}
	}
	deadline := time.Now().Add(arpWait)
	for asked := false; ; {
		neighs, err := k.nl.NeighList(k.ifi.Index, netlink.FAMILY_V4)
		if err != nil {
			return frame.MAC{}, fmt.Errorf("neighbours on %s: %w", k.ifi.Name, err)
		}
		for _, n := range neighs {
			if a, ok := netip.AddrFromSlice(n.IP.To4()); ok && a == gw && n.State&neighUsable != 0 {
				if m, ok := frame.MACFrom(n.HardwareAddr); ok {
					return m, nil
				}
			}
		}
		if !asked {
			// A datagram to the discard port makes the kernel ARP for gw.
			asked = true
			if err := unix.Sendto(k.probe, nil, unix.MSG_DONTWAIT, &unix.SockaddrInet4{Port: 9, Addr: gw.As4()}); err != nil {
				return frame.MAC{}, fmt.Errorf("resolve %v on %s: %w", gw, k.ifi.Name, err)
			}
		}
		if time.Now().After(deadline) {
			return frame.MAC{}, fmt.Errorf("resolve next hop %v (for %v) on %s: no ARP reply within %v", gw, dst, k.ifi.Name, arpWait)
		}
		time.Sleep(arpPoll)
	}
}
