package containerize

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/lowlat/lowlat/latency"
)

func TestSuiteReportShape(t *testing.T) {
	r := &SuiteReport{Cells: []Cell{
		{Placement: "host", Backend: "kernel", RTT: &latency.Summary{P50: 15300, P99: 26400, P999: 44000, P9999: 72300, Max: 119400}, Samples: 5000},
		{Placement: "host", Backend: "afxdp", Skipped: "afxdp needs an Ethernet interface"},
	}}
	var tb bytes.Buffer
	if err := r.WriteTable(&tb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"p99.99", "15.3", "119.4", "afxdp needs an Ethernet interface"} {
		if !strings.Contains(tb.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, tb.String())
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Cells []map[string]json.RawMessage `json:"cells"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Cells) != 2 {
		t.Fatalf("%s: %v", b, err)
	}
	var rtt map[string]int64
	if err := json.Unmarshal(doc.Cells[0]["rtt_ns"], &rtt); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"min", "mean", "stddev", "p50", "p90", "p99", "p99_9", "p99_99", "p99_999", "max"} {
		if _, ok := rtt[k]; !ok {
			t.Errorf("rtt_ns lacks %q (latprobe client --json's keys)", k)
		}
	}
	for _, k := range []string{"placement", "backend", "samples", "lost"} {
		if _, ok := doc.Cells[0][k]; !ok {
			t.Errorf("cell lacks %q", k)
		}
	}
}
