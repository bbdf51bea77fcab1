//go:build linux

package afxdp_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/bypass/afxdp"
	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/internal/testnet"
)

// pollEcho serves every connection of p from one goroutine until stop is
// closed, answering each datagram on the connection it came in on.
func pollEcho(t *testing.T, p *bypass.Poller) (stop func()) {
	return pollEchoEvery(t, p, 10*time.Millisecond)
}

// pollEchoEvery is pollEcho with each Poll waiting up to wait.
func pollEchoEvery(t *testing.T, p *bypass.Poller, wait time.Duration) (stop func()) {
	t.Helper()
	quit := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		msgs := make([]bypass.PollMessage, 16)
		for i := range msgs {
			msgs[i].Buf = make([]byte, 2048)
		}
		for {
			select {
			case <-quit:
				done <- nil
				return
			default:
			}
			n, err := p.Poll(msgs, wait)
			if errors.Is(err, bypass.ErrTimeout) {
				continue
			}
			if err != nil {
				done <- err
				return
			}
			for _, m := range msgs[:n] {
				if _, err := m.Conn.WriteTo(m.Buf[:m.N], m.Addr); err != nil {
					done <- fmt.Errorf("echo on %v: %w", m.Conn.LocalAddr(), err)
					return
				}
			}
		}
	}()
	return func() {
		close(quit)
		if err := <-done; err != nil {
			t.Errorf("poller: %v", err)
		}
	}
}

// multicastSender opens a kernel UDP socket in ns that sends multicast out
// of ns's link.
func multicastSender(t *testing.T, ns *testnet.NS) int {
	t.Helper()
	var fd int
	if err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(ns.Link)
		if err != nil {
			return err
		}
		return unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(ifi.Index)})
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestManySocketsOnePoller opens eight afxdp sockets on one interface (seven
// unicast ports, one joined to a multicast group), serves them all from one
// poller, and ping-pongs on each with no loss. Closing one mid-run gives
// its port back to the kernel: a kernel socket bound there then receives.
func TestManySocketsOnePoller(t *testing.T) {
	p := newPair(t)
	group := netip.MustParseAddr("239.9.9.9")
	poller, err := bypass.NewPoller(bypass.PollerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer poller.Close()
	var conns []*afxdp.Conn
	for i := range 8 {
		var c backend.PacketConn
		err := p.B.Do(func() (err error) {
			addr := netip.AddrPortFrom(p.B.Addr, uint16(port+i))
			if i == 7 {
				addr = netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port+i))
			}
			c, err = afxdp.Backend{}.ListenUDP(addr, backend.Options{Interface: p.B.Link})
			if err != nil {
				return err
			}
			if i == 7 {
				return c.JoinGroup(group)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("socket %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c.(*afxdp.Conn))
		if _, err := poller.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range conns[1:] {
		if c.Stack() != conns[0].Stack() {
			t.Fatal("sockets on one interface are on different stacks")
		}
	}
	if n := conns[0].Stack().Sockets(); n != 8 {
		t.Fatalf("the stack has %d sockets, want 8", n)
	}
	stop := pollEcho(t, poller)
	cli := kernelUDP(t, p.A)
	for i := range 7 {
		pingPong(t, cli, netip.AddrPortFrom(p.B.Addr, uint16(port+i)), 20)
	}
	// The multicast socket: datagrams to the group, answered from B.
	mfd := multicastSender(t, p.A)
	buf := make([]byte, 64)
	for i := range 20 {
		msg := binary.BigEndian.AppendUint64(nil, uint64(i))
		if err := unix.Sendto(mfd, msg, 0, &unix.SockaddrInet4{Port: port + 7, Addr: group.As4()}); err != nil {
			t.Fatal(err)
		}
		unix.SetsockoptTimeval(mfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
		n, _, err := unix.Recvfrom(mfd, buf, 0)
		if err != nil || n != len(msg) || binary.BigEndian.Uint64(buf) != uint64(i) {
			t.Fatalf("multicast echo %d: %d bytes, %v", i, n, err)
		}
	}
	// Close the third socket while the poller runs: its port goes back to
	// the kernel at once.
	stop()
	if err := poller.Remove(conns[2]); err != nil {
		t.Fatal(err)
	}
	if err := conns[2].Close(); err != nil {
		t.Fatal(err)
	}
	stop = pollEcho(t, poller)
	defer stop()
	var ks *net.UDPConn
	if err := p.B.Do(func() (err error) {
		ks, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.B.Addr, port+2)))
		return err
	}); err != nil {
		t.Fatalf("kernel bind of a closed socket's port: %v", err)
	}
	defer ks.Close()
	if _, err := cli.WriteToUDPAddrPort([]byte("kernel"), netip.AddrPortFrom(p.B.Addr, port+2)); err != nil {
		t.Fatal(err)
	}
	ks.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, _, err := ks.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "kernel" {
		t.Fatalf("kernel socket on the freed port read %q, %v", buf[:n], err)
	}
	// The others still answer.
	for _, i := range []int{0, 6} {
		pingPong(t, cli, netip.AddrPortFrom(p.B.Addr, uint16(port+i)), 5)
	}
	for i, c := range conns {
		if i == 2 {
			continue
		}
		if s := c.Stats(); s.RxPackets == 0 || s.DropQueueFull != 0 {
			t.Errorf("socket %d stats %+v", i, s)
		}
	}
}

// TestSecondProcessRefusedFirstUndisturbed: a process that holds an
// interface keeps it; another process asking for it gets an error naming
// the holder, and the holder goes on answering.
func TestSecondProcessRefusedFirstUndisturbed(t *testing.T) {
	p := newPair(t)
	cmd := startHelperServer(t, p.B)
	err := p.B.Do(func() error {
		c, err := afxdp.Backend{}.ListenUDP(netip.AddrPortFrom(p.B.Addr, port+1), backend.Options{Interface: p.B.Link})
		if err == nil {
			c.Close()
		}
		return err
	})
	want := fmt.Sprintf("by process %d", cmd.Process.Pid)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second process: %v; want an error naming %q", err, want)
	}
	pingPong(t, kernelUDP(t, p.A), netip.AddrPortFrom(p.B.Addr, port), 10)
}

// TestFragmentsGoToTheKernel: the XDP program passes IP fragments, so a
// kernel socket on another port receives a fragmented datagram whole, even
// when the bytes where a second fragment's UDP port would sit equal the
// afxdp socket's port.
func TestFragmentsGoToTheKernel(t *testing.T) {
	p := newPair(t)
	srv := listen(t, p.B, backend.Options{})
	done := echo(srv)
	defer func() { srv.Close(); <-done }()
	var ks *net.UDPConn
	if err := p.B.Do(func() (err error) {
		ks, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.B.Addr, port+50)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	// 3000 bytes: the sender fragments at the 1500-byte MTU; the second
	// fragment starts 1480 bytes into the IP payload, so its "destination
	// port" is UDP payload bytes 1474 and 1475.
	msg := make([]byte, 3000)
	binary.BigEndian.PutUint16(msg[1474:], port)
	cli := kernelUDP(t, p.A)
	if _, err := cli.WriteToUDPAddrPort(msg, netip.AddrPortFrom(p.B.Addr, port+50)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4000)
	ks.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := ks.ReadFromUDPAddrPort(buf)
	if err != nil || n != len(msg) {
		t.Fatalf("kernel socket got %d bytes, %v; want the %d-byte datagram reassembled", n, err, len(msg))
	}
	if s := srv.Stats(); s.DropFragment != 0 {
		t.Fatalf("the bypass saw %d fragments", s.DropFragment)
	}
}

// TestExplicitStackHandle: sockets opened through a stack handle and
// through ListenUDP share the stack; the stack, and its XDP program, go
// when the last handle and socket have.
func TestExplicitStackHandle(t *testing.T) {
	p := newPair(t)
	var st bypass.Stack
	var a, b bypass.PacketConn
	err := p.B.Do(func() (err error) {
		if st, err = bypass.OpenStack(bypass.Options{Backend: "afxdp", Interface: p.B.Link}); err != nil {
			return err
		}
		if a, err = st.ListenUDP(netip.AddrPortFrom(p.B.Addr, port), bypass.Options{}); err != nil {
			return err
		}
		b, err = bypass.ListenUDP(netip.AddrPortFrom(p.B.Addr, port+1), bypass.Options{Backend: "afxdp", Interface: p.B.Link})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if a.(*afxdp.Conn).Stack() != b.(*afxdp.Conn).Stack() {
		t.Fatal("a handle's socket and a ListenUDP socket are on different stacks")
	}
	if st.Info().Backend != "afxdp" || st.Info().Interface != p.B.Link {
		t.Fatalf("stack info %+v", st.Info())
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); !errors.Is(err, bypass.ErrClosed) {
		t.Fatalf("second Close of a handle: %v", err)
	}
	done := echo(a)
	pingPong(t, kernelUDP(t, p.A), netip.AddrPortFrom(p.B.Addr, port), 5)
	a.Close()
	<-done
	if o := p.Exec(t, p.B, "ip", "link", "show", "dev", p.B.Link); !strings.Contains(o, "xdp") {
		t.Fatal("the stack closed while a socket was open")
	}
	b.Close()
	assertNoXDP(t, p, p.B)
	if _, err := bypass.OpenStack(bypass.Options{Backend: "busypoll"}); !errors.Is(err, bypass.ErrNotSupported) {
		t.Fatalf("OpenStack on busypoll: %v, want ErrNotSupported", err)
	}
}

// TestBlockingPoller: a poller that sleeps in epoll on the stack's AF_XDP
// socket wakes for each datagram, on whichever socket of the stack.
func TestBlockingPoller(t *testing.T) {
	p := newPair(t)
	poller, err := bypass.NewPoller(bypass.PollerOptions{Wait: bypass.WaitBlock})
	if err != nil {
		t.Fatal(err)
	}
	defer poller.Close()
	for i := range 2 {
		var c backend.PacketConn
		if err := p.B.Do(func() (err error) {
			c, err = afxdp.Backend{}.ListenUDP(netip.AddrPortFrom(p.B.Addr, uint16(port+i)), backend.Options{Interface: p.B.Link})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := poller.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	// Each Poll may sleep far longer than the client waits for an echo:
	// only a wake-up by the arriving frame answers in time.
	stop := pollEchoEvery(t, poller, time.Minute)
	cli := kernelUDP(t, p.A)
	for range 3 {
		for i := range 2 {
			time.Sleep(5 * time.Millisecond) // let the poller fall asleep
			pingPong(t, cli, netip.AddrPortFrom(p.B.Addr, uint16(port+i)), 1)
		}
	}
	done := make(chan struct{})
	go func() { stop(); close(done) }()
	for { // wake the poller so that it sees stop
		cli.WriteToUDPAddrPort([]byte("bye"), netip.AddrPortFrom(p.B.Addr, port))
		select {
		case <-done:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestSourceSpecificOnAFXDP: an afxdp socket joined to a group for one
// source receives that source's datagrams and not another's, though the
// XDP program steers the group's whole port; leaving stops delivery.
func TestSourceSpecificOnAFXDP(t *testing.T) {
	p := newPair(t)
	other := netip.MustParseAddr("10.198.9.1")
	p.Exec(t, p.A, "ip", "addr", "add", other.String()+"/32", "dev", p.A.Link)
	p.Exec(t, p.B, "ip", "route", "add", "10.198.9.0/24", "dev", p.B.Link)
	group := netip.MustParseAddr("232.9.9.9")
	var rx backend.PacketConn
	if err := p.B.Do(func() (err error) {
		rx, err = afxdp.Backend{}.ListenUDP(netip.AddrPortFrom(netip.IPv4Unspecified(), port), backend.Options{Interface: p.B.Link, ReadTimeout: 200 * time.Millisecond})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := rx.JoinSourceGroup(group, p.A.Addr); err != nil {
		t.Fatal(err)
	}
	send := func(src netip.Addr, msg string) {
		t.Helper()
		fd := multicastSender(t, p.A)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
			t.Fatal(err)
		}
		if err := unix.Sendto(fd, []byte(msg), 0, &unix.SockaddrInet4{Port: port, Addr: group.As4()}); err != nil {
			t.Fatal(err)
		}
	}
	send(other, "no")
	send(p.A.Addr, "yes")
	buf := make([]byte, 16)
	n, from, err := rx.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "yes" || from.Addr() != p.A.Addr {
		t.Fatalf("read %q from %v, %v; want only the joined source's datagram", buf[:n], from, err)
	}
	if _, _, err := rx.ReadFrom(buf); !errors.Is(err, backend.ErrTimeout) {
		t.Fatalf("a second read: %v, want a timeout (the other source's datagram dropped)", err)
	}
	if d := rx.Stats().DropNotOurs; d == 0 {
		t.Fatal("the other source's datagram was not seen and dropped by the stack's source filter")
	}
	if err := rx.LeaveSourceGroup(group, p.A.Addr); err != nil {
		t.Fatal(err)
	}
	send(p.A.Addr, "after")
	if _, _, err := rx.ReadFrom(buf); !errors.Is(err, backend.ErrTimeout) {
		t.Fatalf("read after leaving: %v, want a timeout", err)
	}
}
