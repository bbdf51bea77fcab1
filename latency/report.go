package latency

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"text/tabwriter"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// percentiles are the percentiles every Summary gives, in field order.
var percentiles = []float64{50, 90, 99, 99.9, 99.99, 99.999}

// Percentiles returns the percentiles every Summary gives, in order.
func Percentiles() []float64 { return append([]float64(nil), percentiles...) }

// Summary is the distribution of round trips, in nanoseconds. A percentile
// p is the value at rank round(p/100 × samples) of the sorted samples (at
// least rank 1), as HdrHistogram computes it, to three significant digits.
type Summary struct {
	Min    int64 `json:"min"`
	Mean   int64 `json:"mean"`
	StdDev int64 `json:"stddev"`
	P50    int64 `json:"p50"`
	P90    int64 `json:"p90"`
	P99    int64 `json:"p99"`
	P999   int64 `json:"p99_9"`
	P9999  int64 `json:"p99_99"`
	P99999 int64 `json:"p99_999"`
	Max    int64 `json:"max"`
}

// Summarize computes a Summary of h. An empty histogram gives all zeros.
func Summarize(h *hdrhistogram.Histogram) Summary {
	if h.TotalCount() == 0 {
		return Summary{}
	}
	p := h.ValueAtPercentilesSlice(percentiles)
	return Summary{
		Min:    h.Min(),
		Mean:   int64(math.Round(h.Mean())),
		StdDev: int64(math.Round(h.StdDev())),
		P50:    p[0],
		P90:    p[1],
		P99:    p[2],
		P999:   p[3],
		P9999:  p[4],
		P99999: p[5],
		Max:    h.Max(),
	}
}

// Values returns the summary's fields in the order of Columns.
func (s Summary) Values() []int64 {
	return []int64{s.Min, s.Mean, s.StdDev, s.P50, s.P90, s.P99, s.P999, s.P9999, s.P99999, s.Max}
}

// Columns names the summary's fields for tables, in the order of Values.
var Columns = []string{"min", "mean", "stddev", "p50", "p90", "p99", "p99.9", "p99.99", "p99.999", "max"}

// percentileKeys are the JSON keys of the percentiles, in percentiles'
// order; percentileColumns their table columns.
var (
	percentileKeys    = []string{"p50", "p90", "p99", "p99_9", "p99_99", "p99_999"}
	percentileColumns = []string{"p50", "p90", "p99", "p99.9", "p99.99", "p99.999"}
)

// thinBeyond is how many samples must lie beyond a percentile for it to
// stand on more than a handful of them: with fewer, it is marked thin.
const thinBeyond = 10

// Thin returns the JSON keys of the percentiles that fewer than ten of
// samples lie beyond (p99.99 from 20 000 samples rests on two): the
// percentiles to read as anecdotes, not as a distribution's shape.
func Thin(samples int64) []string {
	var thin []string
	for i, p := range percentiles {
		if float64(samples)*(100-p)/100 < thinBeyond {
			thin = append(thin, percentileKeys[i])
		}
	}
	return thin
}

// MinSamples is how many samples a percentile p needs for ten of them to
// lie beyond it: 100 000 for p99.99.
func MinSamples(p float64) int64 { return int64(math.Ceil(thinBeyond * 100 / (100 - p))) }

// Report is one measured run. Its JSON form has exactly the keys of
// latprobe's --json output:
//
//	{"tool":"latprobe","backend":"busypoll","proto":"udp","size":64,
//	 "samples":N,"sent":N,"lost":N,"rtt_ns":{"min":..,"mean":..,...}}
//
// and, first, "peer":"HOST:PORT" when Peer is set (a client that measured
// several peers).
type Report struct {
	Peer    string `json:"peer,omitempty"`
	Tool    string `json:"tool"`
	Backend string `json:"backend"`
	// Series, for a fixed-rate run, says which histogram the report
	// holds: "corrected" (for coordinated omission) or "raw".
	Series  string  `json:"series,omitempty"`
	Proto   string  `json:"proto"`
	Size    int     `json:"size"`
	Samples int64   `json:"samples"`
	Sent    uint64  `json:"sent"`
	Lost    uint64  `json:"lost"`
	RTT     Summary `json:"rtt_ns"`
	// Stages, with Config.Stages, summarises each stage of the round trip
	// under its name (client_tx, network, server, client_rx), with the
	// keys of rtt_ns; StagesMissing counts the samples that could not be
	// split, by the stamp that was missing.
	// Thin lists the percentile keys that fewer than ten samples lie
	// beyond (Thin): read them as anecdotes.
	Thin          []string           `json:"thin,omitempty"`
	Stages        map[string]Summary `json:"stages_ns,omitempty"`
	StagesMissing *StagesMissing     `json:"stages_missing,omitempty"`

	// Counters has every count; the table prints them, JSON does not.
	Counters Counters `json:"-"`
}

// NewReport describes r, measured over backend and proto ("udp", "tcp").
func NewReport(r *Result, backend, proto string) Report {
	rep := Report{
		Tool:     "latprobe",
		Backend:  backend,
		Proto:    proto,
		Size:     r.Size,
		Samples:  r.Hist.TotalCount(),
		Sent:     r.Counters.Sent,
		Lost:     r.Counters.Lost,
		RTT:      r.Summary(),
		Counters: r.Counters,
		Thin:     Thin(r.Hist.TotalCount()),
	}
	if r.Stages[0] != nil {
		rep.Stages = make(map[string]Summary, len(StageNames))
		for i, name := range StageNames {
			rep.Stages[name] = Summarize(r.Stages[i])
		}
		if r.StagesMissing.Total() > 0 {
			m := r.StagesMissing
			rep.StagesMissing = &m
		}
	}
	return rep
}

// WriteJSON writes each report as one line of JSON.
func WriteJSON(w io.Writer, reports ...Report) error {
	enc := json.NewEncoder(w)
	for _, r := range reports {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// WriteTable writes the reports as a table of round-trip times in
// microseconds, one row per report, followed by each report's counters.
// When a report names its peer, the table starts with a peer column and
// each counters line with the peer.
func WriteTable(w io.Writer, reports ...Report) error {
	peers := slices.ContainsFunc(reports, func(r Report) bool { return r.Peer != "" })
	thin := false
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if peers {
		fmt.Fprint(tw, "peer\t")
	}
	fmt.Fprint(tw, "proto\tbackend\tsize\tsamples\tlost\t")
	for _, c := range Columns {
		fmt.Fprintf(tw, "%s\t", c)
	}
	fmt.Fprintln(tw)
	for _, r := range reports {
		if peers {
			fmt.Fprintf(tw, "%s\t", r.Peer)
		}
		name := r.Backend
		if r.Series != "" {
			name += " " + r.Series
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t", r.Proto, name, r.Size, r.Samples, r.Lost)
		for i, v := range r.RTT.Values() {
			mark := ""
			if slices.Contains(r.Thin, keyOfColumn(Columns[i])) {
				mark = "*"
				thin = true
			}
			fmt.Fprintf(tw, "%.2f%s\t", float64(v)/1e3, mark)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "round trip in µs")
	if thin {
		fmt.Fprintf(w, "* fewer than %d samples lie beyond this percentile: an anecdote, not the distribution's shape\n", thinBeyond)
	}
	for _, r := range reports {
		if r.Series == "corrected" {
			continue // the raw series' line says the same
		}
		c := r.Counters
		if r.Peer != "" {
			if _, err := fmt.Fprintf(w, "%s ", r.Peer); err != nil {
				return err
			}
		}
		if _, err := fmt.Fprintf(w, "%s %d B: sent %d, received %d, lost %d, duplicates %d, out of order %d, foreign %d, malformed %d, warm-up %d\n",
			r.Proto, r.Size, c.Sent, c.Received, c.Lost, c.Duplicates, c.OutOfOrder, c.Foreign, c.Malformed, c.Warmup); err != nil {
			return err
		}
	}
	for _, r := range reports {
		if err := writeStages(w, r); err != nil {
			return err
		}
	}
	return nil
}

// keyOfColumn maps a percentile's table column to its JSON key ("" for
// the other columns).
func keyOfColumn(c string) string {
	if i := slices.Index(percentileColumns, c); i >= 0 {
		return percentileKeys[i]
	}
	return ""
}

// writeStages writes a report's stage table, when it has one: where each
// round trip's time went, in µs.
func writeStages(w io.Writer, r Report) error {
	if r.Stages == nil {
		return nil
	}
	fmt.Fprintf(w, "\nstages of the %d B round trip", r.Size)
	if r.Peer != "" {
		fmt.Fprintf(w, " to %s", r.Peer)
	}
	fmt.Fprintln(w, ", in µs (they add up to each round trip):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "stage	")
	for _, c := range Columns {
		fmt.Fprintf(tw, "%s\t", c)
	}
	fmt.Fprintln(tw)
	for _, name := range StageNames {
		fmt.Fprintf(tw, "%s\t", name)
		for _, v := range r.Stages[name].Values() {
			fmt.Fprintf(tw, "%.2f\t", float64(v)/1e3)
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if m := r.StagesMissing; m != nil {
		_, err := fmt.Fprintf(w, "not split: %d samples (no receive stamp %d, no transmit stamp %d, no server stage %d, a NIC clock %d)\n",
			m.Total(), m.RxStamp, m.TxStamp, m.ServerStage, m.Clock)
		return err
	}
	return nil
}
