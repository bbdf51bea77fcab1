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
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/internal/cli"
	"github.com/lowlat/lowlat/latency"
)

// checkListen checks a --listen address without looking anything up: an
// IP address (or nothing, for every address) and a port, or localhost.
func checkListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want [IP]:PORT, such as :9464 or 127.0.0.1:9464")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (port != "0" && n == 0) {
		return errors.New("want a port from 0 to 65535")
	}
	if host == "" || host == "localhost" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return errors.New("want an IP address, not a name (nothing is looked up)")
	}
	return nil
}

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
	reg.MustRegister(m.collectors()...)
	return m
}

func (m *monitorMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.rtt, m.sent, m.lost, m.errors, m.interval}
}

// unregister removes m's series from reg, for a peer that has gone.
func (m *monitorMetrics) unregister(reg prometheus.Registerer) {
	for _, c := range m.collectors() {
		reg.Unregister(c)
	}
}

// cmdMonitor probes latprobe (or sockperf) servers at a low fixed rate for
// as long as it runs and exports what it measures for Prometheus, one set
// of series per peer (label peer="HOST:PORT"). The peers are the --peer
// flags, or every address that --peers-dns resolves to, looked up again
// every --resolve-every so that peers that join or leave (the nodes behind
// a Kubernetes headless Service) are picked up; --self names addresses
// never to probe, such as this node's own.
func cmdMonitor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("monitor", flag.ContinueOnError)
	var peerFlags stringList
	fs.Var(&peerFlags, "peer", "a server's HOST:PORT; repeat it to probe several")
	peersDNS := fs.String("peers-dns", "", "probe every address NAME:PORT resolves to (such as a headless Service), looked up again every --resolve-every")
	resolveEvery := fs.Duration("resolve-every", 30*time.Second, "with --peers-dns: how often to look the peers up again")
	selfFlag := fs.String("self", "", "comma-separated addresses never to probe (this node's own)")
	mps := fs.Int("mps", 100, "probes per second, to each peer")
	listen := fs.String("listen", ":9464", "serve /metrics on this address")
	hlogName := fs.String("hlog", "", "also write each interval's histogram to this HdrHistogram log (one --peer only)")
	every := fs.Duration("interval", 10*time.Second, "length of the interval behind the percentile gauges and the .hlog lines")
	size := fs.Int("size", latency.DefaultSize, "message size in bytes")
	timeout := fs.Duration("timeout", time.Second, "count a probe lost after waiting this long for its reply")
	wireName := fs.String("wire", "lowlat", "message format: lowlat or sockperf")
	duration := fs.Duration("duration", 0, "stop after this long (default: run until interrupted)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if len(peerFlags) == 0 && *peersDNS == "" {
		return usagef("--peer or --peers-dns: required (the servers' HOST:PORT)")
	}
	if len(peerFlags) > 0 && *peersDNS != "" {
		return usagef("--peer and --peers-dns: give one or the other")
	}
	self := map[netip.Addr]bool{}
	for _, a := range strings.Split(*selfFlag, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return usagef("--self %s: %v", a, err)
		}
		self[ip.Unmap()] = true
	}
	var static []netip.AddrPort
	for _, p := range peerFlags {
		ap, err := resolve(p, "udp")
		if err != nil {
			return usagef("--peer %s: %v", p, err)
		}
		if !self[ap.Addr()] && !slices.Contains(static, ap) {
			static = append(static, ap)
		}
	}
	var dnsHost string
	var dnsPort uint16
	if *peersDNS != "" {
		h, port, err := net.SplitHostPort(*peersDNS)
		pn, perr := strconv.ParseUint(port, 10, 16)
		if err != nil || h == "" || perr != nil || pn == 0 {
			return usagef("--peers-dns %s: want NAME:PORT", *peersDNS)
		}
		if *resolveEvery <= 0 {
			return usagef("--resolve-every %v: want a positive duration", *resolveEvery)
		}
		dnsHost, dnsPort = h, uint16(pn)
	}
	if *hlogName != "" && (*peersDNS != "" || len(peerFlags) != 1) {
		return usagef("--hlog: only with a single --peer")
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
	if err := checkListen(*listen); err != nil {
		return usagef("--listen %s: %v", cli.Quote(*listen), err)
	}
	if parsedOnly(ctx) {
		return nil
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}

	reg := prometheus.NewRegistry()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", *listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	what := fmt.Sprint(static)
	if dnsHost != "" {
		what = fmt.Sprintf("every address of %s (looked up every %v)", *peersDNS, *resolveEvery)
	}
	fmt.Fprintf(stdout, "latprobe monitor: probing %s at %d/s, metrics on http://%v/metrics\n", what, *mps, ln.Addr())

	var lw *latency.HlogWriter
	if *hlogName != "" {
		f, err := os.Create(*hlogName)
		if err != nil {
			return fmt.Errorf("--hlog: %w", err)
		}
		defer f.Close()
		lw, err = latency.NewHlogWriter(f, time.Now(), fmt.Sprintf("latprobe monitor %v, round trips in ns", static))
		if err != nil {
			return fmt.Errorf("--hlog %s: %w", *hlogName, err)
		}
	}
	ms := newMesh(reg, monitor{
		wire: w, size: *size, timeout: *timeout, hlog: lw,
		interval: time.Second / time.Duration(*mps), every: *every, stderr: stderr,
	})
	defer ms.stopAll()
	if dnsHost == "" {
		ms.set(ctx, static)
		select {
		case <-ctx.Done():
			return nil // interrupted or --duration
		case err := <-ms.errs:
			return err
		}
	}
	lookup := func(ctx context.Context) ([]netip.AddrPort, error) {
		return lookupPeers(ctx, net.DefaultResolver.LookupNetIP, dnsHost, dnsPort, self)
	}
	ms.watch(ctx, lookup, *resolveEvery)
	return nil
}

// stringList is a flag that may be repeated.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// lookupPeers resolves host (with lookup, net.Resolver.LookupNetIP's shape)
// and returns every address but self's with port, sorted, once each.
func lookupPeers(ctx context.Context, lookup func(context.Context, string, string) ([]netip.Addr, error),
	host string, port uint16, self map[netip.Addr]bool) ([]netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := lookup(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	var peers []netip.AddrPort
	for _, a := range addrs {
		a = a.Unmap()
		if ap := netip.AddrPortFrom(a, port); !self[a] && !slices.Contains(peers, ap) {
			peers = append(peers, ap)
		}
	}
	slices.SortFunc(peers, netip.AddrPort.Compare)
	return peers, nil
}

// mesh runs one monitor per peer, all exporting to one registry, and
// starts and stops them as the set of peers changes.
type mesh struct {
	reg     *prometheus.Registry
	tmpl    monitor // every field but peer and m
	running map[netip.AddrPort]*meshPeer
	errs    chan error // the first error of a monitor that stopped by itself
}

type meshPeer struct {
	cancel context.CancelFunc
	done   chan struct{}
	m      *monitorMetrics
}

func newMesh(reg *prometheus.Registry, tmpl monitor) *mesh {
	return &mesh{reg: reg, tmpl: tmpl, running: map[netip.AddrPort]*meshPeer{}, errs: make(chan error, 1)}
}

// set probes exactly peers: it stops (and removes the series of) the
// monitors of peers no longer listed, and starts one for each new peer or
// for one whose monitor stopped on an error.
func (ms *mesh) set(ctx context.Context, peers []netip.AddrPort) {
	for p, r := range ms.running {
		ended := false
		select {
		case <-r.done:
			ended = true
		default:
		}
		if ended || !slices.Contains(peers, p) {
			ms.stop(p)
			if !ended {
				fmt.Fprintf(ms.tmpl.stderr, "latprobe monitor: %v: no longer a peer, stopped\n", p)
			}
		}
	}
	for _, p := range peers {
		if ms.running[p] != nil {
			continue
		}
		mon := ms.tmpl
		mon.peer = p
		mon.m = newMonitorMetrics(ms.reg, p.String())
		pctx, cancel := context.WithCancel(ctx)
		r := &meshPeer{cancel: cancel, done: make(chan struct{}), m: mon.m}
		ms.running[p] = r
		go func() {
			defer close(r.done)
			if err := mon.run(pctx); err != nil && pctx.Err() == nil {
				err = fmt.Errorf("peer %v: %w", p, err)
				fmt.Fprintf(mon.stderr, "latprobe monitor: %v\n", err)
				select {
				case ms.errs <- err:
				default:
				}
			}
		}()
	}
}

// stop ends the monitor of p and removes its series.
func (ms *mesh) stop(p netip.AddrPort) {
	r := ms.running[p]
	r.cancel()
	<-r.done
	r.m.unregister(ms.reg)
	delete(ms.running, p)
}

func (ms *mesh) stopAll() {
	for p := range ms.running {
		ms.stop(p)
	}
}

// watch looks the peers up now and every period until ctx ends, and probes
// what it finds. A failed lookup keeps the peers it had.
func (ms *mesh) watch(ctx context.Context, lookup func(context.Context) ([]netip.AddrPort, error), period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	var last []netip.AddrPort
	for {
		peers, err := lookup(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			fmt.Fprintf(ms.tmpl.stderr, "latprobe monitor: looking up peers: %v; keeping %v\n", err, last)
		default:
			if !slices.Equal(peers, last) {
				fmt.Fprintf(ms.tmpl.stderr, "latprobe monitor: peers %v\n", peers)
				last = peers
			}
			ms.set(ctx, peers)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C: // a monitor that stopped on an error is restarted here
		}
	}
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
