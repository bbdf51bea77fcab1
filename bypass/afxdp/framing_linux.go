//go:build linux

package afxdp

import (
	"fmt"
	"net/netip"

	"github.com/lowlat/lowlat/bypass/internal/frame"
)

// virtualLink lists drivers whose links carry frames between kernels in
// memory, with no NIC to complete an offloaded checksum and no wire to
// corrupt a frame: a peer with TX checksum offload on (the default) sends
// UDP datagrams whose checksum field holds only the pseudo-header sum.
var virtualLink = map[string]bool{"veth": true}

// initFraming prepares the receive filter and the transmit template.
func (c *Conn) initFraming(mtu int, partialChecksums bool) error {
	f, err := frame.NewFilter(frame.MAC(c.mac), c.laddr)
	if err != nil {
		return fmt.Errorf("receive filter: %w", err)
	}
	f.AcceptPartialChecksum(partialChecksums)
	c.rx.Init(f)
	c.tx.tmpl, err = frame.NewTemplate(frame.Flow{
		SrcMAC:       frame.MAC(c.mac),
		Src:          netip.AddrPortFrom(c.src, c.laddr.Port()),
		Dst:          netip.AddrPortFrom(c.src, c.laddr.Port()), // replaced per send
		DontFragment: true,
	})
	if err != nil {
		return fmt.Errorf("transmit template: %w", err)
	}
	// A frame must fit both the UMEM chunk and the interface's MTU.
	c.tx.maxPayload = min(int(c.x.frameSize)-frame.HeaderLen, mtu-frame.IPv4HeaderLen-frame.UDPHeaderLen)
	return nil
}

// build writes a frame for payload to dst into a UMEM chunk and returns its
// length. The caller checked the payload size and the address family.
func (c *Conn) build(chunk, payload []byte, dst netip.AddrPort, mac frame.MAC) int {
	c.tx.tmpl.SetDst(mac, dst)
	n, _ := c.tx.tmpl.Build(chunk, payload)
	return n
}
