//go:build linux

package stack

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/frame"
	"github.com/lowlat/lowlat/bypass/internal/tcp"
	"github.com/lowlat/lowlat/bypass/internal/undo"
)

// Config is what a backend hands New: its driver and what it found out
// about the interface. Fields without a note are required.
type Config struct {
	Backend string // "afxdp", "efvi": names errors and Info
	Driver  Driver
	Iface   Interface
	// BufSize is the largest frame one driver buffer holds.
	BufSize int
	// PartialChecksums accepts UDP checksums left to offload by a peer on
	// a virtual link (see frame.Filter.AcceptPartialChecksum).
	PartialChecksums bool
	// Batch is the most frames one poll takes; 0 means backend.DefaultBatch.
	Batch int
	// Resolve finds the next-hop MAC of a destination; the stack caches
	// the answer. Nil: the kernel's tables, through a resolver the stack
	// opens (KernelResolver).
	Resolve func(dst netip.Addr) (frame.MAC, error)
	// Ports reserves sockets' ports; nil: kernel UDP sockets (KernelPorts).
	Ports Ports
	// Info is the base of every socket's Info (Backend, Interface, Queue,
	// XDPMode, BindMode, Notes).
	Info backend.Info
	// Undo runs after the driver is closed, when the last socket closes.
	Undo undo.Stack
	// QueueBytes and QueueRecords size each socket's receive queue; zero
	// means DefaultQueueBytes and DefaultQueueRecords.
	QueueBytes, QueueRecords int
	// Now is the clock of the neighbour cache; nil means time.Now.
	Now func() time.Time
	// TCP is the base configuration of TCP connections; its MSS, when 0,
	// follows the interface's MTU. TCP needs a driver that implements
	// TCPSteering and Ports that implement TCPPorts.
	TCP tcp.Config
}

// Receive queue sizes: enough for a burst of a few hundred market-data
// datagrams while the thread serves another socket.
const (
	DefaultQueueBytes   = 256 << 10
	DefaultQueueRecords = 1024
)

// Stack is one user-space IPv4 stack: a driver and the UDP sockets, TCP
// listeners and TCP connections on it.
type Stack struct {
	name    string
	d       Driver
	steer   Steering // nil when the driver does not steer
	waitFDs []int
	iface   Interface
	bufSize int
	batch   int
	info    backend.Info
	ports   Ports
	resolve func(netip.Addr) (frame.MAC, error)
	now     func() time.Time
	qbytes  int
	qrecs   int

	// Receive side, under rxMu.
	rxMu   sync.Mutex
	frames []Frame
	filter frame.Filter
	pkt    frame.Packet
	socks  map[flowKey]*Socket
	groups map[netip.Addr]int // joined groups: how many sockets joined each
	drops  [frame.Length + 1]atomic.Uint64

	partial bool // accept checksums left to offload (Config.PartialChecksums)
	tcp     tcpSide
	tcpCfg  tcp.Config

	stampers atomic.Int32 // sockets that asked for receive stamps
	rxClosed bool         // the driver is closed; under rxMu and txMu

	// steerMu serialises calls into the driver's Steering and
	// TCPSteering (a driver keeps its filters in plain maps). Taken alone
	// or under rxMu, never the other way round.
	steerMu sync.Mutex

	// Transmit side, under txMu.
	txMu   sync.Mutex
	neigh  neighbours
	staged int // frames committed and not yet kicked

	// Life: refs counts sockets and handles, under reg.mu when the stack
	// is registered, else under life.
	life   sync.Mutex
	refs   int
	closed bool
	reg    *Registry
	key    string
	undo   undo.Stack
}

// flowKey is a demultiplexing key: a destination address (zero for a
// socket bound to every address) and port.
type flowKey struct {
	ip   [4]byte
	port uint16
}

func keyOf(a netip.AddrPort) flowKey {
	k := flowKey{port: a.Port()}
	if a.Addr().IsValid() && !a.Addr().IsUnspecified() {
		k.ip = a.Addr().Unmap().As4()
	}
	return k
}

// New makes a stack over cfg.Driver. It takes over the driver and
// cfg.Undo: on error they are released. The stack starts with one
// reference, which the caller gives back with Release.
func New(cfg Config) (_ *Stack, err error) {
	u := cfg.Undo.Take()
	defer func() {
		if err != nil {
			if cfg.Driver != nil {
				cfg.Driver.Close()
			}
			u.Run()
		}
	}()
	if cfg.Driver == nil {
		return nil, errors.New("stack: no driver")
	}
	if cfg.BufSize < frame.HeaderLen+1 {
		return nil, fmt.Errorf("stack: buffer size %d too small", cfg.BufSize)
	}
	f, err := frame.NewFilter(cfg.Iface.MAC, netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
	if err != nil {
		return nil, fmt.Errorf("stack: receive filter: %w", err)
	}
	f.AcceptPartialChecksum(cfg.PartialChecksums)
	st := &Stack{
		name: cfg.Backend, d: cfg.Driver, iface: cfg.Iface, bufSize: cfg.BufSize,
		batch: cfg.Batch, info: cfg.Info, ports: cfg.Ports, resolve: cfg.Resolve,
		now: cfg.Now, qbytes: cfg.QueueBytes, qrecs: cfg.QueueRecords,
		filter: f, socks: make(map[flowKey]*Socket), groups: make(map[netip.Addr]int),
		refs: 1,
	}
	if st.batch <= 0 {
		st.batch = backend.DefaultBatch
	}
	st.frames = make([]Frame, st.batch)
	if st.now == nil {
		st.now = time.Now
	}
	if st.qbytes <= 0 {
		st.qbytes = DefaultQueueBytes
	}
	if st.qrecs <= 0 || st.qrecs&(st.qrecs-1) != 0 {
		st.qrecs = DefaultQueueRecords
	}
	if st.ports == nil {
		st.ports = KernelPorts{Ifindex: cfg.Iface.Index}
	}
	if st.resolve == nil {
		r, closeRes, err := KernelResolver(cfg.Iface.Name)
		if err != nil {
			return nil, err
		}
		u.Add(closeRes)
		st.resolve = r
	}
	if s, ok := cfg.Driver.(Steering); ok {
		st.steer = s
	}
	if w, ok := cfg.Driver.(WaitFDs); ok {
		st.waitFDs = w.WaitFDs()
	}
	st.partial = cfg.PartialChecksums
	st.initTCP(cfg)
	st.undo = u.Take()
	return st, nil
}

// steering runs one call into the driver's steering, one at a time.
func (st *Stack) steering(call func() error) error {
	st.steerMu.Lock()
	defer st.steerMu.Unlock()
	return call()
}

// Info describes the stack: backend, interface, queue and modes.
func (st *Stack) Info() backend.Info { return st.info }

// Interface is the interface the stack serves.
func (st *Stack) Interface() Interface { return st.iface }

// Sockets returns how many sockets are open on the stack.
func (st *Stack) Sockets() int {
	st.rxMu.Lock()
	defer st.rxMu.Unlock()
	seen := 0
	for k, s := range st.socks {
		if k == s.key {
			seen++
		}
	}
	return seen
}

// lock guards refs: the registry's mutex for a registered stack.
func (st *Stack) lock() *sync.Mutex {
	if st.reg != nil {
		return &st.reg.mu
	}
	return &st.life
}

// ref takes a reference unless the stack has closed.
func (st *Stack) ref() bool {
	mu := st.lock()
	mu.Lock()
	defer mu.Unlock()
	if st.closed {
		return false
	}
	st.refs++
	return true
}

// Release gives back a reference; the last one closes the driver and runs
// the stack's undo stack.
func (st *Stack) Release() error {
	mu := st.lock()
	mu.Lock()
	defer mu.Unlock()
	if st.closed {
		return backend.ErrClosed
	}
	st.refs--
	if st.refs > 0 {
		return nil
	}
	st.closed = true
	if st.reg != nil {
		delete(st.reg.m, st.key)
	}
	// A poller may still hold the stack (until it removes the socket):
	// mark it closed under both locks, so that no Pump or Stats reaches
	// the driver once it is gone.
	st.rxMu.Lock()
	st.txMu.Lock()
	st.rxClosed = true
	st.txMu.Unlock()
	st.rxMu.Unlock()
	return errors.Join(st.d.Close(), st.undo.Run())
}

// demux validates one frame and returns the socket it is for, with its
// payload and sender in st.pkt; nil when it was dropped (and counted).
// Called under rxMu.
func (st *Stack) demux(f []byte) *Socket {
	if why := st.filter.Parse(f, &st.pkt); why != frame.OK {
		st.drops[why].Add(1)
		return nil
	}
	if st.pkt.Proto == frame.ProtoTCP {
		st.tcpInput()
		return nil
	}
	d := st.pkt.Dst
	k := flowKey{ip: d.Addr().As4(), port: d.Port()}
	if s := st.socks[k]; s != nil {
		if d.Addr().IsMulticast() && !s.admits(d.Addr(), st.pkt.Src.Addr()) {
			st.drops[frame.NotOurs].Add(1)
			return nil
		}
		return s
	}
	k.ip = [4]byte{}
	if s := st.socks[k]; s != nil && !d.Addr().IsMulticast() {
		return s
	}
	st.drops[frame.NotOurs].Add(1)
	return nil
}

// addStats adds the stack-wide counters (drops before demultiplexing and
// the driver's own) to s.
func (st *Stack) addStats(s *backend.Stats) {
	d := &st.drops
	s.DropShort += d[frame.Short].Load()
	s.DropFragment += d[frame.Fragment].Load()
	s.DropIPOptions += d[frame.IPOptions].Load()
	s.DropIPChecksum += d[frame.IPChecksum].Load()
	s.DropUDPChecksum += d[frame.UDPChecksum].Load()
	s.DropNotOurs += d[frame.NotOurs].Load()
	s.DropLength += d[frame.Length].Load()
	st.d.Stats(s)
}

// Stats returns the stack's own counters: drops before demultiplexing and
// the driver's counters. Sockets' Stats include them too.
func (st *Stack) Stats() backend.Stats {
	var s backend.Stats
	st.rxMu.Lock()
	defer st.rxMu.Unlock()
	if !st.rxClosed {
		st.addStats(&s)
	}
	return s
}

// Registry finds the stack a process already has for a key (a backend's
// interface and queue in a namespace), so that every socket on that path
// shares one. The zero value is ready to use.
type Registry struct {
	mu sync.Mutex
	m  map[string]*Stack
}

// Acquire returns the stack registered under key with a new reference, or
// opens one with open and registers it. existing says which.
func (r *Registry) Acquire(key string, open func() (*Stack, error)) (st *Stack, existing bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.m[key]; st != nil {
		st.refs++
		return st, true, nil
	}
	st, err = open()
	if err != nil {
		return nil, false, err
	}
	if r.m == nil {
		r.m = make(map[string]*Stack)
	}
	st.reg, st.key = r, key
	r.m[key] = st
	return st, false, nil
}

// Len is the number of stacks registered.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// Handle returns a backend.Stack for a reference to st: its Close gives
// the reference back, once.
func Handle(st *Stack) backend.Stack { return &handle{st: st} }

type handle struct {
	st   *Stack
	once atomic.Bool
}

func (h *handle) ListenUDP(laddr netip.AddrPort, o backend.Options) (backend.PacketConn, error) {
	if h.once.Load() {
		return nil, backend.ErrClosed
	}
	s, err := h.st.Listen(laddr, o)
	if err != nil {
		return nil, fmt.Errorf("%s: listen udp %v: %w", h.st.name, laddr, err)
	}
	return s, nil
}

func (h *handle) Info() backend.Info   { return h.st.Info() }
func (h *handle) Stats() backend.Stats { return h.st.Stats() }

func (h *handle) Close() error {
	if h.once.Swap(true) {
		return backend.ErrClosed
	}
	return h.st.Release()
}

// Driver is the stack's driver, for a backend's own counters.
func (st *Stack) Driver() Driver { return st.d }
