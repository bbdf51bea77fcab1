//go:build linux

package afxdp

import (
	"net/netip"

	"github.com/lowlat/lowlat/bypass/internal/frame"
)

// neighCache maps IPv4 destinations to next-hop MACs for the writer. It is
// a small array scanned linearly, most recent first: a latency-critical
// service talks to few peers, and a scan of a few entries beats a map.
// Entries come from the kernel's neighbour table (resolveNextHop) or are
// learned from received frames.
type neighCache struct {
	ents [neighSlots]neighEnt
	n    int
}

type neighEnt struct {
	ip  [4]byte
	mac frame.MAC
}

const neighSlots = 16

func (nc *neighCache) lookup(a netip.Addr) (frame.MAC, bool) {
	ip := a.Unmap().As4()
	for i := 0; i < nc.n; i++ {
		if nc.ents[i].ip == ip {
			return nc.ents[i].mac, true
		}
	}
	return frame.MAC{}, false
}

// insert puts (a, mac) first, evicting the oldest entry when full.
func (nc *neighCache) insert(a netip.Addr, mac frame.MAC) {
	ip := a.Unmap().As4()
	i := 0
	for ; i < nc.n; i++ {
		if nc.ents[i].ip == ip {
			break
		}
	}
	if i == nc.n {
		if nc.n < neighSlots {
			nc.n++
		}
		i = nc.n - 1
	}
	copy(nc.ents[1:i+1], nc.ents[:i])
	nc.ents[0] = neighEnt{ip: ip, mac: mac}
}
