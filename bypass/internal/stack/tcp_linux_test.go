//go:build linux

package stack

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/frame"
	"github.com/lowlat/lowlat/bypass/internal/tcp"
)

// link joins two in-memory stacks: what one sends, the other receives,
// through an optional seeded impairment.
type link struct {
	a, b           *Stack
	da, db         *MemDriver
	pa, pb         *MemPorts
	ipA, ipB       netip.Addr
	macA, macB     frame.MAC
	mu             sync.Mutex
	rng            *rand.Rand
	loss, reorder  float64
	dup            float64
	held           [2][]byte
	dropped, moved int
	pureACKs       [2]int // segments with no data and only ACK set, per direction
}

// isPureACK reports whether f is a TCP segment with no data and no flag
// but ACK.
func isPureACK(f []byte) bool {
	var flt frame.Filter
	flt.AcceptTCP(true)
	var p frame.Packet
	if flt.Parse(f, &p) != frame.OK || p.Proto != frame.ProtoTCP {
		return false
	}
	return len(p.Payload) == int(p.Payload[12]>>4)*4 && p.Payload[13] == frame.TCPAck
}

func newLink(t testing.TB, cfgTCP tcp.Config) *link {
	// Spinning readers and writers hold a P each; the link's own
	// goroutines need Ps of their own to be scheduled before the
	// runtime's 10 ms preemption.
	prev := runtime.GOMAXPROCS(16)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	l := &link{ipA: netip.MustParseAddr("10.9.0.1"), ipB: netip.MustParseAddr("10.9.0.2"),
		macA: frame.MAC{2, 0, 0, 0, 0, 1}, macB: frame.MAC{2, 0, 0, 0, 0, 2}, pa: &MemPorts{}, pb: &MemPorts{}}
	l.da, l.db = NewMemDriver(2048, 512, 512), NewMemDriver(2048, 512, 512)
	// Frames cross on a goroutine per direction: OnSend runs under the
	// sending driver's lock, and delivering there could deadlock with the
	// other direction.
	for dir, d := range []*MemDriver{l.da, l.db} {
		to := l.db
		if dir == 1 {
			to = l.da
		}
		ch, stop := make(chan []byte, 4096), make(chan struct{})
		d.OnSend = func(f []byte) {
			select {
			case ch <- append([]byte(nil), f...):
			case <-stop:
			}
		}
		go func() {
			for {
				select {
				case f := <-ch:
					l.carry(dir, to, f)
				case <-stop:
					return
				}
			}
		}()
		t.Cleanup(func() { close(stop) })
	}
	mk := func(d *MemDriver, p *MemPorts, ip netip.Addr, mac, peer frame.MAC) *Stack {
		st, err := New(Config{Backend: "mem", Driver: d, BufSize: 2048, Ports: p, TCP: cfgTCP,
			Iface:   Interface{Name: "mem0", Index: 1, MAC: mac, MTU: 1500, Src: ip},
			Resolve: func(netip.Addr) (frame.MAC, error) { return peer, nil }})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	l.a = mk(l.da, l.pa, l.ipA, l.macA, l.macB)
	l.b = mk(l.db, l.pb, l.ipB, l.macB, l.macA)
	return l
}

// carry delivers a frame sent in direction dir to the other driver. It
// runs under the sending driver's lock.
func (l *link) carry(dir int, to *MemDriver, f []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if isPureACK(f) {
		l.pureACKs[dir]++
	}
	if l.rng != nil {
		r := l.rng.Float64()
		switch {
		case r < l.loss:
			l.dropped++
			return
		case r < l.loss+l.reorder && l.held[dir] == nil:
			l.held[dir] = f
			return
		case r < l.loss+l.reorder+l.dup:
			to.Deliver(f)
		}
	}
	l.moved++
	to.Deliver(f)
	if h := l.held[dir]; h != nil {
		l.held[dir] = nil
		to.Deliver(h)
	}
}

func (l *link) close(t testing.TB) {
	t.Helper()
	for _, st := range []*Stack{l.a, l.b} {
		if err := st.Release(); err != nil {
			t.Errorf("release stack: %v", err)
		}
	}
}

// connect listens on b and dials from a.
func (l *link) connect(t testing.TB, o backend.Options) (*TCPListener, *TCPConn, *TCPConn) {
	t.Helper()
	ln, err := l.b.ListenTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), 7000), o)
	if err != nil {
		t.Fatal(err)
	}
	acc := make(chan *TCPConn, 1)
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			t.Error(err)
		}
		acc <- c
	}()
	c, err := l.a.DialTCP(t.Context(), netip.AddrPortFrom(l.ipB, 7000), o)
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.FailNow()
	}
	return ln, c, s
}

func TestTCPOverStacksEchoAndClose(t *testing.T) {
	l := newLink(t, tcp.Config{})
	ln, c, s := l.connect(t, backend.Options{})
	if !l.da.SteeredTCP(c.LocalAddr()) || !l.db.SteeredTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), 7000)) {
		t.Fatal("flows not steered")
	}
	if !l.pa.TakenTCP(c.LocalAddr().Port()) || l.pa.Taken(c.LocalAddr().Port()) {
		t.Fatal("the dialer's port is not reserved for TCP (only)")
	}
	go func() {
		buf := make([]byte, 9000)
		for {
			n, err := s.ReadMsg(buf)
			if err != nil {
				s.Close()
				return
			}
			if err := s.WriteMsg(buf[:n]); err != nil {
				t.Error(err)
			}
		}
	}()
	buf := make([]byte, 9000)
	for _, size := range []int{24, 1000, 1460, 4000, 8972} {
		msg := bytes.Repeat([]byte{byte(size)}, size)
		if err := c.WriteMsg(msg); err != nil {
			t.Fatal(err)
		}
		n, err := c.ReadMsg(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("size %d: echo %d bytes, %v", size, n, err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after both FINs: %d, %v; want EOF", n, err)
	}
	st, state := c.TCPStats()
	if state != tcp.TimeWait || st.Retransmits != 0 {
		t.Fatalf("client state %v, stats %+v", state, st)
	}
	c.Close()
	ln.Close()
	// The keeper resets the orphan in TIME-WAIT once nothing else holds
	// the stack, and every port and flow goes back.
	l.close(t)
	waitFor(t, func() bool { return l.da.Closed() && l.db.Closed() })
	if l.pa.TakenTCP(c.LocalAddr().Port()) || l.pb.TakenTCP(7000) || len(l.da.TCPFlows)+len(l.db.TCPFlows) != 0 {
		t.Fatal("ports or flows left behind")
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached in 10 s")
}

func TestTCPOverStacksImpaired(t *testing.T) {
	l := newLink(t, tcp.Config{MinRTO: 2 * time.Millisecond})
	l.rng = rand.New(rand.NewPCG(1, 2))
	l.loss, l.reorder, l.dup = 0.01, 0.01, 0.005
	_, c, s := l.connect(t, backend.Options{})
	const size = 8 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	want := sha256.Sum256(data)
	done := make(chan [32]byte)
	go func() {
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for {
			n, err := s.Read(buf)
			h.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Error(err)
				break
			}
		}
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		s.Close()
		done <- sum
	}()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	if got := <-done; got != want {
		t.Fatal("data differs")
	}
	cs, _ := c.TCPStats()
	if cs.Retransmits == 0 || l.dropped == 0 {
		t.Errorf("impairment not exercised: %+v, dropped %d", cs, l.dropped)
	}
	t.Logf("client %+v; link dropped %d", cs, l.dropped)
	c.Close()
	l.close(t)
}

func TestTCPNoListenerResetAndRefused(t *testing.T) {
	l := newLink(t, tcp.Config{})
	ln, err := l.b.ListenTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), 7000), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	// The port went back: a SYN to it is the kernel's business (not
	// steered here), so the stack drops it and the dial times out.
	_, err = l.a.DialTCP(t.Context(), netip.AddrPortFrom(l.ipB, 7000), backend.Options{DialTimeout: 50 * time.Millisecond})
	if err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	// Nothing of b's is open, so nothing polls it: the test does, until
	// the SYNs that crossed the link are taken.
	waitFor(t, func() bool { l.b.Pump(); return l.b.TCPStats().DropNoPort > 0 })
	// A listener with a backlog of one refuses the second SYN with a RST.
	ln, err = l.b.ListenTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), 7001), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetBacklog(1)
	c1, err := l.a.DialTCP(t.Context(), netip.AddrPortFrom(l.ipB, 7001), backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.a.DialTCP(t.Context(), netip.AddrPortFrom(l.ipB, 7001), backend.Options{})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial past the backlog: %v, want ECONNREFUSED", err)
	}
	if got := l.b.TCPStats().ListenOverflows; got != 1 {
		t.Errorf("ListenOverflows %d", got)
	}
	c1.Close()
	ln.Close()
	l.close(t)
	waitFor(t, func() bool { return l.da.Closed() && l.db.Closed() })
}

// TestTCPAckRidesOnTheAnswer: a server that answers each request before
// polling again sends one segment per request, the answer carrying the
// ACK; with ImmediateACK the request is acknowledged on its own first.
func TestTCPAckRidesOnTheAnswer(t *testing.T) {
	for _, immediate := range []bool{false, true} {
		l := newLink(t, tcp.Config{})
		_, c, s := l.connect(t, backend.Options{TCP: backend.TCPOptions{ImmediateACK: immediate}})
		go func() {
			buf := make([]byte, 256)
			for {
				n, err := s.ReadMsg(buf)
				if err != nil {
					s.Close()
					return
				}
				s.WriteMsg(buf[:n])
			}
		}()
		buf := make([]byte, 256)
		roundTrip := func() {
			if err := c.WriteMsg(make([]byte, 64)); err != nil {
				t.Fatal(err)
			}
			if _, err := c.ReadMsg(buf); err != nil {
				t.Fatal(err)
			}
		}
		for range 10 {
			roundTrip()
		}
		l.mu.Lock()
		before := l.pureACKs[1]
		l.mu.Unlock()
		const rounds = 200
		for range rounds {
			roundTrip()
		}
		l.mu.Lock()
		pure := l.pureACKs[1] - before
		l.mu.Unlock()
		t.Logf("immediate %v: %d pure ACKs from the server in %d round trips", immediate, pure, rounds)
		if immediate && pure < rounds || !immediate && pure > rounds/2 {
			t.Errorf("immediate %v: %d pure ACKs from the server in %d round trips", immediate, pure, rounds)
		}
		c.Close()
		l.close(t)
	}
}

// TestTCPOrphanDataResetAndRelisten: data for a connection the server
// closed draws a RST; a new listener takes the port at once although the
// closed connection's TIME-WAIT still holds it.
func TestTCPOrphanDataResetAndRelisten(t *testing.T) {
	l := newLink(t, tcp.Config{})
	ln, c, s := l.connect(t, backend.Options{})
	s.Close() // the server closes first: its side goes to FIN-WAIT
	buf := make([]byte, 64)
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read after the server's FIN: %d, %v", n, err)
	}
	c.Write([]byte("late order")) // for a closed connection
	waitFor(t, func() bool { _, st := c.TCPStats(); return st == tcp.Closed })
	if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("write after the reset: %v, want ECONNRESET", err)
	}
	c.Close()
	ln.Close()
	ln2, err := l.b.ListenTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), 7000), backend.Options{})
	if err != nil {
		t.Fatalf("listen again on the port: %v", err)
	}
	_, c2, s2 := func() (*TCPListener, *TCPConn, *TCPConn) {
		acc := make(chan *TCPConn, 1)
		go func() { a, _ := ln2.AcceptTCP(); acc <- a }()
		c2, err := l.a.DialTCP(t.Context(), netip.AddrPortFrom(l.ipB, 7000), backend.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return ln2, c2, <-acc
	}()
	if s2 == nil {
		t.Fatal("no connection accepted on the second listener")
	}
	s2.Close()
	c2.Close()
	ln2.Close()
	l.close(t)
	waitFor(t, func() bool { return l.da.Closed() && l.db.Closed() })
}
