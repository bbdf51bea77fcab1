//go:build linux

package efvi

import (
	"net/netip"

	"github.com/lowlat/lowlat/bypass/internal/frame"
)

// neighCache maps IPv4 destinations to next-hop MACs for the writer: a few
// entries scanned linearly, newest first, since a latency-critical service
// talks to few peers.
type neighCache struct {
	ents [16]struct {
		ip  [4]byte
		mac frame.MAC
	}
	n int
}

func (nc *neighCache) lookup(a netip.Addr) (frame.MAC, bool) {
	ip := a.Unmap().As4()
	for i := range nc.n {
		if nc.ents[i].ip == ip {
			return nc.ents[i].mac, true
		}
	}
	return frame.MAC{}, false
}

// insert puts (a, mac) first, dropping the oldest entry when full.
func (nc *neighCache) insert(a netip.Addr, mac frame.MAC) {
	ip := a.Unmap().As4()
	i := 0
	for i < nc.n && nc.ents[i].ip != ip {
		i++
	}
	if i == nc.n {
		if nc.n < len(nc.ents) {
			nc.n++
		}
		i = nc.n - 1
	}
	copy(nc.ents[1:i+1], nc.ents[:i])
	nc.ents[0].ip, nc.ents[0].mac = ip, mac
}
