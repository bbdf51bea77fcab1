package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency"
)

// maxMPS bounds --mps: one request per 100 ns is already past what one
// ping-pong thread can send.
const maxMPS = 10_000_000

// fieldFlags registers the flags that let latprobe work beside other tools:
// --wire (sockperf's message format), --mps (fixed-rate sending with
// coordinated-omission correction) and --plot.
func (p *probe) fieldFlags() {
	if p.role == roleServer {
		p.fs.StringVar(&p.wire, "wire", "auto", "message formats to answer: auto (lowlat and sockperf, told apart per datagram and per TCP connection), lowlat or sockperf")
		return
	}
	p.fs.StringVar(&p.wire, "wire", "lowlat", "message format: lowlat, or sockperf to measure against a sockperf server")
	p.fs.IntVar(&p.mps, "mps", 0, "send at this fixed rate (messages per second) and report the histogram corrected for coordinated omission beside the raw one; 0 sends as fast as replies come")
	p.fs.StringVar(&p.plot, "plot", "", "draw the percentile distribution of every series to this .svg or .png file")
}

// validateField checks --wire, --mps and --plot into pl.
func (p *probe) validateField(pl *plan) error {
	w, err := latency.WireByName(p.wire)
	if err != nil {
		return usagef("--wire %s: want %s", p.wire, strings.Join(latency.WireNames(), ", "))
	}
	if p.role != roleServer && w == latency.Auto {
		return usagef("--wire auto: only a server tells formats apart; a client sends lowlat or sockperf")
	}
	pl.wire = w
	pl.cfg.Wire = w
	if p.mps < 0 || p.mps > maxMPS {
		return usagef("--mps %d: want 0 (as fast as possible) to %d", p.mps, maxMPS)
	}
	pl.mps = p.mps
	if p.plot != "" {
		if err := checkPlotName(p.plot); err != nil {
			return usagef("--plot %s: %v", p.plot, err)
		}
	}
	pl.plot = p.plot
	return nil
}

// checkPlotName accepts a file name ending in .svg or .png.
func checkPlotName(name string) error {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".svg", ".png":
		return nil
	}
	return fmt.Errorf("want a file name ending in .svg or .png")
}

// checkSize reports whether n is a message size w can carry.
func checkSize(w latency.Wire, n int) error {
	if n < w.MinSize() || n > maxSize(w) {
		return fmt.Errorf("message size %d: want %d to %d bytes", n, w.MinSize(), maxSize(w))
	}
	return nil
}

// maxSize is the largest message latprobe sends in format w: the wire's own
// limit, but no more than a jumbo frame carries, which every backend does.
func maxSize(w latency.Wire) int { return min(w.MaxSize(), latency.MaxSize) }

// clockLine says what reading the clock costs, measured now, so that a
// reader knows the floor under every number in the table.
func clockLine() string {
	c := latency.MeasureClock()
	return fmt.Sprintf("clock: one reading costs %.1f ns, resolution %d ns (%s)", c.ReadNS, c.ResolutionNS, c.Source)
}

// streamTransport frames a TCP client's messages as w's peers expect:
// sockperf by its header's length field, lowlat with a length prefix.
func streamTransport(s bypass.Stream, w latency.Wire) latency.Transport {
	if w == latency.Sockperf {
		return latency.SockperfStreamTransport(s)
	}
	return latency.StreamTransport(s)
}

// pacedReports turns a fixed-rate run into two table rows: the histogram
// corrected for coordinated omission, then the raw one; Series says which
// is which (the table shows it after the backend's name).
func pacedReports(pr *latency.PacedResult, backendName string, pl *plan) []latency.Report {
	raw := latency.NewReport(pr.Result, backendName, pl.proto)
	raw.Series = "raw"
	cor := raw
	cor.Series = "corrected"
	cor.Samples = pr.Corrected.TotalCount()
	cor.RTT = latency.Summarize(pr.Corrected)
	name := fmt.Sprintf("%s %s %dB at %d/s", backendName, pl.proto, pr.Size, pr.MPS)
	pl.addSeries(name+" corrected", pr.Corrected)
	pl.addSeries(name+" raw", pr.Hist)
	return []latency.Report{cor, raw}
}

// addSeries keeps a histogram for --plot.
func (pl *plan) addSeries(name string, h *hdrhistogram.Histogram) {
	if pl.plot != "" {
		pl.series = append(pl.series, histSeries(name, h))
	}
}
