package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"runtime/debug"
	"slices"
	"syscall"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency"
)

// cmdRun is the self-contained run: an echo server and a client in this
// process, each on its own OS thread pinned to its own CPU when there are
// two or more, over the backend the flags name (auto: the fastest that
// works here for both ends). Backends that bind a NIC queue (afxdp, efvi)
// cannot carry traffic between two ends on one host, so run refuses them
// and their options and auto passes over them.
func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	p := newProbe("run", roleRun)
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
	info := infoWriter(p.json, stdout, stderr)

	// CPUs: the client on --cpu or the last usable CPU, the server on the
	// highest other one.
	serverCPU := -1
	cpus, err := usableCPUs()
	if err != nil {
		fmt.Fprintf(info, "note: cannot read the CPU list (%v); threads are not pinned\n", err)
		cpus = nil
	}
	if len(cpus) >= 2 {
		if pl.cpu < 0 {
			pl.cpu = cpus[len(cpus)-1]
		}
		for _, c := range slices.Backward(cpus) {
			if c != pl.cpu {
				serverCPU = c
				break
			}
		}
	} else if !pl.waitSet {
		// Two spinning threads on one CPU take turns by scheduler slices.
		pl.opts.Wait = bypass.WaitBlock
		fmt.Fprintln(info, "note: one CPU only: both ends block instead of spinning (--wait spin to override)")
	}

	var (
		tr          latency.Transport
		clientInfo  bypass.Info
		serverInfo  bypass.Info
		clientAddr  netip.AddrPort
		serverAddr  netip.AddrPort
		srv         = &latency.EchoServer{Wire: pl.wire}
		serve       func() error
		closeServer func()
	)
	switch pl.proto {
	case "udp":
		sc, cc, err := listenPair(pl.addr, pl.opts)
		if err != nil {
			return err
		}
		defer cc.Close()
		serve = func() error { return srv.ServePacket(sc) }
		closeServer = func() { sc.Close() }
		tr = latency.PacketTransport(cc, sc.LocalAddr())
		clientInfo, serverInfo = cc.Info(), sc.Info()
		clientAddr, serverAddr = cc.LocalAddr(), sc.LocalAddr()
	case "tcp":
		l, err := bypass.ListenTCP(pl.addr, pl.opts)
		if err != nil {
			return fmt.Errorf("server: %w", listenError("tcp", pl.addr, err))
		}
		type accepted struct {
			s   bypass.Stream
			err error
		}
		ch := make(chan accepted, 1)
		go func() {
			s, err := l.Accept()
			ch <- accepted{s, err}
		}()
		cs, err := bypass.DialTCP(l.Addr(), pl.opts)
		if err != nil {
			l.Close()
			<-ch
			return fmt.Errorf("client: cannot connect to tcp %v: %w", l.Addr(), err)
		}
		defer cs.Close()
		a := <-ch
		l.Close()
		if a.err != nil {
			return fmt.Errorf("server: accept on tcp %v: %w", l.Addr(), a.err)
		}
		serve = func() error { return srv.ServeRawStream(a.s) }
		closeServer = func() { a.s.Close() }
		tr = streamTransport(cs, pl.wire)
		clientInfo, serverInfo = cs.Info(), a.s.Info()
		clientAddr, serverAddr = cs.LocalAddr(), l.Addr()
	}

	if clientInfo.Wait == bypass.WaitSpin || serverInfo.Wait == bypass.WaitSpin {
		quietRuntime()
	}
	serverErr := make(chan error, 1)
	go func() {
		unlock, err := lockThread(serverCPU)
		if err != nil {
			serverErr <- fmt.Errorf("pin the server thread: %w", err)
			return
		}
		defer unlock()
		serverErr <- serve()
	}()
	stopServer := func() error {
		closeServer()
		return <-serverErr
	}

	fmt.Fprintf(info, "latprobe run: %s over %s, %s per size, warm-up %d\n", pl.proto, pl.addr.Addr(), span(pl), pl.cfg.Warmup)
	fmt.Fprintln(info, describe("client", clientAddr, pl.cpu, clientInfo))
	fmt.Fprintln(info, describe("server", serverAddr, serverCPU, serverInfo))
	fmt.Fprintln(info, clockLine())

	reports, err := measure(ctx, tr, pl, clientInfo.Backend, p.hlog)
	serr := stopServer()
	if perr := printReports(stdout, reports, p.json); perr != nil && err == nil {
		err = perr
	}
	if st := srv.Stats(); st.Garbage() > 0 || st.SendErrors > 0 {
		fmt.Fprintf(info, "server: %s\n", echoSummary(st))
	}
	if err != nil {
		if interrupted(err) {
			fmt.Fprintln(info, "interrupted: the table shows what was measured until then")
			return nil
		}
		return err
	}
	if serr != nil {
		return fmt.Errorf("server: %w", serr)
	}
	return nil
}

// listenPair opens the server's and the client's UDP endpoints on one
// backend. Auto picks, for both ends together, the fastest backend that
// opens both, passing over the nicBackends (named in Info.Skipped, which
// run prints): on one interface both ends would share one user-space
// stack, and what the client sends leaves through the NIC and never comes
// back to the server's queue.
func listenPair(addr netip.AddrPort, o bypass.Options) (sc, cc bypass.PacketConn, err error) {
	// The server reads no transmit stamps: it does not ask for them.
	so := o
	so.TxTimestamps = false
	client := netip.AddrPortFrom(addr.Addr(), 0)
	if o.Backend != "" && o.Backend != "auto" {
		if sc, err = bypass.ListenUDP(addr, so); err != nil {
			return nil, nil, fmt.Errorf("server: %w", listenError("udp", addr, err))
		}
		if cc, err = bypass.ListenUDP(client, o); err != nil {
			sc.Close()
			return nil, nil, fmt.Errorf("client: cannot open udp on %v: %w", addr.Addr(), err)
		}
		return sc, cc, nil
	}
	var skipped []bypass.Skip
	for _, name := range bypass.Backends() {
		if slices.Contains(nicBackends, name) {
			skipped = append(skipped, bypass.Skip{Backend: name, Reason: errOneHost})
			continue
		}
		if err := bypass.AutoSkip(name); err != nil {
			skipped = append(skipped, bypass.Skip{Backend: name, Reason: err})
			continue
		}
		bo := o
		bo.Backend = name
		bo.Skipped = slices.Clone(skipped)
		sbo := bo
		sbo.TxTimestamps = false
		if sc, err = bypass.ListenUDP(addr, sbo); err != nil {
			if errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL) {
				// Every backend would fail the same way.
				return nil, nil, fmt.Errorf("server: %w", listenError("udp", addr, err))
			}
			skipped = append(skipped, bypass.Skip{Backend: name, Reason: err})
			continue
		}
		if cc, err = bypass.ListenUDP(client, bo); err != nil {
			sc.Close()
			skipped = append(skipped, bypass.Skip{Backend: name, Reason: fmt.Errorf("client: %w", err)})
			continue
		}
		return sc, cc, nil
	}
	var errs []error
	for _, k := range skipped {
		errs = append(errs, errors.New(k.String()))
	}
	return nil, nil, fmt.Errorf("server: cannot listen on udp %v: no backend works for both ends: %w", addr, errors.Join(errs...))
}

// span says how long each size is measured.
func span(pl *plan) string {
	if pl.cfg.Count > 0 {
		return fmt.Sprintf("%d round trips", pl.cfg.Count)
	}
	return pl.cfg.Duration.String()
}

// echoSummary renders an echo server's counters on one line.
func echoSummary(s latency.EchoStats) string {
	line := fmt.Sprintf("echoed %d, garbage %d (empty %d, short %d, bad magic %d, bad version %d, bad length %d, oversize %d, not a request %d, other %d), send errors %d",
		s.Echoed, s.Garbage(), s.Empty, s.Short, s.BadMagic, s.BadVersion, s.BadLength, s.Oversize, s.NotRequest, s.Other, s.SendErrors)
	if s.Flooded > 0 {
		line += fmt.Sprintf(", flood messages counted %d", s.Flooded)
	}
	return line
}

// quietRuntime prepares the Go runtime for threads that spin in system
// calls, before they start. A goroutine spinning on raw non-blocking
// syscalls is rarely at a point where the runtime can preempt it, so a
// stop-the-world (a garbage collection, a GOMAXPROCS change) can wait for
// it for milliseconds to seconds while every other goroutine, the other
// end of the ping-pong included, stands still. The measuring loops do not
// allocate, so for a bounded run garbage collection is simply switched off,
// and GOMAXPROCS is raised by one, now, so that the two spinning threads
// leave a P for the rest of the runtime (signals, timers).
func quietRuntime() {
	debug.SetGCPercent(-1)
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
}
