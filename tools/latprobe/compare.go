package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/lowlat/lowlat/latency"
)

// compareCols are the statistics compare puts side by side, in µs.
var compareCols = []string{"min", "p50", "p90", "p99", "p99.9", "p99.99", "max"}

// compareRun is one tool's run: samples and compareCols in µs.
type compareRun struct {
	samples int64
	us      []float64
	elapsed time.Duration
	series  series
}

// cmdCompare runs sockperf's ping-pong and latprobe's on the same loopback
// path, CPUs, size and wait mode (spin), interleaved, and prints both side
// by side with the ratio latprobe/sockperf per percentile.
func cmdCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	with := fs.String("with", "sockperf", "the tool to compare with: sockperf")
	count := fs.Int("count", 100000, "latprobe's measured round trips per repeat; sockperf runs for as long as latprobe took")
	repeats := fs.Int("repeats", 3, "interleaved runs of each tool")
	size := fs.Int("size", latency.DefaultSize, "message size in bytes (at least 24, lowlat's header)")
	proto := fs.String("proto", "udp", "udp or tcp")
	cpus := fs.String("cpus", "", "CLIENT,SERVER CPUs for both tools (default: the last two this process may use)")
	warmup := fs.Int("warmup", 1000, "latprobe's warm-up round trips (sockperf warms up for its own 400 ms)")
	plotName := fs.String("plot", "", "draw every run's percentile distribution to this .svg or .png file")
	sockperfBin := fs.String("sockperf", "sockperf", "the sockperf program")
	hot := fs.Bool("hot", false, "also run latprobe's server and client with --hot, interleaved with the others in every repeat (hot thread before and after, in one run)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *with != "sockperf" {
		return usagef("--with %s: only sockperf is supported", *with)
	}
	switch {
	case *count <= 0 || *count > 100_000_000:
		return usagef("--count %d: want 1 to 100000000", *count)
	case *repeats <= 0 || *repeats > 100:
		return usagef("--repeats %d: want 1 to 100", *repeats)
	case latency.CheckSize(*size) != nil:
		return usagef("--size %d: want %d to %d", *size, latency.MinSize, latency.MaxSize)
	case *proto != "udp" && *proto != "tcp":
		return usagef("--proto %s: want udp or tcp", *proto)
	case *warmup < 0:
		return usagef("--warmup %d: negative", *warmup)
	}
	if *plotName != "" {
		if err := checkPlotName(*plotName); err != nil {
			return usagef("--plot %s: %v", *plotName, err)
		}
	}
	clientCPU, serverCPU, err := compareCPUs(*cpus)
	if err != nil {
		return err
	}
	if parsedOnly(ctx) {
		return nil
	}
	sp, err := exec.LookPath(*sockperfBin)
	if err != nil {
		return fmt.Errorf("sockperf is not installed (%s not found; Debian package sockperf): compare needs it", *sockperfBin)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "latprobe-compare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintf(stdout, "latprobe vs sockperf: %s, %d B, 127.0.0.1, client on cpu %d, server on cpu %d, both spinning\n", *proto, *size, clientCPU, serverCPU)
	fmt.Fprintf(stdout, "  latprobe: server and client --backend busypoll --wait spin, %d round trips after %d warm-up\n", *count, *warmup)
	if *hot {
		fmt.Fprintf(stdout, "  latprobe --hot: the same with --hot: each end's thread alone on its CPU (a TCP server's not), the client passing through Go's scheduler between round trips\n")
	}
	fmt.Fprintf(stdout, "  sockperf: sr and pp -F r --nonblocked (busy recvfrom) --full-rtt, pinned with taskset, for as long as latprobe took\n")
	fmt.Fprintln(stdout, clockLine())

	var lp, lh, so []compareRun
	for r := 1; r <= *repeats; r++ {
		fmt.Fprintf(stderr, "latprobe compare: repeat %d of %d: latprobe\n", r, *repeats)
		l, err := compareLatprobe(ctx, self, dir, *proto, *size, *count, *warmup, clientCPU, serverCPU, false)
		if err != nil {
			return fmt.Errorf("repeat %d: latprobe: %w", r, err)
		}
		l.series.name = fmt.Sprintf("latprobe #%d", r)
		lp = append(lp, l)
		if *hot {
			fmt.Fprintf(stderr, "latprobe compare: repeat %d of %d: latprobe --hot\n", r, *repeats)
			h, err := compareLatprobe(ctx, self, dir, *proto, *size, *count, *warmup, clientCPU, serverCPU, true)
			if err != nil {
				return fmt.Errorf("repeat %d: latprobe --hot: %w", r, err)
			}
			h.series.name = fmt.Sprintf("latprobe --hot #%d", r)
			lh = append(lh, h)
		}
		secs := max(1, int(math.Ceil(l.elapsed.Seconds()+0.5)))
		fmt.Fprintf(stderr, "latprobe compare: repeat %d of %d: sockperf for %d s\n", r, *repeats, secs)
		s, err := compareSockperf(ctx, sp, dir, *proto, *size, secs, clientCPU, serverCPU)
		if err != nil {
			return fmt.Errorf("repeat %d: sockperf: %w", r, err)
		}
		s.series.name = fmt.Sprintf("sockperf #%d", r)
		so = append(so, s)
	}
	if err := writeComparison(stdout, lp, lh, so); err != nil {
		return err
	}
	if *plotName != "" {
		var all []series
		for i := range lp {
			all = append(all, lp[i].series)
			if lh != nil {
				all = append(all, lh[i].series)
			}
			all = append(all, so[i].series)
		}
		return writePlot(*plotName, fmt.Sprintf("latprobe vs sockperf, %s %d B loopback", *proto, *size), all)
	}
	return nil
}

// compareCPUs parses --cpus, or picks the last two usable CPUs.
func compareCPUs(s string) (client, server int, err error) {
	cpus, err := usableCPUs()
	if err != nil {
		return 0, 0, fmt.Errorf("--cpus: %w", err)
	}
	if s == "" {
		if len(cpus) < 2 {
			return 0, 0, errors.New("compare needs two CPUs, one per end, so that both can spin")
		}
		return cpus[len(cpus)-1], cpus[len(cpus)-2], nil
	}
	a, b, ok := strings.Cut(s, ",")
	c1, e1 := strconv.Atoi(strings.TrimSpace(a))
	c2, e2 := strconv.Atoi(strings.TrimSpace(b))
	if !ok || e1 != nil || e2 != nil || c1 == c2 || !slices.Contains(cpus, c1) || !slices.Contains(cpus, c2) {
		return 0, 0, usagef("--cpus %s: want two different CPUs this process may use, such as 1,0", s)
	}
	return c1, c2, nil
}

// startLogged starts cmd and sends each line of its stdout to the returned
// channel (closed at EOF). stop interrupts it and waits, bounded in time.
func startLogged(cmd *exec.Cmd) (lines <-chan string, stop func() error, err error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	ch := make(chan string, 256)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case ch <- sc.Text():
			default: // nobody reads any more
			}
		}
		close(ch)
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop = func() error {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.ExitCode() == -1 {
				return nil // ended by the signal, as asked
			}
			if err != nil {
				return fmt.Errorf("%s: %w: %s", filepath.Base(cmd.Path), err, oneLine(errb.String()))
			}
			return nil
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("%s ignored SIGINT for 10 s", filepath.Base(cmd.Path))
		}
	}
	return ch, stop, nil
}

// waitLine waits for a line matching re, for up to 20 seconds.
func waitLine(lines <-chan string, re *regexp.Regexp) ([]string, error) {
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return nil, errors.New("exited before it was ready")
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m, nil
			}
		case <-timeout:
			return nil, errors.New("not ready within 20 s")
		}
	}
}

var latprobeListening = regexp.MustCompile(`latprobe server: (?:udp|tcp) (\d+\.\d+\.\d+\.\d+:\d+)`)

// compareLatprobe runs latprobe's server and client once, with --hot on
// both when hot is set (a TCP server has no --hot: the client's alone).
func compareLatprobe(ctx context.Context, self, dir, proto string, size, count, warmup, clientCPU, serverCPU int, hot bool) (compareRun, error) {
	srvArgs := []string{"server", "--addr", "127.0.0.1:0", "--proto", proto, "--backend", "busypoll",
		"--wait", "spin", "--cpu", strconv.Itoa(serverCPU), "--wire", "lowlat"}
	if hot && proto == "udp" {
		srvArgs = append(srvArgs, "--hot")
	}
	srv := exec.CommandContext(ctx, self, srvArgs...)
	lines, stop, err := startLogged(srv)
	if err != nil {
		return compareRun{}, err
	}
	m, err := waitLine(lines, latprobeListening)
	if err != nil {
		stop()
		return compareRun{}, fmt.Errorf("server: %w", err)
	}
	hlog := filepath.Join(dir, "latprobe.hlog")
	clArgs := []string{"client", "--peer", m[1], "--proto", proto, "--backend", "busypoll", "--wait", "spin",
		"--cpu", strconv.Itoa(clientCPU), "--count", strconv.Itoa(count), "--warmup", strconv.Itoa(warmup),
		"--size", strconv.Itoa(size), "--json", "--hlog", hlog, "--timeout", "1s"}
	if hot {
		clArgs = append(clArgs, "--hot")
	}
	cl := exec.CommandContext(ctx, self, clArgs...)
	var errb strings.Builder
	cl.Stderr = &errb
	out, cerr := cl.Output()
	serr := stop()
	if cerr != nil {
		return compareRun{}, fmt.Errorf("client: %w: %s", cerr, oneLine(errb.String()))
	}
	if serr != nil {
		return compareRun{}, fmt.Errorf("server: %w", serr)
	}
	var rep latency.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		return compareRun{}, fmt.Errorf("client output %q: %w", out, err)
	}
	h, elapsed, err := readHlog(hlog)
	if err != nil {
		return compareRun{}, err
	}
	s := rep.RTT
	return compareRun{
		samples: rep.Samples,
		us:      []float64{us(s.Min), us(s.P50), us(s.P90), us(s.P99), us(s.P999), us(s.P9999), us(s.Max)},
		elapsed: elapsed,
		series:  histSeries("latprobe", h),
	}, nil
}

func us(ns int64) float64 { return float64(ns) / 1e3 }

// readHlog merges an interval log into one histogram and returns the time
// it spans.
func readHlog(name string) (*hdrhistogram.Histogram, time.Duration, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	rd := hdrhistogram.NewHistogramLogReader(f)
	all := latency.NewHistogram()
	var first, last int64
	for {
		h, err := rd.NextIntervalHistogram()
		if err != nil {
			return nil, 0, fmt.Errorf("read %s: %w", name, err)
		}
		if h == nil {
			break
		}
		if first == 0 {
			first = h.StartTimeMs()
		}
		last = h.EndTimeMs()
		all.Merge(h)
	}
	return all, time.Duration(last-first) * time.Millisecond, nil
}

var (
	sockperfReady      = regexp.MustCompile(`to block on socket|listen on`)
	sockperfPercentile = regexp.MustCompile(`percentile\s+([\d.]+)\s*=\s*([\d.]+)`)
	sockperfMax        = regexp.MustCompile(`<MAX> observation\s*=\s*([\d.]+)`)
	sockperfMin        = regexp.MustCompile(`<MIN> observation\s*=\s*([\d.]+)`)
	sockperfTotal      = regexp.MustCompile(`Total (\d+) observations`)
)

func compareSockperf(ctx context.Context, sp, dir, proto string, size, secs, clientCPU, serverCPU int) (compareRun, error) {
	port, err := freePort(proto)
	if err != nil {
		return compareRun{}, err
	}
	feed := filepath.Join(dir, "sockperf.feed")
	kind := map[string]string{"udp": "U", "tcp": "T"}[proto]
	if err := os.WriteFile(feed, []byte(fmt.Sprintf("%s:127.0.0.1:%d\n", kind, port)), 0o644); err != nil {
		return compareRun{}, err
	}
	srv := exec.CommandContext(ctx, "taskset", "-c", strconv.Itoa(serverCPU), sp, "server", "-f", feed, "-F", "r", "--nonblocked")
	lines, stop, err := startLogged(srv)
	if err != nil {
		return compareRun{}, fmt.Errorf("server: %w", err)
	}
	if _, err := waitLine(lines, sockperfReady); err != nil {
		stop()
		return compareRun{}, fmt.Errorf("server: %w", err)
	}
	time.Sleep(100 * time.Millisecond) // from the message to the receive loop
	cl := exec.CommandContext(ctx, "taskset", "-c", strconv.Itoa(clientCPU), sp, "ping-pong", "-f", feed, "-F", "r", "--nonblocked",
		"--full-rtt", "-m", strconv.Itoa(size), "-t", strconv.Itoa(secs))
	out, cerr := cl.CombinedOutput()
	serr := stop()
	if cerr != nil {
		return compareRun{}, fmt.Errorf("ping-pong: %w: %s", cerr, oneLine(string(out)))
	}
	if serr != nil {
		return compareRun{}, fmt.Errorf("server: %w", serr)
	}
	return parseSockperf(string(out))
}

// parseSockperf reads sockperf's summary: its percentiles, minimum and
// maximum, all in µs (full round trips with --full-rtt).
func parseSockperf(out string) (compareRun, error) {
	pct := map[string]float64{}
	var ps, vs []float64
	for _, m := range sockperfPercentile.FindAllStringSubmatch(out, -1) {
		p, _ := strconv.ParseFloat(m[1], 64)
		v, _ := strconv.ParseFloat(m[2], 64)
		pct[strconv.FormatFloat(p, 'f', -1, 64)] = v
		ps, vs = append(ps, p), append(vs, v)
	}
	mx, mn, tot := sockperfMax.FindStringSubmatch(out), sockperfMin.FindStringSubmatch(out), sockperfTotal.FindStringSubmatch(out)
	if mx == nil || mn == nil || tot == nil || len(pct) == 0 {
		return compareRun{}, fmt.Errorf("no statistics in its output: %s", oneLine(out))
	}
	f := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
	n, _ := strconv.ParseInt(tot[1], 10, 64)
	run := compareRun{samples: n, us: []float64{f(mn[1]), pct["50"], pct["90"], pct["99"], pct["99.9"], pct["99.99"], f(mx[1])}}
	// Plot points from the lowest percentile up.
	ps, vs = append(ps, 0), append(vs, f(mn[1]))
	idx := make([]int, len(ps))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmpFloat(ps[a], ps[b]) })
	var sp, sv []float64
	for _, i := range idx {
		sp, sv = append(sp, ps[i]), append(sv, vs[i])
	}
	run.series = pointSeries("sockperf", sp, sv)
	return run, nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// freePort asks the kernel for a free loopback port.
func freePort(proto string) (int, error) {
	if proto == "tcp" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// median of xs (which it sorts).
func median(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// writeComparison prints every run, the medians, the ratio row and the
// spread across repeats; lh, latprobe's runs with --hot, may be nil.
func writeComparison(w io.Writer, lp, lh, so []compareRun) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "tool\trun\tsamples\t")
	for _, c := range compareCols {
		fmt.Fprintf(tw, "%s\t", c)
	}
	fmt.Fprintln(tw)
	row := func(tool, run string, samples string, vals []float64, format string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t", tool, run, samples)
		for _, v := range vals {
			fmt.Fprintf(tw, format+"\t", v)
		}
		fmt.Fprintln(tw)
	}
	type tool struct {
		name, short string
		runs        []compareRun
	}
	tools := []tool{{"latprobe", "lp", lp}}
	if lh != nil {
		tools = append(tools, tool{"latprobe --hot", "hot", lh})
	}
	tools = append(tools, tool{"sockperf", "sp", so})
	for i := range lp {
		for _, t := range tools {
			row(t.name, strconv.Itoa(i+1), strconv.FormatInt(t.runs[i].samples, 10), t.runs[i].us, "%.2f")
		}
	}
	stat := func(runs []compareRun, f func([]float64) float64) []float64 {
		out := make([]float64, len(compareCols))
		for c := range compareCols {
			var xs []float64
			for _, r := range runs {
				xs = append(xs, r.us[c])
			}
			out[c] = f(xs)
		}
		return out
	}
	spread := func(xs []float64) float64 {
		m := median(xs)
		if m == 0 {
			return 0
		}
		return 100 * (xs[len(xs)-1] - xs[0]) / m // xs sorted by median
	}
	medians := make([][]float64, len(tools))
	for i, t := range tools {
		medians[i] = stat(t.runs, median)
		row(t.name, "median", "", medians[i], "%.2f")
	}
	sm := medians[len(tools)-1]
	for i, t := range tools[:len(tools)-1] {
		ratio := make([]float64, len(sm))
		for c := range sm {
			if sm[c] > 0 {
				ratio[c] = medians[i][c] / sm[c]
			}
		}
		row("ratio", t.short+"/sp", "", ratio, "%.3f")
	}
	for _, t := range tools {
		row("spread %", t.name, "", stat(t.runs, spread), "%.0f")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "round trip in µs; ratio: latprobe median / sockperf median (below 1: latprobe measured less); spread: (max-min)/median across repeats")
	return err
}
