package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/lowlat/lowlat/affinity"
	"github.com/lowlat/lowlat/containerize"
	"github.com/lowlat/lowlat/internal/cli"
	"github.com/lowlat/lowlat/latency"
)

// cmdSuite measures the same ping-pong on the host and in containers, one
// cell per placement and backend, and prints one table (or JSON).
func cmdSuite(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("suite", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, `print one JSON document {"cells":[...]} instead of the table`)
	out := fs.String("out", "", "write each cell's HdrHistogram log to DIR/PLACEMENT-BACKEND.hlog")
	// Enough samples for ten to lie beyond p99.99, the tail the suite's
	// table reports: fewer would make it an anecdote.
	count := fs.Int("count", int(latency.MinSamples(99.99)), "measured round trips per cell (the default leaves ten samples beyond p99.99)")
	engine := fs.String("engine", "runc", "container engine: runc or podman")
	cpus := fs.String("cpus", "", "cpuset for the containers, such as 0-1 (default: every CPU)")
	binary := fs.String("binary", "", "latprobe to run and put in the containers (default: this one; a dynamically linked one takes its loader and libraries along)")
	placements := fs.String("placements", "", "comma-separated placements to measure (default: all: "+strings.Join(containerize.Placements, ",")+")")
	backends := fs.String("backends", "", "comma-separated backends to measure (default: all: "+strings.Join(containerize.SuiteBackends, ",")+")")
	plotName := fs.String("plot", "", "draw every cell's percentile distribution to this .svg or .png file")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *plotName != "" {
		if err := checkPlotName(*plotName); err != nil {
			return usagef("--plot %s: %v", *plotName, err)
		}
	}
	if *count <= 0 || *count > 10_000_000 {
		return usagef("--count %d: want 1 to 10000000", *count)
	}
	if *engine != "runc" && *engine != "podman" {
		return usagef("--engine %q: want runc or podman", *engine)
	}
	if *cpus != "" {
		if s, err := affinity.ParseCPUList(*cpus); err != nil || s.IsEmpty() {
			return usagef("--cpus %s: want a CPU list such as 0-1 or 2,4", cli.Quote(*cpus))
		}
	}
	var onlyPlacements, onlyBackends []string
	if *placements != "" {
		onlyPlacements = strings.Split(*placements, ",")
		for _, p := range onlyPlacements {
			if !slices.Contains(containerize.Placements, p) {
				return usagef("--placements: %s: want some of %s", cli.Quote(p), strings.Join(containerize.Placements, ","))
			}
		}
	}
	if *backends != "" {
		onlyBackends = strings.Split(*backends, ",")
		for _, b := range onlyBackends {
			if !slices.Contains(containerize.SuiteBackends, b) {
				return usagef("--backends: %s: want some of %s", cli.Quote(b), strings.Join(containerize.SuiteBackends, ","))
			}
		}
	}
	if parsedOnly(ctx) {
		return nil
	}
	bin := *binary
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this binary: %w", err)
		}
		bin = self
	}
	// A suite killed outright (SIGKILL) leaves its containers, namespaces,
	// veth links and bundles: remove those whose process is gone.
	removed, err := containerize.Sweep(*engine)
	for _, r := range removed {
		fmt.Fprintf(stderr, "latprobe suite: removed a dead run's leftover: %s\n", r)
	}
	if err != nil {
		fmt.Fprintf(stderr, "latprobe suite: %s\n", oneLine(err.Error()))
	}
	rep, err := containerize.Suite(ctx, containerize.SuiteOptions{
		Binary: bin, Engine: *engine, Count: *count, OutDir: *out, CPUs: *cpus,
		Placements: onlyPlacements, Backends: onlyBackends,
		Progress: func(p, b string) { fmt.Fprintf(stderr, "latprobe suite: %s %s\n", p, b) },
	})
	if rep != nil && len(rep.SharedObjects) > 0 {
		fmt.Fprintf(stderr, "latprobe suite: %s is dynamically linked: copied read-only into each container beside it: %s and the loader's cache\n",
			bin, strings.Join(rep.SharedObjects, ", "))
	}
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil || *plotName == "" {
		return err
	}
	return writePlot(*plotName, fmt.Sprintf("latprobe suite, %d round trips per cell", *count), suiteSeries(rep))
}

// suiteSeries is one plot series per measured cell, named
// PLACEMENT/BACKEND: the whole distribution from the cell's HdrHistogram
// log when --out wrote one, else the percentiles of its summary (min at
// 0%, then p50 to p99.999).
func suiteSeries(rep *containerize.SuiteReport) []series {
	var all []series
	for _, c := range rep.Cells {
		if c.RTT == nil {
			continue // skipped: the table says why
		}
		name := c.Placement + "/" + c.Backend
		if c.Hlog != "" {
			if h, _, err := readHlog(c.Hlog); err == nil && h.TotalCount() > 0 {
				all = append(all, histSeries(name, h))
				continue
			}
		}
		ps := append([]float64{0}, latency.Percentiles()...)
		ns := []int64{c.RTT.Min, c.RTT.P50, c.RTT.P90, c.RTT.P99, c.RTT.P999, c.RTT.P9999, c.RTT.P99999}
		us := make([]float64, len(ns))
		for i, v := range ns {
			us[i] = float64(v) / 1e3
		}
		all = append(all, pointSeries(name, ps, us))
	}
	return all
}
