//go:build linux

package afxdp

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/stack"
)

// driver is the stack's Driver over one AF_XDP socket per bound queue, each
// with its own UMEM: frames are received on every socket and sent on the
// first. The first half of each UMEM's frames circulate through the fill
// and RX rings, the second half through the TX and completion rings.
type driver struct {
	socks    []*xsk
	tx       *xsk // socks[0]
	next     int  // receive-owned: where the next scan starts
	busyPoll bool // an empty poll calls recvfrom, which runs the queue's NAPI poll here
	steer    *steering

	// Receive-owned and transmit-owned counters on cache lines of their own.
	_                    [128]byte
	fillEmpty, rxWakeups atomic.Uint64
	_                    [128]byte
	txWakeups            atomic.Uint64
	committed            int // transmit-owned: descriptors written and not yet published
	_                    [128]byte
}

var (
	_ stack.Driver      = (*driver)(nil)
	_ stack.Steering    = (*driver)(nil)
	_ stack.TCPSteering = (*driver)(nil)
	_ stack.WaitFDs     = (*driver)(nil)
)

// idShift puts a frame's socket index above its UMEM address in Frame.ID.
const idShift = 48

// Poll takes received frames, scanning the sockets from the one after the
// socket served last, so that a busy queue cannot starve the others. An
// empty poll wakes the kernel where it asked for it (the fill ring ran
// dry) and, with busy polling on, runs the queues' NAPI poll.
func (d *driver) Poll(fs []stack.Frame) int {
	got := 0
	n := len(d.socks)
	for i := 0; i < n && got < len(fs); i++ {
		j := d.next + i
		if j >= n {
			j -= n
		}
		x := d.socks[j]
		avail := x.rx.avail()
		if avail == 0 {
			continue
		}
		take := min(avail, uint32(len(fs)-got))
		for k := range take {
			desc := x.rx.descs[(x.rx.cachedCons+k)&x.rx.mask]
			fs[got] = stack.Frame{Data: x.frame(desc.Addr, desc.Len), ID: uint64(j)<<idShift | desc.Addr}
			got++
		}
		// The descriptors are copied out; their chunks stay ours until
		// Release puts them on the fill ring.
		x.rx.release(take)
		d.next = j + 1
		if d.next == n {
			d.next = 0
		}
	}
	if got == 0 {
		for _, x := range d.socks {
			if d.busyPoll || x.fill.needWakeup() {
				syscall.RawSyscall6(unix.SYS_RECVFROM, uintptr(x.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
				d.rxWakeups.Add(1)
			}
		}
	}
	return got
}

// Release puts the frames' chunks back on their sockets' fill rings.
func (d *driver) Release(fs []stack.Frame) {
	for _, f := range fs {
		x := d.socks[f.ID>>idShift]
		if x.fill.free(1) == 0 {
			d.fillEmpty.Add(1) // cannot happen: the fill ring is as large as the RX half
			continue
		}
		x.fill.addrs[x.fill.cachedProd&x.fill.mask] = (f.ID & (1<<idShift - 1)) &^ uint64(x.frameSize-1)
		x.fill.cachedProd++
	}
	for _, x := range d.socks {
		x.fill.submit(0)
	}
}

// Reserve returns a free TX chunk when the TX ring also has a slot for it.
func (d *driver) Reserve() ([]byte, uint64, bool) {
	x := d.tx
	if len(x.txFree) == 0 || x.tx.free(1) == 0 {
		return nil, 0, false
	}
	addr := x.txFree[len(x.txFree)-1]
	x.txFree = x.txFree[:len(x.txFree)-1]
	return x.chunk(addr), addr, true
}

// Commit writes the frame's descriptor after the TX ring's producer index,
// unpublished.
func (d *driver) Commit(addr uint64, n int) {
	x := d.tx
	x.tx.descs[x.tx.cachedProd&x.tx.mask] = unix.XDPDesc{Addr: addr, Len: uint32(n)}
	x.tx.cachedProd++
	d.committed++
}

// maxKicks bounds the kicks one Kick spends in copy mode, where each kick
// transmits at most one kernel batch.
const maxKicks = 1024

// errLinkDown is returned by a transmit while the interface is down.
var errLinkDown = fmt.Errorf("afxdp: transmit: %w (interface down)", os.NewSyscallError("sendto", unix.ENETDOWN))

// Kick publishes the committed descriptors and kicks the kernel when it
// asked for it (always in copy mode, where the kick is the transmit). In
// copy mode it kicks until the kernel has taken every descriptor, reaping
// completions between kicks: the kernel stops when the completion ring has
// no room. Every committed frame is on the ring when Kick returns, so it
// reports them all as taken; frames the kernel has not sent yet go with the
// next kick.
func (d *driver) Kick() (int, error) {
	x := d.tx
	n := d.committed
	d.committed = 0
	x.tx.submit(0)
	if x.needWakeup && !x.tx.needWakeup() && !x.copyMode {
		return n, nil
	}
	for tries := 0; ; tries++ {
		d.txWakeups.Add(1)
		if e := x.kick(); e != 0 {
			if e == unix.ENETDOWN {
				return n, errLinkDown
			}
			return n, os.NewSyscallError("sendto", e)
		}
		if !x.copyMode || !x.pending() || tries == maxKicks {
			return n, nil
		}
		d.Reap()
	}
}

// Reap moves completed TX chunks back to the free stack.
func (d *driver) Reap() int { return d.tx.reap() }

// Stats adds the kernel's counts for each socket (XDP_STATISTICS: one
// getsockopt per socket) and the driver's own.
func (d *driver) Stats(s *backend.Stats) {
	s.FillRingEmpty += d.fillEmpty.Load()
	s.Wakeups += d.rxWakeups.Load() + d.txWakeups.Load()
	for _, x := range d.socks {
		if k, err := x.statistics(); err == nil {
			s.KernelDropped += k.Rx_dropped + k.Rx_ring_full
			s.RxRingFull += k.Rx_ring_full
			s.InvalidDescs += k.Rx_invalid_descs + k.Tx_invalid_descs
			s.FillRingEmpty += k.Rx_fill_ring_empty_descs
		}
	}
}

// WaitFDs are the AF_XDP sockets: each polls readable when its RX ring
// holds a frame.
func (d *driver) WaitFDs() []int {
	fds := make([]int, len(d.socks))
	for i, x := range d.socks {
		fds[i] = x.fd
	}
	return fds
}

// AddFlow steers dst's datagrams to the stack's sockets.
func (d *driver) AddFlow(dst netip.AddrPort) error { return d.steer.addFlow(dst, unix.IPPROTO_UDP) }

// RemoveFlow gives dst's datagrams back to the kernel.
func (d *driver) RemoveFlow(dst netip.AddrPort) error {
	return d.steer.removeFlow(dst, unix.IPPROTO_UDP)
}

// AddTCPFlow steers TCP segments to local to the stack, apart from any UDP
// flow on the same port.
func (d *driver) AddTCPFlow(local netip.AddrPort) error {
	return d.steer.addFlow(local, unix.IPPROTO_TCP)
}

// RemoveTCPFlow gives local's TCP segments back to the kernel.
func (d *driver) RemoveTCPFlow(local netip.AddrPort) error {
	return d.steer.removeFlow(local, unix.IPPROTO_TCP)
}

// Close detaches the program first, so the kernel has the interface's
// traffic back before the sockets and UMEMs go.
func (d *driver) Close() error {
	var errs []error
	if d.steer != nil {
		errs = append(errs, d.steer.close())
	}
	for _, x := range d.socks {
		errs = append(errs, x.close())
	}
	return errors.Join(errs...)
}
