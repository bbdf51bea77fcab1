//go:build linux

package bypass_test

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/frame"
	"github.com/lowlat/lowlat/bypass/internal/stack"
)

// kernelConns opens n UDP sockets on 127.0.0.1 of the named backend.
func kernelConns(t testing.TB, name string, n int, wait bypass.WaitMode) []bypass.PacketConn {
	t.Helper()
	var cs []bypass.PacketConn
	for range n {
		c, err := bypass.ListenUDP(loopback, bypass.Options{Backend: name, Wait: wait})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	return cs
}

func newPoller(t testing.TB, o bypass.PollerOptions, cs ...bypass.PacketConn) *bypass.Poller {
	t.Helper()
	p, err := bypass.NewPoller(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	for _, c := range cs {
		if _, err := p.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func pollMsgs(n int) []bypass.PollMessage {
	m := make([]bypass.PollMessage, n)
	for i := range m {
		m[i].Buf = make([]byte, 256)
	}
	return m
}

// collect polls until want messages arrived, returning them by payload.
func collect(t *testing.T, p *bypass.Poller, want int) map[string]bypass.PollMessage {
	t.Helper()
	got := map[string]bypass.PollMessage{}
	msgs := pollMsgs(8)
	for len(got) < want {
		n, err := p.Poll(msgs, 2*time.Second)
		if err != nil {
			t.Fatalf("after %d of %d: %v", len(got), want, err)
		}
		for _, m := range msgs[:n] {
			got[string(m.Buf[:m.N])] = m
		}
	}
	return got
}

// TestPollerServesEveryConnection sends one datagram to each of several
// kernel sockets (few: read directly; many: through epoll; and a blocking
// poller) and checks each comes back with its connection.
func TestPollerServesEveryConnection(t *testing.T) {
	for _, tc := range []struct {
		backend string
		n       int
		wait    bypass.WaitMode
	}{
		{"busypoll", 3, bypass.WaitSpin},
		{"busypoll", 12, bypass.WaitSpin},
		{"kernel", 12, bypass.WaitBlock},
	} {
		t.Run(fmt.Sprintf("%s %d %v", tc.backend, tc.n, tc.wait), func(t *testing.T) {
			cs := kernelConns(t, tc.backend, tc.n, tc.wait)
			p := newPoller(t, bypass.PollerOptions{Wait: tc.wait}, cs...)
			src := kernelConns(t, "kernel", 1, bypass.WaitBlock)[0]
			for i, c := range cs {
				if _, err := src.WriteTo([]byte(fmt.Sprint("to", i)), c.LocalAddr()); err != nil {
					t.Fatal(err)
				}
			}
			got := collect(t, p, tc.n)
			for i, c := range cs {
				m, ok := got[fmt.Sprint("to", i)]
				if !ok || m.Conn != c || m.ID != i || m.Addr != src.LocalAddr() {
					t.Fatalf("message for connection %d: %+v (ok %v)", i, m, ok)
				}
			}
			// Nothing more: a timeout, and TryPoll returns at once.
			if n, err := p.Poll(pollMsgs(4), 20*time.Millisecond); n != 0 || !errors.Is(err, bypass.ErrTimeout) {
				t.Fatalf("Poll on nothing = %d, %v; want a timeout", n, err)
			}
			if n, err := p.TryPoll(pollMsgs(4)); n != 0 || err != nil {
				t.Fatalf("TryPoll on nothing = %d, %v", n, err)
			}
		})
	}
}

// TestPollerFairness floods one connection; a datagram on another must
// still come out within a few polls: with few connections (read directly
// each pass) and with many (the flooded one hot, the rest through epoll
// every few passes).
func TestPollerFairness(t *testing.T) {
	for _, n := range []int{2, 12} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			cs := kernelConns(t, "busypoll", n, bypass.WaitSpin)
			p := newPoller(t, bypass.PollerOptions{Quota: 4}, cs...)
			src := kernelConns(t, "kernel", 1, bypass.WaitBlock)[0]
			for range 200 {
				src.WriteTo([]byte("flood"), cs[0].LocalAddr())
			}
			quiet := cs[n-1]
			src.WriteTo([]byte("quiet"), quiet.LocalAddr())
			time.Sleep(10 * time.Millisecond) // all queued in the kernel
			msgs := pollMsgs(8)
			for poll := range 8 {
				got, err := p.Poll(msgs, time.Second)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range msgs[:got] {
					if string(m.Buf[:m.N]) == "quiet" {
						if m.Conn != quiet {
							t.Fatal("the quiet datagram came with the wrong connection")
						}
						return
					}
				}
				t.Logf("poll %d: %d messages, none from the quiet connection", poll, got)
			}
			t.Fatal("a flooded connection starved another for eight polls")
		})
	}
}

func TestPollerReportsClosedConnection(t *testing.T) {
	cs := kernelConns(t, "busypoll", 1, bypass.WaitSpin)
	p := newPoller(t, bypass.PollerOptions{}, cs...)
	if _, err := p.Add(cs[0]); err == nil {
		t.Fatal("the same connection added twice")
	}
	cs[0].Close()
	if _, err := p.Poll(pollMsgs(1), time.Second); !errors.Is(err, bypass.ErrClosed) {
		t.Fatalf("Poll over a closed connection: %v, want ErrClosed", err)
	}
	if err := p.Remove(cs[0]); err != nil || p.Len() != 0 {
		t.Fatalf("Remove: %v, %d left", err, p.Len())
	}
	if _, err := bypass.NewPoller(bypass.PollerOptions{Quota: -1}); err == nil {
		t.Fatal("a negative quota was accepted")
	}
}

// memStack is a user-space stack over an in-memory driver, with n sockets
// on ports 5000 and up: the poller's stack path without root.
func memStack(t testing.TB, n int) (*stack.MemDriver, []*stack.Socket) {
	t.Helper()
	d := stack.NewMemDriver(2048, 512, 64)
	st, err := stack.New(stack.Config{
		Backend: "mem", Driver: d, BufSize: 2048, Ports: &stack.MemPorts{},
		Iface:   stack.Interface{Name: "mem0", MAC: ourMAC, MTU: 1500, Src: ourIP},
		Resolve: func(netip.Addr) (frame.MAC, error) { return peerMAC, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Release()
	var ss []*stack.Socket
	for i := range n {
		s, err := st.Listen(netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(5000+i)), backend.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		ss = append(ss, s)
	}
	return d, ss
}

var (
	ourMAC  = frame.MAC{2, 0, 0, 0, 0, 1}
	peerMAC = frame.MAC{2, 0, 0, 0, 0, 2}
	ourIP   = netip.MustParseAddr("10.9.0.1")
	peerIP  = netip.MustParseAddr("10.9.0.2")
)

func udpFrame(t testing.TB, port uint16, payload []byte) []byte {
	t.Helper()
	tm, err := frame.NewTemplate(frame.Flow{SrcMAC: peerMAC, DstMAC: ourMAC,
		Src: netip.AddrPortFrom(peerIP, 9), Dst: netip.AddrPortFrom(ourIP, port)})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, frame.HeaderLen+len(payload))
	n, _ := tm.Build(b, payload)
	return b[:n]
}

// TestPollerOverOneStack serves 64 sockets of one stack: every datagram
// reaches its socket's id, in the order sent per socket, with no
// allocation per message.
func TestPollerOverOneStack(t *testing.T) {
	d, ss := memStack(t, 64)
	cs := make([]bypass.PacketConn, len(ss))
	for i, s := range ss {
		cs[i] = s
	}
	p := newPoller(t, bypass.PollerOptions{}, cs...)
	for round := range 3 {
		for i := range ss {
			d.Deliver(udpFrame(t, uint16(5000+i), []byte(fmt.Sprint(i, "/", round))))
		}
	}
	got := collect(t, p, 3*64)
	for i := range ss {
		for round := range 3 {
			if m := got[fmt.Sprint(i, "/", round)]; m.ID != i || m.Conn != cs[i] {
				t.Fatalf("datagram %d/%d came with id %d", i, round, m.ID)
			}
		}
	}
	in := udpFrame(t, 5033, []byte("x"))
	msgs := pollMsgs(4)
	allocs := testing.AllocsPerRun(1000, func() {
		d.Deliver(in)
		if n, err := p.Poll(msgs, time.Second); n != 1 || err != nil {
			t.Fatal(n, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per message", allocs)
	}
}

func TestPollerNoAllocsKernel(t *testing.T) {
	cs := kernelConns(t, "busypoll", 8, bypass.WaitSpin)
	p := newPoller(t, bypass.PollerOptions{}, cs...)
	src := kernelConns(t, "kernel", 1, bypass.WaitBlock)[0]
	msgs := pollMsgs(4)
	to := cs[5].LocalAddr()
	payload := []byte("x")
	allocs := testing.AllocsPerRun(500, func() {
		src.WriteTo(payload, to)
		if n, err := p.Poll(msgs, time.Second); n != 1 || err != nil {
			t.Fatal(n, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per message", allocs)
	}
}

// TestPollerSeesClosedWhileIdle: a connection closed while nothing says it
// is ready (a blocking poller over kernel sockets, whose descriptor leaves
// epoll on close; a stack socket with nothing queued) still ends Poll with
// ErrClosed instead of leaving it asleep or blind.
func TestPollerSeesClosedWhileIdle(t *testing.T) {
	t.Run("blocking, kernel", func(t *testing.T) {
		cs := kernelConns(t, "kernel", 2, bypass.WaitBlock)
		p := newPoller(t, bypass.PollerOptions{Wait: bypass.WaitBlock}, cs...)
		cs[1].Close()
		if _, err := p.Poll(pollMsgs(1), 0); !errors.Is(err, bypass.ErrClosed) {
			t.Fatalf("Poll: %v, want ErrClosed", err)
		}
	})
	t.Run("spinning, stack", func(t *testing.T) {
		_, ss := memStack(t, 2)
		p := newPoller(t, bypass.PollerOptions{}, ss[0], ss[1])
		ss[0].Close()
		if _, err := p.Poll(pollMsgs(1), 0); !errors.Is(err, bypass.ErrClosed) {
			t.Fatalf("Poll: %v, want ErrClosed", err)
		}
	})
}
