package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lowlat/lowlat/affinity"
	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/internal/cli"
	"github.com/lowlat/lowlat/latency"
	"github.com/lowlat/lowlat/metrics"
)

// role says which command a probe's flags belong to.
type role int

const (
	roleRun role = iota
	roleServer
	roleClient
)

// Defaults.
const (
	defaultDuration   = 3 * time.Second
	defaultWarmup     = 1000
	defaultServerAddr = "0.0.0.0:11111"
	defaultRunAddr    = "127.0.0.1:0"
)

// probe holds the flags that run, server and client share.
type probe struct {
	role role
	fs   *flag.FlagSet

	backend, proto, addr string
	addrs, peers         stringList // server --addr, client --addr and --peer: repeatable
	wait, iface, xdpMode string
	queue, cpu           int
	count, warmup, size  int
	sizes, hlog          string
	duration, timeout    time.Duration
	json                 bool
	wire, plot           string // see field.go
	mps                  int
	maxConns             int           // server, tcp: connections served at once
	idleTimeout          time.Duration // server, tcp: close a connection silent this long
	timestamps           bool          // stamp datagrams; run, client: split each round trip into stages
	groups, sources      stringList    // server: multicast groups to join, and the sources to join them for
	metricsAddr          string        // server, udp: serve the connections' counters for Prometheus here
	hot                  bool          // server, client: the serving or measuring thread is hot
}

// newProbe registers the flags of the given role on a new flag set.
func newProbe(name string, r role) *probe {
	p := &probe{role: r, fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	fs := p.fs
	fs.StringVar(&p.backend, "backend", "auto", "backend: auto (the fastest that works), "+strings.Join(bypass.Backends(), ", "))
	fs.StringVar(&p.proto, "proto", "udp", "protocol: udp or tcp")
	fs.StringVar(&p.wait, "wait", "", "wait mode: block or spin (default: the backend's own, spin for busypoll)")
	fs.StringVar(&p.iface, "iface", "", "network interface, for backends that bind one (afxdp)")
	fs.IntVar(&p.queue, "queue", 0, "NIC queue to bind, -1 for all (afxdp)")
	fs.StringVar(&p.xdpMode, "xdp-mode", "", "XDP attach mode: auto, drv or skb (afxdp)")
	fs.BoolVar(&p.timestamps, "timestamps", false, "stamp datagrams (udp, lowlat wire): the server reports its own time in each reply; run and client split every round trip into client_tx, network, server and client_rx")
	p.fieldFlags()
	switch r {
	case roleServer:
		fs.Var(&p.addrs, "addr", "`IP:PORT` to listen on (default "+defaultServerAddr+"); repeat it to serve several addresses from one thread through one poller (udp)")
		fs.IntVar(&p.cpu, "cpu", -1, "pin the serving thread to this CPU; -1 leaves it unpinned")
		fs.DurationVar(&p.duration, "duration", 0, "stop after this long (default: run until interrupted)")
		fs.IntVar(&p.maxConns, "max-conns", defaultMaxConns, fmt.Sprintf("tcp: connections served at once, 1 to %d; more are closed at once, with a note", maxMaxConns))
		fs.DurationVar(&p.idleTimeout, "idle-timeout", defaultIdleTimeout, "tcp: close a connection that sends nothing for this long, or does not take a reply for as long (0: never)")
		fs.Var(&p.groups, "group", "udp: join this multicast `GROUP` on every --addr and answer what arrives there (repeatable); --iface names the interface")
		fs.StringVar(&p.metricsAddr, "metrics", "", "serve every connection's counters for Prometheus on `[IP]:PORT` (/metrics): a UDP address's, or each TCP connection's while it is open")
		fs.Var(&p.sources, "source", "udp, with --group: join the groups for this `SOURCE` only (source-specific, IGMPv3/MLDv2; repeatable)")
		fs.BoolVar(&p.hot, "hot", false, hotUsage(roleServer))
		return p
	case roleRun:
		fs.StringVar(&p.addr, "addr", defaultRunAddr, "address the echo server listens on; the client binds the same IP")
		fs.IntVar(&p.cpu, "cpu", -1, "pin the measuring thread to this CPU; -1 picks the last CPU and gives the server another")
	case roleClient:
		fs.Var(&p.addrs, "addr", "local UDP `IP:PORT` to bind (default: any); with several --peer, once for all (port 0) or once per --peer, in order")
		fs.Var(&p.peers, "peer", "the server's `HOST:PORT` (required); repeat it to measure several servers from one thread, one socket and one request in flight each (udp)")
		fs.IntVar(&p.cpu, "cpu", -1, "pin the measuring thread to this CPU; -1 leaves it unpinned")
		fs.BoolVar(&p.hot, "hot", false, hotUsage(roleClient))
	}
	fs.IntVar(&p.count, "count", 0, "measure this many round trips (instead of --duration)")
	fs.DurationVar(&p.duration, "duration", defaultDuration, "measure for this long, per message size")
	fs.IntVar(&p.warmup, "warmup", defaultWarmup, "round trips before measuring, not recorded")
	fs.IntVar(&p.size, "size", latency.DefaultSize, fmt.Sprintf("message size in bytes, %d to %d", latency.MinSize, latency.MaxSize))
	fs.StringVar(&p.sizes, "sizes", "", "comma-separated message sizes to sweep, such as 64,256,1024")
	fs.DurationVar(&p.timeout, "timeout", latency.DefaultTimeout, "count a reply lost after waiting this long")
	fs.BoolVar(&p.json, "json", false, "print one JSON object per message size instead of the table")
	fs.StringVar(&p.hlog, "hlog", "", "write an HdrHistogram interval log (one interval per second) to this file")
	return p
}

// set reports whether the named flag was given on the command line.
func (p *probe) set(name string) bool {
	found := false
	p.fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}

// plan is a validated probe.
type plan struct {
	opts    bypass.Options
	proto   string
	addr    netip.AddrPort   // run, server: listen; client: local bind (may be invalid: any)
	peer    netip.AddrPort   // client
	addrs   []netip.AddrPort // server: every --addr (addrs[0] is addr); client: local bind per peer (invalid: any)
	peers   []netip.AddrPort // client: every --peer (peers[0] is peer)
	sizes   []int
	cfg     latency.Config // Size is set per size
	cpu     int            // -1: not pinned
	hot     bool           // server, client: make the thread on cpu hot (--hot)
	passes  uint64         // client --hot: the Yielder's passes through the scheduler
	waitSet bool
	wire    latency.Wire // see field.go
	mps     int
	plot    string
	series  []series // what --plot draws

	maxConns    int           // server, tcp
	idleTimeout time.Duration // server, tcp: 0 never
	groups      []netip.Addr  // server: multicast groups to join
	sources     []netip.Addr  // server: join the groups for these sources only
	metricsAddr string        // server: where to serve /metrics ("": nowhere)

	collector *metrics.Collector // server with --metrics: every connection is added
}

// validate checks the flags, and the LOWLAT_* environment under them, and
// returns a usageError naming the first flag that is wrong.
func (p *probe) validate() (*plan, error) {
	pl := &plan{cpu: p.cpu, hot: p.hot}
	if err := p.validateField(pl); err != nil {
		return nil, err
	}
	o, err := bypass.OptionsFromEnv(bypass.Options{})
	if err != nil {
		return nil, usageError{err.Error()}
	}
	// Flags given on the command line win over the environment.
	if p.set("backend") || o.Backend == "" {
		o.Backend = p.backend
	}
	known := append([]string{"auto"}, bypass.Backends()...)
	if !slices.Contains(known, o.Backend) {
		return nil, usagef("--backend %s: not in this build (have %s)", o.Backend, strings.Join(known, ", "))
	}
	switch p.proto {
	case "udp", "tcp":
	default:
		return nil, usagef("--proto %s: want udp or tcp", p.proto)
	}
	pl.proto = p.proto
	if p.set("wait") {
		w, err := bypass.ParseWaitMode(p.wait)
		if err != nil || w == bypass.WaitDefault {
			return nil, usagef("--wait %s: want block or spin", p.wait)
		}
		o.Wait = w
	}
	pl.waitSet = o.Wait != bypass.WaitDefault
	if p.set("iface") {
		o.Interface = p.iface
	}
	if p.set("queue") {
		if p.queue < -1 {
			return nil, usagef("--queue %d: want -1 (all queues) or a queue number", p.queue)
		}
		o.Queue = p.queue
	}
	if p.set("xdp-mode") {
		switch p.xdpMode {
		case "auto", "drv", "skb":
		default:
			return nil, usagef("--xdp-mode %s: want auto, drv or skb", p.xdpMode)
		}
		if o.Backend != "auto" && o.Backend != "afxdp" {
			return nil, usagef("--xdp-mode: only the afxdp backend attaches XDP (--backend is %s)", o.Backend)
		}
		o.XDP.Mode = p.xdpMode
	}
	if p.timestamps {
		if p.proto != "udp" {
			return nil, usagef("--timestamps: only with --proto udp")
		}
		if pl.wire != latency.Lowlat && pl.wire != nil && !(p.role == roleServer && pl.wire == latency.Auto) {
			return nil, usagef("--timestamps: only with the lowlat wire format (--wire %s)", pl.wire.Name())
		}
		if p.mps > 0 {
			return nil, usagef("--timestamps: not with --mps (stages are measured in ping-pong)")
		}
		o.Timestamps = bypass.TimestampsSoftware
		// A client reads its transmit stamps; a server does not, so it
		// does not ask for them (they would fill its error queue).
		o.TxTimestamps = p.role != roleServer
		pl.cfg.Stages = p.role != roleServer
	}
	if err := o.Validate(); err != nil {
		return nil, usagef("backend options: %v", err)
	}
	if p.proto == "tcp" && o.Backend != "auto" {
		if b, err := bypass.Lookup(o.Backend); err == nil {
			if _, ok := b.(backend.StreamBackend); !ok {
				return nil, usagef("--proto tcp: backend %s carries UDP only", o.Backend)
			}
		}
	}
	pl.opts = o

	if p.hot && p.role == roleServer && p.proto == "tcp" {
		return nil, usagef("--hot: udp only (a TCP server serves each connection on a thread of its own)")
	}
	if p.hot && p.cpu == -1 {
		return nil, usagef("--hot: needs --cpu, the CPU the thread has to itself")
	}
	if p.cpu != -1 {
		cpus, err := usableCPUs()
		if err != nil {
			return nil, fmt.Errorf("--cpu: %w", err)
		}
		if !slices.Contains(cpus, p.cpu) {
			return nil, usagef("--cpu %d: not a CPU this process may run on (have %s)", p.cpu, affinity.NewCPUSet(cpus...))
		}
		if p.hot && len(cpus) < 2 {
			return nil, usagef("--hot: the rest of the process needs a CPU other than --cpu %d, and this process may run on %s only", p.cpu, affinity.NewCPUSet(cpus...))
		}
	}

	switch p.role {
	case roleServer:
		addrs := p.addrs
		if len(addrs) == 0 {
			addrs = stringList{defaultServerAddr}
		}
		for _, s := range addrs {
			a, err := netip.ParseAddrPort(s)
			if err != nil {
				return nil, usagef("--addr %s: want IP:PORT (%v)", s, err)
			}
			if a.Port() != 0 && slices.Contains(pl.addrs, a) {
				return nil, usagef("--addr %s: given twice", s)
			}
			pl.addrs = append(pl.addrs, a)
		}
		if len(pl.addrs) > 1 && p.proto == "tcp" {
			return nil, usagef("--addr: given %d times; only --proto udp serves several addresses (from one thread through one poller)", len(pl.addrs))
		}
		pl.addr = pl.addrs[0]
		if p.duration < 0 {
			return nil, usagef("--duration %v: negative", p.duration)
		}
		pl.cfg.Duration = p.duration
		if p.maxConns < 1 || p.maxConns > maxMaxConns {
			return nil, usagef("--max-conns %d: want 1 to %d", p.maxConns, maxMaxConns)
		}
		if p.idleTimeout < 0 {
			return nil, usagef("--idle-timeout %v: negative (0: never)", p.idleTimeout)
		}
		if p.proto != "tcp" && (p.set("max-conns") || p.set("idle-timeout")) {
			return nil, usagef("--max-conns and --idle-timeout: only with --proto tcp (a UDP server keeps no state per peer)")
		}
		pl.maxConns, pl.idleTimeout = p.maxConns, p.idleTimeout
		for _, g := range p.groups {
			a, err := netip.ParseAddr(g)
			if err != nil || !a.IsMulticast() {
				return nil, usagef("--group %s: not a multicast address", cli.Quote(g))
			}
			pl.groups = append(pl.groups, a)
		}
		for _, src := range p.sources {
			a, err := netip.ParseAddr(src)
			if err != nil || a.IsMulticast() || a.IsUnspecified() {
				return nil, usagef("--source %s: not a unicast address", cli.Quote(src))
			}
			pl.sources = append(pl.sources, a)
		}
		switch {
		case len(pl.sources) > 0 && len(pl.groups) == 0:
			return nil, usagef("--source: needs --group")
		case len(pl.groups) > 0 && p.proto != "udp":
			return nil, usagef("--group: only with --proto udp")
		}
		if p.set("metrics") {
			if err := checkListen(p.metricsAddr); err != nil {
				return nil, usagef("--metrics %s: %v", cli.Quote(p.metricsAddr), err)
			}
			pl.metricsAddr = p.metricsAddr
		}
		return pl, nil
	case roleRun:
		a, err := netip.ParseAddrPort(p.addr)
		if err != nil {
			return nil, usagef("--addr %s: want IP:PORT (%v)", p.addr, err)
		}
		if a.Addr().IsUnspecified() {
			return nil, usagef("--addr %s: run needs an address the client can send to, such as 127.0.0.1:0", p.addr)
		}
		pl.addr = a
		if err := p.checkOneHost(pl.opts); err != nil {
			return nil, err
		}
	case roleClient:
		if err := p.validatePeers(pl); err != nil {
			return nil, err
		}
	}

	if p.set("count") && p.set("duration") {
		return nil, usagef("--count: give --count or --duration, not both")
	}
	switch {
	case p.set("count"):
		if p.count <= 0 {
			return nil, usagef("--count %d: want at least 1", p.count)
		}
		pl.cfg.Count = p.count
	case p.duration <= 0:
		return nil, usagef("--duration %v: want a positive duration such as 3s", p.duration)
	default:
		pl.cfg.Duration = p.duration
	}
	if p.warmup < 0 {
		return nil, usagef("--warmup %d: negative", p.warmup)
	}
	pl.cfg.Warmup = p.warmup
	if p.timeout <= 0 {
		return nil, usagef("--timeout %v: want a positive duration such as 200ms", p.timeout)
	}
	pl.cfg.Timeout = p.timeout

	if p.set("size") && p.set("sizes") {
		return nil, usagef("--sizes: give --size or --sizes, not both")
	}
	if p.set("sizes") {
		for _, f := range strings.Split(p.sizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				return nil, usagef("--sizes %s: %q is not a number", p.sizes, f)
			}
			if checkSize(pl.wire, n) != nil {
				return nil, usagef("--sizes %s: %d is outside %d to %d", p.sizes, n, pl.wire.MinSize(), maxSize(pl.wire))
			}
			pl.sizes = append(pl.sizes, n)
		}
	} else {
		if checkSize(pl.wire, p.size) != nil {
			return nil, usagef("--size %d: want %d to %d", p.size, pl.wire.MinSize(), maxSize(pl.wire))
		}
		pl.sizes = []int{p.size}
	}
	if p.timestamps {
		if slices.ContainsFunc(pl.sizes, func(n int) bool { return n < latency.MinStageSize }) {
			return nil, usagef("--timestamps: messages of at least %d bytes carry the server's time", latency.MinStageSize)
		}
		if len(pl.peers) > 1 {
			return nil, usagef("--timestamps: measures one --peer only (given %d)", len(pl.peers))
		}
	}
	if p.hlog != "" && strings.TrimSpace(p.hlog) == "" {
		return nil, usagef("--hlog: empty file name")
	}
	return pl, nil
}

// validatePeers checks the client's --peer and --addr flags into pl.
func (p *probe) validatePeers(pl *plan) error {
	if len(p.peers) == 0 {
		return usagef("--peer: required (the server's HOST:PORT)")
	}
	for _, s := range p.peers {
		peer, err := resolve(s, p.proto)
		if err != nil {
			return usagef("--peer %s: %v", s, err)
		}
		if slices.Contains(pl.peers, peer) {
			return usagef("--peer %s: given twice", s)
		}
		pl.peers = append(pl.peers, peer)
	}
	pl.peer = pl.peers[0]
	if slices.ContainsFunc(pl.peers, func(a netip.AddrPort) bool { return a.Addr().IsMulticast() }) {
		if p.proto != "udp" {
			return usagef("--peer: a multicast group needs --proto udp")
		}
		// Requests to a group leave through --iface; replies come from the
		// servers' own addresses.
		pl.opts.Multicast.Interface = pl.opts.Interface
	}
	many := len(pl.peers) > 1
	if many {
		switch {
		case p.proto == "tcp":
			return usagef("--peer: given %d times; only --proto udp measures several peers", len(pl.peers))
		case p.mps > 0:
			return usagef("--mps: measures one --peer only (given %d)", len(pl.peers))
		case p.hlog != "":
			return usagef("--hlog: only with a single --peer (given %d)", len(pl.peers))
		}
	}
	pl.addrs = make([]netip.AddrPort, len(pl.peers))
	if len(p.addrs) == 0 {
		return nil
	}
	if p.proto == "tcp" {
		return usagef("--addr: the TCP client cannot choose its local address")
	}
	if len(p.addrs) != 1 && len(p.addrs) != len(pl.peers) {
		return usagef("--addr: given %d times for %d --peer; give it once, or once per --peer", len(p.addrs), len(pl.peers))
	}
	for i, s := range p.addrs {
		a, err := netip.ParseAddrPort(s)
		if err != nil {
			return usagef("--addr %s: want IP:PORT (%v)", s, err)
		}
		if len(p.addrs) == 1 {
			if many && a.Port() != 0 {
				return usagef("--addr %s: one address for %d sockets needs port 0 (or give --addr once per --peer)", s, len(pl.peers))
			}
			for j := range pl.addrs {
				pl.addrs[j] = a
			}
			break
		}
		if a.Port() != 0 && slices.Contains(pl.addrs[:i], a) {
			return usagef("--addr %s: given twice", s)
		}
		pl.addrs[i] = a
	}
	pl.addr = pl.addrs[0]
	return nil
}

// resolve turns HOST:PORT into an address, looking the host up if needed.
func resolve(hostport, proto string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil || pn == 0 {
		return netip.AddrPort{}, fmt.Errorf("port %q: want 1 to 65535", port)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a.Unmap(), uint16(pn)), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	for _, a := range addrs { // prefer IPv4, which every backend carries
		if a.Unmap().Is4() {
			return netip.AddrPortFrom(a.Unmap(), uint16(pn)), nil
		}
	}
	return netip.AddrPortFrom(addrs[0], uint16(pn)), nil
}

// usableCPUs lists the CPUs that are online and in this process's mask.
func usableCPUs() ([]int, error) {
	online, err := affinity.OnlineCPUs()
	if err != nil {
		return nil, err
	}
	mask, err := affinity.ThreadAffinity()
	if err != nil {
		return nil, err
	}
	return online.Intersect(mask).CPUs(), nil
}

// lockThread locks the calling goroutine to its OS thread and, when cpu is
// not -1, pins the thread to that CPU. unlock undoes both.
func lockThread(cpu int) (unlock func(), err error) {
	if cpu < 0 {
		lockOSThread()
		return unlockOSThread, nil
	}
	return affinity.LockAndPin(cpu)
}

// hotUsage is --hot's help for the serving or the measuring thread.
func hotUsage(r role) string {
	u := "make the %s thread hot: alone on --cpu, every other thread of the process kept on the other CPUs (affinity.MakeHot)"
	if r == roleServer {
		return fmt.Sprintf(u+"; needs --cpu, udp only", "serving")
	}
	return fmt.Sprintf(u+", and, with one --peer, passing through Go's scheduler between round trips so that the runtime never preempts it during one (affinity.Yielder); needs --cpu", "measuring")
}

// hotThread makes the calling goroutine's thread hot on cpu (client
// --hot): it returns the Yielder to call between round trips and the
// function that undoes it all, to call from the same goroutine.
func hotThread(cpu int) (*affinity.Yielder, func() error, error) {
	h, err := affinity.MakeHot(cpu, affinity.CPUSet{})
	if err != nil {
		return nil, nil, err // it names the CPU and the cause
	}
	return affinity.NewYielder(0), h.Release, nil
}

// nicBackends bind a NIC queue. Two ends on one host cannot reach each
// other through them: a frame one end sends leaves by the NIC (or, to a
// local address, by loopback) and never enters the other end's queue.
var nicBackends = []string{"efvi", "afxdp"}

// errOneHost is why run passes over the nicBackends.
var errOneHost = errors.New("not used by run, whose two ends on one host cannot reach each other through it (use latprobe server and latprobe client on two hosts or namespaces)")

// checkOneHost refuses, for run, the backends and options that bind a NIC:
// on one host the client's traffic would go through loopback and never
// reach the server's queue (the server bound afxdp, the client fell back
// to another backend, and every message was lost).
func (p *probe) checkOneHost(o bypass.Options) error {
	const use = "run keeps both ends on one host; use latprobe server and latprobe client on two hosts or network namespaces"
	if slices.Contains(nicBackends, o.Backend) {
		if p.set("backend") {
			return usagef("--backend %s: %s", o.Backend, use)
		}
		return usagef("LOWLAT_BACKEND=%s: %s", o.Backend, use)
	}
	for _, f := range []string{"iface", "queue", "xdp-mode"} {
		if p.set(f) {
			return usagef("--%s: %s", f, use)
		}
	}
	if o.Interface != "" {
		return usagef("LOWLAT_IFACE=%s: %s", o.Interface, use)
	}
	return nil
}

// describe renders a connection's Info with a label, indenting the skip and
// note lines that bypass.Describe puts under it.
func describe(label string, addr netip.AddrPort, cpu int, info bypass.Info) string {
	where := addr.String()
	if cpu >= 0 {
		where += fmt.Sprintf(" on cpu %d", cpu)
	}
	return fmt.Sprintf("%s %s: %s", label, where, strings.ReplaceAll(bypass.Describe(info), "\n", "\n  "))
}

// openHlog creates the interval log file named by --hlog.
func openHlog(name string, pl *plan, start time.Time) (*os.File, *latency.HlogWriter, error) {
	f, err := os.Create(name)
	if err != nil {
		return nil, nil, fmt.Errorf("--hlog: %w", err)
	}
	lw, err := latency.NewHlogWriter(f, start, fmt.Sprintf("latprobe %s %s, round trips in ns, sizes %v", pl.proto, pl.opts.Backend, pl.sizes))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("--hlog %s: %w", name, err)
	}
	return f, lw, nil
}
