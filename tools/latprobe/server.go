package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency"
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
	if pl.cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, pl.cfg.Duration)
		defer cancel()
	}
	srv := &latency.EchoServer{Wire: pl.wire}
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
		{"kernel-dropped", s.KernelDropped},
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
	fmt.Fprintln(stdout, describe("latprobe server: udp", c.LocalAddr(), pl.cpu, c.Info()))
	done := make(chan error, 1)
	go func() {
		unlock, err := lockThread(pl.cpu)
		if err != nil {
			done <- fmt.Errorf("pin the serving thread: %w", err)
			return
		}
		defer unlock()
		done <- srv.ServePacket(c)
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
		unlock, err := lockThread(pl.cpu)
		if err != nil {
			done <- fmt.Errorf("pin the serving thread: %w", err)
			return
		}
		defer unlock()
		done <- srv.ServePoller(ctx, p)
	}()
	err = <-done
	var counters []string
	for _, c := range conns {
		counters = append(counters, connCounters(c))
	}
	return true, counters, err
}

func serveTCP(ctx context.Context, srv *latency.EchoServer, pl *plan, stdout, stderr io.Writer) (bool, error) {
	l, err := bypass.ListenTCP(pl.addr, pl.opts)
	if err != nil {
		return false, listenError("tcp", pl.addr, err)
	}
	fmt.Fprintf(stdout, "latprobe server: tcp %v", l.Addr())
	if pl.cpu >= 0 {
		fmt.Fprintf(stdout, ", connections served on cpu %d", pl.cpu)
	}
	fmt.Fprintln(stdout)
	return true, serveStreams(ctx, l, srv, pl.cpu, stdout, stderr)
}

// serveStreams serves each connection l accepts on its own goroutine until
// ctx is done or Accept fails, then closes l and every connection and
// returns once every goroutine it started has ended.
//
// A connection can be accepted just before l.Close and reach the registry
// after the shutdown sweep. So registration and the sweep take the same
// mutex, the sweep marks the registry closed, and a connection that comes
// later is closed at once instead of served; wg.Add happens under that
// mutex before the sweep, so never after wg.Wait has begun. The accept
// goroutine is waited for too (its Accept fails once l is closed), so
// nothing is left running on return.
func serveStreams(ctx context.Context, l bypass.StreamListener, srv *latency.EchoServer, cpu int, stdout, stderr io.Writer) error {
	var (
		mu      sync.Mutex
		closed  bool
		streams = map[bypass.Stream]bool{}
		wg      sync.WaitGroup
	)
	serve := func(s bypass.Stream) {
		defer wg.Done()
		defer func() {
			mu.Lock()
			delete(streams, s)
			mu.Unlock()
			s.Close()
		}()
		unlock, err := lockThread(cpu)
		if err != nil {
			fmt.Fprintf(stderr, "latprobe server: pin the serving thread: %v\n", err)
			return
		}
		defer unlock()
		if err := srv.ServeRawStream(s); err != nil {
			fmt.Fprintf(stderr, "latprobe server: connection from %v: %v\n", s.RemoteAddr(), err)
		}
	}
	acceptErr := make(chan error, 1)
	go func() {
		for {
			s, err := l.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				s.Close() // accepted as the server stopped: not served
				continue
			}
			streams[s] = true
			wg.Add(1)
			mu.Unlock()
			fmt.Fprintln(stdout, describe("  connection from", s.RemoteAddr(), cpu, s.Info()))
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
