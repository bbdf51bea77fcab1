package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/lowlat/lowlat/affinity/doctor"
	"github.com/lowlat/lowlat/internal/cli"
)

// cmdDoctor checks the host for what spoils latency (package
// affinity/doctor) and says how to fix each finding. It changes nothing. It
// exits 1 when a check fails.
func cmdDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	iface := fs.String("iface", "", "also check this network interface: IRQ placement, queues, XDP")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	opts := doctor.Options{Iface: *iface}
	if err := opts.Validate(); err != nil {
		return usagef("--iface %s: %v", cli.Quote(*iface), err)
	}
	if *iface != "" {
		if _, err := os.Stat(filepath.Join("/sys/class/net", *iface)); err != nil {
			return usagef("--iface %s: no such network interface (see ip -br link)", cli.Quote(*iface))
		}
	}
	if parsedOnly(ctx) {
		return nil
	}
	r := doctor.Run(opts)
	var err error
	if *asJSON {
		err = r.WriteJSON(stdout)
	} else {
		err = r.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	if r.Worst() == doctor.Fail {
		n := 0
		for _, c := range r.Checks {
			if c.Status == doctor.Fail {
				n++
			}
		}
		return fmt.Errorf("%d check(s) failed; see the fix under each", n)
	}
	return nil
}
