package stack

import (
	"net/netip"
	"time"

	"github.com/lowlat/lowlat/bypass/internal/frame"
)

// neighbours maps IPv4 destinations to next-hop MACs for the transmit side.
// It is a small array scanned linearly, most recent first: a
// latency-critical service talks to few peers, and a scan of a few entries
// beats a map. Entries come from the kernel's route and neighbour tables
// and expire after neighTTL, so that a next hop whose MAC changed (a
// failover, a replaced host) is looked up again; a destination that could
// not be resolved is remembered for failTTL, so that a peer nobody can
// reach does not stall every send for the resolve timeout.
type neighbours struct {
	ents [neighSlots]neighEnt
	n    int

	failed     netip.Addr // the last destination that could not be resolved
	failedErr  error
	failedTill time.Time
}

type neighEnt struct {
	ip      [4]byte
	mac     frame.MAC
	expires time.Time
}

const neighSlots = 16

// Lifetimes of cache entries. Variables so that tests can shorten them.
var (
	// neighTTL is how long a resolved next hop is used before the kernel
	// is asked again; the kernel's own base_reachable_time is 30 s.
	neighTTL = 30 * time.Second
	// failTTL is how long a failed resolution is remembered.
	failTTL = time.Second
)

// lookup returns the cached MAC of a, if it has not expired at now.
func (nc *neighbours) lookup(a netip.Addr, now time.Time) (frame.MAC, bool) {
	ip := a.Unmap().As4()
	for i := 0; i < nc.n; i++ {
		if nc.ents[i].ip == ip {
			if now.After(nc.ents[i].expires) {
				return frame.MAC{}, false
			}
			return nc.ents[i].mac, true
		}
	}
	return frame.MAC{}, false
}

// recentFailure returns the error of a resolution of a that failed less
// than failTTL before now.
func (nc *neighbours) recentFailure(a netip.Addr, now time.Time) error {
	if nc.failedErr != nil && nc.failed == a && now.Before(nc.failedTill) {
		return nc.failedErr
	}
	return nil
}

func (nc *neighbours) fail(a netip.Addr, err error, now time.Time) {
	nc.failed, nc.failedErr, nc.failedTill = a, err, now.Add(failTTL)
}

// insert puts (a, mac) first, evicting the oldest entry when full.
func (nc *neighbours) insert(a netip.Addr, mac frame.MAC, now time.Time) {
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
	nc.ents[0] = neighEnt{ip: ip, mac: mac, expires: now.Add(neighTTL)}
	if nc.failed == a {
		nc.failedErr = nil
	}
}
