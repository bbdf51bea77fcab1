package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/metrics"
)

type fake struct{ s bypass.Stats }

func (f *fake) Stats() bypass.Stats { return f.s }
func (f *fake) Info() bypass.Info   { return bypass.Info{Backend: "afxdp"} }

// TestCollectorExportsEveryCounter: each counter of Stats comes out under
// its connection's name, the drops by reason, and the sum of the drop
// metric is Stats.Dropped().
func TestCollectorExportsEveryCounter(t *testing.T) {
	f := &fake{s: bypass.Stats{
		RxPackets: 10, TxPackets: 9, RxTrunc: 1, DropShort: 2, DropNotOurs: 3, DropQueueFull: 4,
		DropRecvBuffer: 5, DropCRC: 6, KernelDropped: 7, RxRingFull: 7, FillRingEmpty: 8,
		InvalidDescs: 1, TxRingFull: 2, Wakeups: 3,
	}}
	c := metrics.NewCollector()
	c.Add("feed-a", f)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	want := `
# HELP lowlat_rx_packets_total Datagrams delivered to the application.
# TYPE lowlat_rx_packets_total counter
lowlat_rx_packets_total{backend="afxdp",conn="feed-a"} 10
# HELP lowlat_wakeups_total afxdp: kicks issued to the kernel.
# TYPE lowlat_wakeups_total counter
lowlat_wakeups_total{backend="afxdp",conn="feed-a"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "lowlat_rx_packets_total", "lowlat_wakeups_total"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var dropped float64
	for _, mf := range mfs {
		if mf.GetName() == "lowlat_rx_dropped_total" {
			for _, m := range mf.GetMetric() {
				dropped += m.GetCounter().GetValue()
			}
		}
	}
	if dropped != float64(f.s.Dropped()) {
		t.Fatalf("the drop metric sums to %v, Stats.Dropped() is %d", dropped, f.s.Dropped())
	}
	c.Remove("feed-a")
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Fatalf("%d metrics after Remove", n)
	}
}

// TestCollectorOverARealConnection reads a kernel socket's counters.
func TestCollectorOverARealConnection(t *testing.T) {
	a, err := bypass.ListenUDP(netipLoopback(), bypass.Options{Backend: "kernel"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.WriteTo([]byte("x"), a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	c := metrics.NewCollector()
	c.Add("self", a)
	if got := testutil.ToFloat64(filtered{c, "lowlat_tx_packets_total"}); got != 1 {
		t.Fatalf("tx = %v, want 1", got)
	}
}

type fakeStream struct{ s bypass.StreamStats }

func (f *fakeStream) Stats() bypass.StreamStats { return f.s }
func (f *fakeStream) Info() bypass.Info         { return bypass.Info{Backend: "kernel"} }

// TestCollectorStreams: a stream's byte and message counters come out
// under its name; removing it removes them.
func TestCollectorStreams(t *testing.T) {
	c := metrics.NewCollector()
	c.AddStream("orders", &fakeStream{bypass.StreamStats{RxBytes: 10, TxBytes: 20, RxMessages: 1, TxMessages: 2}})
	want := `
# HELP lowlat_stream_tx_bytes_total Streams: bytes handed to the socket.
# TYPE lowlat_stream_tx_bytes_total counter
lowlat_stream_tx_bytes_total{backend="kernel",conn="orders"} 20
`
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "lowlat_stream_tx_bytes_total"); err != nil {
		t.Fatal(err)
	}
	c.Remove("orders")
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Fatalf("%d metrics after Remove", n)
	}
}

type fakeTCPStream struct {
	fakeStream
	ti bypass.TCPInfo
}

func (f *fakeTCPStream) TCPInfo() bypass.TCPInfo { return f.ti }
func (f *fakeTCPStream) Info() bypass.Info       { return bypass.Info{Backend: "afxdp"} }

// TestCollectorTCPStreams: a user-space TCP stream's protocol counters
// come out beside its byte counters; a kernel stream has none.
func TestCollectorTCPStreams(t *testing.T) {
	c := metrics.NewCollector()
	c.AddStream("orders", &fakeTCPStream{ti: bypass.TCPInfo{Retransmits: 7, Timeouts: 2, FastRetransmits: 4, SRTT: 9 * time.Microsecond, Cwnd: 14480}})
	c.AddStream("kernel", &fakeStream{})
	want := `
# HELP lowlat_tcp_retransmits_total User-space TCP: segments sent again.
# TYPE lowlat_tcp_retransmits_total counter
lowlat_tcp_retransmits_total{backend="afxdp",conn="orders"} 7
# HELP lowlat_tcp_cwnd_bytes User-space TCP: congestion window.
# TYPE lowlat_tcp_cwnd_bytes gauge
lowlat_tcp_cwnd_bytes{backend="afxdp",conn="orders"} 14480
`
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "lowlat_tcp_retransmits_total", "lowlat_tcp_cwnd_bytes"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c, "lowlat_tcp_events_total"); n != 7 {
		t.Fatalf("%d tcp event series, want 7", n)
	}
}
