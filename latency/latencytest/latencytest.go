// Package latencytest holds helpers for tests and benchmarks of the latency
// engine over any bypass backend: connected loopback pairs, and a round-trip
// benchmark body that every backend's BenchmarkRoundTrip<Backend> shares.
package latencytest

import (
	"errors"
	"net/netip"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency"
)

// Loopback is 127.0.0.1 with port 0, for listeners that let the kernel pick.
var Loopback = netip.MustParseAddrPort("127.0.0.1:0")

// UDPPair opens two UDP endpoints on 127.0.0.1 with options o, closed in
// tb.Cleanup.
func UDPPair(tb testing.TB, o bypass.Options) (server, client bypass.PacketConn) {
	tb.Helper()
	server, err := bypass.ListenUDP(Loopback, o)
	if err != nil {
		tb.Fatalf("server: %v", err)
	}
	tb.Cleanup(func() { server.Close() })
	client, err = bypass.ListenUDP(Loopback, o)
	if err != nil {
		tb.Fatalf("client: %v", err)
	}
	tb.Cleanup(func() { client.Close() })
	return server, client
}

// TCPPair connects two TCP streams over 127.0.0.1 with options o, closed in
// tb.Cleanup; the listener is closed before it returns.
func TCPPair(tb testing.TB, o bypass.Options) (server, client bypass.Stream) {
	tb.Helper()
	return TCPPairAt(tb, Loopback, o, nil)
}

// TCPPairAt is TCPPair with the listener on laddr. dial, when not nil, runs
// the dial (for example inside another network namespace).
func TCPPairAt(tb testing.TB, laddr netip.AddrPort, o bypass.Options, dial func(func() error) error) (server, client bypass.Stream) {
	tb.Helper()
	l, err := bypass.ListenTCP(laddr, o)
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	defer l.Close()
	type accepted struct {
		s   bypass.Stream
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		s, err := l.Accept()
		ch <- accepted{s, err}
	}()
	do := func() error {
		var err error
		client, err = bypass.DialTCP(l.Addr(), o)
		return err
	}
	if dial != nil {
		err = dial(do)
	} else {
		err = do()
	}
	if err != nil {
		l.Close()
		<-ch
		tb.Fatalf("dial: %v", err)
	}
	tb.Cleanup(func() { client.Close() })
	a := <-ch
	if a.err != nil {
		tb.Fatalf("accept: %v", a.err)
	}
	tb.Cleanup(func() { a.s.Close() })
	return a.s, client
}

// Serve runs an echo server on conn (a bypass.PacketConn or bypass.Stream)
// in its own goroutine locked to an OS thread, and returns a function that
// closes conn and waits for the server to stop, reporting any error it
// returned. The server's counters are in srv.
func Serve(tb testing.TB, srv *latency.EchoServer, conn any) (stop func()) {
	tb.Helper()
	errc := make(chan error, 1)
	var closer func() error
	var serve func() error
	switch c := conn.(type) {
	case bypass.PacketConn:
		closer, serve = c.Close, func() error { return srv.ServePacket(c) }
	case bypass.Stream:
		closer, serve = c.Close, func() error { return srv.ServeStream(c) }
	default:
		tb.Fatalf("latencytest.Serve: %T is neither a PacketConn nor a Stream", conn)
	}
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		errc <- serve()
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		closer()
		select {
		case err := <-errc:
			if err != nil {
				tb.Errorf("echo server: %v", err)
			}
		case <-time.After(10 * time.Second):
			tb.Errorf("echo server did not stop within 10s of its connection closing")
		}
	}
	tb.Cleanup(stop)
	return stop
}

// NoGC switches garbage collection off until the test ends. A goroutine
// spinning in raw system calls (spin wait mode) is rarely preemptible, so a
// collection's stop-the-world can stall every other goroutine, the other
// end of a ping-pong included, until the spinner happens to be preempted:
// milliseconds to seconds. The measuring loops do not allocate.
func NoGC(tb testing.TB) {
	old := debug.SetGCPercent(-1)
	tb.Cleanup(func() { debug.SetGCPercent(old) })
}

// BenchPacket is the body of a BenchmarkRoundTrip<Backend> over UDP: an echo
// server serves on server, and each op is one full round trip from client
// (send, server receive and send, receive, histogram record). It reports
// allocations (0 per op is the contract) and the p50 and p99 it measured,
// and closes both connections when done.
func BenchPacket(b *testing.B, server, client bypass.PacketConn) {
	b.Helper()
	stop := Serve(b, &latency.EchoServer{}, server)
	defer client.Close()
	defer stop()
	bench(b, latency.PacketTransport(client, server.LocalAddr()))
}

// BenchStream is BenchPacket for a connected pair of streams.
func BenchStream(b *testing.B, server, client bypass.Stream) {
	b.Helper()
	stop := Serve(b, &latency.EchoServer{}, server)
	defer client.Close()
	defer stop()
	bench(b, latency.StreamTransport(client))
}

// BenchTransport is the client half of BenchPacket for a transport whose
// echo server the caller runs (for example one that is not a bypass
// connection).
func BenchTransport(b *testing.B, tr latency.Transport) {
	b.Helper()
	bench(b, tr)
}

func bench(b *testing.B, tr latency.Transport) {
	b.Helper()
	NoGC(b)
	cl, err := latency.NewClient(tr, latency.Config{Count: 1, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for range 1000 { // warm caches and the server's thread before timing
		if _, err := cl.RoundTrip(); err != nil && !errors.Is(err, latency.ErrLost) {
			b.Fatal(err)
		}
	}
	cl.Histogram().Reset()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cl.RoundTrip(); err != nil && !errors.Is(err, latency.ErrLost) {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	s := latency.Summarize(cl.Histogram())
	b.ReportMetric(float64(s.P50), "p50-ns")
	b.ReportMetric(float64(s.P99), "p99-ns")
	if lost := cl.Counters().Lost; lost > 0 {
		b.ReportMetric(float64(lost), "lost")
	}
}
