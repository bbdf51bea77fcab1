//go:build linux && efvi && cgo

package efvi

import (
	"context"
	"net/netip"
	"time"

	"github.com/lowlat/lowlat/bypass/internal/frame"
	"github.com/lowlat/lowlat/bypass/internal/nexthop"
)

// arpWait bounds how long the first send to a new destination waits for
// the kernel to resolve its next hop.
const arpWait = 3 * time.Second

// kernelResolve returns the writer's next-hop lookup: the kernel's route and
// neighbour tables through res (opened in the connection's namespace), ARP
// started when the kernel has no entry. It runs once per destination; the
// writer caches the answer.
func kernelResolve(res *nexthop.Resolver, ifname string) func(netip.Addr) (frame.MAC, error) {
	return func(dst netip.Addr) (frame.MAC, error) {
		ctx, cancel := context.WithTimeout(context.Background(), arpWait)
		defer cancel()
		hop, err := res.Resolve(ctx, ifname, dst)
		if err != nil {
			return frame.MAC{}, err
		}
		return frame.MAC(hop.DstMAC), nil
	}
}
