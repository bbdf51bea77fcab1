package containerize

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/lowlat/lowlat/latency"
)

// Placements are where the suite puts the two ends, in table order:
//
//	host               both ends are host processes, over loopback
//	netns              both ends are processes (no container), each in a
//	                   network namespace of its own, over a veth pair: the
//	                   path of the container-netns and container-both
//	                   cells without the container, their baseline
//	container-hostnet  the server in a container on the host's network,
//	                   over loopback
//	container-netns    the server in a container in its own network
//	                   namespace, the client on the host, over a veth pair
//	container-both     both ends in containers, each in its own network
//	                   namespace, over a veth pair between them
var Placements = []string{"host", "netns", "container-hostnet", "container-netns", "container-both"}

// Baseline is the placement a container placement is compared with: the
// same path without the container (loopback for the host network, a veth
// pair between namespaces for the others). It is "" for a placement that
// is itself a baseline.
func Baseline(placement string) string {
	switch placement {
	case "container-hostnet":
		return "host"
	case "container-netns", "container-both":
		return "netns"
	}
	return ""
}

// SuiteBackends are the backends the suite measures.
var SuiteBackends = []string{"kernel", "busypoll", "afxdp"}

// SuiteOptions shape a suite run.
type SuiteOptions struct {
	// Binary is a latprobe; it runs on the host and is copied into each
	// container, with its loader and libraries when it is linked
	// dynamically (see Options.Binary).
	Binary string
	// Engine is "runc" (the default) or "podman".
	Engine string
	// Count is the number of measured round trips per cell (0 means
	// 10000); Warmup those before it (0 means Count/10, at most 1000).
	Count, Warmup int
	// OutDir, when set, receives one HdrHistogram log per cell,
	// PLACEMENT-BACKEND.hlog.
	OutDir string
	// CPUs is the containers' cpuset; empty means every CPU.
	CPUs string
	// Placements and Backends, when set, restrict the suite to those
	// (each a subset of Placements and SuiteBackends, in table order).
	Placements, Backends []string
	// Progress, when set, is called before each cell.
	Progress func(placement, backend string)
}

// Cell is one measured (or skipped) cell of the matrix. Its JSON has the
// keys of the suite's --json document; RTT has latprobe client --json's
// rtt_ns keys.
type Cell struct {
	Placement string           `json:"placement"`
	Backend   string           `json:"backend"`
	RTT       *latency.Summary `json:"rtt_ns,omitempty"`
	Samples   int64            `json:"samples"`
	Lost      uint64           `json:"lost"`
	Hlog      string           `json:"hlog,omitempty"`
	// Skipped says why the cell could not run here.
	Skipped string `json:"skipped,omitempty"`
	// Baseline names the cell of the same backend this container cell is
	// compared with (see Baseline), and the ratios are this cell's p50 and
	// p99 over the baseline's; set when both cells were measured.
	Baseline         string   `json:"baseline,omitempty"`
	BaselineRatioP50 *float64 `json:"baseline_ratio_p50,omitempty"`
	BaselineRatioP99 *float64 `json:"baseline_ratio_p99,omitempty"`
}

// SuiteReport is the suite's JSON document.
type SuiteReport struct {
	Cells []Cell `json:"cells"`
	// SharedObjects are the loader and libraries copied into every
	// container beside a dynamically linked latprobe; empty for a static
	// one.
	SharedObjects []string `json:"shared_objects,omitempty"`
}

// SetRatios fills each container cell's baseline ratios from the measured
// cell of its baseline placement and the same backend.
func (r *SuiteReport) SetRatios() {
	find := func(placement, backend string) *Cell {
		for i := range r.Cells {
			if c := &r.Cells[i]; c.Placement == placement && c.Backend == backend {
				return c
			}
		}
		return nil
	}
	for i := range r.Cells {
		c := &r.Cells[i]
		base := find(Baseline(c.Placement), c.Backend)
		if base == nil || c.RTT == nil || base.RTT == nil || base.RTT.P50 <= 0 || base.RTT.P99 <= 0 {
			continue
		}
		p50 := float64(c.RTT.P50) / float64(base.RTT.P50)
		p99 := float64(c.RTT.P99) / float64(base.RTT.P99)
		c.Baseline, c.BaselineRatioP50, c.BaselineRatioP99 = base.Placement, &p50, &p99
	}
}

// WriteTable writes the suite as one table, round trips in µs; a skipped
// cell shows why instead of numbers.
func (r *SuiteReport) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "placement\tbackend\tp50\tp99\tp99.9\tp99.99\tmax\tsamples\tlost\tbaseline\tp50 ratio\tp99 ratio\t")
	for _, c := range r.Cells {
		if c.RTT == nil {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%s\n", c.Placement, c.Backend, c.Skipped)
			continue
		}
		us := func(ns int64) string { return fmt.Sprintf("%.1f", float64(ns)/1e3) }
		base, r50, r99 := "-", "-", "-"
		if c.BaselineRatioP50 != nil {
			base, r50, r99 = c.Baseline, fmt.Sprintf("%.2f", *c.BaselineRatioP50), fmt.Sprintf("%.2f", *c.BaselineRatioP99)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t\n", c.Placement, c.Backend,
			us(c.RTT.P50), us(c.RTT.P99), us(c.RTT.P999), us(c.RTT.P9999), us(c.RTT.Max), c.Samples, c.Lost, base, r50, r99)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "round trip in µs; ratio: this cell over its baseline placement's, same backend")
	return err
}
