package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency"
)

// cmdClient measures round trips against a latprobe server at --peer.
func cmdClient(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	p := newProbe("client", roleClient)
	if err := parseFlags(p.fs, args, stdout); err != nil {
		return err
	}
	pl, err := p.validate()
	if err != nil {
		return err
	}
	info := infoWriter(p.json, stdout, stderr)

	var (
		tr    latency.Transport
		cinfo bypass.Info
		local netip.AddrPort
	)
	switch pl.proto {
	case "udp":
		laddr := pl.addr
		if !laddr.IsValid() {
			any := netip.IPv4Unspecified()
			if pl.peer.Addr().Is6() {
				any = netip.IPv6Unspecified()
			}
			laddr = netip.AddrPortFrom(any, 0)
		}
		c, err := bypass.ListenUDP(laddr, pl.opts)
		if err != nil {
			return fmt.Errorf("cannot open udp on %v: %w", laddr, err)
		}
		defer c.Close()
		tr, cinfo, local = latency.PacketTransport(c, pl.peer), c.Info(), c.LocalAddr()
	case "tcp":
		s, err := bypass.DialTCP(pl.peer, pl.opts)
		if err != nil {
			return fmt.Errorf("cannot connect to tcp %v: %w", pl.peer, err)
		}
		defer s.Close()
		tr, cinfo, local = streamTransport(s, pl.wire), s.Info(), s.LocalAddr()
	}
	if cinfo.Wait == bypass.WaitSpin {
		quietRuntime()
	}
	fmt.Fprintf(info, "latprobe client: %s to %v, %s per size, warm-up %d\n", pl.proto, pl.peer, span(pl), pl.cfg.Warmup)
	fmt.Fprintln(info, describe("client", local, pl.cpu, cinfo))
	fmt.Fprintln(info, clockLine())

	reports, err := measure(ctx, tr, pl, cinfo.Backend, p.hlog)
	if perr := printReports(stdout, reports, p.json); perr != nil && err == nil {
		err = perr
	}
	if err != nil && interrupted(err) {
		fmt.Fprintln(info, "interrupted: the table shows what was measured until then")
		return nil
	}
	return err
}
