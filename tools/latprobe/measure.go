package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/lowlat/lowlat/latency"
)

func lockOSThread()   { runtime.LockOSThread() }
func unlockOSThread() { runtime.UnlockOSThread() }

// measure runs the client side over tr once per message size, on a
// goroutine locked to its OS thread and pinned to pl.cpu when that is set,
// and returns one report per size. When ctx ends, it returns the reports
// so far and ctx's error.
func measure(ctx context.Context, tr latency.Transport, pl *plan, backendName, hlogName string) ([]latency.Report, error) {
	return onMeasuringThread(pl, func() (reports []latency.Report, err error) {
		var lw *latency.HlogWriter
		if hlogName != "" {
			f, w, oerr := openHlog(hlogName, pl, time.Now())
			if oerr != nil {
				return nil, oerr
			}
			defer func() { // err is the named result: a failed close is reported
				if cerr := f.Close(); cerr != nil && err == nil {
					err = fmt.Errorf("--hlog: %w", cerr)
				}
			}()
			lw = w
		}
		for _, size := range pl.sizes {
			cfg := pl.cfg
			cfg.Size = size
			if lw != nil {
				cfg.Intervals = lw
				if len(pl.sizes) > 1 {
					lw.SetTag(fmt.Sprintf("%dB", size))
				}
			}
			cl, err := latency.NewClient(tr, cfg)
			if err != nil {
				return reports, err
			}
			if pl.mps > 0 {
				pr, err := cl.RunAtRate(ctx, pl.mps)
				if pr != nil && pr.Result != nil && (pr.Counters.Sent > 0 || err == nil) {
					reports = append(reports, pacedReports(pr, backendName, pl)...)
				}
				if err != nil {
					return reports, fmt.Errorf("%d-byte messages: %w", size, err)
				}
				continue
			}
			res, err := cl.Run(ctx)
			if res != nil && (res.Counters.Sent > 0 || err == nil) {
				reports = append(reports, latency.NewReport(res, backendName, pl.proto))
				pl.addSeries(fmt.Sprintf("%s %s %dB", backendName, pl.proto, size), res.Hist)
			}
			if err != nil {
				return reports, fmt.Errorf("%d-byte messages: %w", size, err)
			}
		}
		return reports, nil
	})
}

// measurePeers is measure for several peers at once, driven by one
// latency.MultiClient per message size on one locked (and, with --cpu,
// pinned) thread. It returns a report per size and peer, in the order of
// the peers, each with its peer's address.
func measurePeers(ctx context.Context, peers []latency.Peer, pl *plan) ([]latency.Report, error) {
	return onMeasuringThread(pl, func() (reports []latency.Report, err error) {
		for _, size := range pl.sizes {
			cfg := pl.cfg
			cfg.Size = size
			mc, err := latency.NewMultiClient(peers, cfg)
			if err != nil {
				return reports, err
			}
			results, err := mc.Run(ctx)
			mc.Close()
			for i, res := range results {
				if res.Counters.Sent == 0 && err != nil {
					continue
				}
				be := peers[i].Conn.Info().Backend
				r := latency.NewReport(res, be, pl.proto)
				r.Peer = peers[i].Addr.String()
				reports = append(reports, r)
				pl.addSeries(fmt.Sprintf("%s %s %s %dB", r.Peer, be, pl.proto, size), res.Hist)
			}
			if err != nil {
				return reports, fmt.Errorf("%d-byte messages: %w", size, err)
			}
		}
		return reports, nil
	})
}

// onMeasuringThread runs body on a goroutine locked to its OS thread and
// pinned to pl.cpu when that is set (made hot with --hot: then pl.cfg's
// Between is the thread's Yielder), then draws the plot pl asks for from
// the series body added. It returns body's reports, those made before an
// error included, and the first error.
func onMeasuringThread(pl *plan, body func() ([]latency.Report, error)) ([]latency.Report, error) {
	type out struct {
		reports []latency.Report
		err     error
	}
	ch := make(chan out, 1)
	go func() {
		var o out
		defer func() { ch <- o }()
		if pl.hot {
			y, release, err := hotThread(pl.cpu)
			if err != nil {
				o.err = fmt.Errorf("the measuring thread: %w", err)
				return
			}
			defer func() {
				pl.passes = y.Passes()
				if err := release(); err != nil && o.err == nil {
					o.err = fmt.Errorf("the measuring thread: %w", err)
				}
			}()
			pl.cfg.Between = func() { y.Between() }
		} else {
			unlock, err := lockThread(pl.cpu)
			if err != nil {
				o.err = fmt.Errorf("pin the measuring thread: %w", err)
				return
			}
			defer unlock()
		}
		o.reports, o.err = body()
	}()
	o := <-ch
	if pl.plot != "" && len(pl.series) > 0 {
		if err := writePlot(pl.plot, fmt.Sprintf("latprobe %s round trips", pl.proto), pl.series); err != nil && o.err == nil {
			o.err = err
		}
	}
	return o.reports, o.err
}

// interrupted reports whether err only says that the user stopped the run.
func interrupted(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// printReports writes the reports as the table, or as JSON lines.
func printReports(w io.Writer, reports []latency.Report, asJSON bool) error {
	if len(reports) == 0 {
		return nil
	}
	if asJSON {
		return latency.WriteJSON(w, reports...)
	}
	return latency.WriteTable(w, reports...)
}

// infoWriter is where descriptive lines go: stdout, unless stdout carries
// JSON, which must stay machine-readable.
func infoWriter(asJSON bool, stdout, stderr io.Writer) io.Writer {
	if asJSON {
		return stderr
	}
	return stdout
}
