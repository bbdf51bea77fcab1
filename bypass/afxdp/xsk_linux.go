//go:build linux

package afxdp

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/internal/priv"
)

// xskConfig is everything needed to open one AF_XDP socket, already
// validated and defaulted.
type xskConfig struct {
	ifindex    int
	queue      int
	numFrames  uint32
	frameSize  uint32
	ringSize   uint32
	bind       string // "auto", "zerocopy" or "copy"
	needWakeup bool
	generic    bool // the steering program runs in generic (skb) mode
}

// xsk is one AF_XDP socket with its own UMEM. The first half of the UMEM's
// frames circulate through the fill and RX rings, the second half through
// the TX and completion rings.
type xsk struct {
	fd        int
	umem      []byte
	frameSize uint32
	numFrames uint32

	fill addrRing
	comp addrRing
	rx   descRing
	tx   descRing

	bindMode   string // "zerocopy" or "copy"
	copyMode   bool   // bound in copy mode: each kick transmits one kernel batch
	needWakeup bool   // bound with XDP_USE_NEED_WAKEUP

	txFree []uint64 // TX frames not in flight (a stack)
}

// rebindTries bounds the retry of a bind that finds the queue still held by
// a socket closed moments ago (the kernel frees it asynchronously).
const (
	rebindTries = 40
	rebindPause = 10 * time.Millisecond
)

func setsockopt(fd, level, opt int, p unsafe.Pointer, l uintptr) error {
	_, _, e := syscall.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), l, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getsockopt(fd, level, opt int, p unsafe.Pointer, l *uint32) error {
	_, _, e := syscall.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(l)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// openXSK creates, sizes, maps and binds an AF_XDP socket. Every step that
// succeeds registers its undo; a later failure runs them in reverse.
func openXSK(cfg xskConfig) (_ *xsk, err error) {
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, priv.Wrap("socket(AF_XDP)", "CAP_NET_RAW", os.NewSyscallError("socket", err))
	}
	undo = append(undo, func() { unix.Close(fd) })
	x := &xsk{fd: fd, frameSize: cfg.frameSize, numFrames: cfg.numFrames}

	size := int(uint64(cfg.numFrames) * uint64(cfg.frameSize))
	x.umem, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap UMEM of %d bytes: %w", size, os.NewSyscallError("mmap", err))
	}
	undo = append(undo, func() { unix.Munmap(x.umem) })

	reg := unix.XDPUmemReg{
		Addr: uint64(uintptr(unsafe.Pointer(&x.umem[0]))),
		Len:  uint64(size),
		Size: cfg.frameSize,
	}
	if err := setsockopt(fd, unix.SOL_XDP, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("register UMEM of %d bytes: %w (the UMEM is locked memory: grant CAP_IPC_LOCK or raise RLIMIT_MEMLOCK, or use fewer frames)",
				size, os.NewSyscallError("setsockopt XDP_UMEM_REG", err))
		}
		return nil, fmt.Errorf("register UMEM: %w", os.NewSyscallError("setsockopt XDP_UMEM_REG", err))
	}

	for _, r := range []struct {
		name string
		opt  int
	}{
		{"XDP_UMEM_FILL_RING", unix.XDP_UMEM_FILL_RING},
		{"XDP_UMEM_COMPLETION_RING", unix.XDP_UMEM_COMPLETION_RING},
		{"XDP_RX_RING", unix.XDP_RX_RING},
		{"XDP_TX_RING", unix.XDP_TX_RING},
	} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, r.opt, int(cfg.ringSize)); err != nil {
			return nil, fmt.Errorf("size ring: %w", os.NewSyscallError("setsockopt "+r.name, err))
		}
	}

	var off unix.XDPMmapOffsets
	l := uint32(unsafe.Sizeof(off))
	if err := getsockopt(fd, unix.SOL_XDP, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), &l); err != nil {
		return nil, fmt.Errorf("ring offsets: %w", os.NewSyscallError("getsockopt XDP_MMAP_OFFSETS", err))
	}

	mapRing := func(name string, pgoff int64, o unix.XDPRingOffset, entry uintptr) ([]byte, error) {
		n := int(o.Desc + uint64(cfg.ringSize)*uint64(entry))
		mem, err := unix.Mmap(fd, pgoff, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return nil, fmt.Errorf("map %s ring: %w", name, os.NewSyscallError("mmap", err))
		}
		undo = append(undo, func() { unix.Munmap(mem) })
		return mem, nil
	}
	mem, err := mapRing("fill", unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, 8)
	if err != nil {
		return nil, err
	}
	x.fill.init(mem, off.Fr, cfg.ringSize)
	x.fill.addrs = unsafe.Slice((*uint64)(unsafe.Pointer(&mem[off.Fr.Desc])), cfg.ringSize)

	if mem, err = mapRing("completion", unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, 8); err != nil {
		return nil, err
	}
	x.comp.init(mem, off.Cr, cfg.ringSize)
	x.comp.addrs = unsafe.Slice((*uint64)(unsafe.Pointer(&mem[off.Cr.Desc])), cfg.ringSize)

	dsz := unsafe.Sizeof(unix.XDPDesc{})
	if mem, err = mapRing("RX", unix.XDP_PGOFF_RX_RING, off.Rx, dsz); err != nil {
		return nil, err
	}
	x.rx.init(mem, off.Rx, cfg.ringSize)
	x.rx.descs = unsafe.Slice((*unix.XDPDesc)(unsafe.Pointer(&mem[off.Rx.Desc])), cfg.ringSize)

	if mem, err = mapRing("TX", unix.XDP_PGOFF_TX_RING, off.Tx, dsz); err != nil {
		return nil, err
	}
	x.tx.init(mem, off.Tx, cfg.ringSize)
	x.tx.descs = unsafe.Slice((*unix.XDPDesc)(unsafe.Pointer(&mem[off.Tx.Desc])), cfg.ringSize)

	// Give the kernel the RX half of the frames before binding, so that the
	// first packet finds a buffer.
	half := cfg.numFrames / 2
	nfill := min(half, cfg.ringSize)
	for i := range nfill {
		x.fill.addrs[i&x.fill.mask] = uint64(i) * uint64(cfg.frameSize)
	}
	x.fill.submit(nfill)
	x.txFree = make([]uint64, 0, cfg.numFrames-half)
	for i := half; i < cfg.numFrames; i++ {
		x.txFree = append(x.txFree, uint64(i)*uint64(cfg.frameSize))
	}

	if err := x.bind(cfg); err != nil {
		return nil, err
	}
	return x, nil
}

// bind attaches the socket to (ifindex, queue), trying zero-copy first when
// the bind mode is auto, and retrying while the queue is still held by a
// socket that was closed moments ago.
func (x *xsk) bind(cfg xskConfig) error {
	modes := []string{cfg.bind}
	switch {
	case cfg.generic && cfg.bind == "zerocopy":
		return fmt.Errorf("bind AF_XDP socket in zero-copy mode: the XDP program is attached in generic (skb) mode, which only copy mode serves: use --xdp-mode drv or bind copy")
	case cfg.generic:
		// Generic XDP hands frames over as copies: a zero-copy bind may
		// succeed on a driver with XSK queues of its own (mlx5) and then
		// receive nothing and fail every transmit wake-up.
		modes = []string{"copy"}
	case cfg.bind == "auto":
		modes = []string{"zerocopy", "copy"}
	}
	var err error
	for _, mode := range modes {
		flags := uint16(unix.XDP_COPY)
		if mode == "zerocopy" {
			flags = unix.XDP_ZEROCOPY
		}
		if cfg.needWakeup {
			flags |= unix.XDP_USE_NEED_WAKEUP
		}
		sa := &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(cfg.ifindex), QueueID: uint32(cfg.queue)}
		for try := 0; ; try++ {
			err = unix.Bind(x.fd, sa)
			if !errors.Is(err, unix.EBUSY) || try == rebindTries {
				break
			}
			time.Sleep(rebindPause)
		}
		if err == nil {
			x.bindMode = mode
			x.copyMode = mode == "copy"
			x.needWakeup = cfg.needWakeup
			return nil
		}
		if !(cfg.bind == "auto" && mode == "zerocopy" && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL))) {
			break
		}
	}
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("bind AF_XDP socket to queue %d: %w (another AF_XDP socket holds this queue)", cfg.queue, os.NewSyscallError("bind", err))
	}
	if errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("bind AF_XDP socket in %s mode to queue %d: %w (the driver does not support it)", modes[len(modes)-1], cfg.queue, os.NewSyscallError("bind", err))
	}
	return fmt.Errorf("bind AF_XDP socket to queue %d: %w", cfg.queue, os.NewSyscallError("bind", err))
}

// frame returns the UMEM bytes of a descriptor.
func (x *xsk) frame(addr uint64, n uint32) []byte {
	return x.umem[addr : addr+uint64(n) : addr+uint64(n)]
}

// chunk returns the whole UMEM chunk holding addr, for building a frame.
func (x *xsk) chunk(addr uint64) []byte {
	base := addr &^ uint64(x.frameSize-1)
	return x.umem[base : base+uint64(x.frameSize) : base+uint64(x.frameSize)]
}

// kick asks the kernel to process the TX ring: sendto with no data. In
// copy mode this is what transmits the frames, at most a kernel batch (32)
// per call; EAGAIN then means frames remain and another kick sends them.
func (x *xsk) kick() syscall.Errno {
	_, _, e := syscall.RawSyscall6(unix.SYS_SENDTO, uintptr(x.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	switch e {
	case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS:
		// EBUSY, ENOBUFS: the kernel is busy or short of memory; the
		// frames stay queued and go with the next kick.
		return 0
	}
	return e
}

// pending reports whether the kernel has not yet taken every descriptor
// published on the TX ring.
func (x *xsk) pending() bool {
	return atomic.LoadUint32(x.tx.consumer) != x.tx.cachedProd
}

// reap moves completed TX frames back to the free stack and returns how
// many.
func (x *xsk) reap() int {
	n := x.comp.avail()
	if n == 0 {
		return 0
	}
	c := x.comp.cachedCons
	for i := range n {
		x.txFree = append(x.txFree, x.comp.addrs[(c+i)&x.comp.mask])
	}
	x.comp.release(n)
	return int(n)
}

// statistics reads XDP_STATISTICS.
func (x *xsk) statistics() (unix.XDPStatistics, error) {
	var s unix.XDPStatistics
	l := uint32(unsafe.Sizeof(s))
	err := getsockopt(x.fd, unix.SOL_XDP, unix.XDP_STATISTICS, unsafe.Pointer(&s), &l)
	return s, err
}

func (x *xsk) close() error {
	err := unix.Close(x.fd)
	for _, m := range [][]byte{x.rx.mem, x.tx.mem, x.fill.mem, x.comp.mem, x.umem} {
		if m != nil {
			unix.Munmap(m)
		}
	}
	if err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}
