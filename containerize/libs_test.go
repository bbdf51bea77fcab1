package containerize

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/lowlat/lowlat/latency"
)

func TestParseLdList(t *testing.T) {
	out := []byte("\tlinux-vdso.so.1 (0x00007ffd1a5f2000)\n" +
		"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f93c073c000)\n" +
		"\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f93c0600000)\n" +
		"\t/lib64/ld-linux-x86-64.so.2 (0x00007f93c0931000)\n")
	got, err := parseLdList("/lib64/ld-linux-x86-64.so.2", out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libm.so.6"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q (loader first, no vDSO, no duplicate)", got, want)
	}
	_, err = parseLdList("/lib64/ld-linux-x86-64.so.2", []byte("\tlibciul.so.1 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n"))
	if err == nil || !strings.Contains(err.Error(), "libciul.so.1") {
		t.Errorf("missing library: err %v, want one naming libciul.so.1", err)
	}
}

func TestSharedObjectsStatic(t *testing.T) {
	// The test binary itself: static or not, the answer must agree with
	// its program interpreter.
	if runtime.GOOS != "linux" {
		t.Skip("ELF executables and their loader: Linux only")
	}
	exe := testBinary(t)
	interp, err := Interpreter(exe)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := SharedObjects(exe)
	if err != nil {
		t.Fatal(err)
	}
	if interp == "" && objs != nil || interp != "" && (len(objs) < 2 || objs[0] != interp) {
		t.Errorf("interpreter %q, shared objects %q: want none for a static binary, the loader then libraries for a dynamic one", interp, objs)
	}
}

func TestSuiteRatios(t *testing.T) {
	r := &SuiteReport{Cells: []Cell{
		{Placement: "host", Backend: "kernel", RTT: &latency.Summary{P50: 4000, P99: 8000}},
		{Placement: "netns", Backend: "kernel", RTT: &latency.Summary{P50: 5000, P99: 10000}},
		{Placement: "netns", Backend: "afxdp", Skipped: "no"},
		{Placement: "container-hostnet", Backend: "kernel", RTT: &latency.Summary{P50: 4200, P99: 8000}},
		{Placement: "container-netns", Backend: "kernel", RTT: &latency.Summary{P50: 5100, P99: 12000}},
		{Placement: "container-both", Backend: "afxdp", RTT: &latency.Summary{P50: 3000, P99: 6000}},
	}}
	r.SetRatios()
	for i, want := range []struct {
		base     string
		p50, p99 float64
	}{{}, {}, {}, {"host", 1.05, 1}, {"netns", 1.02, 1.2}, {}} {
		c := r.Cells[i]
		if c.Baseline != want.base {
			t.Errorf("%s/%s: baseline %q, want %q", c.Placement, c.Backend, c.Baseline, want.base)
		}
		if want.base == "" {
			if c.BaselineRatioP50 != nil || c.BaselineRatioP99 != nil {
				t.Errorf("%s/%s: ratios set without a measured baseline", c.Placement, c.Backend)
			}
			continue
		}
		if c.BaselineRatioP50 == nil || *c.BaselineRatioP50 != want.p50 || *c.BaselineRatioP99 != want.p99 {
			t.Errorf("%s/%s: ratios %v %v, want %v %v", c.Placement, c.Backend, c.BaselineRatioP50, c.BaselineRatioP99, want.p50, want.p99)
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cells []map[string]json.RawMessage `json:"cells"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"baseline", "baseline_ratio_p50", "baseline_ratio_p99"} {
		if _, ok := doc.Cells[4][k]; !ok {
			t.Errorf("container cell lacks %q: %s", k, b)
		}
		if _, ok := doc.Cells[1][k]; ok {
			t.Errorf("baseline cell has %q", k)
		}
	}
	var tb bytes.Buffer
	if err := r.WriteTable(&tb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"p50 ratio", "1.02", "1.20"} {
		if !strings.Contains(tb.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, tb.String())
		}
	}
}

func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}
