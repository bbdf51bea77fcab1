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
//	container-hostnet  the server in a container on the host's network,
//	                   over loopback
//	container-netns    the server in a container in its own network
//	                   namespace, the client on the host, over a veth pair
//	container-both     both ends in containers, each in its own network
//	                   namespace, over a veth pair between them
var Placements = []string{"host", "container-hostnet", "container-netns", "container-both"}

// SuiteBackends are the backends the suite measures.
var SuiteBackends = []string{"kernel", "busypoll", "afxdp"}

// SuiteOptions shape a suite run.
type SuiteOptions struct {
	// Binary is a static latprobe (CGO_ENABLED=0); it runs on the host
	// and is copied into each container.
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
}

// SuiteReport is the suite's JSON document.
type SuiteReport struct {
	Cells []Cell `json:"cells"`
}

// WriteTable writes the suite as one table, round trips in µs; a skipped
// cell shows why instead of numbers.
func (r *SuiteReport) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "placement\tbackend\tp50\tp99\tp99.9\tp99.99\tmax\tsamples\tlost\t")
	for _, c := range r.Cells {
		if c.RTT == nil {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t%s\n", c.Placement, c.Backend, c.Skipped)
			continue
		}
		us := func(ns int64) string { return fmt.Sprintf("%.1f", float64(ns)/1e3) }
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t\n", c.Placement, c.Backend,
			us(c.RTT.P50), us(c.RTT.P99), us(c.RTT.P999), us(c.RTT.P9999), us(c.RTT.Max), c.Samples, c.Lost)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "round trip in µs")
	return err
}
