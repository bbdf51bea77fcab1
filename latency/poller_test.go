//go:build linux

package latency_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency"
	"github.com/lowlat/lowlat/latency/latencytest"
)

// servePoller opens n UDP connections on 127.0.0.1 with options o and
// serves them all with srv.ServePoller on one locked goroutine. stop ends
// the server (by closing the connections when byClose, else by its
// context) and fails the test unless it returns nil.
func servePoller(t testing.TB, srv *latency.EchoServer, o bypass.Options, n int, byClose bool) (conns []bypass.PacketConn, stop func()) {
	t.Helper()
	for range n {
		c, err := bypass.ListenUDP(latencytest.Loopback, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	p, err := bypass.NewPoller(bypass.PollerOptions{Wait: conns[0].Info().Wait})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		if _, err := p.Add(c); err != nil {
			p.Close()
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		errc <- srv.ServePoller(ctx, p)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		if byClose {
			for _, c := range conns {
				c.Close()
			}
		} else {
			cancel()
		}
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("ServePoller: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("ServePoller still running 10s after it was stopped")
		}
		cancel()
		p.Close()
	}
	t.Cleanup(stop)
	return conns, stop
}

// TestServePoller: one ServePoller answers clients on each of its
// connections, counts garbage on any of them, and returns nil when its
// context ends or (spinning) when its connections are closed.
func TestServePoller(t *testing.T) {
	for _, be := range testBackends {
		for _, byClose := range []bool{false, true} {
			name := be + "/context"
			if byClose {
				name = be + "/close"
			}
			t.Run(name, func(t *testing.T) {
				o := bypass.Options{Backend: be}
				if byClose {
					// A blocking Poller may miss a close between two
					// waits (see ServePoller); a spinning one sees it.
					o.Wait = bypass.WaitSpin
				}
				srv := &latency.EchoServer{}
				conns, stop := servePoller(t, srv, o, 2, byClose)
				var received uint64
				for _, sc := range conns {
					client, err := bypass.ListenUDP(latencytest.Loopback, o)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { client.Close() })
					if _, err := client.WriteTo([]byte("garbage"), sc.LocalAddr()); err != nil {
						t.Fatal(err)
					}
					cfg := testConfig()
					r, err := runClient(t, latency.PacketTransport(client, sc.LocalAddr()), cfg)
					if err != nil {
						t.Fatalf("client of %v: %v", sc.LocalAddr(), err)
					}
					checkClean(t, r, cfg)
					received += r.Counters.Received + r.Counters.Warmup
				}
				stop()
				if st := srv.Stats(); st.Echoed < received || st.BadMagic+st.Short != 2 {
					t.Fatalf("server stats %+v; the clients received %d and sent 2 garbage datagrams", st, received)
				}
			})
		}
	}
}

// TestMultiClient measures two servers from one MultiClient: each peer
// gets its own clean result.
func TestMultiClient(t *testing.T) {
	for _, be := range testBackends {
		t.Run(be, func(t *testing.T) {
			o := bypass.Options{Backend: be}
			var peers []latency.Peer
			for range 2 {
				server, client := latencytest.UDPPair(t, o)
				latencytest.Serve(t, &latency.EchoServer{}, server)
				peers = append(peers, latency.Peer{Conn: client, Addr: server.LocalAddr()})
			}
			cfg := testConfig()
			rs, err := runMulti(t, peers, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 2 {
				t.Fatalf("%d results for 2 peers", len(rs))
			}
			for _, r := range rs {
				checkClean(t, r, cfg)
			}
		})
	}
}

// TestMultiClientSilentPeer: a peer that never answers ends the run with
// ErrNoReply naming it, while the other was measured meanwhile.
func TestMultiClientSilentPeer(t *testing.T) {
	o := bypass.Options{Backend: "kernel"}
	server, client := latencytest.UDPPair(t, o)
	latencytest.Serve(t, &latency.EchoServer{}, server)
	silent, quiet := latencytest.UDPPair(t, o)
	peers := []latency.Peer{{Conn: client, Addr: server.LocalAddr()}, {Conn: quiet, Addr: silent.LocalAddr()}}
	cfg := latency.Config{Count: 1_000_000, Timeout: 20 * time.Millisecond, MaxLostInARow: 5}
	rs, err := runMulti(t, peers, cfg)
	if !errors.Is(err, latency.ErrNoReply) || !strings.Contains(err.Error(), silent.LocalAddr().String()) {
		t.Fatalf("err %v, want ErrNoReply naming %v", err, silent.LocalAddr())
	}
	if c := rs[1].Counters; c.Lost != 5 || c.Sent != 5 {
		t.Fatalf("silent peer's counters %+v", c)
	}
	if rs[0].Counters.Received == 0 {
		t.Fatalf("the answering peer was not measured meanwhile: %+v", rs[0].Counters)
	}
}

func runMulti(t *testing.T, peers []latency.Peer, cfg latency.Config) ([]*latency.Result, error) {
	t.Helper()
	latencytest.NoGC(t)
	mc, err := latency.NewMultiClient(peers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	type out struct {
		rs  []*latency.Result
		err error
	}
	ch := make(chan out, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		rs, err := mc.Run(context.Background())
		ch <- out{rs, err}
	}()
	o := <-ch
	return o.rs, o.err
}

// TestPollerAllocs: ServePoller answers, and MultiClient measures, without
// allocating per message. Both ends block on kernel sockets: ReadMemStats
// stops the world, which a spinning thread would hold up.
func TestPollerAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; BenchmarkRoundTripPoller checks this without it")
	}
	o := bypass.Options{Backend: "kernel"}
	conns, _ := servePoller(t, &latency.EchoServer{}, o, 2, false)
	var peers []latency.Peer
	for _, sc := range conns {
		client, err := bypass.ListenUDP(latencytest.Loopback, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close() })
		peers = append(peers, latency.Peer{Conn: client, Addr: sc.LocalAddr()})
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const n = 2000
	mallocs := func(f func()) uint64 {
		best := uint64(1 << 62)
		for range 3 { // the runtime allocates now and then on its own: best of three
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			f()
			runtime.ReadMemStats(&after)
			best = min(best, after.Mallocs-before.Mallocs)
		}
		return best
	}
	// ServePoller, through a plain client on each connection.
	for _, p := range peers {
		cl, err := latency.NewClient(latency.PacketTransport(p.Conn, p.Addr), latency.Config{Count: 1, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if m := mallocs(func() {
			for range n {
				if _, err := cl.RoundTrip(); err != nil {
					t.Fatal(err)
				}
			}
		}); m > 2 {
			t.Fatalf("%d allocations in %d round trips through ServePoller", m, n)
		}
	}
	// MultiClient: a run allocates its results, a constant; nothing per
	// round trip.
	var mcs []*latency.MultiClient
	for range 3 {
		mc, err := latency.NewMultiClient(peers, latency.Config{Count: n, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer mc.Close()
		mcs = append(mcs, mc)
	}
	if m := mallocs(func() {
		mc := mcs[0]
		mcs = mcs[1:]
		if _, err := mc.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}); m > 20 {
		t.Fatalf("%d allocations in a MultiClient run of %d round trips per peer", m, n)
	}
}
