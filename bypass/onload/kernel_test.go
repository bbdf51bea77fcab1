//go:build linux && onload && cgo

package onload_test

import (
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/onload"
)

// The tests in this file run without Onload: the backend's sockets are
// kernel sockets reached through the C library, the path a host with
// Onload installed but no Onload adapter also takes.

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

func skipIfOnload(t *testing.T) {
	t.Helper()
	if onload.Find().Present {
		t.Skip("Onload (or a stand-in) is loaded in this process; this test is about its absence")
	}
}

func udpPair(t *testing.T, o bypass.Options) (a, b bypass.PacketConn) {
	t.Helper()
	o.Backend = "onload"
	a, err := bypass.ListenUDP(loopback, o)
	if err != nil {
		t.Fatal(err)
	}
	b, err = bypass.ListenUDP(loopback, o)
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// pingPong sends n datagrams from a to b and each back, one at a time.
func pingPong(t testing.TB, a, b bypass.PacketConn, n int) {
	t.Helper()
	udpRoundTrips(t, a, b, n, make([]byte, 64), make([]byte, 65))
}

func udpRoundTrips(t testing.TB, a, b bypass.PacketConn, n int, out, in []byte) {
	t.Helper()
	for i := range n {
		out[0] = byte(i)
		if _, err := a.WriteTo(out, b.LocalAddr()); err != nil {
			t.Fatalf("round trip %d: a write: %v", i, err)
		}
		m, from, err := b.ReadFrom(in)
		if err != nil || m != len(out) || from != a.LocalAddr() || in[0] != byte(i) {
			t.Fatalf("round trip %d: b read %d from %v: %v", i, m, from, err)
		}
		if _, err := b.WriteTo(in[:m], from); err != nil {
			t.Fatalf("round trip %d: b write: %v", i, err)
		}
		if m, _, err := a.ReadFrom(in); err != nil || m != len(out) || in[0] != byte(i) {
			t.Fatalf("round trip %d: a read %d: %v", i, m, err)
		}
	}
}

func TestWithoutOnload(t *testing.T) {
	skipIfOnload(t)
	if err := (onload.Backend{}).AutoSelect(); !errors.Is(err, onload.ErrNotLoaded) || !errors.Is(err, backend.ErrNotSupported) {
		t.Fatalf("AutoSelect() = %v; want ErrNotLoaded", err)
	}
	if st := onload.Signal(); st.Claimed || st.Installed || st.Signal != 54 {
		t.Errorf("signal state %+v: nothing claimed signal 54 before start-up here", st)
	}
	for _, w := range []bypass.WaitMode{bypass.WaitSpin, bypass.WaitBlock} {
		t.Run(w.String(), func(t *testing.T) {
			a, b := udpPair(t, bypass.Options{Wait: w, ReadTimeout: 5 * time.Second})
			info := a.Info()
			if info.Backend != "onload" || info.Wait != w {
				t.Fatalf("info %+v", info)
			}
			if d := bypass.Describe(info); !strings.Contains(d, "Onload is absent") {
				t.Errorf("Describe does not say Onload is absent:\n%s", d)
			}
			if st, err := onload.StatOf(a); err != nil || st.Known {
				t.Errorf("StatOf = %+v, %v; want nothing known", st, err)
			}
			pingPong(t, a, b, 100)
			if s := a.Stats(); s.TxPackets != 100 || s.RxPackets != 100 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// TestAutoPassesOver: auto selection names onload as skipped, with the
// reason, for UDP and TCP.
func TestAutoPassesOver(t *testing.T) {
	skipIfOnload(t)
	c, err := bypass.ListenUDP(loopback, bypass.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s := c.Info().Skipped; c.Info().Backend == "onload" || len(s) == 0 || s[0].Backend != "onload" || !errors.Is(s[0].Reason, onload.ErrNotLoaded) {
		t.Fatalf("auto chose %s, skipped %v", c.Info().Backend, s)
	}
	l, err := bypass.ListenTCP(loopback, bypass.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := bypass.DialTCP(l.Addr(), bypass.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if k := s.Info().Skipped; s.Info().Backend == "onload" || len(k) == 0 || k[0].Backend != "onload" {
		t.Fatalf("auto TCP chose %s, skipped %v", s.Info().Backend, k)
	}
}

func TestBatches(t *testing.T) {
	for _, w := range []bypass.WaitMode{bypass.WaitSpin, bypass.WaitBlock} {
		t.Run(w.String(), func(t *testing.T) {
			a, b := udpPair(t, bypass.Options{Wait: w, BatchSize: 4, ReadTimeout: 5 * time.Second})
			in := make([]bypass.Message, 8)
			for i := range in {
				in[i].Buf = make([]byte, 16)
			}
			if n, err := b.TryReadBatch(in); n != 0 || err != nil {
				t.Fatalf("TryReadBatch on nothing = %d, %v", n, err)
			}
			out := make([]bypass.Message, 6)
			for i := range out {
				out[i] = bypass.Message{Buf: []byte{byte(i), 1, 2}, Addr: b.LocalAddr()}
			}
			out[5].Buf = make([]byte, 40) // longer than the reader's buffer
			if n, err := a.WriteBatch(out); n != 6 || err != nil {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			got := 0
			for got < 6 {
				n, err := b.ReadBatch(in[:min(len(in), 6-got)])
				if err != nil {
					t.Fatalf("ReadBatch after %d: %v", got, err)
				}
				if n > 4 {
					t.Fatalf("ReadBatch returned %d, more than the batch size 4", n)
				}
				for i := range n {
					m := in[i]
					if m.Addr != a.LocalAddr() {
						t.Errorf("datagram %d from %v", got+i, m.Addr)
					}
					if got+i == 5 {
						if !m.Trunc || m.N != 16 {
							t.Errorf("long datagram: N %d trunc %v; want 16, true", m.N, m.Trunc)
						}
					} else if m.N != 3 || m.Buf[0] != byte(got+i) || m.Trunc {
						t.Errorf("datagram %d: %d bytes %v trunc %v", got+i, m.N, m.Buf[:m.N], m.Trunc)
					}
				}
				got += n
			}
			if s := b.Stats(); s.RxPackets != 6 || s.RxTrunc != 1 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestTimeoutAndClose(t *testing.T) {
	for _, w := range []bypass.WaitMode{bypass.WaitSpin, bypass.WaitBlock} {
		t.Run(w.String(), func(t *testing.T) {
			a, _ := udpPair(t, bypass.Options{Wait: w, ReadTimeout: 30 * time.Millisecond})
			start := time.Now()
			if _, _, err := a.ReadFrom(make([]byte, 8)); !errors.Is(err, bypass.ErrTimeout) {
				t.Fatalf("read on nothing: %v; want ErrTimeout", err)
			}
			if d := time.Since(start); d < 30*time.Millisecond {
				t.Errorf("timed out after %v, before the 30ms timeout", d)
			}
			a.SetReadTimeout(0)
			done := make(chan error, 1)
			go func() {
				_, _, err := a.ReadFrom(make([]byte, 8))
				done <- err
			}()
			time.Sleep(20 * time.Millisecond)
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, bypass.ErrClosed) {
					t.Fatalf("reader woken by Close: %v; want ErrClosed", err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("Close did not wake the reader")
			}
			if err := a.Close(); !errors.Is(err, bypass.ErrClosed) {
				t.Errorf("second Close: %v", err)
			}
			if _, err := a.WriteTo([]byte{1}, loopback); !errors.Is(err, bypass.ErrClosed) {
				t.Errorf("write after Close: %v", err)
			}
		})
	}
}

func tcpPair(t testing.TB, o bypass.Options) (srv, cli bypass.Stream) {
	t.Helper()
	o.Backend = "onload"
	l, err := bypass.ListenTCP(loopback, o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ch := make(chan bypass.Stream, 1)
	go func() {
		s, err := l.Accept()
		if err != nil {
			t.Error(err)
		}
		ch <- s
	}()
	cli, err = bypass.DialTCP(l.Addr(), o)
	if err != nil {
		t.Fatal(err)
	}
	srv = <-ch
	if srv == nil {
		cli.Close()
		t.FailNow()
	}
	t.Cleanup(func() { srv.Close(); cli.Close() })
	return srv, cli
}

// tcpPingPong sends n framed messages from cli to srv and each back.
func tcpPingPong(t testing.TB, srv, cli bypass.Stream, n int) {
	t.Helper()
	tcpRoundTrips(t, srv, cli, n, make([]byte, 100), make([]byte, 200))
}

func tcpRoundTrips(t testing.TB, srv, cli bypass.Stream, n int, msg, buf []byte) {
	t.Helper()
	for i := range n {
		msg[0] = byte(i)
		if err := cli.WriteMsg(msg); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		m, err := srv.ReadMsg(buf)
		if err != nil || m != len(msg) || buf[0] != byte(i) {
			t.Fatalf("message %d: server read %d: %v", i, m, err)
		}
		if err := srv.WriteMsg(buf[:m]); err != nil {
			t.Fatalf("message %d: server write: %v", i, err)
		}
		if m, err := cli.ReadMsg(buf); err != nil || m != len(msg) || buf[0] != byte(i) {
			t.Fatalf("message %d: client read %d: %v", i, m, err)
		}
	}
}

func TestTCP(t *testing.T) {
	for _, w := range []bypass.WaitMode{bypass.WaitSpin, bypass.WaitBlock} {
		t.Run(w.String(), func(t *testing.T) {
			srv, cli := tcpPair(t, bypass.Options{Wait: w, ReadTimeout: 5 * time.Second})
			if cli.Info().Backend != "onload" || cli.RemoteAddr() != srv.LocalAddr() || srv.RemoteAddr() != cli.LocalAddr() {
				t.Fatalf("client %+v %v->%v, server %v->%v", cli.Info(), cli.LocalAddr(), cli.RemoteAddr(), srv.LocalAddr(), srv.RemoteAddr())
			}
			tcpPingPong(t, srv, cli, 100)
			// A raw write read as a stream; then the end of the stream.
			if _, err := cli.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			cli.Close()
			got, err := io.ReadAll(srv)
			if string(got) != "hello" || err != nil {
				t.Fatalf("read %q, %v; want hello and the end of the stream", got, err)
			}
		})
	}
}

// TestTemplateWithoutOnload: templates say what is missing.
func TestTemplateWithoutOnload(t *testing.T) {
	skipIfOnload(t)
	_, cli := tcpPair(t, bypass.Options{})
	_, err := onload.NewTemplate(cli, []byte("abc"))
	if !errors.Is(err, backend.ErrNotSupported) || !strings.Contains(err.Error(), "onload_msg_template_alloc: not found") {
		t.Fatalf("NewTemplate without Onload: %v", err)
	}
}

func TestDialRefused(t *testing.T) {
	l, err := bypass.ListenTCP(loopback, bypass.Options{Backend: "onload"})
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr()
	l.Close()
	_, err = bypass.DialTCP(addr, bypass.Options{Backend: "onload", DialTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "connect") || !strings.HasPrefix(err.Error(), "onload: dial tcp") {
		t.Fatalf("dial to a closed port: %v", err)
	}
}

// TestAllocs: a round trip allocates nothing, over UDP and TCP, spinning
// and blocking.
func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; BenchmarkRoundTripOnload checks this without it")
	}
	for _, w := range []bypass.WaitMode{bypass.WaitSpin, bypass.WaitBlock} {
		a, b := udpPair(t, bypass.Options{Wait: w})
		msgs := []bypass.Message{{Buf: make([]byte, 64)}}
		out, in := make([]byte, 64), make([]byte, 200)
		if n := testing.AllocsPerRun(200, func() {
			udpRoundTrips(t, a, b, 1, out, in)
			msgs[0].Addr = b.LocalAddr()
			a.WriteBatch(msgs)
			b.ReadBatch(msgs)
		}); n != 0 {
			t.Errorf("udp %v: %v allocations per round trip", w, n)
		}
		srv, cli := tcpPair(t, bypass.Options{Wait: w})
		if n := testing.AllocsPerRun(200, func() { tcpRoundTrips(t, srv, cli, 1, out[:32], in) }); n != 0 {
			t.Errorf("tcp %v: %v allocations per round trip", w, n)
		}
	}
}
