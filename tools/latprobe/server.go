package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lowlat/lowlat/affinity"
	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency"
	"github.com/lowlat/lowlat/metrics"
)

// cmdServer runs an echo server until interrupted or --duration passes.
func cmdServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	p := newProbe("server", roleServer)
	if err := parseFlags(p.fs, args, stdout); err != nil {
		return err
	}
	pl, err := p.validate()
	if err != nil {
		return err
	}
	if parsedOnly(ctx) {
		return nil
	}
	if pl.cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, pl.cfg.Duration)
		defer cancel()
	}
	srv := &latency.EchoServer{Wire: pl.wire}
	if pl.metricsAddr != "" {
		stop, err := serveMetrics(pl, stdout)
		if err != nil {
			return err
		}
		defer stop()
	}
	var (
		listening bool
		counters  []string
	)
	switch {
	case pl.proto == "tcp":
		listening, err = serveTCP(ctx, srv, pl, stdout, stderr)
	case len(pl.addrs) > 1:
		listening, counters, err = servePoller(ctx, srv, pl, stdout)
	default:
		listening, counters, err = serveUDP(ctx, srv, pl, stdout)
	}
	if listening {
		fmt.Fprintf(stdout, "latprobe server: %s\n", echoSummary(srv.Stats()))
		for _, l := range counters {
			fmt.Fprintf(stdout, "latprobe server: %s\n", l)
		}
	}
	return err
}

// connCounters renders the backend's counters of c on one line, non-zero
// ones only: "127.0.0.1:11111 counters: rx 100 tx 100 wakeups 12".
func connCounters(c bypass.PacketConn) string {
	s := c.Stats()
	var b strings.Builder
	fmt.Fprintf(&b, "%v counters:", c.LocalAddr())
	n := 0
	for _, f := range []struct {
		name string
		v    uint64
	}{
		{"rx", s.RxPackets},
		{"tx", s.TxPackets},
		{"rx-trunc", s.RxTrunc},
		{"drop-short", s.DropShort},
		{"drop-fragment", s.DropFragment},
		{"drop-ip-options", s.DropIPOptions},
		{"drop-ip-checksum", s.DropIPChecksum},
		{"drop-udp-checksum", s.DropUDPChecksum},
		{"drop-not-ours", s.DropNotOurs},
		{"drop-length", s.DropLength},
		{"drop-queue-full", s.DropQueueFull},
		{"drop-recv-buffer", s.DropRecvBuffer},
		{"drop-crc", s.DropCRC},
		{"kernel-dropped", s.KernelDropped},
		{"rx-ring-full", s.RxRingFull},
		{"invalid-descs", s.InvalidDescs},
		{"fill-ring-empty", s.FillRingEmpty},
		{"tx-ring-full", s.TxRingFull},
		{"wakeups", s.Wakeups},
	} {
		if f.v != 0 {
			fmt.Fprintf(&b, " %s %d", f.name, f.v)
			n++
		}
	}
	if n == 0 {
		b.WriteString(" none")
	}
	return b.String()
}

// listenError says that the server could not listen on addr, and why. Auto
// selection reports every backend it tried; when one of them failed in a
// system call (bind: address already in use), that call is the cause a
// user can act on.
func listenError(proto string, addr netip.AddrPort, err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return fmt.Errorf("cannot listen on %s %v: %w", proto, addr, se)
	}
	return fmt.Errorf("cannot listen on %s %v: %w", proto, addr, err)
}

// serveUDP serves one address until ctx is done, and returns the line of
// its connection's counters, read before it is closed.
func serveUDP(ctx context.Context, srv *latency.EchoServer, pl *plan, stdout io.Writer) (bool, []string, error) {
	c, err := bypass.ListenUDP(pl.addr, pl.opts)
	if err != nil {
		return false, nil, listenError("udp", pl.addr, err)
	}
	if err := joinGroups(c, pl, stdout); err != nil {
		c.Close()
		return false, nil, err
	}
	if pl.collector != nil {
		pl.collector.Add(c.LocalAddr().String(), c)
	}
	fmt.Fprintln(stdout, describe("latprobe server: udp", c.LocalAddr(), pl.cpu, c.Info()))
	done := make(chan error, 1)
	go func() {
		release, err := servingThread(pl)
		if err != nil {
			done <- err
			return
		}
		err = srv.ServePacket(c)
		release() // before main can return and exit
		done <- err
	}()
	select {
	case <-ctx.Done():
		counters := []string{connCounters(c)}
		c.Close()
		return true, counters, <-done
	case err := <-done:
		counters := []string{connCounters(c)}
		c.Close()
		return true, counters, err
	}
}

// servingThread locks the calling goroutine to its thread, pinned to
// --cpu, or made hot with --hot. The returned function undoes it; call it
// on the same goroutine. A failure to undo is printed, not returned:
// serving is over.
//
// A hot serving thread does not pass through the scheduler between
// requests as a hot client does: a server cannot tell when the next
// request comes, a pass costs the same wherever it lands (a thread
// hand-off, 41-141 µs on the project's VM), and passing every 8 ms
// would make two to three times as many as the runtime's own preemptions.
func servingThread(pl *plan) (release func(), err error) {
	if !pl.hot {
		unlock, err := lockThread(pl.cpu)
		if err != nil {
			return nil, fmt.Errorf("pin the serving thread: %w", err)
		}
		return unlock, nil
	}
	h, err := affinity.MakeHot(pl.cpu, affinity.CPUSet{})
	if err != nil {
		return nil, fmt.Errorf("the serving thread: %w", err)
	}
	return func() {
		if err := h.Release(); err != nil {
			fmt.Fprintf(os.Stderr, "latprobe server: the serving thread: %v\n", err)
		}
	}, nil
}

// servePoller serves every --addr from one thread through one
// bypass.Poller until ctx is done, and returns a line of counters per
// connection, read once serving has stopped and before it is closed. The
// Poller spins when any connection spins, and blocks otherwise.
func servePoller(ctx context.Context, srv *latency.EchoServer, pl *plan, stdout io.Writer) (bool, []string, error) {
	var conns []bypass.PacketConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	po := bypass.PollerOptions{Wait: bypass.WaitBlock}
	for _, a := range pl.addrs {
		c, err := bypass.ListenUDP(a, pl.opts)
		if err != nil {
			return false, nil, listenError("udp", a, err)
		}
		conns = append(conns, c)
		if err := joinGroups(c, pl, stdout); err != nil {
			return false, nil, err
		}
		if pl.collector != nil {
			pl.collector.Add(c.LocalAddr().String(), c)
		}
		if c.Info().Wait == bypass.WaitSpin {
			po.Wait = bypass.WaitSpin
		}
	}
	p, err := bypass.NewPoller(po)
	if err != nil {
		return false, nil, err
	}
	defer p.Close()
	for _, c := range conns {
		if _, err := p.Add(c); err != nil {
			return false, nil, err
		}
	}
	for _, c := range conns {
		fmt.Fprintln(stdout, describe("latprobe server: udp", c.LocalAddr(), pl.cpu, c.Info()))
	}
	fmt.Fprintf(stdout, "latprobe server: %d addresses served from one thread through one poller, wait %s\n", len(conns), po.Wait)
	done := make(chan error, 1)
	go func() {
		release, err := servingThread(pl)
		if err != nil {
			done <- err
			return
		}
		err = srv.ServePoller(ctx, p)
		release() // before main can return and exit
		done <- err
	}()
	err = <-done
	var counters []string
	for _, c := range conns {
		counters = append(counters, connCounters(c))
	}
	return true, counters, err
}

// Limits of the TCP server. Each connection is served on its own OS
// thread, with buffers sized to the messages in flight (a few KiB while
// they are small), so memory grows with the connections open and no
// further: at most --max-conns, each closed once it has been silent (or
// has not taken its reply) for --idle-timeout.
const (
	defaultMaxConns    = 1024
	maxMaxConns        = 8192 // under the Go runtime's 10,000 threads
	defaultIdleTimeout = 60 * time.Second
	// Once at least reclaimFrom connections were open at once and no more
	// than a quarter of them are left, the memory the others used is
	// handed back to the system (debug.FreeOSMemory) rather than kept
	// for a crowd that has gone.
	reclaimFrom = 64
)

// streamConfig is how serveStreams serves connections.
type streamConfig struct {
	cpu         int                // pin each serving thread here; -1: unpinned
	maxConns    int                // connections served at once; more are closed at once
	idleTimeout time.Duration      // close a connection that sends nothing this long; 0: never
	collector   *metrics.Collector // --metrics: each connection's counters while it lasts; nil: none
}

func serveTCP(ctx context.Context, srv *latency.EchoServer, pl *plan, stdout, stderr io.Writer) (bool, error) {
	o := pl.opts
	if o.WriteTimeout == 0 {
		// A peer that sends requests and never reads the replies would
		// hold its serving thread in send(2) for ever.
		o.WriteTimeout = pl.idleTimeout
	}
	l, err := bypass.ListenTCP(pl.addr, o)
	if err != nil {
		return false, listenError("tcp", pl.addr, err)
	}
	fmt.Fprintf(stdout, "latprobe server: tcp %v", l.Addr())
	if pl.cpu >= 0 {
		fmt.Fprintf(stdout, ", connections served on cpu %d", pl.cpu)
	}
	idle := "never"
	if pl.idleTimeout > 0 {
		idle = pl.idleTimeout.String()
	}
	fmt.Fprintf(stdout, ", at most %d at once, idle timeout %s\n", pl.maxConns, idle)
	return true, serveStreams(ctx, l, srv, streamConfig{cpu: pl.cpu, maxConns: pl.maxConns, idleTimeout: pl.idleTimeout, collector: pl.collector}, stdout, stderr)
}

// errIdle ends a connection that sent nothing for the idle timeout.
var errIdle = errors.New("idle: closed")

// idleStream turns a read timeout into errIdle, which ends the echo loop
// (a plain timeout only makes it read again).
type idleStream struct {
	bypass.Stream
	d time.Duration
}

func (s idleStream) Read(b []byte) (int, error) {
	n, err := s.Stream.Read(b)
	if errors.Is(err, bypass.ErrTimeout) {
		return n, fmt.Errorf("%w after %v with nothing received", errIdle, s.d)
	}
	return n, err
}

// Per-connection log lines ("connection from", "refused", why one ended)
// pass at most logBurst per logPeriod on each of stdout and stderr; the
// next line let through says how many were left out.
const (
	logBurst  = 20
	logPeriod = time.Second
)

// lineLimiter writes at most burst lines per period to w and counts the
// rest. It is safe for concurrent use.
type lineLimiter struct {
	mu      sync.Mutex
	w       io.Writer
	burst   int
	period  time.Duration
	start   time.Time
	n       int
	dropped int
}

func newLineLimiter(w io.Writer) *lineLimiter {
	return &lineLimiter{w: w, burst: logBurst, period: logPeriod}
}

// printf writes one line (format ends without a newline) unless this
// period's lines are spent.
func (l *lineLimiter) printf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.start) >= l.period {
		l.start, l.n = now, 0
	}
	if l.n >= l.burst {
		l.dropped++
		return
	}
	l.n++
	l.flushLocked()
	fmt.Fprintf(l.w, format+"\n", a...)
}

// flush says how many lines were left out, if any.
func (l *lineLimiter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
}

func (l *lineLimiter) flushLocked() {
	if l.dropped > 0 {
		fmt.Fprintf(l.w, "latprobe server: %d connection line%s left out (at most %d a second)\n", l.dropped, plural(l.dropped), l.burst)
		l.dropped = 0
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// transientAccept reports whether an accept error concerns one connection
// or a passing shortage (descriptors, memory), after which the server
// should go on accepting rather than stop.
func transientAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.ENOTCONN, syscall.EPERM,
		syscall.ETIMEDOUT, syscall.EINVAL} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// serveStreams serves each connection l accepts on its own goroutine until
// ctx is done or Accept fails for good, then closes l and every connection
// and returns once every goroutine it started has ended. It serves at most
// cfg.maxConns connections at once: one more is closed as soon as it is
// accepted, with a note. A connection that sends nothing for
// cfg.idleTimeout is closed. Each serving goroutine keeps its OS thread
// locked to the end, so the thread exits with it and its memory goes back
// to the system.
//
// A connection can be accepted just before l.Close and reach the registry
// after the shutdown sweep. So registration and the sweep take the same
// mutex, the sweep marks the registry closed, and a connection that comes
// later is closed at once instead of served; wg.Add happens under that
// mutex before the sweep, so never after wg.Wait has begun. The accept
// goroutine is waited for too (its Accept fails once l is closed), so
// nothing is left running on return.
func serveStreams(ctx context.Context, l bypass.StreamListener, srv *latency.EchoServer, cfg streamConfig, stdout, stderr io.Writer) error {
	var (
		mu      sync.Mutex
		closed  bool
		streams = map[bypass.Stream]bool{}
		most    int // most streams open at once since the last reclaim
		wg      sync.WaitGroup
		refused int
		out     = newLineLimiter(stdout)
		errs    = newLineLimiter(stderr)
	)
	defer func() {
		out.flush()
		errs.flush()
		if refused > 0 {
			fmt.Fprintf(stderr, "latprobe server: refused %d connection%s over --max-conns %d\n", refused, plural(refused), cfg.maxConns)
		}
	}()
	serve := func(s bypass.Stream) {
		defer wg.Done()
		defer func() {
			mu.Lock()
			delete(streams, s)
			reclaim := most >= reclaimFrom && len(streams) <= most/4
			if reclaim {
				most = len(streams)
			}
			mu.Unlock()
			s.Close()
			if reclaim {
				debug.FreeOSMemory()
			}
		}()
		if src, ok := s.(metrics.StreamSource); ok && cfg.collector != nil {
			name := "tcp " + s.RemoteAddr().String()
			cfg.collector.AddStream(name, src)
			defer cfg.collector.Remove(name)
		}
		// Not unlocked: the thread ends with this goroutine.
		if _, err := lockThread(cfg.cpu); err != nil {
			errs.printf("latprobe server: pin the serving thread: %v", err)
			return
		}
		st := s
		if cfg.idleTimeout > 0 {
			if err := s.SetReadTimeout(cfg.idleTimeout); err != nil {
				errs.printf("latprobe server: connection from %v: %v", s.RemoteAddr(), err)
				return
			}
			st = idleStream{s, cfg.idleTimeout}
		}
		if err := srv.ServeRawStream(st); err != nil {
			errs.printf("latprobe server: connection from %v: %v", s.RemoteAddr(), err)
		}
		if ti, ok := s.(bypass.TCPInfoer); ok {
			fmt.Fprintf(stdout, "latprobe server: connection from %v: %s\n", s.RemoteAddr(), tcpCounters(ti.TCPInfo()))
		}
	}
	acceptErr := make(chan error, 1)
	go func() {
		backoff := time.Duration(0)
		for {
			s, err := l.Accept()
			if err != nil {
				if errors.Is(err, bypass.ErrClosed) || !transientAccept(err) {
					acceptErr <- err
					return
				}
				// Out of descriptors or memory, or one connection that
				// failed its setup: say so, wait a little, go on.
				errs.printf("latprobe server: %v", err)
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-ctx.Done():
				case <-time.After(backoff):
				}
				continue
			}
			backoff = 0
			mu.Lock()
			if closed {
				mu.Unlock()
				s.Close() // accepted as the server stopped: not served
				continue
			}
			if len(streams) >= cfg.maxConns {
				refused++
				mu.Unlock()
				errs.printf("latprobe server: refused connection from %v: %d connections open (--max-conns %d)", s.RemoteAddr(), cfg.maxConns, cfg.maxConns)
				s.Close()
				continue
			}
			streams[s] = true
			most = max(most, len(streams))
			wg.Add(1)
			mu.Unlock()
			out.printf("%s", describe("  connection from", s.RemoteAddr(), cfg.cpu, s.Info()))
			go serve(s)
		}
	}()
	var err error
	accepting := true
	select {
	case <-ctx.Done():
	case err = <-acceptErr:
		accepting = false
	}
	l.Close()
	mu.Lock()
	closed = true
	for s := range streams {
		s.Close()
	}
	mu.Unlock()
	if accepting {
		err = <-acceptErr
	}
	wg.Wait()
	if err != nil && !errors.Is(err, bypass.ErrClosed) && ctx.Err() == nil {
		return err
	}
	return nil
}

// joinGroups joins every --group on c: for each --source when there are
// some (source-specific), else for any source.
func joinGroups(c bypass.PacketConn, pl *plan, stdout io.Writer) error {
	for _, g := range pl.groups {
		if len(pl.sources) == 0 {
			if err := c.JoinGroup(g); err != nil {
				return fmt.Errorf("--group %v: %w", g, err)
			}
			fmt.Fprintf(stdout, "latprobe server: %v joined %v\n", c.LocalAddr(), g)
			continue
		}
		for _, src := range pl.sources {
			if err := c.JoinSourceGroup(g, src); err != nil {
				return fmt.Errorf("--group %v --source %v: %w", g, src, err)
			}
			fmt.Fprintf(stdout, "latprobe server: %v joined %v for source %v\n", c.LocalAddr(), g, src)
		}
	}
	return nil
}

// serveMetrics serves /metrics on --metrics with a collector that every
// connection the server opens joins; stop shuts the HTTP server down.
func serveMetrics(pl *plan, stdout io.Writer) (stop func(), err error) {
	pl.collector = metrics.NewCollector()
	reg := prometheus.NewRegistry()
	reg.MustRegister(pl.collector)
	ln, err := net.Listen("tcp", pl.metricsAddr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", pl.metricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	fmt.Fprintf(stdout, "latprobe server: counters on http://%v/metrics\n", ln.Addr())
	return func() { hs.Close() }, nil
}
