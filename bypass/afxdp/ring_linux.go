//go:build linux

package afxdp

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ring is the index half of an AF_XDP ring: producer and consumer live in
// memory shared with the kernel and are accessed only with sync/atomic.
// Each side keeps a cached copy of the other side's index.
type ring struct {
	producer *uint32
	consumer *uint32
	flags    *uint32
	mask     uint32
	size     uint32

	cachedProd uint32
	cachedCons uint32

	mem []byte // the mmap'd region, for munmap
}

func (r *ring) init(mem []byte, off unix.XDPRingOffset, size uint32) {
	r.mem = mem
	r.producer = (*uint32)(unsafe.Pointer(&mem[off.Producer]))
	r.consumer = (*uint32)(unsafe.Pointer(&mem[off.Consumer]))
	r.flags = (*uint32)(unsafe.Pointer(&mem[off.Flags]))
	r.size = size
	r.mask = size - 1
}

// needWakeup reports whether the kernel asked for a kick on this ring.
func (r *ring) needWakeup() bool {
	return atomic.LoadUint32(r.flags)&unix.XDP_RING_NEED_WAKEUP != 0
}

// Producer side (fill and TX rings).

// free returns how many entries the producer may write, refreshing the
// cached consumer index only when fewer than want are known to be free.
func (r *ring) free(want uint32) uint32 {
	n := r.size - (r.cachedProd - r.cachedCons)
	if n >= want {
		return n
	}
	r.cachedCons = atomic.LoadUint32(r.consumer)
	return r.size - (r.cachedProd - r.cachedCons)
}

// submit publishes n entries written after the cached producer index.
func (r *ring) submit(n uint32) {
	r.cachedProd += n
	atomic.StoreUint32(r.producer, r.cachedProd)
}

// Consumer side (RX and completion rings).

// avail returns how many entries are ready to read, refreshing the cached
// producer index when the cached view is empty.
func (r *ring) avail() uint32 {
	n := r.cachedProd - r.cachedCons
	if n > 0 {
		return n
	}
	r.cachedProd = atomic.LoadUint32(r.producer)
	return r.cachedProd - r.cachedCons
}

// release returns n consumed entries to the producer.
func (r *ring) release(n uint32) {
	r.cachedCons += n
	atomic.StoreUint32(r.consumer, r.cachedCons)
}

// descRing carries struct xdp_desc entries (RX and TX).
type descRing struct {
	ring
	descs []unix.XDPDesc
}

// addrRing carries __u64 UMEM addresses (fill and completion).
type addrRing struct {
	ring
	addrs []uint64
}
