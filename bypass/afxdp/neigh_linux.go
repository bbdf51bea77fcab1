//go:build linux

package afxdp

import (
	"net/netip"
	"time"

	"github.com/lowlat/lowlat/bypass/internal/frame"
)

// neighCache maps IPv4 destinations to next-hop MACs for the writer. It is
// a small array scanned linearly, most recent first: a latency-critical
// service talks to few peers, and a scan of a few entries beats a map.
// Entries come from the kernel's route and neighbour tables; a destination
// that could not be resolved is remembered for a second (failed), so that a
// peer nobody can reach does not stall every send for the resolve timeout.
type neighCache struct {
	ents [neighSlots]neighEnt
	n    int

	failed     netip.Addr // the last destination that could not be resolved
	failedErr  error
	failedTill time.Time
}

// failTTL is how long a failed resolution is remembered.
const failTTL = time.Second

// recentFailure returns the error of a resolution of a that failed less
// than failTTL ago.
func (nc *neighCache) recentFailure(a netip.Addr) error {
	if nc.failedErr != nil && nc.failed == a && time.Now().Before(nc.failedTill) {
		return nc.failedErr
	}
	return nil
}

func (nc *neighCache) fail(a netip.Addr, err error) {
	nc.failed, nc.failedErr, nc.failedTill = a, err, time.Now().Add(failTTL)
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
