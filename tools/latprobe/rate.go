package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"time"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/internal/cli"
	"github.com/lowlat/lowlat/latency"
)

// rateReport is latprobe rate's JSON output.
type rateReport struct {
	Tool        string  `json:"tool"`
	Mode        string  `json:"mode"`
	Backend     string  `json:"backend"`
	Proto       string  `json:"proto"`
	Size        int     `json:"size"`
	Sent        uint64  `json:"sent"`
	Received    uint64  `json:"received"`
	Lost        uint64  `json:"lost"`
	MPSSent     float64 `json:"mps_sent"`
	MPSReceived float64 `json:"mps_received"`
}

// cmdRate floods a latprobe server one way, at --mps or as fast as the
// backend takes it, and reports what the server counted: the rate at which
// a receiver starts to drop.
func cmdRate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rate", flag.ContinueOnError)
	backendName := fs.String("backend", "auto", "backend: auto or one of this build's")
	wait := fs.String("wait", "", "wait mode: block or spin (default: the backend's own)")
	iface := fs.String("iface", "", "network interface, for backends that bind one (afxdp)")
	addr := fs.String("addr", "", "local UDP `IP:PORT` to send from (default: any)")
	peer := fs.String("peer", "", "the latprobe server's `HOST:PORT` (required)")
	mps := fs.String("mps", "max", "messages per second, or max: as fast as the backend takes them")
	duration := fs.Duration("duration", 3*time.Second, "send for this long")
	size := fs.Int("size", latency.DefaultSize, fmt.Sprintf("message size in bytes, %d to %d", latency.MinFloodReportSize, latency.MaxSize))
	cpu := fs.Int("cpu", -1, "pin the sending thread to this CPU; -1 leaves it unpinned")
	asJSON := fs.Bool("json", false, "print one JSON object instead of the text line")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *peer == "" {
		return usagef("--peer: required (the server's HOST:PORT)")
	}
	to, err := resolve(*peer, "udp")
	if err != nil {
		return usagef("--peer %s: %v", cli.Quote(*peer), err)
	}
	var laddr netip.AddrPort
	if *addr != "" {
		if laddr, err = netip.ParseAddrPort(*addr); err != nil {
			return usagef("--addr %s: want IP:PORT", cli.Quote(*addr))
		}
	}
	rate := 0
	if *mps != "max" {
		if rate, err = strconv.Atoi(*mps); err != nil || rate <= 0 {
			return usagef("--mps %s: want a positive number of messages per second, or max", cli.Quote(*mps))
		}
	}
	if *duration <= 0 {
		return usagef("--duration %v: want a positive duration such as 3s", *duration)
	}
	if *size < latency.MinFloodReportSize || *size > latency.MaxSize {
		return usagef("--size %d: want %d to %d", *size, latency.MinFloodReportSize, latency.MaxSize)
	}
	o, err := bypass.OptionsFromEnv(bypass.Options{})
	if err != nil {
		return usageError{err.Error()}
	}
	o.Backend, o.Interface = *backendName, *iface
	if *wait != "" {
		w, err := bypass.ParseWaitMode(*wait)
		if err != nil || w == bypass.WaitDefault {
			return usagef("--wait %s: want block or spin", cli.Quote(*wait))
		}
		o.Wait = w
	}
	if err := o.Validate(); err != nil {
		return usagef("backend options: %v", err)
	}
	if parsedOnly(ctx) {
		return nil
	}
	c, err := bypass.ListenUDP(localAddr(laddr, to), o)
	if err != nil {
		return fmt.Errorf("cannot open udp: %w", err)
	}
	defer c.Close()
	info := infoWriter(*asJSON, stdout, stderr)
	fmt.Fprintln(info, describe("latprobe rate: udp", c.LocalAddr(), *cpu, c.Info()))
	var res latency.FloodResult
	done := make(chan error, 1)
	go func() {
		unlock, err := lockThread(*cpu)
		if err != nil {
			done <- fmt.Errorf("pin the sending thread: %w", err)
			return
		}
		defer unlock()
		res, err = latency.Flood(ctx, c, to, latency.FloodConfig{Size: *size, MPS: rate, Duration: *duration})
		done <- err
	}()
	if err := <-done; err != nil {
		return err
	}
	rep := rateReport{Tool: "latprobe", Mode: "rate", Backend: c.Info().Backend, Proto: "udp", Size: *size,
		Sent: res.Sent, Received: res.Received, Lost: res.Lost, MPSSent: res.MPSSent, MPSReceived: res.MPSReceived}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(rep)
	}
	_, err = fmt.Fprintf(stdout, "udp %d B over %s to %v: sent %d (%.0f/s), received %d (%.0f/s), lost %d\n",
		rep.Size, rep.Backend, to, rep.Sent, rep.MPSSent, rep.Received, rep.MPSReceived, rep.Lost)
	return err
}
