//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lowlat/lowlat/latency"
	"gonum.org/v1/plot/vg"
)

// needSockperf skips a test when sockperf is missing.
func needSockperf(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("sockperf")
	if err != nil {
		t.Skip("sockperf is not installed (Debian package sockperf; scripts/install-test-deps.sh installs it)")
	}
	return p
}

func runCommand(t *testing.T, limit time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := runBounded(cmd, limit)
	return out.String(), err
}

// TestSockperfClientAgainstServer: sockperf's own ping-pong and under-load
// clients, UDP and TCP, get their answers from latprobe server.
func TestSockperfClientAgainstServer(t *testing.T) {
	sp := needSockperf(t)
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			addr := startServer(t, nil, "--backend", "kernel", "--proto", proto, "--addr", "127.0.0.1:0")
			for _, mode := range []string{"ping-pong", "under-load"} {
				args := []string{mode, "-i", "127.0.0.1", "-p", strconv.Itoa(int(addr.Port())), "-m", "64", "-t", "1", "--full-rtt"}
				if proto == "tcp" {
					args = append(args, "--tcp")
				}
				out, err := runCommand(t, 30*time.Second, sp, args...)
				if err != nil {
					t.Fatalf("sockperf %s: %v\n%s", mode, err, out)
				}
				if !strings.Contains(out, "Summary: Round trip is") || !regexp.MustCompile(`Total [1-9]\d* observations`).MatchString(out) ||
					strings.Contains(out, "ERROR") {
					t.Fatalf("sockperf %s reports no results:\n%s", mode, out)
				}
			}
		})
	}
}

// startSockperfServer starts sockperf server on a free loopback port,
// stopped in cleanup.
func startSockperfServer(t *testing.T, sp, proto string) string {
	t.Helper()
	port, err := freePort(proto)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"server", "-i", "127.0.0.1", "-p", strconv.Itoa(port)}
	if proto == "tcp" {
		args = append(args, "--tcp")
	}
	lines, stop, err := startLogged(exec.Command(sp, args...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("sockperf server: %v", err)
		}
	})
	if _, err := waitLine(lines, sockperfReady); err != nil {
		t.Fatalf("sockperf server: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	return "127.0.0.1:" + strconv.Itoa(port)
}

// TestClientAgainstSockperfServer: latprobe client --wire sockperf
// measures against sockperf's own server, UDP and TCP.
func TestClientAgainstSockperfServer(t *testing.T) {
	sp := needSockperf(t)
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			peer := startSockperfServer(t, sp, proto)
			r := runBinary(t, "client", "--peer", peer, "--wire", "sockperf", "--backend", "kernel", "--proto", proto,
				"--count", "300", "--warmup", "20", "--timeout", "5s", "--size", "14", "--json")
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			if got := parseReports(t, r.stdout)[0]; got.Sent != 300 || got.Samples == 0 || got.Size != 14 {
				t.Fatalf("report %+v", got)
			}
		})
	}
}

// TestCompare: compare prints both tools' runs and a ratio row; with
// --hot, latprobe's hot runs too, interleaved, and their own ratio row.
func TestCompare(t *testing.T) {
	needSockperf(t)
	r := runBinary(t, "compare", "--with", "sockperf", "--count", "20000", "--repeats", "2", "--hot")
	if r.code != 0 {
		t.Fatalf("exit %d: %s\n%s", r.code, r.stderr, r.stdout)
	}
	for _, row := range []string{"lp/sp", "hot/sp"} {
		ratio := regexp.MustCompile(`(?m)^\s*ratio\s+` + row + `(\s+\d+\.\d+){7}\s*$`)
		if !ratio.MatchString(r.stdout) {
			t.Fatalf("no %s ratio row:\n%s", row, r.stdout)
		}
	}
	if strings.Count(r.stdout, "sockperf ") < 2 || strings.Count(r.stdout, "latprobe --hot ") < 2 {
		t.Fatalf("runs missing:\n%s", r.stdout)
	}
}

// TestCompareWithoutSockperf: one line saying what is missing, exit 1.
func TestCompareWithoutSockperf(t *testing.T) {
	r := runBinary(t, "compare", "--sockperf", "/nonexistent/sockperf", "--cpus", "")
	msg := strings.TrimSuffix(r.stderr, "\n")
	if r.code != 1 || strings.Contains(msg, "\n") || !strings.Contains(msg, "sockperf is not installed") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestMPSReportsCorrectedAndRaw: --mps prints both histograms.
func TestMPSReportsCorrectedAndRaw(t *testing.T) {
	svg := filepath.Join(t.TempDir(), "mps.svg")
	r := runBinary(t, "run", "--backend", "kernel", "--mps", "2000", "--count", "300", "--warmup", "20", "--timeout", "5s", "--json", "--plot", svg)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	rs := parseReports(t, r.stdout)
	if len(rs) != 2 || rs[0].Backend != "kernel" || rs[0].Series != "corrected" || rs[1].Backend != "kernel" || rs[1].Series != "raw" || rs[0].Samples < rs[1].Samples {
		t.Fatalf("reports %+v", rs)
	}
	if !strings.Contains(r.stderr, "clock: one reading costs") {
		t.Fatalf("no clock cost: %s", r.stderr)
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.Contains(b, []byte("kernel udp 64B at 2000/s corrected")) {
		t.Fatalf("plot: %v", err)
	}
}

var monitorAddr = regexp.MustCompile(`metrics on http://(\S+)/metrics`)

// scrape reads /metrics and returns the value of each sample line.
func scrape(t *testing.T, url string) (string, map[string]float64) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") {
			continue
		}
		if i := strings.LastIndexByte(l, ' '); i > 0 {
			name := l[:i]
			if j := strings.IndexByte(name, '{'); j > 0 && !strings.Contains(name, "le=") && !strings.Contains(name, "quantile=") {
				name = name[:j]
			}
			v, _ := strconv.ParseFloat(l[i+1:], 64)
			vals[name] = v
		}
	}
	return string(b), vals
}

// TestMonitor: /metrics has the histogram and counters, the count grows
// between scrapes, and the monitor keeps going while its peer is stopped
// and started again.
func TestMonitor(t *testing.T) {
	srvCtx, stopFirst := context.WithCancel(context.Background())
	port, err := freePort("udp")
	if err != nil {
		t.Fatal(err)
	}
	peer := "127.0.0.1:" + strconv.Itoa(port)
	first := exec.CommandContext(srvCtx, binary, "server", "--backend", "kernel", "--addr", peer)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stopFirst(); first.Wait() }()

	cmd := exec.Command(binary, "monitor", "--peer", peer, "--mps", "200", "--interval", "200ms", "--timeout", "50ms",
		"--listen", "127.0.0.1:0", "--duration", "50s", "--hlog", filepath.Join(t.TempDir(), "m.hlog"))
	lines, stop, err := startLogged(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("monitor: %v", err)
		}
	}()
	m, err := waitLine(lines, monitorAddr)
	if err != nil {
		t.Fatalf("monitor: %v", err)
	}
	url := "http://" + m[1] + "/metrics"
	// waitFor scrapes until cond holds, for up to 15 s.
	waitFor := func(what string, cond func(map[string]float64) bool) (string, map[string]float64) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			text, v := scrape(t, url)
			if cond(v) {
				return text, v
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 15 s:\n%s", what, text)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	text, v1 := waitFor("first replies", func(v map[string]float64) bool { return v["latprobe_rtt_seconds_count"] > 0 })
	for _, want := range []string{"latprobe_rtt_seconds_bucket{", `le="1e-06"`, "latprobe_sent_total", "latprobe_lost_total"} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	_, v2 := waitFor("count grows", func(v map[string]float64) bool {
		return v["latprobe_rtt_seconds_count"] > v1["latprobe_rtt_seconds_count"]
	})
	t.Logf("count %v then %v", v1["latprobe_rtt_seconds_count"], v2["latprobe_rtt_seconds_count"])
	waitFor("interval percentile gauges", func(v map[string]float64) bool {
		for k := range v {
			if strings.HasPrefix(k, "latprobe_interval_rtt_seconds{") && strings.Contains(k, `quantile="0.99"`) {
				return true
			}
		}
		return false
	})

	// The peer goes away: probes are lost, the monitor keeps serving.
	stopFirst()
	first.Wait()
	_, v3 := waitFor("losses while the peer is gone", func(v map[string]float64) bool { return v["latprobe_lost_total"] >= v2["latprobe_lost_total"]+5 })

	// It comes back on the same port: replies are counted again.
	second := exec.Command(binary, "server", "--backend", "kernel", "--addr", peer)
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { second.Process.Signal(syscall.SIGINT); second.Wait() }()
	waitFor("replies after the peer came back", func(v map[string]float64) bool {
		return v["latprobe_rtt_seconds_count"] > v3["latprobe_rtt_seconds_count"]
	})
}

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// svgText lists the text an SVG shows, in order: what a reader sees of the
// plot's title, axes, ticks and legend, without the exact geometry.
func svgText(svg []byte) []string {
	re := regexp.MustCompile(`<text[^>]*>([^<]*)</text>`)
	var out []string
	for _, m := range re.FindAllSubmatch(svg, -1) {
		out = append(out, string(m[1]))
	}
	return out
}

// TestPlotGolden draws two fixed series and compares the SVG's text (title,
// axis labels, percentile ticks, series names) and its number of lines
// with testdata/plot.golden. Run with -update to rewrite it.
func TestPlotGolden(t *testing.T) {
	a, b := latency.NewHistogram(), latency.NewHistogram()
	for i := int64(1); i <= 10000; i++ {
		a.RecordValue(5000 + i)
		b.RecordValue(7000 + 3*i)
	}
	p, err := newPlotForTest("golden", []series{histSeries("latprobe #1", a), pointSeries("sockperf #1", []float64{0, 50, 99, 99.999}, []float64{5, 6, 9, 30})})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(svgText(p), "\n") + "\n" + "lines " + strconv.Itoa(bytes.Count(p, []byte("<path"))) + "\n"
	golden := filepath.Join("testdata", "plot.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("plot text differs from %s:\n got:\n%s\nwant:\n%s", golden, got, want)
	}
}

// newPlotForTest renders the plot as SVG in memory.
func newPlotForTest(title string, all []series) ([]byte, error) {
	p, err := newPlot(title, all)
	if err != nil {
		return nil, err
	}
	w, err := p.WriterTo(8*vg.Inch, 5*vg.Inch, "svg")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	_, err = w.WriteTo(&buf)
	return buf.Bytes(), err
}
