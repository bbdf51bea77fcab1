//go:build linux && efvi && cgo

package efvi

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/frame"
	"github.com/lowlat/lowlat/bypass/internal/nexthop"
)

// Packet memory layout: bufSize-byte buffers, the receive ones first.
const (
	bufSize     = 2048
	rxBufs      = 512
	txBufs      = 256
	ctThreshold = 64 // CTPIO cut-through: bytes buffered before the adapter starts the frame
)

// charDev is the Onload driver's control device.
const charDev = "/dev/sfc_char"

func filterError(dst netip.AddrPort, err error) error {
	return fmt.Errorf("ef_vi_filter_add udp %v: filter refused (another VI or Onload stack may own it, or the adapter's filter table is full): %w", dst, err)
}

// driverPresent checks for the Onload driver before any ef_vi call.
func driverPresent() error {
	if _, err := os.Stat(charDev); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return backend.UnsupportedErr("no "+charDev+": the Onload driver (sfc_char) is not loaded (install Onload and run `onload_tool reload`)", err)
		}
		return backend.UnsupportedErr("open "+charDev, err)
	}
	return nil
}

func listen(laddr netip.AddrPort, o backend.Options) (_ backend.PacketConn, err error) {
	if err := driverPresent(); err != nil {
		return nil, err
	}
	if !laddr.Addr().Unmap().Is4() {
		return nil, backend.Unsupported("efvi carries IPv4 only; %v is not IPv4", laddr.Addr())
	}
	if laddr.Port() == 0 {
		return nil, errors.New("efvi needs an explicit port (ef_vi allocates none)")
	}
	ifi, src, err := pickInterface(o.Interface, laddr.Addr().Unmap())
	if err != nil {
		return nil, err
	}
	laddr = netip.AddrPortFrom(src, laddr.Port())

	// Every step registers its undo; on failure they run in reverse.
	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	d := newDev()
	undo = append(undo, func() error { d.free(); return nil })
	if err := d.open(); err != nil {
		return nil, backend.UnsupportedErr("ef_driver_open "+charDev, err)
	}
	undo = append(undo, d.closeDriver)
	if err := d.allocPD(ifi.Index); err != nil {
		return nil, backend.UnsupportedErr(fmt.Sprintf("ef_pd_alloc on %s: not an interface the Onload driver serves (an AMD Solarflare X2/X3 port)", ifi.Name), err)
	}
	undo = append(undo, d.freePD)

	var notes []string
	has := func(c int) bool { v, err := d.capability(c); return err == nil && v != 0 }
	useRef := has(capRXRef)
	ctpioOnly := has(capCTPIOOnly)
	minPage, _ := d.capability(capMinBuffer)

	size := (rxBufs + txBufs) * bufSize
	flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_POPULATE
	if minPage >= 2<<20 {
		flags |= unix.MAP_HUGETLB // the adapter needs huge pages
		size = (size + int(minPage) - 1) / int(minPage) * int(minPage)
	}
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		return nil, fmt.Errorf("packet memory of %d bytes: %w", size, os.NewSyscallError("mmap", err))
	}
	undo = append(undo, func() error { return unix.Munmap(mem) })
	unix.Madvise(mem, unix.MADV_DONTFORK) // a forked child must not share DMA pages
	if err := d.register(mem, bufSize); err != nil {
		return nil, fmt.Errorf("ef_memreg_alloc of %d bytes (RLIMIT_MEMLOCK or huge pages may be short): %w", size, err)
	}
	undo = append(undo, d.freeMemreg)

	// The receive VI: no TX ring. Some firmware refuses VIs without RX
	// event merging; retry with it, as eflatency does.
	rxq, err := allocVI(d, -1, 0, 0, mem, bufSize, 0)
	if errors.Is(err, unix.EPERM) {
		rxq, err = allocVI(d, -1, 0, viFlagEventMerge, mem, bufSize, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("ef_vi_alloc_from_pd (receive) on %s: %w", ifi.Name, err)
	}
	rxq.rxRef = useRef
	rxqDone := false
	defer func() {
		if err != nil && !rxqDone {
			rxq.close()
		}
	}()
	if !useRef && rxq.rxBufferLen() > bufSize {
		return nil, fmt.Errorf("%s: receive buffers of %d bytes needed, this backend posts %d", ifi.Name, rxq.rxBufferLen(), bufSize)
	}

	// The transmit VI: CTPIO when the adapter has it, else DMA.
	var txq *ciQueue
	if has(capCTPIO) || ctpioOnly {
		txq, err = allocVI(d, 0, -1, viFlagCTPIO, mem, bufSize, ctThreshold)
		if err != nil {
			if ctpioOnly {
				return nil, fmt.Errorf("ef_vi_alloc_from_pd (transmit, CTPIO, the only TX mode of %s): %w", ifi.Name, err)
			}
			notes = append(notes, fmt.Sprintf("CTPIO refused (%v): transmitting by DMA", err))
		}
	}
	if txq == nil {
		if txq, err = allocVI(d, 0, -1, 0, mem, bufSize, 0); err != nil {
			return nil, fmt.Errorf("ef_vi_alloc_from_pd (transmit) on %s: %w", ifi.Name, err)
		}
	}
	defer func() {
		if err != nil && !rxqDone {
			txq.close()
		}
	}()
	mode := "dma"
	if txq.q.ctpio != 0 {
		mode = "ctpio"
	}

	if err := rxq.addFilter(laddr); err != nil {
		return nil, err
	}

	// A kernel UDP socket on the same port reserves it, carries the IGMP
	// memberships of JoinGroup and starts ARP for the resolver.
	ks, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	undo = append(undo, func() error { return unix.Close(ks) })
	if err := unix.Bind(ks, &unix.SockaddrInet4{Port: int(laddr.Port()), Addr: laddr.Addr().As4()}); err != nil {
		return nil, fmt.Errorf("reserve udp port %v: %w", laddr, os.NewSyscallError("bind", err))
	}
	res, err := nexthop.NewResolver()
	if err != nil {
		return nil, err
	}
	undo = append(undo, res.Close)

	mac, err := rxq.mac()
	if err != nil {
		return nil, fmt.Errorf("ef_vi_get_mac: %w", err)
	}
	var rxIDs []uint32
	if !useRef {
		for i := range min(rxBufs, rxq.rxCapacity()) {
			rxIDs = append(rxIDs, uint32(i))
		}
	}
	nTx := txBufs
	for nTx > txq.txCapacity() && nTx > 1 {
		nTx /= 2
	}
	txIDs := make([]uint32, nTx)
	for i := range txIDs {
		txIDs[i] = uint32(rxBufs + i)
	}
	if o.Wait == backend.WaitBlock {
		notes = append(notes, "efvi always spins: blocking waits are not implemented")
	}
	if o.Queue > 0 {
		notes = append(notes, "efvi ignores the queue: the filter steers the flow to the VI's own queue")
	}
	arch := "X2 (posted buffers)"
	if useRef {
		arch = "X3 (RX_REF)"
	}
	notes = append(notes, fmt.Sprintf("receive %s, transmit %s", arch, mode))
	join := func(g netip.Addr) error {
		mreq := &unix.IPMreqn{Multiaddr: g.As4(), Ifindex: int32(ifi.Index)}
		return os.NewSyscallError("setsockopt IP_ADD_MEMBERSHIP", unix.SetsockoptIPMreqn(ks, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq))
	}
	c, err := newConn(connConfig{
		rxq: rxq, txq: txq, rxBufs: rxIDs, mem: mem, bufSize: bufSize, txBufs: txIDs,
		mac: frame.MAC(mac), laddr: laddr, src: src, mtu: ifi.MTU, batch: o.Batch(),
		timeout: o.ReadTimeout,
		info: backend.Info{
			Backend: "efvi", Wait: backend.WaitSpin, Interface: ifi.Name, Queue: -1,
			Notes: notes, Skipped: o.Skipped,
		},
		undo: undo, join: join, resolve: kernelResolve(res, ifi.Name),
	})
	if err != nil {
		return nil, err
	}
	rxqDone = true
	return c, nil
}

// pickInterface returns the named interface (or the one that owns a) and
// the source address to use on it.
func pickInterface(name string, a netip.Addr) (*net.Interface, netip.Addr, error) {
	var ifi *net.Interface
	if name != "" {
		i, err := net.InterfaceByName(name)
		if err != nil {
			return nil, netip.Addr{}, fmt.Errorf("interface %q: %w", name, err)
		}
		ifi = i
	} else {
		if a.IsUnspecified() {
			return nil, netip.Addr{}, backend.Unsupported("no interface named and the address %v is unspecified: name one with --iface", a)
		}
		ifs, err := net.Interfaces()
		if err != nil {
			return nil, netip.Addr{}, fmt.Errorf("list interfaces: %w", err)
		}
		for i := range ifs {
			if v4, _ := firstIPv4(&ifs[i], a); v4 == a {
				ifi = &ifs[i]
				break
			}
		}
		if ifi == nil {
			return nil, netip.Addr{}, backend.Unsupported("no interface owns %v: name one with --iface", a)
		}
	}
	if ifi.Flags&net.FlagUp == 0 {
		return nil, netip.Addr{}, fmt.Errorf("interface %s is down: bring it up with `ip link set dev %s up`", ifi.Name, ifi.Name)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, netip.Addr{}, backend.Unsupported("interface %s is not Ethernet", ifi.Name)
	}
	src, err := firstIPv4(ifi, a)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	return ifi, src, nil
}

// firstIPv4 returns want when ifi has it, else ifi's first IPv4 address
// when want is unspecified.
func firstIPv4(ifi *net.Interface, want netip.Addr) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
	}
	var first netip.Addr
	for _, ad := range addrs {
		ipn, ok := ad.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok || !ip.Unmap().Is4() {
			continue
		}
		ip = ip.Unmap()
		if ip == want {
			return ip, nil
		}
		if !first.IsValid() {
			first = ip
		}
	}
	if want.IsUnspecified() && first.IsValid() {
		return first, nil
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address %v", ifi.Name, want)
}
