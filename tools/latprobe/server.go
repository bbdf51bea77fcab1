package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
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
	var listening bool
	switch pl.proto {
	case "udp":
		listening, err = serveUDP(ctx, srv, pl, stdout)
	case "tcp":
		listening, err = serveTCP(ctx, srv, pl, stdout, stderr)
	}
	if listening {
		fmt.Fprintf(stdout, "latprobe server: %s\n", echoSummary(srv.Stats()))
	}
	return err
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

func serveUDP(ctx context.Context, srv *latency.EchoServer, pl *plan, stdout io.Writer) (bool, error) {
	c, err := bypass.ListenUDP(pl.addr, pl.opts)
	if err != nil {
		return false, listenError("udp", pl.addr, err)
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
		c.Close()
		return true, <-done
	case err := <-done:
		c.Close()
		return true, err
	}
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
	var (
		mu      sync.Mutex
		streams = map[bypass.Stream]bool{}
		wg      sync.WaitGroup
	)
	acceptErr := make(chan error, 1)
	go func() {
		for {
			s, err := l.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			mu.Lock()
			streams[s] = true
			mu.Unlock()
			fmt.Fprintln(stdout, describe("  connection from", s.RemoteAddr(), pl.cpu, s.Info()))
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(streams, s)
					mu.Unlock()
					s.Close()
				}()
				unlock, err := lockThread(pl.cpu)
				if err != nil {
					fmt.Fprintf(stderr, "latprobe server: pin the serving thread: %v\n", err)
					return
				}
				defer unlock()
				if err := srv.ServeRawStream(s); err != nil {
					fmt.Fprintf(stderr, "latprobe server: connection from %v: %v\n", s.RemoteAddr(), err)
				}
			}()
		}
	}()
	var err2 error
	select {
	case <-ctx.Done():
	case err2 = <-acceptErr:
	}
	l.Close()
	mu.Lock()
	for s := range streams {
		s.Close()
	}
	mu.Unlock()
	wg.Wait()
	if err2 != nil && !errors.Is(err2, bypass.ErrClosed) {
		return true, err2
	}
	return true, nil
}
