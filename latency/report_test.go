package latency

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// withinPrecision reports whether got is the exact value to three
// significant digits (HdrHistogram's sub-buckets are 1/1024 wide).
func withinPrecision(got, exact int64) bool {
	return math.Abs(float64(got-exact)) <= float64(exact)/1000+1
}

// TestPercentilesMatchSort checks the summary against a brute-force sort of
// the same samples: percentile p is the sample at rank round(p/100 × n),
// at least 1, as HdrHistogram defines it.
func TestPercentilesMatchSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name string
		n    int
		gen  func() int64
	}{
		{"one sample", 1, func() int64 { return 12345 }},
		{"uniform 1us-1ms", 10_000, func() int64 { return 1000 + rng.Int64N(999_000) }},
		{"lognormal latency", 200_000, func() int64 { return int64(math.Exp(9.3+0.4*rng.NormFloat64())) + 1 }},
		{"bimodal with stalls", 100_003, func() int64 {
			if rng.IntN(1000) == 0 {
				return 1_000_000 + rng.Int64N(2_000_000) // the VM's millisecond stalls
			}
			return 9000 + rng.Int64N(3000)
		}},
		{"tiny values", 5000, func() int64 { return 1 + rng.Int64N(50) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHistogram()
			samples := make([]int64, tc.n)
			for i := range samples {
				samples[i] = tc.gen()
				record(h, samples[i])
			}
			slices.Sort(samples)
			s := Summarize(h)
			exact := func(p float64) int64 {
				rank := int64(p/100*float64(len(samples)) + 0.5)
				rank = min(max(rank, 1), int64(len(samples)))
				return samples[rank-1]
			}
			got := []int64{s.P50, s.P90, s.P99, s.P999, s.P9999, s.P99999}
			for i, p := range Percentiles() {
				want := exact(p)
				if !withinPrecision(got[i], want) {
					t.Errorf("p%v = %d, sorted samples give %d", p, got[i], want)
				}
				// Independently of the rank rule: at least p% of the
				// samples are at or below the reported value.
				atOrBelow := sort.Search(len(samples), func(j int) bool { return samples[j] > got[i] })
				if float64(atOrBelow) < p/100*float64(len(samples))-1 {
					t.Errorf("p%v = %d, but only %d of %d samples are at or below it", p, got[i], atOrBelow, len(samples))
				}
			}
			if !withinPrecision(s.Min, samples[0]) || !withinPrecision(s.Max, samples[len(samples)-1]) {
				t.Errorf("min/max = %d/%d, want %d/%d", s.Min, s.Max, samples[0], samples[len(samples)-1])
			}
			var sum float64
			for _, v := range samples {
				sum += float64(v)
			}
			mean := sum / float64(len(samples))
			var sq float64
			for _, v := range samples {
				sq += (float64(v) - mean) * (float64(v) - mean)
			}
			std := math.Sqrt(sq / float64(len(samples)))
			if math.Abs(float64(s.Mean)-mean) > mean/1000+1 {
				t.Errorf("mean = %d, want %.1f", s.Mean, mean)
			}
			if math.Abs(float64(s.StdDev)-std) > mean/1000+std/100+1 {
				t.Errorf("stddev = %d, want %.1f", s.StdDev, std)
			}
		})
	}
}

func TestSummaryEmptyAndClamped(t *testing.T) {
	h := NewHistogram()
	if s := Summarize(h); s != (Summary{}) {
		t.Fatalf("empty histogram: %+v", s)
	}
	record(h, -5)
	record(h, 0)
	record(h, 10*HighestRTT)
	if h.TotalCount() != 3 {
		t.Fatalf("out-of-range values were dropped: count %d", h.TotalCount())
	}
	if s := Summarize(h); s.Min != LowestRTT || !withinPrecision(s.Max, HighestRTT) {
		t.Fatalf("clamping: %+v", s)
	}
	if HighestRTT < int64(10*time.Second) {
		t.Fatal("histogram must reach at least 10 s")
	}
}

func sampleReport() Report {
	h := NewHistogram()
	for i := int64(1); i <= 1000; i++ {
		record(h, i*100)
	}
	return NewReport(&Result{Size: 64, Hist: h, Counters: Counters{Sent: 1002, Received: 1000, Lost: 2}}, "busypoll", "udp")
}

func TestJSONKeys(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, sampleReport()); err != nil {
		t.Fatal(err)
	}
	if strings.Count(buf.String(), "\n") != 1 {
		t.Fatalf("want one line, got %q", buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	keys := func(m map[string]any) []string {
		var k []string
		for key := range m {
			k = append(k, key)
		}
		slices.Sort(k)
		return k
	}
	// "thin" is there because the sample report's 1000 samples leave
	// fewer than ten beyond p99.9 and up.
	want := []string{"backend", "lost", "proto", "rtt_ns", "samples", "sent", "size", "thin", "tool"}
	if got := keys(m); !slices.Equal(got, want) {
		t.Fatalf("top-level keys %v, want %v", got, want)
	}
	rtt, ok := m["rtt_ns"].(map[string]any)
	if !ok {
		t.Fatalf("rtt_ns is %T", m["rtt_ns"])
	}
	wantRTT := []string{"max", "mean", "min", "p50", "p90", "p99", "p99_9", "p99_99", "p99_999", "stddev"}
	if got := keys(rtt); !slices.Equal(got, wantRTT) {
		t.Fatalf("rtt_ns keys %v, want %v", got, wantRTT)
	}
	if m["tool"] != "latprobe" || m["backend"] != "busypoll" || m["proto"] != "udp" ||
		m["size"] != 64.0 || m["samples"] != 1000.0 || m["sent"] != 1002.0 || m["lost"] != 2.0 {
		t.Fatalf("values: %v", m)
	}
	if p50 := rtt["p50"].(float64); !withinPrecision(int64(p50), 50_000) {
		t.Fatalf("p50 %v ns, want 50000", p50)
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	r := sampleReport()
	r2 := r
	r2.Proto, r2.Size = "tcp", 1024
	if err := WriteTable(&buf, r, r2); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range append(Columns, "udp", "tcp", "busypoll", "1024", "50.0", "µs", "lost 2") {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// TestHlogReadBack writes intervals through the client's sink path and
// reads them back with HdrHistogram's own log reader.
func TestHlogReadBack(t *testing.T) {
	var buf bytes.Buffer
	start := time.Unix(1_700_000_000, 0)
	lw, err := NewHlogWriter(&buf, start, "latprobe test")
	if err != nil {
		t.Fatal(err)
	}
	lw.SetTag("64B")
	h := NewHistogram()
	var total int64
	for sec := 0; sec < 3; sec++ {
		for i := 0; i < 100*(sec+1); i++ {
			record(h, int64(1000*(i+1)))
		}
		total += h.TotalCount()
		s := start.Add(time.Duration(sec) * time.Second)
		if err := lw.WriteInterval(h, s, s.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		h.Reset()
	}
	text := buf.String()
	for _, want := range []string{"#[StartTime: 1700000000", "#[BaseTime: 1700000000", "Tag=64B,0.000000,1.000000,"} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %q:\n%s", want, text)
		}
	}
	r := hdrhistogram.NewHistogramLogReader(&buf)
	var got int64
	var n int
	for {
		ih, err := r.NextIntervalHistogram()
		if err != nil {
			t.Fatal(err)
		}
		if ih == nil {
			break
		}
		n++
		got += ih.TotalCount()
		if ih.Tag() != "64B" {
			t.Errorf("interval %d tag %q", n, ih.Tag())
		}
		if wantStart := start.Add(time.Duration(n-1) * time.Second).UnixMilli(); ih.StartTimeMs() != wantStart {
			t.Errorf("interval %d starts at %d ms, want %d", n, ih.StartTimeMs(), wantStart)
		}
	}
	if n != 3 || got != total {
		t.Fatalf("read %d intervals with %d values, want 3 with %d", n, got, total)
	}
}

// TestPeerReport: a report that names its peer gains the "peer" key in
// JSON, and a peer column and prefix in the table; one that does not keeps
// the fixed keys (TestJSONKeys) and the table without the column.
func TestPeerReport(t *testing.T) {
	r := sampleReport()
	r.Peer = "127.0.0.1:11111"
	var buf bytes.Buffer
	if err := WriteJSON(&buf, r); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["peer"] != "127.0.0.1:11111" || len(m) != 10 {
		t.Fatalf("JSON %s: want the 9 keys and peer", buf.String())
	}
	buf.Reset()
	if err := WriteTable(&buf, r); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.HasPrefix(strings.TrimSpace(out), "peer") || !strings.Contains(out, "\n127.0.0.1:11111 udp 64 B: sent 1002") {
		t.Fatalf("table:\n%s", out)
	}
	buf.Reset()
	if err := WriteTable(&buf, sampleReport()); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); strings.Contains(out, "peer") || !strings.Contains(out, "\nudp 64 B: sent 1002") {
		t.Fatalf("table without peers:\n%s", out)
	}
}

// TestThinPercentiles: a percentile with fewer than ten samples beyond it
// is named thin, in JSON and marked in the table.
func TestThinPercentiles(t *testing.T) {
	for _, c := range []struct {
		samples int64
		want    []string
	}{
		{100_000, []string{"p99_999"}},
		{20_000, []string{"p99_99", "p99_999"}},
		{1_000_000, nil},
		{50, []string{"p90", "p99", "p99_9", "p99_99", "p99_999"}},
	} {
		if got := Thin(c.samples); !slices.Equal(got, c.want) {
			t.Errorf("Thin(%d) = %v, want %v", c.samples, got, c.want)
		}
	}
	if n := MinSamples(99.99); n != 100_000 {
		t.Fatalf("MinSamples(99.99) = %d", n)
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, sampleReport()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "*") || !strings.Contains(buf.String(), "fewer than 10 samples") {
		t.Fatalf("table does not mark thin percentiles:\n%s", buf.String())
	}
}
