//go:build linux && efvi && cgo

package efvi

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/frame"
	"github.com/lowlat/lowlat/bypass/internal/stack"
	"github.com/lowlat/lowlat/bypass/internal/undo"
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

func filterError(dst netip.AddrPort, proto uint8, err error) error {
	return fmt.Errorf("ef_vi_filter_add %s %v: filter refused (another VI or Onload stack may own it, or the adapter's filter table is full): %w", protoName(proto), dst, err)
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

// stacks holds this process's efvi stacks: one per interface and network
// namespace, shared by every socket on that interface.
var stacks stack.Registry

func listen(laddr netip.AddrPort, o backend.Options) (backend.PacketConn, error) {
	st, err := acquire(laddr.Addr(), o)
	if err != nil {
		return nil, err
	}
	defer st.Release() // the socket holds its own reference
	return st.Listen(laddr, o)
}

func dialTCP(ctx context.Context, raddr netip.AddrPort, o backend.Options) (backend.Stream, error) {
	return stack.Dial(ctx, func(a netip.Addr) (*stack.Stack, error) { return acquire(a, o) }, raddr, o)
}

func listenTCP(laddr netip.AddrPort, o backend.Options) (backend.StreamListener, error) {
	return stack.Listen(func(a netip.Addr) (*stack.Stack, error) { return acquire(a, o) }, laddr, o)
}

func openStack(o backend.Options) (backend.Stack, error) {
	if o.Interface == "" {
		return nil, errors.New("name the interface")
	}
	st, err := acquire(netip.IPv4Unspecified(), o)
	if err != nil {
		return nil, err
	}
	return stack.Handle(st), nil
}

// acquire finds or opens the stack for the interface o names or that owns
// addr, in the calling thread's network namespace.
func acquire(addr netip.Addr, o backend.Options) (*stack.Stack, error) {
	if err := driverPresent(); err != nil {
		return nil, err
	}
	if a := addr.Unmap(); !a.Is4() {
		return nil, backend.Unsupported("efvi carries IPv4 only; %v is not IPv4", addr)
	}
	ifc, err := stack.FindInterface("ef_vi", o.Interface, addr)
	if err != nil {
		return nil, err
	}
	var ns unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), &ns); err != nil {
		return nil, fmt.Errorf("network namespace: %w", os.NewSyscallError("stat", err))
	}
	key := fmt.Sprintf("efvi ns %d ifindex %d", ns.Ino, ifc.Index)
	st, _, err := stacks.Acquire(key, func() (*stack.Stack, error) { return open(ifc, o) })
	return st, err
}

// open allocates the driver handle, protection domain, packet memory and
// the two VIs, and makes a stack over them. Every step registers its undo.
func open(ifc stack.Interface, o backend.Options) (_ *stack.Stack, err error) {
	var u undo.Stack
	defer u.RunIfFailed(&err)
	d := newDev()
	u.AddFunc(d.free)
	if err := d.open(); err != nil {
		return nil, backend.UnsupportedErr("ef_driver_open "+charDev, err)
	}
	u.Add(d.closeDriver)
	if err := d.allocPD(ifc.Index); err != nil {
		return nil, backend.UnsupportedErr(fmt.Sprintf("ef_pd_alloc on %s: not an interface the Onload driver serves (an AMD Solarflare X2/X3 port)", ifc.Name), err)
	}
	u.Add(d.freePD)

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
	u.Add(func() error { return unix.Munmap(mem) })
	unix.Madvise(mem, unix.MADV_DONTFORK) // a forked child must not share DMA pages
	if err := d.register(mem, bufSize); err != nil {
		return nil, fmt.Errorf("ef_memreg_alloc of %d bytes (RLIMIT_MEMLOCK or huge pages may be short): %w", size, err)
	}
	u.Add(d.freeMemreg)

	// The receive VI: no TX ring. Some firmware refuses VIs without RX
	// event merging; each allocation retries with it, as eflatency does.
	// With receive stamps asked for, the VI stamps in hardware where the
	// adapter can (EF_VI_RX_TIMESTAMPS); else the stack's clock reads do.
	var rxFlags uint64
	if o.Timestamps != backend.TimestampsOff {
		rxFlags = viFlagRxTimestamps
	}
	alloc := func(flags uint64) (*ciQueue, error) {
		q, err := allocVI(d, -1, 0, flags, mem, bufSize, 0)
		if errors.Is(err, unix.EPERM) {
			q, err = allocVI(d, -1, 0, flags|viFlagEventMerge, mem, bufSize, 0)
		}
		return q, err
	}
	rxq, err := alloc(rxFlags)
	if err != nil && rxFlags != 0 {
		notes = append(notes, fmt.Sprintf("hardware receive stamps refused (%v): stamped in user space", err))
		rxq, err = alloc(0)
	}
	if err != nil {
		return nil, fmt.Errorf("ef_vi_alloc_from_pd (receive) on %s: %w", ifc.Name, err)
	}
	rxq.rxRef = useRef
	u.Add(rxq.close)
	if !useRef && rxq.rxBufferLen() > bufSize {
		return nil, fmt.Errorf("%s: receive buffers of %d bytes needed, this backend posts %d", ifc.Name, rxq.rxBufferLen(), bufSize)
	}

	// The transmit VI: CTPIO when the adapter has it, else DMA.
	var txq *ciQueue
	if has(capCTPIO) || ctpioOnly {
		txq, err = allocVI(d, 0, -1, viFlagCTPIO, mem, bufSize, ctThreshold)
		if err != nil {
			if ctpioOnly {
				return nil, fmt.Errorf("ef_vi_alloc_from_pd (transmit, CTPIO, the only TX mode of %s): %w", ifc.Name, err)
			}
			notes = append(notes, fmt.Sprintf("CTPIO refused (%v): transmitting by DMA", err))
		}
	}
	if txq == nil {
		if txq, err = allocVI(d, 0, -1, 0, mem, bufSize, 0); err != nil {
			return nil, fmt.Errorf("ef_vi_alloc_from_pd (transmit) on %s: %w", ifc.Name, err)
		}
	}
	u.Add(txq.close)
	mode := "dma"
	if txq.q.ctpio != 0 {
		mode = "ctpio"
	}
	mac, err := rxq.mac()
	if err != nil {
		return nil, fmt.Errorf("ef_vi_get_mac: %w", err)
	}
	ifc.MAC = frame.MAC(mac)

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
	if o.Queue > 0 {
		notes = append(notes, "efvi ignores the queue: the filters steer the flows to the VI's own queue")
	}
	arch := "X2 (posted buffers)"
	if useRef {
		arch = "X3 (RX_REF)"
	}
	notes = append(notes, fmt.Sprintf("receive %s, transmit %s", arch, mode))
	drv, err := newDriver(driverConfig{
		rxq: rxq, txq: txq, rxBufs: rxIDs, mem: mem, bufSize: bufSize, txBufs: txIDs,
		batch: o.Batch(),
	})
	if err != nil {
		return nil, err
	}
	drv.undo = u.Take() // the driver's Close frees the VIs, then the rest
	return stack.New(stack.Config{
		Backend: "efvi", Driver: drv, Iface: ifc, BufSize: bufSize, Batch: o.Batch(),
		Info: backend.Info{Backend: "efvi", Interface: ifc.Name, Queue: -1, Notes: notes},
	})
}
