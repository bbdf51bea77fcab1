//go:build linux

package latency_test

import (
	"context"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency"
	"github.com/lowlat/lowlat/latency/latencytest"
)

// stallOnce is a server connection that sleeps once, before answering the
// request with sequence number at.
type stallOnce struct {
	bypass.PacketConn
	at    uint64
	sleep time.Duration
	once  sync.Once
}

func (s *stallOnce) WriteTo(b []byte, to netip.AddrPort) (int, error) {
	if h, err := latency.Decode(b); err == nil && h.Seq >= s.at {
		s.once.Do(func() { time.Sleep(s.sleep) })
	}
	return s.PacketConn.WriteTo(b, to)
}

// TestRateCorrectsStall: at a fixed rate, one 30 ms stall of the server is
// one slow raw sample but about thirty corrected ones, so the corrected
// tail lies above the raw one. It compares the two histograms of the same
// run, never a latency against a number.
func TestRateCorrectsStall(t *testing.T) {
	latencytest.NoGC(t)
	server, client := latencytest.UDPPair(t, bypass.Options{Backend: "kernel"})
	srv := &latency.EchoServer{}
	stop := latencytest.Serve(t, srv, &stallOnce{PacketConn: server, at: 20 + 100, sleep: 30 * time.Millisecond})
	defer stop()
	cfg := latency.Config{Count: 300, Duration: 20 * time.Second, Warmup: 20, Timeout: 5 * time.Second}
	cl, err := latency.NewClient(latency.PacketTransport(client, server.LocalAddr()), cfg)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := cl.RunAtRate(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	raw, cor := pr.Hist, pr.Corrected
	t.Logf("raw: %d samples p99 %v max %v; corrected: %d samples p99 %v; skipped %d", raw.TotalCount(),
		time.Duration(raw.ValueAtPercentile(99)), time.Duration(raw.Max()), cor.TotalCount(), time.Duration(cor.ValueAtPercentile(99)), pr.Skipped)
	if raw.Max() < int64(30*time.Millisecond) {
		t.Fatalf("raw max %v: the stall was not measured", time.Duration(raw.Max()))
	}
	if cor.TotalCount() <= raw.TotalCount() || pr.Skipped == 0 {
		t.Fatalf("corrected %d samples, raw %d, skipped %d: nothing was added back", cor.TotalCount(), raw.TotalCount(), pr.Skipped)
	}
	if cor.ValueAtPercentile(99) <= raw.ValueAtPercentile(99) {
		t.Fatalf("corrected p99 %v not above raw p99 %v", time.Duration(cor.ValueAtPercentile(99)), time.Duration(raw.ValueAtPercentile(99)))
	}
}

// TestRateStallLongerThanTimeout: a server stall longer than the loss
// timeout still shows in the corrected series: the lost request records
// at least the timeout, and every slot the stall covered is recorded (at
// least the stalled slots' count of values at or above the timeout less
// the slot's distance), where the old correction recorded nothing for a
// loss.
func TestRateStallLongerThanTimeout(t *testing.T) {
	latencytest.NoGC(t)
	server, client := latencytest.UDPPair(t, bypass.Options{Backend: "kernel"})
	srv := &latency.EchoServer{}
	stop := latencytest.Serve(t, srv, &stallOnce{PacketConn: server, at: 20 + 100, sleep: 60 * time.Millisecond})
	defer stop()
	timeout := 20 * time.Millisecond
	cfg := latency.Config{Count: 300, Duration: 20 * time.Second, Warmup: 20, Timeout: timeout, MaxLostInARow: 1000}
	cl, err := latency.NewClient(latency.PacketTransport(client, server.LocalAddr()), cfg)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := cl.RunAtRate(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	cor := pr.Corrected
	lost := pr.Counters.Lost
	if lost == 0 {
		t.Fatal("the stall lost nothing: the test cannot tell")
	}
	// Every slot is one corrected value: sent requests and skipped ones.
	if got, want := uint64(cor.TotalCount()), pr.Counters.Sent+pr.Skipped; got != want {
		t.Fatalf("corrected holds %d values, want one per slot: %d sent + %d skipped", got, pr.Counters.Sent, pr.Skipped)
	}
	if above := cor.TotalCount() - countBelow(cor, int64(timeout)); above < int64(lost) {
		t.Fatalf("%d corrected values at or above the timeout, %d requests lost: a loss must record at least the timeout", above, lost)
	}
}

// countBelow is how many values of h lie below v.
func countBelow(h interface {
	Distribution() []hdrhistogram.Bar
}, v int64) int64 {
	var n int64
	for _, b := range h.Distribution() {
		if b.To <= v {
			n += b.Count
		}
	}
	return n
}

// TestRawStreamFraming: the echo server cuts sockperf and lowlat messages
// out of a TCP stream that delivers them in pieces, for each format and
// for auto detection, and the sockperf transport reads the answers back.
func TestRawStreamFraming(t *testing.T) {
	for _, tc := range []struct {
		server latency.Wire
		client latency.Wire
	}{
		{latency.Sockperf, latency.Sockperf},
		{latency.Auto, latency.Sockperf},
		{latency.Auto, latency.Lowlat},
		{latency.Lowlat, latency.Lowlat},
	} {
		t.Run(tc.server.Name()+"/"+tc.client.Name(), func(t *testing.T) {
			latencytest.NoGC(t)
			server, client := latencytest.TCPPair(t, bypass.Options{Backend: "kernel"})
			srv := &latency.EchoServer{Wire: tc.server}
			done := make(chan error, 1)
			go func() { done <- srv.ServeRawStream(server) }()
			defer func() {
				server.Close()
				if err := <-done; err != nil {
					t.Errorf("serve: %v", err)
				}
			}()
			tr := latency.StreamTransport(client)
			if tc.client == latency.Sockperf {
				tr = latency.SockperfStreamTransport(client)
				// Three requests in one write, cut at odd places.
				var all []byte
				for seq := uint64(1); seq <= 3; seq++ {
					b := make([]byte, 14+int(seq)*10)
					latency.Sockperf.PutRequest(b, seq, 0)
					all = append(all, b...)
				}
				for _, piece := range [][]byte{all[:5], all[5:30], all[30:]} {
					if _, err := client.Write(piece); err != nil {
						t.Fatal(err)
					}
					time.Sleep(time.Millisecond)
				}
				if err := tr.SetReadTimeout(5 * time.Second); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 100)
				for seq := uint64(1); seq <= 3; seq++ {
					n, err := tr.Recv(buf)
					if err != nil {
						t.Fatal(err)
					}
					if got, _, err := latency.Sockperf.ParseReply(buf[:n]); err != nil || got != seq || n != 14+int(seq)*10 {
						t.Fatalf("reply %d: seq %d, %d bytes, %v", seq, got, n, err)
					}
				}
			}
			cfg := latency.Config{Count: 200, Duration: 10 * time.Second, Warmup: 10, Timeout: 5 * time.Second, Wire: tc.client, Size: 64}
			cl, err := latency.NewClient(tr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			ch := make(chan error, 1)
			go func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				r, err := cl.Run(context.Background())
				if err == nil && r.Counters.Received+r.Counters.Lost != 200 {
					t.Errorf("counters %+v", r.Counters)
				}
				ch <- err
			}()
			if err := <-ch; err != nil {
				t.Fatal(err)
			}
			if st := srv.Stats(); st.Garbage() != 0 || st.Echoed == 0 {
				t.Fatalf("server %+v", st)
			}
		})
	}
}
