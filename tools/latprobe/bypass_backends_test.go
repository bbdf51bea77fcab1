//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lowlat/lowlat/internal/testnet"
)

// TestAFXDPVeth runs latprobe server and client with --backend afxdp across
// a veth pair between two namespaces, and with --backend auto, which must
// choose afxdp for an address on an Ethernet interface. The client's report
// names the XDP and bind modes.
func TestAFXDPVeth(t *testing.T) {
	p := testnet.NewPair(t, testnet.Config{TxChecksumOff: true})
	for _, be := range []string{"afxdp", "auto"} {
		t.Run(be, func(t *testing.T) {
			addr := startServer(t, []string{"ip", "netns", "exec", p.B.Name},
				"--backend", be, "--iface", p.B.Link, "--addr", netip.AddrPortFrom(p.B.Addr, 9500).String())
			cmd := p.A.Command(binary, "client", "--peer", addr.String(), "--backend", be,
				"--iface", p.A.Link, "--addr", netip.AddrPortFrom(p.A.Addr, 9501).String(),
				"--count", "300", "--warmup", "20", "--timeout", "5s")
			cmd.Env = cleanEnv()
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := runBounded(cmd, time.Minute); err != nil {
				t.Fatalf("client: %v: %s%s", err, out.String(), errb.String())
			}
			text := out.String() + errb.String()
			for _, want := range []string{"backend afxdp", "xdp ", "bind copy"} {
				if !strings.Contains(text, want) {
					t.Errorf("report lacks %q:\n%s", want, text)
				}
			}
		})
	}
}

// TestEFVIWithoutDriver: asking for ef_vi on a host without it is one clear
// line and a non-zero exit, never a panic.
func TestEFVIWithoutDriver(t *testing.T) {
	r := runBinary(t, "client", "--backend", "efvi", "--peer", "127.0.0.1:9", "--count", "10")
	if r.code == 0 {
		t.Fatalf("exit 0 without ef_vi:\n%s%s", r.stdout, r.stderr)
	}
	if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
		t.Fatalf("panicked:\n%s", r.stderr)
	}
	if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "ef_vi") {
		t.Fatalf("want one line about ef_vi, got:\n%s", r.stderr)
	}
}

// TestMulticastGroupServer: a server joined to a group (any source, then
// for one source only) answers a client that sends to the group across
// veth namespaces; a server joined for another source does not.
func TestMulticastGroupServer(t *testing.T) {
	p := testnet.NewPair(t, testnet.Config{TxChecksumOff: true})
	group := "239.7.1.1"
	for _, c := range []struct {
		name   string
		source string // "": any source
		answer bool
	}{
		{"any source", "", true},
		{"this source", p.A.Addr.String(), true},
		{"another source", "10.198.1.1", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"--backend", "kernel", "--iface", p.B.Link, "--addr", "0.0.0.0:9600", "--group", group}
			if c.source != "" {
				args = append(args, "--source", c.source)
			}
			startServer(t, []string{"ip", "netns", "exec", p.B.Name}, args...)
			cmd := p.A.Command(binary, "client", "--peer", group+":9600", "--backend", "kernel",
				"--iface", p.A.Link, "--count", "50", "--warmup", "5", "--timeout", "100ms", "--json")
			cmd.Env = cleanEnv()
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := runBounded(cmd, time.Minute)
			if !c.answer {
				if err == nil {
					t.Fatalf("a server joined for another source answered:\n%s", out.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("client: %v: %s%s", err, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), `"samples":50`) {
				t.Fatalf("want 50 samples:\n%s%s", out.String(), errb.String())
			}
		})
	}
}

// TestRunTimestamps: run --timestamps splits every round trip into the
// four stages, in the table and in JSON; it refuses what cannot carry them.
func TestRunTimestamps(t *testing.T) {
	r := runBinary(t, "run", "--timestamps", "--backend", "kernel", "--count", "2000", "--warmup", "200", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	var rep struct {
		Samples int64                       `json:"samples"`
		Stages  map[string]map[string]int64 `json:"stages_ns"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &rep); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	for _, s := range []string{"client_tx", "network", "server", "client_rx"} {
		if _, ok := rep.Stages[s]["p50"]; !ok {
			t.Fatalf("stages_ns lacks %s: %+v", s, rep.Stages)
		}
	}
	r = runBinary(t, "run", "--timestamps", "--backend", "kernel", "--count", "500", "--warmup", "100")
	if r.code != 0 || !strings.Contains(r.stdout, "client_rx") || !strings.Contains(r.stdout, "stages of the 64 B round trip") {
		t.Fatalf("table without stages (exit %d):\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, bad := range [][]string{
		{"run", "--timestamps", "--proto", "tcp"},
		{"run", "--timestamps", "--size", "24"},
	} {
		if r := runBinary(t, bad...); r.code != 2 || !strings.Contains(r.stderr, "--timestamps") {
			t.Fatalf("%v: exit %d, %q; want 2 naming --timestamps", bad, r.code, r.stderr)
		}
	}
}

// TestServerMetrics: latprobe server --metrics serves each connection's
// counters for Prometheus while it answers.
func TestServerMetrics(t *testing.T) {
	addr := startServer(t, nil, "--backend", "kernel", "--addr", "127.0.0.1:0", "--metrics", "127.0.0.1:19464")
	r := runBinary(t, "client", "--peer", addr.String(), "--backend", "kernel", "--count", "100", "--warmup", "10")
	if r.code != 0 {
		t.Fatalf("client: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	resp, err := http.Get("http://127.0.0.1:19464/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	want := fmt.Sprintf(`lowlat_rx_packets_total{backend="kernel",conn="%v"} 110`, addr)
	if !strings.Contains(string(body), want) {
		t.Fatalf("metrics lack %s:\n%s", want, body)
	}
	if r := runBinary(t, "server", "--metrics", "example.com:80"); r.code != 2 || !strings.Contains(r.stderr, "--metrics") {
		t.Fatalf("--metrics with a name: exit %d, %q", r.code, r.stderr)
	}
}

// TestServerMetricsTCP: over TCP, each connection's stream counters are
// served while it is open, under "tcp" and its peer's address.
func TestServerMetricsTCP(t *testing.T) {
	addr := startServer(t, nil, "--backend", "kernel", "--proto", "tcp", "--addr", "127.0.0.1:0", "--metrics", "127.0.0.1:19465")
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := fmt.Sprintf(`lowlat_stream_rx_bytes_total{backend="kernel",conn="tcp %v"}`, c.LocalAddr())
	var body []byte
	for range 100 {
		resp, err := http.Get("http://127.0.0.1:19465/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("metrics lack %s:\n%s", want, body)
}

// TestRate: latprobe rate floods a latprobe server and prints, with
// --json, exactly the keys of its documented object; bad flags exit 2.
func TestRate(t *testing.T) {
	addr := startServer(t, nil, "--backend", "kernel", "--addr", "127.0.0.1:0")
	r := runBinary(t, "rate", "--peer", addr.String(), "--backend", "kernel", "--mps", "2000", "--duration", "300ms", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &m); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	want := []string{"backend", "lost", "mode", "mps_received", "mps_sent", "proto", "received", "sent", "size", "tool"}
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	sent, received, lost := m["sent"].(float64), m["received"].(float64), m["lost"].(float64)
	if !slices.Equal(got, want) || m["mode"] != "rate" || sent == 0 || received < 0.9*sent || sent != received+lost {
		t.Fatalf("rate JSON %s: want keys %v, (nearly) every message received, the counts agreeing", r.stdout, want)
	}
	for _, bad := range [][]string{
		{"rate"},
		{"rate", "--peer", addr.String(), "--mps", "fast"},
		{"rate", "--peer", addr.String(), "--duration", "-1s"},
		{"rate", "--peer", addr.String(), "--size", "24"},
	} {
		if r := runBinary(t, bad...); r.code != 2 {
			t.Fatalf("%v: exit %d (%s), want 2", bad, r.code, r.stderr)
		}
	}
}

// TestJitter: latprobe jitter spins on a CPU and prints, with --json, the
// documented object; bad flags exit 2.
func TestJitter(t *testing.T) {
	r := runBinary(t, "jitter", "--cpus", "0", "--duration", "200ms", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	var rep struct {
		Tool, Mode  string
		DurationNS  int64 `json:"duration_ns"`
		ThresholdNS int64 `json:"threshold_ns"`
		CPUs        []map[string]json.RawMessage
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &rep); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	if rep.Mode != "jitter" || rep.DurationNS != int64(200*time.Millisecond) || rep.ThresholdNS != 1000 || len(rep.CPUs) != 1 {
		t.Fatalf("report %s", r.stdout)
	}
	for _, k := range []string{"cpu", "gaps", "lost_pct", "gap_ns", "interrupts", "softirqs", "ctx_switches", "steal_ns", "runtime_preemptions"} {
		if _, ok := rep.CPUs[0][k]; !ok {
			t.Fatalf("cpu object lacks %q: %s", k, r.stdout)
		}
	}
	// --yield-every: the passes through the scheduler are counted and
	// priced apart from the gaps.
	r = runBinary(t, "jitter", "--cpus", "0", "--duration", "200ms", "--yield-every", "2ms", "--json")
	if r.code != 0 {
		t.Fatalf("--yield-every: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	var yrep struct {
		CPUs []struct {
			Yields  int64            `json:"yields"`
			YieldNS map[string]int64 `json:"yield_ns"`
		}
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &yrep); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	if len(yrep.CPUs) != 1 || yrep.CPUs[0].Yields == 0 || yrep.CPUs[0].YieldNS["max"] < yrep.CPUs[0].YieldNS["p50"] {
		t.Fatalf("--yield-every 2ms for 200ms: %s", r.stdout)
	}
	for _, bad := range [][]string{
		{"jitter", "--cpus", "x"},
		{"jitter", "--duration", "-1s"},
		{"jitter", "--threshold", "0s"},
		{"jitter", "--cpus", "4096"},
		{"jitter", "--hot", "--cpus", "0,1"},
	} {
		if r := runBinary(t, bad...); r.code != 2 {
			t.Fatalf("%v: exit %d (%s), want 2", bad, r.code, r.stderr)
		}
	}
}

// TestAFXDPTCPVeth: latprobe's TCP ping-pong across a veth pair with the
// user-space TCP of afxdp at one end or both and the kernel's TCP
// (busypoll) at the other, messages from 24 B to 8972 B (several
// segments): every message answered, none lost.
func TestAFXDPTCPVeth(t *testing.T) {
	p := testnet.NewPair(t, testnet.Config{TxChecksumOff: true})
	for i, c := range []struct{ server, client string }{
		{"busypoll", "afxdp"}, {"afxdp", "busypoll"}, {"afxdp", "afxdp"},
	} {
		t.Run(c.client+" client, "+c.server+" server", func(t *testing.T) {
			port := uint16(9700 + 10*i)
			addr := startServer(t, []string{"ip", "netns", "exec", p.B.Name}, "--proto", "tcp",
				"--backend", c.server, "--iface", p.B.Link, "--addr", netip.AddrPortFrom(p.B.Addr, port).String())
			cmd := p.A.Command(binary, "client", "--peer", addr.String(), "--proto", "tcp", "--backend", c.client,
				"--iface", p.A.Link, "--sizes", "24,1000,1448,1449,4096,8972", "--count", "300", "--warmup", "20", "--timeout", "5s", "--json")
			cmd.Env = cleanEnv()
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := runBounded(cmd, time.Minute); err != nil {
				t.Fatalf("client: %v: %s%s", err, out.String(), errb.String())
			}
			rs := parseReports(t, out.String())
			if len(rs) != 6 {
				t.Fatalf("%d reports, want 6:\n%s", len(rs), out.String())
			}
			for _, r := range rs {
				if r.Proto != "tcp" || r.Backend != c.client || r.Sent != 300 || r.Lost != 0 || r.Samples != 300 {
					t.Errorf("report %+v", r)
				}
			}
			if c.client == "afxdp" && !strings.Contains(errb.String(), "tcp ESTABLISHED: srtt") {
				t.Errorf("the client printed no TCP counters:\n%s", errb.String())
			}
		})
	}
}

// TestAFXDPTCPAndSockperf: sockperf's TCP server answers latprobe's
// afxdp TCP client, and sockperf's TCP ping-pong client gets its answers
// from latprobe's afxdp TCP server, across veth.
func TestAFXDPTCPAndSockperf(t *testing.T) {
	sp := needSockperf(t)
	p := testnet.NewPair(t, testnet.Config{TxChecksumOff: true})
	t.Run("sockperf server", func(t *testing.T) {
		srv := p.B.Command(sp, "server", "-i", p.B.Addr.String(), "-p", "9800", "--tcp")
		lines, stop, err := startLogged(srv)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		if _, err := waitLine(lines, sockperfReady); err != nil {
			t.Fatalf("sockperf server: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
		for _, size := range []string{"24", "8972"} {
			cmd := p.A.Command(binary, "client", "--peer", netip.AddrPortFrom(p.B.Addr, 9800).String(), "--wire", "sockperf",
				"--proto", "tcp", "--backend", "afxdp", "--iface", p.A.Link, "--size", size, "--count", "300", "--warmup", "20",
				"--timeout", "5s", "--json")
			cmd.Env = cleanEnv()
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := runBounded(cmd, time.Minute); err != nil {
				t.Fatalf("client: %v: %s%s", err, out.String(), errb.String())
			}
			if r := parseReports(t, out.String())[0]; r.Sent != 300 || r.Lost != 0 || r.Backend != "afxdp" {
				t.Fatalf("size %s: report %+v", size, r)
			}
		}
	})
	t.Run("sockperf client", func(t *testing.T) {
		addr := startServer(t, []string{"ip", "netns", "exec", p.B.Name}, "--proto", "tcp",
			"--backend", "afxdp", "--iface", p.B.Link, "--addr", netip.AddrPortFrom(p.B.Addr, 9810).String())
		for _, size := range []string{"24", "8972"} {
			out, err := p.A.Command(sp, "ping-pong", "-i", addr.Addr().String(), "-p", fmt.Sprint(addr.Port()), "--tcp",
				"-m", size, "-t", "1", "--full-rtt").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Summary: Round trip is") || strings.Contains(string(out), "ERROR") ||
				!regexp.MustCompile(`Total [1-9]\d* observations`).MatchString(string(out)) {
				t.Fatalf("sockperf ping-pong -m %s: %v\n%s", size, err, out)
			}
		}
	})
}
