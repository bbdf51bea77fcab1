//go:build linux

package testnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Impair is the damage a RelayPath does to IPv4 frames. Each IPv4 frame
// gets one decision, drawn from a generator seeded with Seed (one
// generator per direction), so the sequence of decisions in each
// direction is the same in every run with that seed; which frames meet
// which decision still depends on timing (retransmissions, ARP). ARP and
// all other non-IPv4 frames pass untouched and draw nothing.
// The three fractions must each lie in [0, 1] and add up to at most 1.
//
// A frame drawn for Reorder is held back and sent right after the next
// frame the relay sends in that direction (a frame dropped meanwhile does
// not release it). While one frame is held, a second frame drawn for
// Reorder is sent at once, ahead of the held one. A held frame that no
// next frame releases within about a millisecond is sent alone and does
// not count as Reordered.
type Impair struct {
	Seed    int64   // the schedule is reproducible from the seed
	Loss    float64 // fraction of frames dropped, e.g. 0.01
	Reorder float64 // fraction of frames held back and sent after the next frame in the same direction
	Dup     float64 // fraction of frames sent twice
}

func (imp Impair) validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"Loss", imp.Loss}, {"Reorder", imp.Reorder}, {"Dup", imp.Dup}} {
		if !(f.v >= 0 && f.v <= 1) {
			return fmt.Errorf("impairment: %s is %v; want a fraction in [0, 1]", f.name, f.v)
		}
	}
	if s := imp.Loss + imp.Reorder + imp.Dup; s > 1 {
		return fmt.Errorf("impairment: the fractions add up to %v; want at most 1", s)
	}
	return nil
}

// RelayConfig shapes a RelayPath.
type RelayConfig struct {
	// MTU of all four veth ends (0 means 1500).
	MTU int
	// Impair is what the relay does to IPv4 frames; the zero value
	// forwards everything as it comes.
	Impair Impair
}

// RelayPath is two end namespaces, A and B, whose veth links meet in a
// third namespace M, where a relay in the test process copies every
// Ethernet frame from one link to the other, damaging IPv4 frames as
// RelayConfig.Impair says. A and B share one /24 subnet, so ARP crosses
// the relay and A and B see each other's MAC addresses as if they were
// joined by a cable.
type RelayPath struct {
	A, B         *NS              // the end namespaces; A.Link == AIf, A.Addr == AAddr, likewise B
	M            *NS              // the middle namespace, with no addresses (M.Link is empty)
	AIf, BIf     string           // the veth end inside A and inside B
	AAddr, BAddr netip.Addr       // IPv4 addresses of AIf and BIf
	AMAC, BMAC   net.HardwareAddr // MAC addresses of AIf and BIf
	MAIf, MBIf   string           // the relay's interfaces in M: MAIf is AIf's peer, MBIf is BIf's
	Prefix       netip.Prefix     // the subnet of AAddr and BAddr: 10.199.1.0/24
	MTU          int              // of all four veth ends

	relay *relay
}

// RelayStats counts the relay's frames in each direction.
type RelayStats struct {
	AToB, BToA RelayCounts
}

// RelayCounts counts the frames of one direction of a relay.
type RelayCounts struct {
	In         uint64 // frames read from the incoming link
	Forwarded  uint64 // frames sent on, at once or after being held back (a duplicated frame counts once)
	Dropped    uint64 // IPv4 frames dropped by the schedule
	Reordered  uint64 // IPv4 frames sent right after the frame that followed them
	Duplicated uint64 // IPv4 frames sent twice
	// Lost counts frames lost against the schedule: the relay's
	// receive buffer overflowed (the kernel's count) or the outgoing
	// link refused a frame. It should stay 0; when it is not, the relay
	// did not keep up.
	Lost uint64
}

// Stats returns the relay's counts so far (also after cleanup).
func (r *RelayPath) Stats() RelayStats {
	r.relay.pollKernelDrops()
	return RelayStats{AToB: r.relay.dirs[0].c.snapshot(), BToA: r.relay.dirs[1].c.snapshot()}
}

// Exec runs a command inside ns and returns its standard output; it fails
// the test when the command fails.
func (r *RelayPath) Exec(t testing.TB, ns *NS, name string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// NewRelayPath creates namespaces A, M and B, a veth pair from A to M and
// one from M to B, and starts a relay in M that forwards every frame
// between its two links. AAddr is 10.199.1.1/24 and BAddr 10.199.1.2/24;
// M has no addresses and IPv6 is off there, so M's own stack never sends.
//
// TSO, GSO, GRO and TX checksum offload are off on all four veth ends
// (ethtool -K IF tso off gso off gro off tx off): every frame the relay
// sees is at most MTU long and carries complete checksums, as on a wire,
// so a frame it copies verbatim is valid on the other side, and Loss
// removes one MTU-sized segment rather than a 64 KiB super-packet.
//
// The relay runs as two goroutines, one per direction, reading and
// writing AF_PACKET sockets (SOCK_RAW, ETH_P_ALL) bound to MAIf and MBIf
// in batches (recvmmsg, sendmmsg). It skips frames of type PACKET_OUTGOING,
// its own transmissions. A frame held back for reordering goes out right
// after the next frame sent in its direction, or after about a millisecond
// when none comes.
//
// Cleanup stops the relay (closes its sockets and waits for its
// goroutines) and deletes the namespaces, whether the test passes or
// fails; a relay that stopped on an error before that fails the test.
// It skips the test when not root and fails it on any other error.
func NewRelayPath(t testing.TB, cfg RelayConfig) *RelayPath {
	t.Helper()
	RequireRoot(t)
	if err := cfg.Impair.validate(); err != nil {
		t.Fatalf("testnet: %v", err)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = 1500
	}
	if mtu < 68 || mtu > 65535 {
		t.Fatalf("testnet: RelayConfig.MTU %d out of range [68, 65535]", mtu)
	}
	n := seq.Add(1)
	id := fmt.Sprintf("%d-%d", os.Getpid()%100000, n)
	trunc := func(s string) string { return s[:min(len(s), 15)] }
	r := &RelayPath{
		A:      &NS{Name: "llt-a-" + id, Link: trunc("lla" + id), Addr: netip.MustParseAddr("10.199.1.1")},
		M:      &NS{Name: "llt-m-" + id},
		B:      &NS{Name: "llt-b-" + id, Link: trunc("llb" + id), Addr: netip.MustParseAddr("10.199.1.2")},
		MAIf:   trunc("llma" + id),
		MBIf:   trunc("llmb" + id),
		Prefix: netip.MustParsePrefix("10.199.1.0/24"),
		MTU:    mtu,
	}
	r.AIf, r.BIf, r.AAddr, r.BAddr = r.A.Link, r.B.Link, r.A.Addr, r.B.Addr
	for _, ns := range []*NS{r.A, r.M, r.B} {
		run(t, "ip", "netns", "add", ns.Name)
		name := ns.Name
		t.Cleanup(func() { deleteNS(t, name) })
	}
	// Before M has links, so that they are made without IPv6 and M's
	// stack never transmits (no DAD, router or MLD messages).
	r.Exec(t, r.M, "sh", "-c", "[ ! -d /proc/sys/net/ipv6 ] || "+
		"{ echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6; }")
	run(t, "ip", "link", "add", r.AIf, "netns", r.A.Name, "type", "veth", "peer", "name", r.MAIf, "netns", r.M.Name)
	run(t, "ip", "link", "add", r.BIf, "netns", r.B.Name, "type", "veth", "peer", "name", r.MBIf, "netns", r.M.Name)
	for _, e := range []struct {
		ns *NS
		ln string
	}{{r.A, r.AIf}, {r.M, r.MAIf}, {r.M, r.MBIf}, {r.B, r.BIf}} {
		run(t, "ip", "-n", e.ns.Name, "link", "set", e.ln, "mtu", strconv.Itoa(mtu))
		r.Exec(t, e.ns, "ethtool", "-K", e.ln, "tso", "off", "gso", "off", "gro", "off", "tx", "off")
		run(t, "ip", "-n", e.ns.Name, "link", "set", e.ln, "up")
	}
	for _, ns := range []*NS{r.A, r.M, r.B} {
		run(t, "ip", "-n", ns.Name, "link", "set", "lo", "up")
	}
	for _, ns := range []*NS{r.A, r.B} {
		run(t, "ip", "-n", ns.Name, "addr", "add", ns.Addr.String()+"/24", "dev", ns.Link)
		if err := ns.Do(func() error {
			ifi, err := net.InterfaceByName(ns.Link)
			if err == nil {
				ns.MAC = ifi.HardwareAddr
			}
			return err
		}); err != nil {
			t.Fatalf("testnet: MAC of %s: %v", ns.Link, err)
		}
	}
	r.AMAC, r.BMAC = r.A.MAC, r.B.MAC

	rl, err := startRelay(r.M, r.MAIf, r.MBIf, mtu, cfg.Impair)
	if err != nil {
		t.Fatalf("testnet: relay: %v", err)
	}
	r.relay = rl
	t.Cleanup(func() {
		if err := rl.stop(); err != nil {
			t.Errorf("testnet: relay in %s stopped early: %v", r.M.Name, err)
		}
	})
	return r
}

// action is what the schedule does with one IPv4 frame.
type action uint8

const (
	actPass action = iota
	actDrop
	actReorder
	actDup
)

func (a action) String() string {
	return [...]string{"pass", "drop", "reorder", "dup"}[a]
}

// schedule draws the decisions of one direction: one uniform draw per
// IPv4 frame, mapped onto [0, Loss) drop, [Loss, Loss+Reorder) reorder,
// [.., +Dup) dup, the rest pass.
type schedule struct {
	rng                *rand.Rand
	drop, reorder, dup float64 // cumulative thresholds
	impaired           bool
}

// newSchedule returns direction dir's schedule (0 is A to B, 1 B to A).
func newSchedule(imp Impair, dir uint64) *schedule {
	return &schedule{
		rng:      rand.New(rand.NewPCG(uint64(imp.Seed), 0x9e3779b97f4a7c15^dir)),
		drop:     imp.Loss,
		reorder:  imp.Loss + imp.Reorder,
		dup:      imp.Loss + imp.Reorder + imp.Dup,
		impaired: imp.Loss+imp.Reorder+imp.Dup > 0,
	}
}

func (s *schedule) next() action {
	if !s.impaired {
		return actPass
	}
	switch u := s.rng.Float64(); {
	case u < s.drop:
		return actDrop
	case u < s.reorder:
		return actReorder
	case u < s.dup:
		return actDup
	}
	return actPass
}

type counts struct {
	in, fwd, dropped, reordered, duplicated, lost atomic.Uint64
}

func (c *counts) snapshot() RelayCounts {
	return RelayCounts{
		In: c.in.Load(), Forwarded: c.fwd.Load(), Dropped: c.dropped.Load(),
		Reordered: c.reordered.Load(), Duplicated: c.duplicated.Load(), Lost: c.lost.Load(),
	}
}

// relayBatch is how many frames one recvmmsg takes at most. Measured on
// the 2-CPU VM, kernel TCP across the relay (no impairment): 64 gave
// 300-375 MB/s (200-260k frames/s), 1 (one frame per syscall, like plain
// recvfrom and sendto) 120 MB/s; a direct veth pair gave 425 MB/s.
var relayBatch = 64

// holdFor is how long a held-back frame waits for a next frame.
const holdFor = time.Millisecond

type relay struct {
	files [2]*os.File // the packet sockets on MAIf and MBIf
	raws  [2]syscall.RawConn
	dirs  [2]*relayDir
	wg    sync.WaitGroup
	mu    sync.Mutex
	errs  []error
	once  sync.Once
}

// relayDir forwards one direction: frames read on in go out on out.
type relayDir struct {
	in      *os.File
	inRaw   syscall.RawConn
	outRaw  syscall.RawConn
	sched   *schedule
	c       counts
	bufSize int

	// receive side: one buffer per slot
	bufs  [][]byte
	iovs  []unix.Iovec
	msgs  []unix.Mmsghdr
	names []unix.RawSockaddrLinklayer

	// send side
	out     [][]byte
	outIovs []unix.Iovec
	outMsgs []unix.Mmsghdr

	held     []byte   // the frame held back for reordering, or nil
	newHold  bool     // held was set in this batch: (re)arm the flush deadline
	released [][]byte // held buffers sent in this batch, to reuse
	free     [][]byte // spare buffers
}

func startRelay(m *NS, ifA, ifB string, mtu int, imp Impair) (*relay, error) {
	rl := &relay{}
	var fds [2]int
	for i, name := range []string{ifA, ifB} {
		err := m.Do(func() error {
			fd, err := openPacket(name)
			fds[i] = fd
			return err
		})
		if err != nil {
			for _, fd := range fds[:i] {
				unix.Close(fd)
			}
			return nil, err
		}
	}
	for i, fd := range fds {
		rl.files[i] = os.NewFile(uintptr(fd), "packet:"+[]string{ifA, ifB}[i])
		raw, err := rl.files[i].SyscallConn()
		if err != nil {
			for _, f := range rl.files[:i+1] {
				f.Close()
			}
			for _, fd := range fds[i+1:] {
				unix.Close(fd)
			}
			return nil, err
		}
		rl.raws[i] = raw
	}
	bufSize := mtu + 14 + 4 + 64 // Ethernet header, one VLAN tag, slack
	for i := range rl.dirs {
		d := &relayDir{
			in: rl.files[i], inRaw: rl.raws[i], outRaw: rl.raws[1-i],
			sched: newSchedule(imp, uint64(i)), bufSize: bufSize,
		}
		d.init(relayBatch)
		rl.dirs[i] = d
	}
	for _, d := range rl.dirs {
		rl.wg.Add(1)
		go func() {
			defer rl.wg.Done()
			if err := d.run(); err != nil {
				rl.mu.Lock()
				rl.errs = append(rl.errs, fmt.Errorf("%s: %w", d.in.Name(), err))
				rl.mu.Unlock()
			}
		}()
	}
	return rl, nil
}

// openPacket opens a non-blocking AF_PACKET socket bound to interface name
// (in the calling thread's namespace) for all protocols.
func openPacket(name string) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return -1, err
	}
	// Protocol 0 receives nothing until the bind, which names the
	// interface and ETH_P_ALL together.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s on %s: %w", what, name, err)
	}
	// Our own transmissions are not for us to read; sll_pkttype is
	// checked as well.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
		return fail("PACKET_QDISC_BYPASS", err)
	}
	// Room for bursts of a fast sender while the relay is off the CPU.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
		return fail("SO_RCVBUFFORCE", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20); err != nil {
		return fail("SO_SNDBUFFORCE", err)
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// stop closes the sockets, waits for the goroutines and returns the
// errors that stopped them before.
func (rl *relay) stop() error {
	var err error
	rl.once.Do(func() {
		rl.pollKernelDrops()
		rl.mu.Lock()
		err = errors.Join(rl.errs...)
		rl.mu.Unlock()
		for _, f := range rl.files {
			f.Close()
		}
		rl.wg.Wait()
	})
	return err
}

// pollKernelDrops adds the frames each socket's receive queue dropped
// since the last call (reading the count resets it) to its direction.
func (rl *relay) pollKernelDrops() {
	for i, raw := range rl.raws {
		raw.Control(func(fd uintptr) {
			st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
			if err == nil {
				rl.dirs[i].c.lost.Add(uint64(st.Drops))
			}
		})
	}
}

func (d *relayDir) init(batch int) {
	d.bufs = make([][]byte, batch)
	d.iovs = make([]unix.Iovec, batch)
	d.msgs = make([]unix.Mmsghdr, batch)
	d.names = make([]unix.RawSockaddrLinklayer, batch)
	for i := range d.bufs {
		d.bufs[i] = make([]byte, d.bufSize)
		d.iovs[i].Base = &d.bufs[i][0]
		d.iovs[i].SetLen(d.bufSize)
		d.msgs[i].Hdr.Iov = &d.iovs[i]
		d.msgs[i].Hdr.SetIovlen(1)
		d.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&d.names[i]))
	}
	// Each frame read sends at most three: itself, its duplicate and
	// the frame held back before it.
	d.out = make([][]byte, 0, 3*batch)
	d.outIovs = make([]unix.Iovec, 3*batch)
	d.outMsgs = make([]unix.Mmsghdr, 3*batch)
}

// run forwards until the sockets are closed.
func (d *relayDir) run() error {
	for {
		n, err := d.recv()
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			// A held frame waited holdFor without a next frame.
			d.in.SetReadDeadline(time.Time{})
			if d.held != nil {
				d.out = append(d.out[:0], d.held)
				d.c.fwd.Add(1)
				d.released = append(d.released, d.held)
				d.held = nil
				if err := d.send(); err != nil {
					return err
				}
			}
			continue
		case errors.Is(err, os.ErrClosed):
			return nil
		case err != nil:
			return err
		}
		d.newHold = false
		d.process(n)
		if err := d.send(); err != nil {
			return err
		}
		if d.newHold && d.held != nil {
			d.in.SetReadDeadline(time.Now().Add(holdFor))
		}
	}
}

// recv reads a batch of frames into d.bufs and returns how many.
func (d *relayDir) recv() (int, error) {
	for i := range d.msgs {
		d.msgs[i].Hdr.Namelen = unix.SizeofSockaddrLinklayer
		d.msgs[i].Hdr.Flags = 0
	}
	var n int
	var errno syscall.Errno
	err := d.inRaw.Read(func(fd uintptr) bool {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&d.msgs[0])), uintptr(len(d.msgs)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			n = int(r)
		case unix.EAGAIN, unix.EINTR:
			return false
		default:
			errno = e
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, fmt.Errorf("recvmmsg: %w", errno)
	}
	return n, nil
}

// process applies the schedule to the n frames just read and lines up
// what to send in d.out.
func (d *relayDir) process(n int) {
	d.out = d.out[:0]
	for i := range n {
		m := &d.msgs[i]
		if d.names[i].Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
			d.c.in.Add(1)
			d.c.lost.Add(1)
			continue
		}
		frame := d.bufs[i][:m.Len]
		d.c.in.Add(1)
		act := actPass
		if len(frame) >= 14 && binary.BigEndian.Uint16(frame[12:14]) == 0x0800 {
			act = d.sched.next()
		}
		switch act {
		case actDrop:
			d.c.dropped.Add(1)
			continue
		case actReorder:
			if d.held == nil {
				// Keep this buffer; the slot gets a spare.
				d.held, d.newHold = frame, true
				d.bufs[i] = d.spare()
				d.iovs[i].Base = &d.bufs[i][0]
				continue
			}
			// One frame is held already: this one goes first, the
			// held one after it, which reorders the pair anyway.
		}
		d.out = append(d.out, frame)
		d.c.fwd.Add(1)
		if act == actDup {
			d.out = append(d.out, frame)
			d.c.duplicated.Add(1)
		}
		if d.held != nil {
			d.out = append(d.out, d.held)
			d.c.fwd.Add(1)
			d.c.reordered.Add(1)
			d.released = append(d.released, d.held)
			d.held = nil
		}
	}
}

func (d *relayDir) spare() []byte {
	if k := len(d.free); k > 0 {
		b := d.free[k-1]
		d.free = d.free[:k-1]
		return b[:cap(b)]
	}
	return make([]byte, d.bufSize)
}

// send transmits d.out in order. A frame the link refuses is counted lost;
// only a closed socket or a broken link stops the relay.
func (d *relayDir) send() error {
	defer func() {
		d.free = append(d.free, d.released...)
		clear(d.released)
		d.released = d.released[:0]
	}()
	if len(d.out) == 0 {
		return nil
	}
	for i, f := range d.out {
		d.outIovs[i].Base = &f[0]
		d.outIovs[i].SetLen(len(f))
		d.outMsgs[i].Hdr.Iov = &d.outIovs[i]
		d.outMsgs[i].Hdr.SetIovlen(1)
	}
	total, sent := len(d.out), 0
	for sent < total {
		var errno syscall.Errno
		err := d.outRaw.Write(func(fd uintptr) bool {
			r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&d.outMsgs[sent])), uintptr(total-sent), 0, 0, 0)
			switch e {
			case 0:
				sent += int(r)
			case unix.EAGAIN, unix.EINTR:
				return false
			default:
				errno = e
			}
			return true
		})
		if err != nil {
			return err
		}
		switch errno {
		case 0:
		case unix.ENOBUFS, unix.EMSGSIZE, unix.ENOMEM:
			// The frame at sent was refused: the peer's backlog was
			// full or the frame too long. Skip it.
			d.c.lost.Add(1)
			sent++
		default:
			return fmt.Errorf("sendmmsg: %w", errno)
		}
	}
	return nil
}
