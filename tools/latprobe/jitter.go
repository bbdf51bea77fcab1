package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/affinity"
	"github.com/lowlat/lowlat/internal/cli"
	"github.com/lowlat/lowlat/latency"
)

// jitterCPU is what latprobe jitter found on one CPU.
type jitterCPU struct {
	CPU        int              `json:"cpu"`
	Gaps       int64            `json:"gaps"`
	LostPct    float64          `json:"lost_pct"`
	GapNS      map[string]int64 `json:"gap_ns"`
	Interrupts map[string]int64 `json:"interrupts"`
	Softirqs   map[string]int64 `json:"softirqs"`
	// CtxSwitches are the spinning thread's involuntary context switches:
	// the scheduler took its CPU.
	CtxSwitches int64 `json:"ctx_switches"`
	StealNS     int64 `json:"steal_ns"`
	// RuntimePreemptions are the spinning thread's voluntary context
	// switches: a spinning goroutine never sleeps by itself, so each is the
	// Go runtime handing it off (a preemption, a stop-the-world, and with
	// --yield-every the passes it asked for).
	RuntimePreemptions int64 `json:"runtime_preemptions"`
	// Yields are the passes through the scheduler that --yield-every
	// asked for, and YieldNS what one took: the price of one runtime
	// hand-off of a locked goroutine on this host. Their time is not
	// counted as gaps.
	Yields  int64            `json:"yields,omitempty"`
	YieldNS map[string]int64 `json:"yield_ns,omitempty"`
}

type jitterReport struct {
	Tool        string      `json:"tool"`
	Mode        string      `json:"mode"`
	DurationNS  int64       `json:"duration_ns"`
	ThresholdNS int64       `json:"threshold_ns"`
	CPUs        []jitterCPU `json:"cpus"`
}

// cmdJitter spins one locked, pinned thread per CPU for --duration and
// records every gap in its view of the clock longer than --threshold: the
// time the CPU was taken from it. It attributes the interval's
// interruptions from /proc: interrupts and softirqs on that CPU, the
// thread's context switches, and steal time.
func cmdJitter(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("jitter", flag.ContinueOnError)
	cpuList := fs.String("cpus", "", "CPUs to measure, such as 1 or 0-3 (default: every CPU this process may use)")
	duration := fs.Duration("duration", 5*time.Second, "spin this long on each CPU, all at once")
	threshold := fs.Duration("threshold", time.Microsecond, "record gaps longer than this")
	asJSON := fs.Bool("json", false, "print one JSON object instead of the table")
	plotName := fs.String("plot", "", "draw each CPU's gap distribution to this .svg or .png file")
	hot := fs.Bool("hot", false, "make the spinning thread hot (affinity.MakeHot): every other thread of the process kept off its CPU; one CPU only")
	yieldEvery := fs.Duration("yield-every", 0, "pass through Go's scheduler (runtime.Gosched) this often, as affinity.Yielder does, and report what each pass costs (0: never)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *duration <= 0 || *duration > time.Hour {
		return usagef("--duration %v: want more than 0 and at most 1h", *duration)
	}
	if *threshold <= 0 {
		return usagef("--threshold %v: want a positive duration such as 1us", *threshold)
	}
	usable, err := usableCPUs()
	if err != nil {
		return fmt.Errorf("--cpus: %w", err)
	}
	cpus := usable
	if *cpuList != "" {
		set, err := affinity.ParseCPUList(*cpuList)
		if err != nil || set.IsEmpty() {
			return usagef("--cpus %s: want a CPU list such as 1 or 0-3", cli.Quote(*cpuList))
		}
		cpus = set.CPUs()
		for _, c := range cpus {
			if !slices.Contains(usable, c) {
				return usagef("--cpus %s: CPU %d is not one this process may run on", cli.Quote(*cpuList), c)
			}
		}
	}
	if *yieldEvery < 0 || *yieldEvery > time.Minute {
		return usagef("--yield-every %v: want 0 (never) to 1m", *yieldEvery)
	}
	if *hot && len(cpus) != 1 {
		return usagef("--hot: one CPU only (the others are the housekeeping CPUs), not %d", len(cpus))
	}
	if *plotName != "" {
		if err := checkPlotName(*plotName); err != nil {
			return usagef("--plot %s: %v", cli.Quote(*plotName), err)
		}
	}
	if parsedOnly(ctx) {
		return nil
	}
	quietRuntime()
	rep := jitterReport{Tool: "latprobe", Mode: "jitter", DurationNS: int64(*duration), ThresholdNS: int64(*threshold)}
	irq0, sirq0, steal0 := readInterrupts(), readSoftirqs(), readSteal()
	results := make([]jitterCPU, len(cpus))
	hists := make([]*hdrhistogram.Histogram, len(cpus))
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var spinErr error
	for i, cpu := range cpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, h, err := spinOn(ctx, cpu, *duration, int64(*threshold), *hot, int64(*yieldEvery))
			if err != nil {
				errMu.Lock()
				spinErr = err
				errMu.Unlock()
				return
			}
			results[i], hists[i] = r, h
		}()
	}
	wg.Wait()
	if spinErr != nil {
		return spinErr
	}
	irq1, sirq1, steal1 := readInterrupts(), readSoftirqs(), readSteal()
	for i, cpu := range cpus {
		results[i].Interrupts = perCPUDelta(irq0, irq1, cpu)
		results[i].Softirqs = perCPUDelta(sirq0, sirq1, cpu)
		results[i].StealNS = (steal1[cpu] - steal0[cpu]) * int64(time.Second) / 100 // USER_HZ ticks
	}
	rep.CPUs = results
	if *plotName != "" {
		var all []series
		for i, cpu := range cpus {
			all = append(all, histSeries(fmt.Sprintf("cpu %d gaps", cpu), hists[i]))
		}
		if err := writePlot(*plotName, fmt.Sprintf("latprobe jitter: gaps over %v", *threshold), all); err != nil {
			return err
		}
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(rep)
	}
	fmt.Fprintf(stdout, "latprobe jitter: %v per CPU, gaps over %v\n", *duration, *threshold)
	for _, r := range rep.CPUs {
		fmt.Fprintf(stdout, "cpu %d: %d gaps, %.3f%% of the time lost; gap p50 %.1f µs, p99 %.1f µs, p99.9 %.1f µs, max %.1f µs\n",
			r.CPU, r.Gaps, r.LostPct, us(r.GapNS["p50"]), us(r.GapNS["p99"]), us(r.GapNS["p99_9"]), us(r.GapNS["max"]))
		fmt.Fprintf(stdout, "  interrupts %s; softirqs %s; involuntary switches %d, runtime hand-offs %d, steal %.1f ms\n",
			topCounts(r.Interrupts), topCounts(r.Softirqs), r.CtxSwitches, r.RuntimePreemptions, float64(r.StealNS)/1e6)
		if r.Yields > 0 {
			fmt.Fprintf(stdout, "  %d passes through the scheduler (among the hand-offs), each p50 %.1f µs, p99 %.1f µs, max %.1f µs (not counted as gaps)\n",
				r.Yields, us(r.YieldNS["p50"]), us(r.YieldNS["p99"]), us(r.YieldNS["max"]))
		}
	}
	return nil
}

// spinOn pins a locked thread to cpu and reads the clock in a loop for d,
// recording every gap between two reads longer than threshold. With
// yieldEvery above 0 it passes through the scheduler that often and
// records what each pass took apart from the gaps.
func spinOn(ctx context.Context, cpu int, d time.Duration, threshold int64, hot bool, yieldEvery int64) (jitterCPU, *hdrhistogram.Histogram, error) {
	if hot {
		h, err := affinity.MakeHot(cpu, affinity.CPUSet{})
		if err != nil {
			return jitterCPU{}, nil, err
		}
		defer h.Release()
	} else {
		unlock, err := affinity.LockAndPin(cpu)
		if err != nil {
			return jitterCPU{}, nil, fmt.Errorf("pin a thread to cpu %d: %w", cpu, err)
		}
		defer unlock()
	}
	vol0, invol0 := threadSwitches()
	clk := latency.NewClock()
	h := latency.NewHistogram()
	yh := latency.NewHistogram()
	var lost int64
	done := ctx.Done()
	start := clk.Now()
	end := start + int64(d)
	last := start
	nextYield := start + yieldEvery
	for i := uint64(0); ; i++ {
		now := clk.Now()
		if gap := now - last; gap > threshold {
			h.RecordValue(min(gap, h.HighestTrackableValue()))
			lost += gap
		}
		last = now
		if now >= end {
			break
		}
		if yieldEvery > 0 && now >= nextYield {
			runtime.Gosched()
			last = clk.Now()
			yh.RecordValue(min(last-now, yh.HighestTrackableValue()))
			nextYield = last + yieldEvery
		}
		if i&0xffff == 0 {
			select {
			case <-done:
				end = now
			default:
			}
		}
	}
	vol1, invol1 := threadSwitches()
	s := latency.Summarize(h)
	r := jitterCPU{
		CPU: cpu, Gaps: h.TotalCount(), LostPct: 100 * float64(lost) / float64(max(last-start, 1)),
		GapNS:              map[string]int64{"p50": s.P50, "p99": s.P99, "p99_9": s.P999, "max": s.Max},
		CtxSwitches:        invol1 - invol0,
		RuntimePreemptions: vol1 - vol0,
	}
	if n := yh.TotalCount(); n > 0 {
		ys := latency.Summarize(yh)
		r.Yields, r.YieldNS = n, map[string]int64{"p50": ys.P50, "p99": ys.P99, "max": ys.Max}
	}
	return r, h, nil
}

// threadSwitches reads the calling thread's voluntary and involuntary
// context switches.
func threadSwitches() (vol, invol int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", unix.Gettid()))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "voluntary_ctxt_switches:":
			vol = n
		case "nonvoluntary_ctxt_switches:":
			invol = n
		}
	}
	return vol, invol
}

// perCPUTable is a /proc table of counts by source and CPU.
type perCPUTable map[string]map[int]int64

// readPerCPU parses /proc/interrupts or /proc/softirqs: a header of CPU
// names, then one line per source with a count per CPU.
func readPerCPU(path string) perCPUTable {
	t := perCPUTable{}
	b, err := os.ReadFile(path)
	if err != nil {
		return t
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) == 0 {
		return t
	}
	var cpus []int
	for _, f := range strings.Fields(lines[0]) {
		n, err := strconv.Atoi(strings.TrimPrefix(f, "CPU"))
		if err != nil {
			return t
		}
		cpus = append(cpus, n)
	}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(f[0], ":")
		counts := map[int]int64{}
		for i, cpu := range cpus {
			if i+1 >= len(f) {
				break
			}
			n, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil {
				break
			}
			counts[cpu] = n
		}
		if len(counts) > 0 {
			// Interrupt lines end with the controller and the device:
			// name them by number and device.
			if len(f) > len(cpus)+1 {
				name += " " + strings.Join(f[len(cpus)+1:], " ")
			}
			t[name] = counts
		}
	}
	return t
}

func readInterrupts() perCPUTable { return readPerCPU("/proc/interrupts") }
func readSoftirqs() perCPUTable   { return readPerCPU("/proc/softirqs") }

// readSteal reads each CPU's steal time from /proc/stat, in USER_HZ ticks.
func readSteal() map[int]int64 {
	out := map[int]int64{}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		cpu, err := strconv.Atoi(f[0][3:])
		if err != nil {
			continue
		}
		out[cpu], _ = strconv.ParseInt(f[8], 10, 64)
	}
	return out
}

// perCPUDelta returns, for one CPU, each source's count in after less
// before, the sources that counted nothing left out.
func perCPUDelta(before, after perCPUTable, cpu int) map[string]int64 {
	out := map[string]int64{}
	for name, counts := range after {
		if d := counts[cpu] - before[name][cpu]; d > 0 {
			out[name] = d
		}
	}
	return out
}

// topCounts renders the largest counts, at most five.
func topCounts(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return int(m[b] - m[a]) })
	var parts []string
	for i, n := range names {
		if i == 5 {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d", n, m[n]))
	}
	return strings.Join(parts, ", ")
}
