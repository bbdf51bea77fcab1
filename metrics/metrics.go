// Package metrics exports the counters of lowlat connections as Prometheus
// metrics. It is a package of its own so that the socket API (package
// bypass) does not import the metrics library: a service that wants the
// metrics imports this one too.
//
//	c := metrics.NewCollector()
//	c.Add("feed-a", conn) // any bypass.PacketConn, or anything with Stats and Info
//	prometheus.MustRegister(c)
//
// Every counter is read from the connection when Prometheus scrapes
// (Collect): nothing is added to the connection's hot path.
package metrics

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lowlat/lowlat/bypass"
)

// Source is what a Collector reads: a bypass.PacketConn, or anything else
// that keeps lowlat's counters.
type Source interface {
	Stats() bypass.Stats
	Info() bypass.Info
}

// StreamSource is what a Collector reads of a stream: a kernel Stream, or
// anything that counts bytes and messages as bypass.StreamStats does.
type StreamSource interface {
	Stats() bypass.StreamStats
	Info() bypass.Info
}

// Collector is a prometheus.Collector over a set of named connections and
// streams. Add, AddStream and Remove may run while Prometheus scrapes.
type Collector struct {
	mu      sync.Mutex
	names   []string
	srcs    map[string]Source
	streams map[string]StreamSource
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns an empty Collector.
func NewCollector() *Collector {
	return &Collector{srcs: make(map[string]Source), streams: make(map[string]StreamSource)}
}

// AddStream exports a stream's byte and message counters under the label
// conn=name, replacing what was there under that name.
func (c *Collector) AddStream(name string, s StreamSource) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.streams[name]; !ok {
		if _, ok := c.srcs[name]; !ok {
			c.names = append(c.names, name)
		}
	}
	c.streams[name] = s
}

// Add exports s's counters under the label conn=name, replacing what was
// there under that name.
func (c *Collector) Add(name string, s Source) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.srcs[name]; !ok {
		c.names = append(c.names, name)
	}
	c.srcs[name] = s
}

// Remove stops exporting name.
func (c *Collector) Remove(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.srcs, name)
	delete(c.streams, name)
	c.names = slices.DeleteFunc(c.names, func(n string) bool { return n == name })
}

var labels = []string{"conn", "backend"}

func desc(name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc("lowlat_"+name, help, append(slices.Clone(labels), extra...), nil)
}

// The metrics, one per counter of bypass.Stats; the drops are one metric
// with the reason as a label.
var (
	rxDesc       = desc("rx_packets_total", "Datagrams delivered to the application.")
	txDesc       = desc("tx_packets_total", "Datagrams handed to the transport.")
	truncDesc    = desc("rx_truncated_total", "Datagrams cut to fit the caller's buffer.")
	dropDesc     = desc("rx_dropped_total", "Datagrams or frames lost before the application saw them, by reason.", "reason")
	ringFullDesc = desc("rx_ring_full_total", "afxdp: frames the kernel dropped because the RX ring was full (also counted as reason=kernel).")
	invalidDesc  = desc("invalid_descriptors_total", "afxdp: descriptors the kernel refused as invalid.")
	txFullDesc   = desc("tx_ring_full_total", "Transmits that found every buffer or ring slot in use.")
	wakeupsDesc  = desc("wakeups_total", "afxdp: kicks issued to the kernel.")
	sRxBytesDesc = desc("stream_rx_bytes_total", "Streams: bytes received.")
	sTxBytesDesc = desc("stream_tx_bytes_total", "Streams: bytes handed to the socket.")
	sRxMsgsDesc  = desc("stream_rx_messages_total", "Streams: framed messages received (ReadMsg).")
	sTxMsgsDesc  = desc("stream_tx_messages_total", "Streams: framed messages sent whole (WriteMsg).")
	tcpSegsDesc  = desc("tcp_segments_total", "User-space TCP (afxdp, efvi): segments received and sent.", "dir")
	tcpRexmtDesc = desc("tcp_retransmits_total", "User-space TCP: segments sent again.")
	tcpEvDesc    = desc("tcp_events_total", "User-space TCP: fast retransmits (losses found by duplicate ACKs), retransmission timeouts, out-of-order segments received, duplicate ACKs received, window probes sent, resets sent and received.", "event")
	tcpDropDesc  = desc("tcp_dropped_total", "User-space TCP: segments the connection dropped (out of window, old timestamp, ACK of unsent data, no room, no ACK).")
	tcpSRTTDesc  = desc("tcp_srtt_seconds", "User-space TCP: smoothed round-trip time.")
	tcpCwndDesc  = desc("tcp_cwnd_bytes", "User-space TCP: congestion window.")
	allDescs     = []*prometheus.Desc{rxDesc, txDesc, truncDesc, dropDesc, ringFullDesc, invalidDesc, txFullDesc, wakeupsDesc,
		sRxBytesDesc, sTxBytesDesc, sRxMsgsDesc, sTxMsgsDesc, tcpSegsDesc, tcpRexmtDesc, tcpEvDesc, tcpDropDesc, tcpSRTTDesc, tcpCwndDesc}
	dropsByReason = []struct {
		reason string
		get    func(*bypass.Stats) uint64
	}{
		{"short", func(s *bypass.Stats) uint64 { return s.DropShort }},
		{"fragment", func(s *bypass.Stats) uint64 { return s.DropFragment }},
		{"ip_options", func(s *bypass.Stats) uint64 { return s.DropIPOptions }},
		{"ip_checksum", func(s *bypass.Stats) uint64 { return s.DropIPChecksum }},
		{"udp_checksum", func(s *bypass.Stats) uint64 { return s.DropUDPChecksum }},
		{"not_ours", func(s *bypass.Stats) uint64 { return s.DropNotOurs }},
		{"length", func(s *bypass.Stats) uint64 { return s.DropLength }},
		{"queue_full", func(s *bypass.Stats) uint64 { return s.DropQueueFull }},
		{"recv_buffer", func(s *bypass.Stats) uint64 { return s.DropRecvBuffer }},
		{"crc", func(s *bypass.Stats) uint64 { return s.DropCRC }},
		{"kernel", func(s *bypass.Stats) uint64 { return s.KernelDropped }},
		{"fill_ring_empty", func(s *bypass.Stats) uint64 { return s.FillRingEmpty }},
	}
)

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect reads every connection's Stats and sends them.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	names := slices.Clone(c.names)
	srcs := make([]Source, len(names))
	streams := make([]StreamSource, len(names))
	for i, n := range names {
		srcs[i], streams[i] = c.srcs[n], c.streams[n]
	}
	c.mu.Unlock()
	for i, st := range streams {
		if st == nil {
			continue
		}
		s := st.Stats()
		lv := []string{names[i], st.Info().Backend}
		for _, m := range []struct {
			d *prometheus.Desc
			v uint64
		}{{sRxBytesDesc, s.RxBytes}, {sTxBytesDesc, s.TxBytes}, {sRxMsgsDesc, s.RxMessages}, {sTxMsgsDesc, s.TxMessages}} {
			ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v), lv...)
		}
		if ti, ok := st.(bypass.TCPInfoer); ok {
			collectTCP(ch, ti.TCPInfo(), lv)
		}
	}
	for i, src := range srcs {
		if src == nil {
			continue
		}
		s := src.Stats()
		lv := []string{names[i], src.Info().Backend}
		counter := func(d *prometheus.Desc, v uint64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append(lv, extra...)...)
		}
		counter(rxDesc, s.RxPackets)
		counter(txDesc, s.TxPackets)
		counter(truncDesc, s.RxTrunc)
		for _, d := range dropsByReason {
			counter(dropDesc, d.get(&s), d.reason)
		}
		counter(ringFullDesc, s.RxRingFull)
		counter(invalidDesc, s.InvalidDescs)
		counter(txFullDesc, s.TxRingFull)
		counter(wakeupsDesc, s.Wakeups)
	}
}

// collectTCP sends a user-space TCP connection's counters.
func collectTCP(ch chan<- prometheus.Metric, t bypass.TCPInfo, lv []string) {
	counter := func(d *prometheus.Desc, v uint64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append(slices.Clone(lv), extra...)...)
	}
	counter(tcpSegsDesc, t.SegsIn, "in")
	counter(tcpSegsDesc, t.SegsOut, "out")
	counter(tcpRexmtDesc, t.Retransmits)
	counter(tcpEvDesc, t.FastRetransmits, "fast_retransmit")
	counter(tcpEvDesc, t.Timeouts, "timeout")
	counter(tcpEvDesc, t.OutOfOrder, "out_of_order")
	counter(tcpEvDesc, t.DupAcks, "dup_ack")
	counter(tcpEvDesc, t.WindowProbes, "window_probe")
	counter(tcpEvDesc, t.RstSent, "rst_sent")
	counter(tcpEvDesc, t.RstRecv, "rst_received")
	counter(tcpDropDesc, t.Dropped)
	ch <- prometheus.MustNewConstMetric(tcpSRTTDesc, prometheus.GaugeValue, t.SRTT.Seconds(), lv...)
	ch <- prometheus.MustNewConstMetric(tcpCwndDesc, prometheus.GaugeValue, float64(t.Cwnd), lv...)
}
