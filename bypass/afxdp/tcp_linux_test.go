//go:build linux

package afxdp_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/afxdp"
	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/stack"
	"github.com/lowlat/lowlat/bypass/internal/tcp"
	"github.com/lowlat/lowlat/internal/testnet"
)

const tcpPort = 7100

// tcpSizes are the message sizes every interop test carries: one byte
// short of a segment to several segments (the MTU is 1500).
var tcpSizes = []int{24, 100, 1447, 1448, 1449, 4000, 8972}

// kernelTCPListen listens with the kernel's TCP inside ns.
func kernelTCPListen(t *testing.T, ns *testnet.NS, port int) net.Listener {
	t.Helper()
	var ln net.Listener
	err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", ns.Addr, port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// kernelTCPDial connects with the kernel's TCP from inside ns.
func kernelTCPDial(t *testing.T, ns *testnet.NS, to netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", to.String(), 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// kernelFramedEcho answers every framed message (4-byte big-endian
// length, then the payload) on each accepted connection.
func kernelFramedEcho(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var hdr [4]byte
				buf := make([]byte, 1<<16)
				for {
					if _, err := io.ReadFull(c, hdr[:]); err != nil {
						return
					}
					n := binary.BigEndian.Uint32(hdr[:])
					if _, err := io.ReadFull(c, buf[:n]); err != nil {
						return
					}
					if _, err := c.Write(append(hdr[:], buf[:n]...)); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// streamRoundTrips sends each size several times over s and checks the
// echo byte for byte.
func streamRoundTrips(t *testing.T, s backend.Stream) {
	t.Helper()
	buf := make([]byte, 1<<16)
	for round := range 20 {
		for _, size := range tcpSizes {
			msg := make([]byte, size)
			for i := range msg {
				msg[i] = byte(i*31 + size + round)
			}
			if err := s.WriteMsg(msg); err != nil {
				t.Fatalf("write %d bytes: %v", size, err)
			}
			n, err := s.ReadMsg(buf)
			if err != nil {
				t.Fatalf("read echo of %d bytes: %v", size, err)
			}
			if !bytes.Equal(buf[:n], msg) {
				t.Fatalf("echo of %d bytes differs (got %d)", size, n)
			}
		}
	}
}

// kernelRoundTrips is streamRoundTrips over a kernel connection.
func kernelRoundTrips(t *testing.T, c net.Conn) {
	t.Helper()
	buf := make([]byte, 1<<16)
	for round := range 20 {
		for _, size := range tcpSizes {
			msg := make([]byte, 4+size)
			binary.BigEndian.PutUint32(msg, uint32(size))
			for i := range size {
				msg[4+i] = byte(i*17 + size + round)
			}
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf[:4+size]); err != nil {
				t.Fatalf("read echo of %d bytes: %v", size, err)
			}
			if !bytes.Equal(buf[:4+size], msg) {
				t.Fatalf("echo of %d bytes differs", size)
			}
		}
	}
}

// dialAFXDP connects from inside ns over its afxdp stack.
func dialAFXDP(t *testing.T, ns *testnet.NS, to netip.AddrPort, o backend.Options) *stack.TCPConn {
	t.Helper()
	o.Interface = ns.Link
	var s backend.Stream
	err := ns.Do(func() (err error) {
		s, err = afxdp.Backend{}.DialTCP(to, o)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return s.(*stack.TCPConn)
}

// listenAFXDP listens inside ns over its afxdp stack.
func listenAFXDP(t *testing.T, ns *testnet.NS, port int) *stack.TCPListener {
	t.Helper()
	var l backend.StreamListener
	err := ns.Do(func() (err error) {
		l, err = afxdp.Backend{}.ListenTCP(netip.AddrPortFrom(ns.Addr, uint16(port)), backend.Options{Interface: ns.Link})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return l.(*stack.TCPListener)
}

// afxdpFramedEcho accepts one connection and echoes its messages until
// the peer closes; the returned channel gets the connection's end.
func afxdpFramedEcho(l *stack.TCPListener) <-chan error {
	done := make(chan error, 1)
	go func() {
		c, err := l.AcceptTCP()
		if err != nil {
			done <- err
			return
		}
		buf := make([]byte, 1<<16)
		for {
			n, err := c.ReadMsg(buf)
			if err == io.EOF {
				done <- c.Close()
				return
			}
			if err != nil {
				c.Close()
				done <- err
				return
			}
			if err := c.WriteMsg(buf[:n]); err != nil {
				c.Close()
				done <- err
				return
			}
		}
	}()
	return done
}

func TestTCPClientAgainstKernelServer(t *testing.T) {
	p := newPair(t)
	kernelFramedEcho(kernelTCPListen(t, p.A, tcpPort))
	c := dialAFXDP(t, p.B, netip.AddrPortFrom(p.A.Addr, tcpPort), backend.Options{})
	streamRoundTrips(t, c)
	st, state := c.TCPStats()
	if state.String() != "ESTABLISHED" || st.DropOutOfWindow+st.DropPAWS+st.DropAckUnsent != 0 {
		t.Fatalf("state %v, stats %+v", state, st)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitNoXDP(t, p, p.B)
}

func TestTCPServerAgainstKernelClient(t *testing.T) {
	p := newPair(t)
	l := listenAFXDP(t, p.B, tcpPort)
	done := afxdpFramedEcho(l)
	c := kernelTCPDial(t, p.A, netip.AddrPortFrom(p.B.Addr, tcpPort))
	kernelRoundTrips(t, c)
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	waitNoXDP(t, p, p.B)
}

// TestTCPHostConnectionsUnaffected: while an afxdp TCP listener and
// connection run on B's interface, the kernel's own TCP on other ports of
// that interface works both ways, and a kernel socket cannot take the
// stack's port.
func TestTCPHostConnectionsUnaffected(t *testing.T) {
	p := newPair(t)
	l := listenAFXDP(t, p.B, tcpPort)
	done := afxdpFramedEcho(l)
	lowlat := kernelTCPDial(t, p.A, netip.AddrPortFrom(p.B.Addr, tcpPort))
	kernelFramedEcho(kernelTCPListen(t, p.B, tcpPort+1)) // a kernel server on the stack's interface
	kernelFramedEcho(kernelTCPListen(t, p.A, tcpPort+2)) // a kernel server the stack's host dials
	in := kernelTCPDial(t, p.A, netip.AddrPortFrom(p.B.Addr, tcpPort+1))
	out := kernelTCPDial(t, p.B, netip.AddrPortFrom(p.A.Addr, tcpPort+2))
	for range 3 {
		kernelRoundTrips(t, lowlat)
		kernelRoundTrips(t, in)
		kernelRoundTrips(t, out)
	}
	err := p.B.Do(func() error {
		ln, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", p.B.Addr, tcpPort))
		if err == nil {
			ln.Close()
			return fmt.Errorf("the kernel let a socket listen on the stack's port")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	lowlat.Close()
	<-done
	l.Close()
}

// TestTCPPortsBackAfterKill: a process serving TCP over afxdp is killed
// with SIGKILL; its XDP program goes, and the kernel owns the port again.
func TestTCPPortsBackAfterKill(t *testing.T) {
	p := newPair(t)
	cmd := startHelperServer(t, p.B, "LOWLAT_HELPER_TCP=1")
	c := kernelTCPDial(t, p.A, netip.AddrPortFrom(p.B.Addr, tcpPort))
	kernelRoundTrips(t, c)
	cmd.Process.Signal(unix.SIGKILL)
	cmd.Wait()
	waitNoXDP(t, p, p.B)
	kernelFramedEcho(kernelTCPListen(t, p.B, tcpPort))
	kernelRoundTrips(t, kernelTCPDial(t, p.A, netip.AddrPortFrom(p.B.Addr, tcpPort)))
}

// waitNoXDP waits for ns's interface to lose its XDP program: the
// stack closes when its keeper has finished the last connection.
func waitNoXDP(t *testing.T, _ *testnet.Pair, ns *testnet.NS) {
	t.Helper()
	for i := 0; ; i++ {
		out, err := ns.Command("ip", "link", "show", "dev", ns.Link).CombinedOutput()
		if err != nil {
			t.Fatalf("ip link show: %v: %s", err, out)
		}
		o := string(out)
		if !strings.Contains(o, "xdp") {
			return
		}
		if i == 250 {
			t.Fatalf("XDP program still attached:\n%s", o)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// helperTCP serves framed echo over afxdp TCP in a helper process.
func helperTCP(t *testing.T, iface string, addr netip.Addr) {
	if os.Getenv("LOWLAT_HELPER_TCP") == "" {
		return
	}
	l, err := afxdp.Backend{}.ListenTCP(netip.AddrPortFrom(addr, tcpPort), backend.Options{Interface: iface})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	for {
		<-afxdpFramedEcho(l.(*stack.TCPListener))
	}
}

// impairBytes is how much TestTCPIntegrityUnderImpairment moves each
// way: 1 GiB, or LOWLAT_TCP_IMPAIR_MIB mebibytes.
func impairBytes(t *testing.T) int64 {
	if v := os.Getenv("LOWLAT_TCP_IMPAIR_MIB"); v != "" {
		var mib int64
		if _, err := fmt.Sscan(v, &mib); err != nil || mib <= 0 {
			t.Fatalf("LOWLAT_TCP_IMPAIR_MIB=%q: want a positive number of MiB", v)
		}
		return mib << 20
	}
	return 1 << 30
}

// pattern fills b with the stream's bytes from offset off: a cheap,
// position-dependent sequence, so that a byte lost, doubled or moved
// changes the hash.
func pattern(b []byte, off int64, seed uint64) {
	for i := range b {
		x := uint64(off+int64(i)) * (0x9e3779b97f4a7c15 ^ seed)
		b[i] = byte(x >> 56)
	}
}

// hashStream writes n bytes of pattern through w's writes and returns
// their hash.
func sendPattern(n int64, seed uint64, write func([]byte) (int, error)) ([32]byte, error) {
	h := sha256.New()
	buf := make([]byte, 256<<10)
	for off := int64(0); off < n; {
		k := int(min(int64(len(buf)), n-off))
		pattern(buf[:k], off, seed)
		h.Write(buf[:k])
		if _, err := write(buf[:k]); err != nil {
			return [32]byte{}, err
		}
		off += int64(k)
	}
	return [32]byte(h.Sum(nil)), nil
}

// recvHash reads until EOF and returns the hash and count of what came.
func recvHash(read func([]byte) (int, error)) ([32]byte, int64, error) {
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var total int64
	for {
		n, err := read(buf)
		h.Write(buf[:n])
		total += int64(n)
		if err == io.EOF {
			return [32]byte(h.Sum(nil)), total, nil
		}
		if err != nil {
			return [32]byte{}, total, err
		}
	}
}

// TestTCPIntegrityUnderImpairment moves 1 GiB each way at once between an
// afxdp connection and the kernel's TCP through a relay that drops 1%,
// reorders 1% and duplicates 0.5% of frames; both directions arrive
// whole (by hash), the retransmission counters show the damage was met,
// and the connection closes with a FIN each way.
func TestTCPIntegrityUnderImpairment(t *testing.T) {
	r := testnet.NewRelayPath(t, testnet.RelayConfig{Impair: testnet.Impair{Seed: 1, Loss: 0.01, Reorder: 0.01, Dup: 0.005}})
	requireAFXDP(t, nil)
	size := impairBytes(t)
	ln := kernelTCPListen(t, r.B, tcpPort)
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	srvRecv, srvSent := make(chan result, 1), make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvRecv <- result{err: err}
			srvSent <- result{err: err}
			return
		}
		defer c.Close()
		go func() {
			sum, err := sendPattern(size, 2, c.Write)
			c.(*net.TCPConn).CloseWrite()
			srvSent <- result{sum: sum, err: err}
		}()
		sum, n, err := recvHash(c.Read)
		srvRecv <- result{sum, n, err}
	}()
	start := time.Now()
	c := dialAFXDP(t, r.A, netip.AddrPortFrom(r.BAddr, tcpPort), backend.Options{TCP: backend.TCPOptions{MinRTO: 5 * time.Millisecond}})
	sent := make(chan result, 1)
	go func() {
		sum, err := sendPattern(size, 1, c.Write)
		if err == nil {
			err = c.CloseWrite()
		}
		sent <- result{sum: sum, err: err}
	}()
	got, n, err := recvHash(c.Read)
	if err != nil {
		t.Fatalf("afxdp read after %d bytes: %v", n, err)
	}
	cs := <-sent
	if cs.err != nil {
		t.Fatalf("afxdp write: %v", cs.err)
	}
	ss, sr := <-srvSent, <-srvRecv
	if ss.err != nil || sr.err != nil {
		t.Fatalf("kernel side: send %v, receive %v", ss.err, sr.err)
	}
	elapsed := time.Since(start)
	if n != size || got != ss.sum {
		t.Errorf("kernel to afxdp: %d of %d bytes, hash equal %v", n, size, got == ss.sum)
	}
	if sr.n != size || sr.sum != cs.sum {
		t.Errorf("afxdp to kernel: %d of %d bytes, hash equal %v", sr.n, size, sr.sum == cs.sum)
	}
	// The last ACK of the FIN handshake may still be on its way.
	st, state := c.TCPStats()
	for i := 0; i < 500 && state != tcp.TimeWait && state != tcp.Closed; i++ {
		time.Sleep(10 * time.Millisecond)
		st, state = c.TCPStats()
	}
	rs := r.Stats()
	t.Logf("%d MiB each way in %v; afxdp %+v; relay %+v", size>>20, elapsed, st, rs)
	if st.Retransmits == 0 || st.OutOfOrder == 0 || rs.AToB.Dropped == 0 || rs.BToA.Dropped == 0 || rs.AToB.Duplicated == 0 {
		t.Errorf("the impairment was not exercised: afxdp %+v, relay %+v", st, rs)
	}
	if state != tcp.TimeWait && state != tcp.Closed || st.RstSent+st.RstRecv != 0 {
		t.Errorf("the connection did not close with FINs: %v, %+v", state, st)
	}
	c.Close()
	waitNoXDP(t, nil, r.A)
}
