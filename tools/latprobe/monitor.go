package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency"
)

// rttBuckets are the histogram's upper bounds in seconds: 1 µs to about
// 0.5 s, doubling, so that loopback (a few µs) and a slow LAN (ms) both
// fall in buckets of their own.
var rttBuckets = prometheus.ExponentialBuckets(1e-6, 2, 20)

// monitorMetrics are the series the monitor exports.
type monitorMetrics struct {
	rtt      prometheus.Histogram
	sent     prometheus.Counter
	lost     prometheus.Counter
	errors   prometheus.Counter
	interval *prometheus.GaugeVec
}

func newMonitorMetrics(reg prometheus.Registerer, peer string) *monitorMetrics {
	labels := prometheus.Labels{"peer": peer}
	m := &monitorMetrics{
		rtt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "latprobe_rtt_seconds", Help: "Round-trip time of each probe.",
			Buckets: rttBuckets, ConstLabels: labels,
		}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "latprobe_sent_total", Help: "Probes sent.", ConstLabels: labels,
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "latprobe_lost_total", Help: "Probes whose reply did not come within the timeout.", ConstLabels: labels,
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "latprobe_errors_total", Help: "Probes that failed to send or receive (socket errors); each is also counted lost.", ConstLabels: labels,
		}),
		interval: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "latprobe_interval_rtt_seconds", Help: "Round-trip percentiles of the last complete interval.", ConstLabels: labels,
		}, []string{"quantile"}),
	}
	reg.MustRegister(m.rtt, m.sent, m.lost, m.errors, m.interval)
	return m
}

// cmdMonitor probes a latprobe (or sockperf) server at a low fixed rate for
// as long as it runs and exports what it measures for Prometheus.
func cmdMonitor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("monitor", flag.ContinueOnError)
	peerFlag := fs.String("peer", "", "the server's HOST:PORT (required)")
	mps := fs.Int("mps", 100, "probes per second")
	listen := fs.String("listen", ":9464", "serve /metrics on this address")
	hlogName := fs.String("hlog", "", "also write each interval's histogram to this HdrHistogram log")
	every := fs.Duration("interval", 10*time.Second, "length of the interval behind the percentile gauges and the .hlog lines")
	size := fs.Int("size", latency.DefaultSize, "message size in bytes")
	timeout := fs.Duration("timeout", time.Second, "count a probe lost after waiting this long for its reply")
	wireName := fs.String("wire", "lowlat", "message format: lowlat or sockperf")
	duration := fs.Duration("duration", 0, "stop after this long (default: run until interrupted)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *peerFlag == "" {
		return usagef("--peer: required (the server's HOST:PORT)")
	}
	peer, err := resolve(*peerFlag, "udp")
	if err != nil {
		return usagef("--peer %s: %v", *peerFlag, err)
	}
	if *mps <= 0 || *mps > 100_000 {
		return usagef("--mps %d: want 1 to 100000", *mps)
	}
	if *every <= 0 {
		return usagef("--interval %v: want a positive duration", *every)
	}
	if *timeout <= 0 {
		return usagef("--timeout %v: want a positive duration", *timeout)
	}
	w, err := latency.WireByName(*wireName)
	if err != nil || w == latency.Auto {
		return usagef("--wire %s: want lowlat or sockperf", *wireName)
	}
	if err := checkSize(w, *size); err != nil {
		return usagef("--size: %v", err)
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}

	reg := prometheus.NewRegistry()
	m := newMonitorMetrics(reg, peer.String())
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", *listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	fmt.Fprintf(stdout, "latprobe monitor: probing %v at %d/s, metrics on http://%v/metrics\n", peer, *mps, ln.Addr())

	var lw *latency.HlogWriter
	if *hlogName != "" {
		f, err := os.Create(*hlogName)
		if err != nil {
			return fmt.Errorf("--hlog: %w", err)
		}
		defer f.Close()
		lw, err = latency.NewHlogWriter(f, time.Now(), fmt.Sprintf("latprobe monitor %v, round trips in ns", peer))
		if err != nil {
			return fmt.Errorf("--hlog %s: %w", *hlogName, err)
		}
	}
	mon := &monitor{
		peer: peer, wire: w, size: *size, timeout: *timeout, m: m, hlog: lw,
		interval: time.Second / time.Duration(*mps), every: *every, stderr: stderr,
	}
	err = mon.run(ctx)
	if interrupted(err) {
		return nil
	}
	return err
}

// monitor probes one peer. It opens a fresh socket after a socket error, so
// that a peer that goes away and comes back (or a route that flaps) costs
// only the probes sent meanwhile, which are counted lost.
type monitor struct {
	peer     netip.AddrPort
	wire     latency.Wire
	size     int
	timeout  time.Duration
	interval time.Duration // between probes
	every    time.Duration // between gauge updates
	m        *monitorMetrics
	hlog     *latency.HlogWriter
	stderr   io.Writer
}

func (mon *monitor) open() (bypass.PacketConn, *latency.Client, error) {
	any := netip.IPv4Unspecified()
	if mon.peer.Addr().Is6() {
		any = netip.IPv6Unspecified()
	}
	c, err := bypass.ListenUDP(netip.AddrPortFrom(any, 0), bypass.Options{Backend: "kernel", Wait: bypass.WaitBlock})
	if err != nil {
		return nil, nil, err
	}
	cl, err := latency.NewClient(latency.PacketTransport(c, mon.peer), latency.Config{
		Size: mon.size, Duration: 1 << 62, Timeout: mon.timeout, MaxLostInARow: 1 << 30, Wire: mon.wire,
	})
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, cl, nil
}

func (mon *monitor) run(ctx context.Context) error {
	c, cl, err := mon.open()
	if err != nil {
		return err
	}
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	ivl := latency.NewHistogram()
	ivlStart := time.Now()
	next := time.Now()
	for {
		if wait := time.Until(next); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		next = next.Add(mon.interval)
		if late := time.Since(next); late > mon.interval {
			next = next.Add(late.Truncate(mon.interval)) // a slow reply: skip the slots it took
		}
		if cl == nil {
			if c, cl, err = mon.open(); err != nil {
				mon.m.sent.Inc()
				mon.m.lost.Inc()
				mon.m.errors.Inc()
				continue
			}
		}
		mon.m.sent.Inc()
		rtt, err := cl.RoundTrip()
		switch {
		case err == nil:
			mon.m.rtt.Observe(rtt.Seconds())
			_ = ivl.RecordValue(max(int64(rtt), 1))
		case errors.Is(err, latency.ErrLost):
			mon.m.lost.Inc()
		default:
			// A socket error (such as ECONNREFUSED from a port that closed):
			// count it lost and start over on a new socket.
			mon.m.lost.Inc()
			mon.m.errors.Inc()
			fmt.Fprintf(mon.stderr, "latprobe monitor: %v; reopening\n", err)
			c.Close()
			c, cl = nil, nil
		}
		if now := time.Now(); now.Sub(ivlStart) >= mon.every {
			mon.publish(ivl, ivlStart, now)
			ivl.Reset()
			ivlStart = now
		}
	}
}

// publish sets the gauges from one interval and writes it to the log.
func (mon *monitor) publish(h *hdrhistogram.Histogram, start, end time.Time) {
	g := mon.m.interval
	if h.TotalCount() > 0 {
		for _, q := range []struct {
			label string
			p     float64
		}{{"0.5", 50}, {"0.99", 99}, {"0.999", 99.9}} {
			g.WithLabelValues(q.label).Set(float64(h.ValueAtPercentile(q.p)) / 1e9)
		}
		g.WithLabelValues("1").Set(float64(h.Max()) / 1e9)
	}
	if mon.hlog != nil {
		if err := mon.hlog.WriteInterval(h, start, end); err != nil {
			fmt.Fprintf(mon.stderr, "latprobe monitor: --hlog: %v\n", err)
		}
	}
}
