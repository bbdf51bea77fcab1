//go:build linux

package afxdp_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/afxdp"
	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/stack"
	"github.com/lowlat/lowlat/internal/testnet"
)

const port = 9100

// newPair gives two namespaces over veth with complete UDP checksums on the
// wire (veth otherwise leaves them to an offload that AF_XDP never runs).
func newPair(t *testing.T) *testnet.Pair {
	t.Helper()
	p := testnet.NewPair(t, testnet.Config{TxChecksumOff: true})
	requireAFXDP(t, p)
	return p
}

// requireAFXDP skips when the kernel lacks AF_XDP sockets.
func requireAFXDP(t *testing.T, p *testnet.Pair) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW, 0)
	if errors.Is(err, unix.EAFNOSUPPORT) {
		t.Skip("kernel built without CONFIG_XDP_SOCKETS")
	}
	if err == nil {
		unix.Close(fd)
	}
}

// listen opens an afxdp endpoint inside ns.
func listen(t *testing.T, ns *testnet.NS, o backend.Options) *afxdp.Conn {
	t.Helper()
	o.Backend = "afxdp"
	if o.Interface == "" {
		o.Interface = ns.Link
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = 2 * time.Second
	}
	var c backend.PacketConn
	if err := ns.Do(func() (err error) {
		c, err = afxdpListen(ns, o)
		return err
	}); err != nil {
		t.Fatalf("listen afxdp in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*afxdp.Conn)
}

func afxdpListen(ns *testnet.NS, o backend.Options) (backend.PacketConn, error) {
	o.Backend = "afxdp"
	if o.Interface == "" {
		o.Interface = ns.Link
	}
	return afxdp.Backend{}.ListenUDP(netip.AddrPortFrom(ns.Addr, port), o)
}

// echo serves c until it is closed; it returns what the loop ended with.
func echo(c backend.PacketConn) <-chan error {
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 9000)
		for {
			n, from, err := c.ReadFrom(buf)
			if errors.Is(err, backend.ErrTimeout) {
				continue
			}
			if err != nil {
				done <- err
				return
			}
			if _, err := c.WriteTo(buf[:n], from); err != nil {
				done <- err
				return
			}
		}
	}()
	return done
}

// kernelUDP opens a plain UDP socket inside ns.
func kernelUDP(t *testing.T, ns *testnet.NS) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: ns.Addr.AsSlice()})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pingPong sends n numbered messages to dst and checks each echo.
func pingPong(t *testing.T, c *net.UDPConn, dst netip.AddrPort, n int) {
	t.Helper()
	msg := make([]byte, 64)
	buf := make([]byte, 2048)
	for i := range n {
		binary.BigEndian.PutUint64(msg, uint64(i))
		if _, err := c.WriteToUDPAddrPort(msg, dst); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		got, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if from != dst || !bytes.Equal(buf[:got], msg) {
			t.Fatalf("echo %d: %d bytes from %v, want %d bytes from %v", i, got, from, len(msg), dst)
		}
	}
}

func TestServerWithKernelClient(t *testing.T) {
	p := newPair(t)
	srv := listen(t, p.B, backend.Options{})
	info := srv.Info()
	if info.Backend != "afxdp" || info.XDPMode == "" || info.BindMode == "" {
		t.Fatalf("info %+v: backend, XDP mode and bind mode must be set", info)
	}
	t.Logf("server: xdp %s, bind %s, notes %q", info.XDPMode, info.BindMode, info.Notes)
	done := echo(srv)
	cli := kernelUDP(t, p.A)
	pingPong(t, cli, netip.AddrPortFrom(p.B.Addr, port), 200)
	st := srv.Stats()
	if st.RxPackets < 200 || st.TxPackets < 200 {
		t.Fatalf("stats %+v: want at least 200 received and sent", st)
	}
	srv.Close()
	if err := <-done; !errors.Is(err, backend.ErrClosed) {
		t.Fatalf("echo loop ended with %v, want ErrClosed", err)
	}
	assertNoXDP(t, p, p.B)
}

func TestBothEndsAFXDP(t *testing.T) {
	p := newPair(t)
	srv := listen(t, p.B, backend.Options{})
	done := echo(srv)
	cli := listen(t, p.A, backend.Options{})
	dst := netip.AddrPortFrom(p.B.Addr, port)
	msgs := make([]backend.Message, 4)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 256)
	}
	buf := make([]byte, 2048)
	for i := range 200 {
		msg := fmt.Appendf(nil, "ping %d", i)
		if _, err := cli.WriteTo(msg, dst); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		n, from, err := cli.ReadFrom(buf)
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if from != dst || string(buf[:n]) != string(msg) {
			t.Fatalf("echo %d: %q from %v", i, buf[:n], from)
		}
	}
	// Batch I/O: four out, four back.
	for i := range msgs {
		n := copy(msgs[i].Buf, fmt.Sprintf("batch %d", i))
		msgs[i].Buf = msgs[i].Buf[:n]
		msgs[i].Addr = dst
	}
	if n, err := cli.WriteBatch(msgs); err != nil || n != len(msgs) {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	got := 0
	for got < len(msgs) {
		in := make([]backend.Message, len(msgs))
		for i := range in {
			in[i].Buf = make([]byte, 256)
		}
		n, err := cli.ReadBatch(in)
		if err != nil {
			t.Fatalf("ReadBatch after %d: %v", got, err)
		}
		for _, m := range in[:n] {
			if want := fmt.Sprintf("batch %d", got); string(m.Buf[:m.N]) != want || m.Addr != dst {
				t.Fatalf("batch reply %q from %v, want %q", m.Buf[:m.N], m.Addr, want)
			}
			got++
		}
	}
	srv.Close()
	<-done
}

func TestHostTrafficStillFlows(t *testing.T) {
	p := newPair(t)
	srv := listen(t, p.B, backend.Options{})
	done := echo(srv)
	defer func() { srv.Close(); <-done }()

	// ICMP passes the XDP program to the kernel.
	if out, err := p.A.Command("ping", "-c", "2", "-i", "0.2", "-W", "2", p.B.Addr.String()).CombinedOutput(); err != nil {
		if _, lerr := exec.LookPath("ping"); lerr != nil {
			t.Logf("ping not installed (%v); checking ICMP skipped, TCP still checked", lerr)
		} else {
			t.Fatalf("ping across the afxdp interface: %v\n%s", err, out)
		}
	}
	// TCP passes too, even to the port the afxdp endpoint serves over UDP.
	var ln net.Listener
	if err := p.B.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(p.B.Addr, port).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("tcp ok"))
			c.Close()
		}
	}()
	var conn net.Conn
	if err := p.A.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(p.B.Addr, port).String(), 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("TCP through the afxdp interface: %v", err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, 16)
	n, _ := conn.Read(b)
	if string(b[:n]) != "tcp ok" {
		t.Fatalf("TCP read %q", b[:n])
	}
	// And the UDP service still answers.
	pingPong(t, kernelUDP(t, p.A), netip.AddrPortFrom(p.B.Addr, port), 10)
}

// TestSteerTCPFlowEndToEnd: a TCP flow added through the driver's
// TCPSteering takes the port's TCP segments from the kernel (a kernel
// listener there no longer completes a handshake) and leaves UDP to that
// port alone; removed, it gives them back.
func TestSteerTCPFlowEndToEnd(t *testing.T) {
	p := newPair(t)
	srv := listen(t, p.B, backend.Options{})
	done := echo(srv)
	defer func() { srv.Close(); <-done }()
	steer, ok := srv.Stack().Driver().(stack.TCPSteering)
	if !ok {
		t.Fatalf("the afxdp driver %T does not steer TCP", srv.Stack().Driver())
	}
	dst := netip.AddrPortFrom(p.B.Addr, port)

	var ln net.Listener
	if err := p.B.Do(func() (err error) {
		ln, err = net.Listen("tcp4", dst.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dial := func(timeout time.Duration) error {
		return p.A.Do(func() error {
			c, err := net.DialTimeout("tcp4", dst.String(), timeout)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	udp := kernelUDP(t, p.A)

	if err := dial(3 * time.Second); err != nil {
		t.Fatalf("TCP to the kernel before AddTCPFlow: %v", err)
	}
	if err := steer.AddTCPFlow(netip.AddrPortFrom(netip.IPv4Unspecified(), port)); err != nil {
		t.Fatal(err)
	}
	if err := dial(500 * time.Millisecond); err == nil {
		t.Fatal("the kernel listener completed a handshake on a port steered for TCP")
	}
	pingPong(t, udp, dst, 5)
	if err := steer.RemoveTCPFlow(netip.AddrPortFrom(netip.IPv4Unspecified(), port)); err != nil {
		t.Fatal(err)
	}
	if err := dial(3 * time.Second); err != nil {
		t.Fatalf("TCP to the kernel after RemoveTCPFlow: %v", err)
	}
	pingPong(t, udp, dst, 5)
}

func TestMulticastReceive(t *testing.T) {
	p := newPair(t)
	srv := listen(t, p.B, backend.Options{Wait: backend.WaitBlock})
	group := netip.MustParseAddr("239.7.7.7")
	if err := srv.JoinGroup(group); err != nil {
		t.Fatal(err)
	}
	// The kernel joined the group on the interface.
	if out := p.Exec(t, p.B, "ip", "maddr", "show", "dev", p.B.Link); !strings.Contains(out, group.String()) {
		t.Fatalf("group %v not joined on %s:\n%s", group, p.B.Link, out)
	}
	var fd int
	if err := p.A.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifi, err := net.InterfaceByName(p.A.Link)
		if err != nil {
			return err
		}
		return unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(ifi.Index)})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 1500)
	for i := range 5 {
		msg := fmt.Appendf(nil, "tick %d", i)
		if err := unix.Sendto(fd, msg, 0, &unix.SockaddrInet4{Port: port, Addr: group.As4()}); err != nil {
			t.Fatal(err)
		}
		n, from, err := srv.ReadFrom(buf)
		if err != nil {
			t.Fatalf("multicast datagram %d: %v", i, err)
		}
		if string(buf[:n]) != string(msg) || from.Addr() != p.A.Addr {
			t.Fatalf("got %q from %v", buf[:n], from)
		}
	}
}

func TestMalformedFramesDroppedAndCounted(t *testing.T) {
	p := newPair(t)
	srv := listen(t, p.B, backend.Options{})
	done := echo(srv)
	defer func() { srv.Close(); <-done }()
	cli := kernelUDP(t, p.A)
	dst := netip.AddrPortFrom(p.B.Addr, port)
	pingPong(t, cli, dst, 5)

	bad := malformed(t, p)
	var raw int
	if err := p.A.Do(func() (err error) {
		raw, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(raw)
	var ifindex int
	p.A.Do(func() error {
		ifi, err := net.InterfaceByName(p.A.Link)
		if err == nil {
			ifindex = ifi.Index
		}
		return err
	})
	sll := &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}
	copy(sll.Addr[:], p.B.MAC)
	before := srv.Stats()
	for round := range 20 {
		for _, f := range bad {
			if err := unix.Sendto(raw, f.b, 0, sll); err != nil {
				t.Fatalf("raw send %s: %v", f.name, err)
			}
		}
		pingPong(t, cli, dst, 1) // the service goes on between bursts
		_ = round
	}
	after := srv.Stats()
	// Frames too short to hold the UDP header never reach the socket: the
	// XDP program's bounds check passes them to the kernel, which drops
	// them; so does every fragment, which the kernel reassembles. The rest
	// reach the socket and must be dropped by the parser.
	if after.DropFragment != before.DropFragment {
		t.Errorf("fragment drops went %d -> %d: fragments must go to the kernel", before.DropFragment, after.DropFragment)
	}
	for _, c := range []struct {
		name          string
		before, after uint64
	}{
		{"ip-options", before.DropIPOptions, after.DropIPOptions},
		{"ip-checksum", before.DropIPChecksum, after.DropIPChecksum},
		{"udp-checksum", before.DropUDPChecksum, after.DropUDPChecksum},
		{"length", before.DropLength, after.DropLength},
	} {
		if c.after-c.before < 20 {
			t.Errorf("%s drops went %d -> %d, want +20", c.name, c.before, c.after)
		}
	}
	t.Logf("stats after the burst: %+v", after)
}

type badFrame struct {
	name string
	b    []byte
}

// malformed builds frames aimed at the server's port that must all be
// dropped, one per reason.
func malformed(t *testing.T, p *testnet.Pair) []badFrame {
	good := func() []byte {
		payload := []byte("malformed-probe-payload")
		f := make([]byte, 14+20+8+len(payload))
		copy(f[0:6], p.B.MAC)
		copy(f[6:12], p.A.MAC)
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		ip := f[14:34]
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
		ip[8], ip[9] = 64, 17
		a, b := p.A.Addr.As4(), p.B.Addr.As4()
		copy(ip[12:16], a[:])
		copy(ip[16:20], b[:])
		binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
		udp := f[34:]
		binary.BigEndian.PutUint16(udp[0:], 40000)
		binary.BigEndian.PutUint16(udp[2:], port)
		binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
		copy(udp[8:], payload)
		return f
	}
	var out []badFrame
	// Truncated inside the UDP header (IPv4 total length says more).
	f := good()
	out = append(out, badFrame{"short", f[:14+20+4]})
	// Truncated inside the payload: IPv4 total length says more.
	f = good()
	out = append(out, badFrame{"truncated", f[:len(f)-6]})
	// A first fragment: MF set.
	f = good()
	binary.BigEndian.PutUint16(f[14+6:], 0x2000)
	binary.BigEndian.PutUint16(f[14+10:], 0)
	binary.BigEndian.PutUint16(f[14+10:], ipChecksum(f[14:34]))
	out = append(out, badFrame{"fragment", f})
	// IP options: IHL 6 with a NOP option word.
	g := good()
	f = make([]byte, len(g)+4)
	copy(f, g[:34])
	copy(f[38:], g[34:])
	f[14] = 0x46
	binary.BigEndian.PutUint16(f[14+2:], uint16(len(f)-14))
	binary.BigEndian.PutUint16(f[14+10:], 0)
	binary.BigEndian.PutUint16(f[14+10:], ipChecksum(f[14:38]))
	out = append(out, badFrame{"ip-options", f})
	// Bad IPv4 header checksum.
	f = good()
	f[14+10] ^= 0xff
	out = append(out, badFrame{"ip-checksum", f})
	// Bad UDP checksum (non-zero and wrong).
	f = good()
	binary.BigEndian.PutUint16(f[34+6:], 0x1234)
	out = append(out, badFrame{"udp-checksum", f})
	// UDP length larger than the datagram.
	f = good()
	binary.BigEndian.PutUint16(f[34+4:], 200)
	out = append(out, badFrame{"length", f})
	return out
}

func ipChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func TestRebindAfterClose(t *testing.T) {
	p := newPair(t)
	for i := range 5 {
		c := listen(t, p.B, backend.Options{})
		if err := c.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
	}
	// Reopened at once each time: the bind retried through EBUSY.
	srv := listen(t, p.B, backend.Options{})
	done := echo(srv)
	pingPong(t, kernelUDP(t, p.A), netip.AddrPortFrom(p.B.Addr, port), 5)
	srv.Close()
	<-done
}

func TestSetupErrors(t *testing.T) {
	p := newPair(t)
	cases := []struct {
		name string
		o    backend.Options
		want string
	}{
		{"missing interface", backend.Options{Interface: "nosuchif0"}, "nosuchif0"},
		{"queue out of range", backend.Options{Interface: p.B.Link, Queue: 5}, "queue 5 out of range"},
		{"bad ring size", backend.Options{Interface: p.B.Link, XDP: backend.XDPOptions{RingSize: 100}}, "ring size"},
		// Generic steering hands frames over as copies: zero-copy is refused
		// before the bind, auto binds copy mode.
		{"zero-copy on generic steering", backend.Options{Interface: p.B.Link, XDP: backend.XDPOptions{Mode: "skb", Bind: "zerocopy"}}, "generic (skb) mode"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := p.B.Do(func() error {
				conn, err := afxdp.Backend{}.ListenUDP(netip.AddrPortFrom(p.B.Addr, port), c.o)
				if err == nil {
					conn.Close()
				}
				return err
			})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
	t.Run("port zero", func(t *testing.T) {
		err := p.B.Do(func() error {
			c, err := afxdp.Backend{}.ListenUDP(netip.AddrPortFrom(p.B.Addr, 0), backend.Options{Interface: p.B.Link})
			if err != nil {
				return err
			}
			defer c.Close()
			if c.LocalAddr().Port() == 0 {
				return errors.New("port 0 was not replaced by the kernel's choice")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("loopback", func(t *testing.T) {
		_, err := afxdp.Backend{}.ListenUDP(netip.MustParseAddrPort("127.0.0.1:9"), backend.Options{})
		if !errors.Is(err, backend.ErrNotSupported) {
			t.Fatalf("loopback: %v, want ErrNotSupported", err)
		}
	})
	t.Run("second socket shares the stack", func(t *testing.T) {
		first := listen(t, p.B, backend.Options{})
		defer first.Close()
		err := p.B.Do(func() error {
			c, err := afxdp.Backend{}.ListenUDP(netip.AddrPortFrom(p.B.Addr, port+1), backend.Options{Interface: p.B.Link})
			if err != nil {
				return err
			}
			defer c.Close()
			if c.(*afxdp.Conn).Stack() != first.Stack() {
				return errors.New("two sockets on one interface got two stacks")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestKilledServerLeavesNoProgram runs an afxdp server in a child process,
// kills it with SIGKILL, and checks that the bpf_link took the program
// with it.
func TestKilledServerLeavesNoProgram(t *testing.T) {
	p := newPair(t)
	cmd := startHelperServer(t, p.B)
	if o := p.Exec(t, p.B, "ip", "link", "show", "dev", p.B.Link); !strings.Contains(o, "xdp") {
		t.Fatalf("no XDP program while the server runs:\n%s", o)
	}
	pingPong(t, kernelUDP(t, p.A), netip.AddrPortFrom(p.B.Addr, port), 5)
	cmd.Process.Signal(unix.SIGKILL)
	cmd.Wait()
	// The kernel releases the link when the last fd closes, as the dead
	// process's files are torn down; give it a moment.
	for i := 0; ; i++ {
		o := p.Exec(t, p.B, "ip", "link", "show", "dev", p.B.Link)
		if !strings.Contains(o, "xdp") {
			break
		}
		if i == 50 {
			t.Fatalf("XDP program still attached after SIGKILL:\n%s", o)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startHelperServer runs TestHelperServer in a child process inside ns and
// waits until it serves; the child is killed at cleanup.
func startHelperServer(t *testing.T, ns *testnet.NS, env ...string) *exec.Cmd {
	t.Helper()
	cmd := ns.Command(os.Args[0], "-test.run=^TestHelperServer$")
	cmd.Env = append(os.Environ(), "LOWLAT_HELPER_IFACE="+ns.Link, "LOWLAT_HELPER_ADDR="+ns.Addr.String())
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make([]byte, 64)
	n, _ := out.Read(line)
	if !strings.Contains(string(line[:n]), "ready") {
		t.Fatalf("helper did not come up: %q", line[:n])
	}
	return cmd
}

// TestHelperServer is the child of TestKilledServerLeavesNoProgram.
func TestHelperServer(t *testing.T) {
	iface := os.Getenv("LOWLAT_HELPER_IFACE")
	if iface == "" {
		t.Skip("helper process for TestKilledServerLeavesNoProgram; runs only as its child")
	}
	helperTCP(t, iface, netip.MustParseAddr(os.Getenv("LOWLAT_HELPER_ADDR")))
	c, err := afxdp.Backend{}.ListenUDP(netip.AddrPortFrom(netip.MustParseAddr(os.Getenv("LOWLAT_HELPER_ADDR")), port),
		backend.Options{Interface: iface})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	<-echo(c)
}

func assertNoXDP(t *testing.T, p *testnet.Pair, ns *testnet.NS) {
	t.Helper()
	if o := p.Exec(t, ns, "ip", "link", "show", "dev", ns.Link); strings.Contains(o, "xdp") {
		t.Fatalf("XDP program left attached after Close:\n%s", o)
	}
}

// TestAllQueues binds every queue of a two-queue veth: flows that the
// driver spreads over both queues are all served.
func TestAllQueues(t *testing.T) {
	p := testnet.NewPair(t, testnet.Config{Queues: 2, TxChecksumOff: true})
	srv := listen(t, p.B, backend.Options{Queue: -1})
	if q := srv.Info().Queue; q != -1 {
		t.Fatalf("Info().Queue = %d, want -1 (all)", q)
	}
	done := echo(srv)
	defer func() { srv.Close(); <-done }()
	for range 8 { // distinct source ports hash to both queues
		pingPong(t, kernelUDP(t, p.A), netip.AddrPortFrom(p.B.Addr, port), 5)
	}
	// One queue of a multi-queue interface serves, with a note saying so.
	one := listen(t, p.A, backend.Options{Queue: 1})
	if n := one.Info().Notes; len(n) == 0 || !strings.Contains(strings.Join(n, " "), "only queue 1") {
		t.Fatalf("notes %q: want one about serving only queue 1", n)
	}
}

func TestUnresolvableDestination(t *testing.T) {
	p := newPair(t)
	// A second subnet on A's link, where nobody answers ARP.
	p.Exec(t, p.A, "ip", "addr", "add", "10.199.1.1/24", "dev", p.A.Link)
	c := listen(t, p.A, backend.Options{})
	_, err := c.WriteTo([]byte("x"), netip.MustParseAddrPort("10.199.1.77:9"))
	if err == nil || !strings.Contains(err.Error(), "no ARP reply") || !strings.Contains(err.Error(), p.A.Link) {
		t.Fatalf("err = %v, want a timeout naming the address and interface", err)
	}
}

// TestXDPModes: auto prefers generic mode on veth (faster there), and each
// explicit mode attaches as asked and carries traffic.
func TestXDPModes(t *testing.T) {
	p := newPair(t)
	for _, c := range []struct{ ask, want string }{{"auto", "skb"}, {"drv", "drv"}, {"skb", "skb"}} {
		srv := listen(t, p.B, backend.Options{XDP: backend.XDPOptions{Mode: c.ask}})
		if got := srv.Info().XDPMode; got != c.want {
			t.Fatalf("mode %s attached as %q, want %q", c.ask, got, c.want)
		}
		done := echo(srv)
		pingPong(t, kernelUDP(t, p.A), netip.AddrPortFrom(p.B.Addr, port), 5)
		srv.Close()
		<-done
	}
}

// TestPeerWithChecksumOffload: a kernel peer with TX checksum offload on
// (veth's default) sends datagrams whose UDP checksum is only the
// pseudo-header seed; on veth the afxdp endpoint accepts them.
func TestPeerWithChecksumOffload(t *testing.T) {
	p := testnet.NewPair(t, testnet.Config{})
	srv := listen(t, p.B, backend.Options{})
	done := echo(srv)
	defer func() { srv.Close(); <-done }()
	pingPong(t, kernelUDP(t, p.A), netip.AddrPortFrom(p.B.Addr, port), 20)
	if st := srv.Stats(); st.DropUDPChecksum != 0 {
		t.Fatalf("%d datagrams dropped for their checksum", st.DropUDPChecksum)
	}
}

// TestLargeBatchesLeave: in copy mode one kick sends at most a kernel
// batch (32 frames). A WriteBatch of 100 must reach the peer whole without
// a later write to push the rest, also when the batch is larger than the
// TX ring and the free frames.
func TestLargeBatchesLeave(t *testing.T) {
	for _, x := range []backend.XDPOptions{
		{NumFrames: 64, RingSize: 32},
		// A ring much smaller than the TX half of the frames: in copy
		// mode the kicks must reap completions as they go, or the kernel
		// stalls on a full completion ring and the batch fails for
		// datagrams it already queued.
		{NumFrames: 512, RingSize: 32},
	} {
		t.Run(fmt.Sprintf("frames %d ring %d", x.NumFrames, x.RingSize), func(t *testing.T) {
			largeBatch(t, x, 150)
		})
	}
}

func largeBatch(t *testing.T, x backend.XDPOptions, count int) {
	p := newPair(t)
	cli := listen(t, p.A, backend.Options{XDP: x})
	var sink *net.UDPConn
	if err := p.B.Do(func() (err error) {
		sink, err = net.ListenUDP("udp4", &net.UDPAddr{IP: p.B.Addr.AsSlice(), Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	dst := netip.AddrPortFrom(p.B.Addr, port)
	msgs := make([]backend.Message, count)
	for i := range msgs {
		msgs[i] = backend.Message{Buf: fmt.Appendf(nil, "m%03d", i), Addr: dst}
	}
	if n, err := cli.WriteBatch(msgs); n != len(msgs) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	buf := make([]byte, 64)
	for i := range msgs {
		sink.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := sink.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d of %d never arrived: %v (stats %+v)", i, len(msgs), err, cli.Stats())
		}
		if want := fmt.Sprintf("m%03d", i); string(buf[:n]) != want {
			t.Fatalf("datagram %d: %q, want %q", i, buf[:n], want)
		}
	}
}

// TestTimeoutWhileDropping: frames that arrive and are dropped must not
// restart a read's timeout.
func TestTimeoutWhileDropping(t *testing.T) {
	p := newPair(t)
	for _, wait := range []backend.WaitMode{backend.WaitSpin, backend.WaitBlock} {
		t.Run(wait.String(), func(t *testing.T) {
			srv := listen(t, p.B, backend.Options{Wait: wait, ReadTimeout: 100 * time.Millisecond})
			var raw int
			var ifindex int
			if err := p.A.Do(func() (err error) {
				ifi, err := net.InterfaceByName(p.A.Link)
				if err != nil {
					return err
				}
				ifindex = ifi.Index
				raw, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer unix.Close(raw)
			sll := &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}
			copy(sll.Addr[:], p.B.MAC)
			bad := malformed(t, p)[2].b // IP options: steered to the socket, then dropped
			stop := make(chan struct{})
			sent := make(chan int)
			go func() {
				n := 0
				defer func() { sent <- n }()
				for {
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
					}
					if n < 2000 && unix.Sendto(raw, bad, 0, sll) == nil {
						n++
					}
				}
			}()
			done := make(chan error, 1)
			go func() {
				_, _, err := srv.ReadFrom(make([]byte, 64))
				done <- err
			}()
			select {
			case err := <-done:
				close(stop)
				<-sent
				if !errors.Is(err, backend.ErrTimeout) {
					t.Fatalf("read ended with %v, want ErrTimeout", err)
				}
			case <-time.After(10 * time.Second):
				close(stop)
				<-sent
				t.Fatalf("read still waiting after 10 s with a 100 ms timeout (dropped %d)", srv.Stats().DropIPOptions)
			}
			srv.Close()
		})
	}
}

// TestBusyPoll: with XDPOptions.BusyPoll the sockets carry the busy-poll
// options (as root every one applies, so no note) and the spin loop, which
// now calls recvfrom on every empty poll, still serves traffic.
func TestBusyPoll(t *testing.T) {
	p := newPair(t)
	srv := listen(t, p.B, backend.Options{XDP: backend.XDPOptions{BusyPoll: true}})
	for _, n := range srv.Info().Notes {
		if strings.Contains(n, "BUSY_POLL") {
			t.Errorf("busy-poll option refused as root: %s", n)
		}
	}
	done := echo(srv)
	defer func() { srv.Close(); <-done }()
	pingPong(t, kernelUDP(t, p.A), netip.AddrPortFrom(p.B.Addr, port), 50)
}
