package containerize

import (
	"fmt"
	"io"
	"text/tabwriter"
)

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
