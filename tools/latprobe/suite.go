package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/lowlat/lowlat/containerize"
)

// cmdSuite measures the same ping-pong on the host and in containers, one
// cell per placement and backend, and prints one table (or JSON).
func cmdSuite(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("suite", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, `print one JSON document {"cells":[...]} instead of the table`)
	out := fs.String("out", "", "write each cell's HdrHistogram log to DIR/PLACEMENT-BACKEND.hlog")
	count := fs.Int("count", 10000, "measured round trips per cell")
	engine := fs.String("engine", "runc", "container engine: runc or podman")
	cpus := fs.String("cpus", "", "cpuset for the containers, such as 0-1 (default: every CPU)")
	binary := fs.String("binary", "", "static latprobe to run and put in the containers (default: this one, when it is static)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *count <= 0 || *count > 10_000_000 {
		return usagef("--count %d: want 1 to 10000000", *count)
	}
	bin := *binary
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this binary: %w", err)
		}
		bin = self
	}
	rep, err := containerize.Suite(ctx, containerize.SuiteOptions{
		Binary: bin, Engine: *engine, Count: *count, OutDir: *out, CPUs: *cpus,
		Progress: func(p, b string) { fmt.Fprintf(stderr, "latprobe suite: %s %s\n", p, b) },
	})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteTable(stdout)
}
