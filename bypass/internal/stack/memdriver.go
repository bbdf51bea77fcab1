//go:build linux

package stack

import (
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"github.com/lowlat/lowlat/bypass/backend"
)

// MemDriver is a Driver in memory: frames delivered to it (Deliver) are
// received, frames kicked are handed to OnSend (or kept, for Sent). It
// behaves as a device does where the core cares: fixed receive and
// transmit buffer pools, a transmit that can take fewer frames than were
// committed (KickLimit), completions that arrive only when the test says
// (ManualComplete and Complete). Its receive side allocates nothing per
// frame, so benchmarks of the core over it measure the core.
type MemDriver struct {
	mu sync.Mutex

	bufSize int
	rxBufs  [][]byte
	rxLen   []int
	rxStamp []int64
	rxHead  uint32 // oldest delivered frame not yet polled
	rxPoll  uint32 // next frame Poll hands out
	rxTail  uint32 // next free slot
	polled  uint32 // frames handed out and not yet released

	txBufs    [][]byte
	txFree    []uint64
	committed []txFrame
	inflight  []uint64
	sent      [][]byte

	// OnSend, when set, is called with each frame the device takes, in
	// order, while the driver's lock is held; the frame is valid only
	// during the call.
	OnSend func(frame []byte)
	// KickLimit, when positive, is the most frames one Kick takes.
	KickLimit int
	// ManualComplete keeps kicked frames in flight until Complete.
	ManualComplete bool

	// Flows are the flows sockets steered to the driver (Steering);
	// TCPFlows the TCP flows (TCPSteering).
	Flows, TCPFlows map[netip.AddrPort]bool

	// Counters for tests.
	Polls, Kicks, Reaps, RxFull, BadRelease int
	closed                                  bool
}

type txFrame struct {
	id uint64
	n  int
}

var (
	_ Driver      = (*MemDriver)(nil)
	_ Steering    = (*MemDriver)(nil)
	_ TCPSteering = (*MemDriver)(nil)
)

// AddTCPFlow records a TCP flow steered to the driver.
func (m *MemDriver) AddTCPFlow(local netip.AddrPort) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.TCPFlows[local] {
		return fmt.Errorf("mem: tcp flow %v added twice", local)
	}
	m.TCPFlows[local] = true
	return nil
}

// RemoveTCPFlow forgets a TCP flow.
func (m *MemDriver) RemoveTCPFlow(local netip.AddrPort) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.TCPFlows[local] {
		return fmt.Errorf("mem: tcp flow %v removed but never added", local)
	}
	delete(m.TCPFlows, local)
	return nil
}

// SteeredTCP reports whether local is steered to the driver for TCP.
func (m *MemDriver) SteeredTCP(local netip.AddrPort) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.TCPFlows[local]
}

// AddFlow records a flow steered to the driver.
func (m *MemDriver) AddFlow(dst netip.AddrPort) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Flows[dst] {
		return fmt.Errorf("mem: flow %v added twice", dst)
	}
	m.Flows[dst] = true
	return nil
}

// RemoveFlow forgets a flow.
func (m *MemDriver) RemoveFlow(dst netip.AddrPort) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.Flows[dst] {
		return fmt.Errorf("mem: flow %v removed but never added", dst)
	}
	delete(m.Flows, dst)
	return nil
}

// Steered reports whether dst is steered to the driver.
func (m *MemDriver) Steered(dst netip.AddrPort) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.Flows[dst]
}

// NewMemDriver returns a driver with rx receive and tx transmit buffers of
// bufSize bytes.
func NewMemDriver(bufSize, rx, tx int) *MemDriver {
	m := &MemDriver{bufSize: bufSize, rxLen: make([]int, rx), rxStamp: make([]int64, rx), Flows: make(map[netip.AddrPort]bool), TCPFlows: make(map[netip.AddrPort]bool)}
	for range rx {
		m.rxBufs = append(m.rxBufs, make([]byte, bufSize))
	}
	for i := range tx {
		m.txBufs = append(m.txBufs, make([]byte, bufSize))
		m.txFree = append(m.txFree, uint64(i))
	}
	m.committed = make([]txFrame, 0, tx)
	m.inflight = make([]uint64, 0, tx)
	return m
}

// Deliver receives a frame as the device would: it is copied into a free
// receive buffer. It reports false, counting RxFull, when none is free.
func (m *MemDriver) Deliver(frame []byte) bool { return m.DeliverStamped(frame, 0) }

// DeliverStamped is Deliver with the device's receive stamp (UTC ns), as a
// NIC that stamps in hardware reports it.
func (m *MemDriver) DeliverStamped(frame []byte, stamp int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if int(m.rxTail-m.rxHead) == len(m.rxBufs) || len(frame) > m.bufSize {
		m.RxFull++
		return false
	}
	i := m.rxTail % uint32(len(m.rxBufs))
	m.rxLen[i] = copy(m.rxBufs[i], frame)
	m.rxStamp[i] = stamp
	m.rxTail++
	return true
}

// Pending is the number of delivered frames not yet polled.
func (m *MemDriver) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int(m.rxTail - m.rxPoll)
}

func (m *MemDriver) Poll(fs []Frame) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Polls++
	n := min(len(fs), int(m.rxTail-m.rxPoll))
	for k := range n {
		i := m.rxPoll % uint32(len(m.rxBufs))
		fs[k] = Frame{Data: m.rxBufs[i][:m.rxLen[i]], ID: uint64(m.rxPoll), Stamp: m.rxStamp[i]}
		m.rxPoll++
	}
	m.polled += uint32(n)
	return n
}

// Release frees buffers; the core releases in the order it polled.
func (m *MemDriver) Release(fs []Frame) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range fs {
		if uint32(f.ID) != m.rxHead || m.polled == 0 {
			m.BadRelease++
			continue
		}
		m.rxHead++
		m.polled--
	}
}

func (m *MemDriver) Reserve() ([]byte, uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.txFree) == 0 {
		return nil, 0, false
	}
	id := m.txFree[len(m.txFree)-1]
	m.txFree = m.txFree[:len(m.txFree)-1]
	return m.txBufs[id], id, true
}

func (m *MemDriver) Commit(id uint64, n int) {
	m.mu.Lock()
	m.committed = append(m.committed, txFrame{id, n})
	m.mu.Unlock()
}

func (m *MemDriver) Kick() (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Kicks++
	n := len(m.committed)
	if m.KickLimit > 0 {
		n = min(n, m.KickLimit)
	}
	for _, f := range m.committed[:n] {
		fr := m.txBufs[f.id][:f.n]
		if m.OnSend != nil {
			m.OnSend(fr)
		} else {
			m.sent = append(m.sent, append([]byte(nil), fr...))
		}
		if m.ManualComplete {
			m.inflight = append(m.inflight, f.id)
		} else {
			m.txFree = append(m.txFree, f.id)
		}
	}
	var err error
	for _, f := range m.committed[n:] {
		m.txFree = append(m.txFree, f.id)
		err = fmt.Errorf("mem: %w: kick limit", backend.ErrRingFull)
	}
	m.committed = m.committed[:0]
	return n, err
}

func (m *MemDriver) Reap() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Reaps++
	return 0 // Complete moves frames back
}

// Complete finishes the oldest n frames in flight (ManualComplete).
func (m *MemDriver) Complete(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n = min(n, len(m.inflight))
	m.txFree = append(m.txFree, m.inflight[:n]...)
	m.inflight = append(m.inflight[:0], m.inflight[n:]...)
}

// Sent takes the frames sent so far (when OnSend is nil).
func (m *MemDriver) Sent() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sent
	m.sent = nil
	return s
}

// Free is the number of transmit buffers not in flight.
func (m *MemDriver) Free() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.txFree)
}

func (m *MemDriver) Stats(s *backend.Stats) {
	m.mu.Lock()
	s.FillRingEmpty += uint64(m.RxFull)
	m.mu.Unlock()
}

func (m *MemDriver) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("mem: closed twice")
	}
	m.closed = true
	return nil
}

// Closed reports whether the stack closed the driver.
func (m *MemDriver) Closed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// MemPorts reserves ports in memory: port 0 takes the next of 40000 and
// up; a port reserved twice is refused with EADDRINUSE, as the kernel
// would. The zero value is ready to use.
type MemPorts struct {
	mu     sync.Mutex
	next   uint16
	taken  map[memKey]bool
	joined map[netip.Addr]int
}

// memKey is a port of one protocol.
type memKey struct {
	port uint16
	tcp  bool
}

type memPort struct {
	p   *MemPorts
	key memKey
}

var (
	_ Ports    = (*MemPorts)(nil)
	_ TCPPorts = (*MemPorts)(nil)
)

// Reserve takes laddr's UDP port.
func (p *MemPorts) Reserve(laddr netip.AddrPort) (Reservation, error) {
	return p.reserve(laddr, false)
}

// ReserveTCP takes laddr's TCP port.
func (p *MemPorts) ReserveTCP(laddr netip.AddrPort) (Reservation, error) {
	return p.reserve(laddr, true)
}

func (p *MemPorts) reserve(laddr netip.AddrPort, tcp bool) (Reservation, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.taken == nil {
		p.taken = make(map[memKey]bool)
		p.joined = make(map[netip.Addr]int)
		p.next = 40000
	}
	k := memKey{laddr.Port(), tcp}
	if k.port == 0 {
		for p.taken[memKey{p.next, tcp}] {
			p.next++
		}
		k.port = p.next
	}
	if p.taken[k] {
		proto := "udp"
		if tcp {
			proto = "tcp"
		}
		return nil, fmt.Errorf("reserve %s port %v: %w", proto, laddr, syscall.EADDRINUSE)
	}
	p.taken[k] = true
	return &memPort{p, k}, nil
}

// Taken reports whether UDP port is reserved.
func (p *MemPorts) Taken(port uint16) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.taken[memKey{port, false}]
}

// TakenTCP reports whether TCP port is reserved.
func (p *MemPorts) TakenTCP(port uint16) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.taken[memKey{port, true}]
}

// Members is how many sockets are joined to group.
func (p *MemPorts) Members(group netip.Addr) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.joined[group]
}

func (r *memPort) Port() uint16 { return r.key.port }

func (r *memPort) Join(g, _ netip.Addr) error {
	r.p.mu.Lock()
	r.p.joined[g]++
	r.p.mu.Unlock()
	return nil
}

func (r *memPort) Leave(g, _ netip.Addr) error {
	r.p.mu.Lock()
	r.p.joined[g]--
	r.p.mu.Unlock()
	return nil
}

func (r *memPort) Close() error {
	r.p.mu.Lock()
	delete(r.p.taken, r.key)
	r.p.mu.Unlock()
	return nil
}
