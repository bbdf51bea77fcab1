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
	if parsedOnly(ctx) {
		return nil
	}
	info := infoWriter(p.json, stdout, stderr)
	if len(pl.peers) > 1 {
		return clientPeers(ctx, pl, p.json, stdout, info)
	}

	var (
		tr     latency.Transport
		cinfo  bypass.Info
		local  netip.AddrPort
		stream bypass.Stream
	)
	switch pl.proto {
	case "udp":
		laddr := localAddr(pl.addr, pl.peer)
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
		stream = s
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
	if pl.hot {
		fmt.Fprintf(info, "hot thread on cpu %d: %d passes through the scheduler between round trips\n", pl.cpu, pl.passes)
	}
	if ti, ok := stream.(bypass.TCPInfoer); ok {
		fmt.Fprintln(info, tcpInfoLine(ti.TCPInfo()))
	}
	if err != nil && interrupted(err) {
		fmt.Fprintln(info, "interrupted: the table shows what was measured until then")
		return nil
	}
	return err
}

// localAddr is where a client socket for peer binds: laddr, or the
// unspecified address of peer's family when laddr is not set.
func localAddr(laddr, peer netip.AddrPort) netip.AddrPort {
	if laddr.IsValid() {
		return laddr
	}
	any := netip.IPv4Unspecified()
	if peer.Addr().Is6() {
		any = netip.IPv6Unspecified()
	}
	return netip.AddrPortFrom(any, 0)
}

// clientPeers measures several peers over UDP from one thread: one socket
// per peer, one request in flight per peer (latency.MultiClient), and one
// report per peer and size, each naming its peer.
func clientPeers(ctx context.Context, pl *plan, asJSON bool, stdout, info io.Writer) error {
	peers := make([]latency.Peer, 0, len(pl.peers))
	defer func() {
		for _, p := range peers {
			p.Conn.Close()
		}
	}()
	spin := false
	for i, peer := range pl.peers {
		laddr := localAddr(pl.addrs[i], peer)
		c, err := bypass.ListenUDP(laddr, pl.opts)
		if err != nil {
			return fmt.Errorf("cannot open udp on %v for peer %v: %w", laddr, peer, err)
		}
		peers = append(peers, latency.Peer{Conn: c, Addr: peer})
		spin = spin || c.Info().Wait == bypass.WaitSpin
	}
	if spin {
		quietRuntime()
	}
	fmt.Fprintf(info, "latprobe client: %s to %d peers from one thread, %s per size, warm-up %d\n", pl.proto, len(peers), span(pl), pl.cfg.Warmup)
	for _, p := range peers {
		fmt.Fprintln(info, describe(fmt.Sprintf("client to %v from", p.Addr), p.Conn.LocalAddr(), pl.cpu, p.Conn.Info()))
	}
	fmt.Fprintln(info, clockLine())

	reports, err := measurePeers(ctx, peers, pl)
	if perr := printReports(stdout, reports, asJSON); perr != nil && err == nil {
		err = perr
	}
	if err != nil && interrupted(err) {
		fmt.Fprintln(info, "interrupted: the table shows what was measured until then")
		return nil
	}
	return err
}

// tcpInfoLine renders a user-space TCP connection's counters on one line:
// "latprobe client: tcp ESTABLISHED: srtt 9µs rto 200ms cwnd 14480 ...".
func tcpInfoLine(ti bypass.TCPInfo) string { return "latprobe client: " + tcpCounters(ti) }

// tcpCounters is a user-space TCP connection's state and counters.
func tcpCounters(ti bypass.TCPInfo) string {
	return fmt.Sprintf("tcp %s: srtt %v rto %v cwnd %d segs in %d out %d retransmits %d fast %d timeouts %d out-of-order %d dup-acks %d dropped %d",
		ti.State, ti.SRTT, ti.RTO, ti.Cwnd, ti.SegsIn, ti.SegsOut, ti.Retransmits, ti.FastRetransmits, ti.Timeouts, ti.OutOfOrder, ti.DupAcks, ti.Dropped)
}
