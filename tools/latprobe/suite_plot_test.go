//go:build linux

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lowlat/lowlat/containerize"
	"github.com/lowlat/lowlat/latency"
)

// TestSuitePlotGolden draws a suite built here (no containers): a cell
// known by its summary alone, one with an HdrHistogram log, and a skipped
// one, which has no line. The SVG's text and number of lines are compared
// with testdata/suite_plot.golden; run with -update to rewrite it.
func TestSuitePlotGolden(t *testing.T) {
	h := latency.NewHistogram()
	for i := int64(1); i <= 10000; i++ {
		h.RecordValue(4000 + 2*i)
	}
	hlog := filepath.Join(t.TempDir(), "container-netns-afxdp.hlog")
	f, err := os.Create(hlog)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1_800_000_000, 0)
	lw, err := latency.NewHlogWriter(f, start, "test")
	if err == nil {
		err = lw.WriteInterval(h, start, start.Add(time.Second))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	rep := &containerize.SuiteReport{Cells: []containerize.Cell{
		{Placement: "host", Backend: "kernel", RTT: &latency.Summary{Min: 8000, P50: 9500, P90: 12000, P99: 29300, P999: 46600, P9999: 98900, P99999: 200000, Max: 231300}, Samples: 20000},
		{Placement: "host", Backend: "afxdp", Skipped: "afxdp needs an Ethernet interface"},
		{Placement: "container-netns", Backend: "afxdp", RTT: &latency.Summary{P50: 1}, Samples: 10000, Hlog: hlog},
	}}
	all := suiteSeries(rep)
	var names []string
	for _, s := range all {
		names = append(names, s.name)
	}
	if want := []string{"host/kernel", "container-netns/afxdp"}; !slices.Equal(names, want) {
		t.Fatalf("series %v, want %v", names, want)
	}
	if len(all[1].percentiles) <= len(latency.Percentiles())+1 {
		t.Errorf("the hlog cell has %d points: drawn from its summary, not its log", len(all[1].percentiles))
	}
	p, err := newPlotForTest("latprobe suite", all)
	if err != nil {
		t.Fatal(err)
	}
	text := svgText(p)
	for _, want := range append(names, "percentile", "99.999%") {
		if !slices.Contains(text, want) {
			t.Errorf("plot lacks %q: %q", want, text)
		}
	}
	got := strings.Join(text, "\n") + "\n" + "lines " + strconv.Itoa(bytes.Count(p, []byte("<path"))) + "\n"
	golden := filepath.Join("testdata", "suite_plot.golden")
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

func TestSuitePlotName(t *testing.T) {
	if r := runBinary(t, "suite", "--plot", "suite.pdf"); r.code != 2 || !strings.Contains(r.stderr, "--plot") {
		t.Errorf("suite --plot suite.pdf: exit %d, want 2 (usage): %s", r.code, r.stderr)
	}
}

func TestSpecMesh(t *testing.T) {
	r := runBinary(t, "spec", "--engine", "kubernetes", "--mesh", "--backend", "busypoll", "--peers", "10.0.0.1:7471,10.0.0.2:7471")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"kind: DaemonSet", "- --peer\n        - 10.0.0.2:7471", "prometheus.io/scrape", "hostNetwork: true", "- NET_ADMIN"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("spec --mesh lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "kind: Service") {
		t.Errorf("a fixed --peers list needs no Service:\n%s", r.stdout)
	}
	if r := runBinary(t, "spec", "--engine", "podman", "--mesh"); r.code != 2 {
		t.Errorf("spec --engine podman --mesh: exit %d, want 2 (usage)", r.code)
	}
}
