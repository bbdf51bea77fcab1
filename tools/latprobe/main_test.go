//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/internal/testnet"
)

// binary is the latprobe built for these tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "latprobe-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "latprobe")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

// runBinary runs the built binary, bounded in time.
func runBinary(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = cleanEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("latprobe %s: still running after 60s", strings.Join(args, " "))
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// cleanEnv is the test's environment without LOWLAT_* settings, so that a
// developer's shell cannot change what the tests see.
func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "LOWLAT_") {
			env = append(env, e)
		}
	}
	return env
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string // must appear in the message
	}{
		{[]string{"--size", "10"}, "--size"},
		{[]string{"--size", "9000"}, "--size"},
		{[]string{"--sizes", "64,abc"}, "--sizes"},
		{[]string{"--sizes", "64,20"}, "--sizes"},
		{[]string{"--size", "64", "--sizes", "64,128"}, "--sizes"},
		{[]string{"--count", "5", "--duration", "1s"}, "--count"},
		{[]string{"--count", "0"}, "--count"},
		{[]string{"--count", "many"}, "--count"},
		{[]string{"--duration", "-1s"}, "--duration"},
		{[]string{"--warmup", "-3"}, "--warmup"},
		{[]string{"--timeout", "0s"}, "--timeout"},
		{[]string{"--proto", "sctp"}, "--proto"},
		{[]string{"--backend", "warp"}, "--backend"},
		{[]string{"--backend", "kernel", "--xdp-mode", "drv"}, "--xdp-mode"},
		{[]string{"--xdp-mode", "fast"}, "--xdp-mode"},
		{[]string{"--wait", "sometimes"}, "--wait"},
		{[]string{"--queue", "-7"}, "--queue"},
		{[]string{"--cpu", "4096"}, "--cpu"},
		{[]string{"--addr", "nowhere"}, "--addr"},
		{[]string{"--no-such-flag"}, "--no-such-flag"},
		{[]string{"run", "stray"}, "stray"},
		{[]string{"client"}, "--peer"},
		{[]string{"client", "--peer", "127.0.0.1"}, "--peer"},
		{[]string{"client", "--peer", "127.0.0.1:0"}, "--peer"},
		{[]string{"client", "--peer", "127.0.0.1:9", "--proto", "tcp", "--addr", "127.0.0.1:0"}, "--addr"},
		{[]string{"server", "--count", "3"}, "--count"},
		{[]string{"server", "--addr", "localhost"}, "--addr"},
		{[]string{"server", "--proto", "tcp", "--addr", "127.0.0.1:0", "--addr", "127.0.0.1:0"}, "--addr"},
		{[]string{"server", "--proto", "tcp", "--addr", "127.0.0.1:1", "--addr", "127.0.0.1:2"}, "--addr"},
		{[]string{"server", "--addr", "127.0.0.1:1", "--addr", "127.0.0.1:1"}, "--addr"},
		{[]string{"server", "--addr", "127.0.0.1:1", "--addr", "nowhere"}, "--addr"},
		{[]string{"client", "--peer", "127.0.0.1:9", "--peer", "127.0.0.1:10", "--proto", "tcp"}, "--peer"},
		{[]string{"client", "--peer", "127.0.0.1:9", "--peer", "127.0.0.1:9"}, "--peer"},
		{[]string{"client", "--peer", "127.0.0.1:9", "--peer", "127.0.0.1:10", "--mps", "100"}, "--mps"},
		{[]string{"client", "--peer", "127.0.0.1:9", "--peer", "127.0.0.1:10", "--hlog", "x.hlog"}, "--hlog"},
		{[]string{"client", "--peer", "127.0.0.1:9", "--peer", "127.0.0.1:10", "--addr", "127.0.0.1:5000"}, "--addr"},
		{[]string{"client", "--peer", "127.0.0.1:9", "--peer", "127.0.0.1:10", "--addr", "127.0.0.1:0", "--addr", "127.0.0.1:0", "--addr", "127.0.0.1:0"}, "--addr"},
		{[]string{"nosuchcommand"}, "nosuchcommand"},
		{[]string{"doctor", "--iface", "a/b"}, "--iface"},
		{[]string{"spec", "--cpuset", "2-"}, "--cpuset"},
		{[]string{"spec", "--engine", "kubernetes", "--hugepages", "1G"}, "--hugepages"},
		{[]string{"spec", "--hugepages", "3Mi"}, "--hugepages"},
		{[]string{"spec", "--backend", "warp"}, "warp"},
		{[]string{"suite", "--cpus", "0-"}, "--cpus"},
		{[]string{"suite", "--cpus", "two"}, "--cpus"},
		{[]string{"suite", "--engine", "docker"}, "--engine"},
	} {
		r := runBinary(t, tc.args...)
		msg := strings.TrimSuffix(r.stderr, "\n")
		if r.code != 2 || strings.Contains(msg, "\n") || !strings.Contains(msg, tc.flag) {
			t.Errorf("latprobe %s: exit %d, stderr %q; want exit 2 and one line naming %s",
				strings.Join(tc.args, " "), r.code, r.stderr, tc.flag)
		}
		if r.stdout != "" {
			t.Errorf("latprobe %s: wrote to stdout: %q", strings.Join(tc.args, " "), r.stdout)
		}
	}
}

func TestEnvErrorNamesVariable(t *testing.T) {
	cmd := exec.Command(binary, "--count", "10")
	cmd.Env = append(cleanEnv(), "LOWLAT_WAIT=sometimes")
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "LOWLAT_WAIT") {
		t.Fatalf("exit %v, output %q", err, out)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"run", "-h"}, {"client", "--help"}, {"server", "-h"}} {
		r := runBinary(t, args...)
		if r.code != 0 || r.stdout == "" {
			t.Errorf("latprobe %s: exit %d, stdout %q", strings.Join(args, " "), r.code, r.stdout)
		}
	}
	r := runBinary(t, "help")
	for _, want := range []string{"run", "server", "client", "LOWLAT_BACKEND"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

// report is latprobe's JSON line.
type report struct {
	Peer    string           `json:"peer"` // only with several --peer
	Tool    string           `json:"tool"`
	Backend string           `json:"backend"`
	Series  string           `json:"series"` // only with --mps
	Thin    []string         `json:"thin"`   // percentiles fewer than ten samples lie beyond
	Proto   string           `json:"proto"`
	Size    int              `json:"size"`
	Samples int64            `json:"samples"`
	Sent    uint64           `json:"sent"`
	Lost    uint64           `json:"lost"`
	RTT     map[string]int64 `json:"rtt_ns"`
}

func parseReports(t *testing.T, out string) []report {
	t.Helper()
	var rs []report
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		var r report
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("stdout line %q: %v", line, err)
		}
		if len(r.RTT) != 10 || r.RTT["p50"] <= 0 || r.RTT["min"] > r.RTT["max"] {
			t.Fatalf("rtt_ns %v", r.RTT)
		}
		rs = append(rs, r)
	}
	return rs
}

// TestRun runs the self-contained mode for each backend and protocol.
func TestRun(t *testing.T) {
	for _, be := range []string{"kernel", "busypoll"} {
		for _, proto := range []string{"udp", "tcp"} {
			t.Run(be+"/"+proto, func(t *testing.T) {
				r := runBinary(t, "run", "--backend", be, "--proto", proto, "--count", "300", "--warmup", "20", "--timeout", "5s", "--json")
				if r.code != 0 {
					t.Fatalf("exit %d: %s", r.code, r.stderr)
				}
				rs := parseReports(t, r.stdout)
				if len(rs) != 1 {
					t.Fatalf("%d reports", len(rs))
				}
				got := rs[0]
				if got.Tool != "latprobe" || got.Backend != be || got.Proto != proto || got.Size != 64 || got.Sent != 300 || got.Samples+int64(got.Lost) != 300 {
					t.Fatalf("report %+v", got)
				}
				if !strings.Contains(r.stderr, "backend "+be) {
					t.Fatalf("stderr does not describe the backend: %q", r.stderr)
				}
			})
		}
	}
}

// TestRunDefault is the README's command: no flags but a shorter run. It
// prints the table and says which backend auto chose and why it skipped
// the faster ones.
func TestRunDefault(t *testing.T) {
	r := runBinary(t, "--duration", "300ms", "--warmup", "10")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"p99.999", "round trip in µs", "client 127.0.0.1:", "server 127.0.0.1:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	names := bypass.Backends()
	if i := slices.Index(names, "busypoll"); i > 0 && !strings.Contains(r.stdout, "skipped "+names[0]) {
		t.Errorf("auto chose below %s without saying why:\n%s", names[0], r.stdout)
	}
}

// TestSizesAndHlog sweeps three sizes into one interval log and reads it
// back with HdrHistogram's log reader.
func TestSizesAndHlog(t *testing.T) {
	hlog := filepath.Join(t.TempDir(), "run.hlog")
	r := runBinary(t, "run", "--backend", "kernel", "--sizes", "24,1024,8972", "--count", "200", "--warmup", "10", "--hlog", hlog)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, size := range []string{" 24 ", " 1024 ", " 8972 "} {
		if !strings.Contains(r.stdout, size) {
			t.Errorf("table lacks size%s:\n%s", size, r.stdout)
		}
	}
	f, err := os.Open(hlog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd := hdrhistogram.NewHistogramLogReader(f)
	counts := map[string]int64{}
	for {
		h, err := rd.NextIntervalHistogram()
		if err != nil {
			t.Fatal(err)
		}
		if h == nil {
			break
		}
		counts[h.Tag()] += h.TotalCount()
	}
	for _, tag := range []string{"24B", "1024B", "8972B"} {
		if counts[tag] == 0 || counts[tag] > 200 {
			t.Errorf("hlog holds %d round trips for %s (want 1 to 200): %v", counts[tag], tag, counts)
		}
	}
}

var serverAddr = regexp.MustCompile(`latprobe server: (?:udp|tcp) (\d+\.\d+\.\d+\.\d+:\d+)`)

var serverCounters = regexp.MustCompile(`(?m)^latprobe server: \S+ counters:( [a-z-]+ \d+)+$|^latprobe server: \S+ counters: none$`)

// startServer starts latprobe server and returns its address; the server
// is stopped with SIGINT in cleanup, and must exit 0 with its summary.
func startServer(t *testing.T, wrap []string, args ...string) netip.AddrPort {
	t.Helper()
	return startServers(t, 1, wrap, args...)[0]
}

// startServers is startServer for a server that listens on n addresses
// (n --addr flags in args). Over UDP, its summary must hold a line of
// counters per address.
func startServers(t *testing.T, n int, wrap []string, args ...string) []netip.AddrPort {
	t.Helper()
	udp := !slices.Contains(args, "tcp")
	argv := append(append(wrap, binary, "server"), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = cleanEnv()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var rest []string
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() {
			for l := range lines {
				rest = append(rest, l)
			}
			done <- cmd.Wait()
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server exited with %v: %s", err, errb.String())
			}
			summary := strings.Join(rest, "\n")
			if !strings.Contains(summary, "echoed") {
				t.Errorf("server did not print its summary: %q", rest)
			}
			if got := len(serverCounters.FindAllString(summary, -1)); udp && got != n {
				t.Errorf("server printed %d lines of counters for %d addresses: %q", got, n, rest)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("server ignored SIGINT for 10s")
		}
	})
	timeout := time.After(20 * time.Second)
	var addrs []netip.AddrPort
	for len(addrs) < n {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("server exited early: %s", errb.String())
			}
			if m := serverAddr.FindStringSubmatch(l); m != nil {
				addrs = append(addrs, netip.MustParseAddrPort(m[1]))
			}
		case <-timeout:
			t.Fatal("server did not say where it listens within 20s")
		}
	}
	return addrs
}

// TestServerClient runs latprobe server and latprobe client as separate
// processes on loopback, for each backend and protocol.
func TestServerClient(t *testing.T) {
	for _, be := range []string{"kernel", "busypoll"} {
		for _, proto := range []string{"udp", "tcp"} {
			t.Run(be+"/"+proto, func(t *testing.T) {
				addr := startServer(t, nil, "--backend", be, "--proto", proto, "--addr", "127.0.0.1:0")
				r := runBinary(t, "client", "--peer", addr.String(), "--backend", be, "--proto", proto, "--count", "300", "--warmup", "20", "--timeout", "5s", "--json")
				if r.code != 0 {
					t.Fatalf("client exit %d: %s", r.code, r.stderr)
				}
				if got := parseReports(t, r.stdout)[0]; got.Sent != 300 || got.Backend != be || got.Proto != proto || got.Peer != "" {
					t.Fatalf("report %+v", got)
				}
			})
		}
	}
}

// TestHotServerClient: a hot server and a hot client (each thread alone
// on its CPU, the client passing through the scheduler between round
// trips) answer and measure as plain ones do, and the server exits
// cleanly, its threads given back.
func TestHotServerClient(t *testing.T) {
	cpus, err := usableCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpus) < 2 {
		t.Skipf("a hot thread needs another CPU for the rest of its process; this process may use %v", cpus)
	}
	c, s := strconv.Itoa(cpus[len(cpus)-1]), strconv.Itoa(cpus[len(cpus)-2])
	addr := startServer(t, nil, "--backend", "busypoll", "--addr", "127.0.0.1:0", "--cpu", s, "--hot")
	r := runBinary(t, "client", "--peer", addr.String(), "--backend", "busypoll", "--cpu", c, "--hot",
		"--duration", "50ms", "--warmup", "20", "--timeout", "5s", "--json")
	if r.code != 0 {
		t.Fatalf("client exit %d: %s", r.code, r.stderr)
	}
	if got := parseReports(t, r.stdout)[0]; got.Sent == 0 || got.Samples == 0 || got.Lost != 0 {
		t.Fatalf("report %+v", got)
	}
	if !regexp.MustCompile(`(?m)^hot thread on cpu ` + c + `: \d+ passes through the scheduler`).MatchString(r.stderr) {
		t.Fatalf("the client did not say its thread was hot:\n%s", r.stderr)
	}
}

// TestServerTwoAddrs: a server with two --addr answers a client on each,
// from one thread, and prints a line of counters per address at exit.
func TestServerTwoAddrs(t *testing.T) {
	for _, be := range []string{"kernel", "busypoll"} {
		t.Run(be, func(t *testing.T) {
			addrs := startServers(t, 2, nil, "--backend", be, "--addr", "127.0.0.1:0", "--addr", "127.0.0.1:0")
			for _, a := range addrs {
				r := runBinary(t, "client", "--peer", a.String(), "--backend", be, "--count", "300", "--warmup", "20", "--timeout", "5s", "--json")
				if r.code != 0 {
					t.Fatalf("client of %v: exit %d: %s", a, r.code, r.stderr)
				}
				if got := parseReports(t, r.stdout)[0]; got.Sent != 300 || got.Peer != "" {
					t.Fatalf("client of %v: report %+v", a, got)
				}
			}
		})
	}
}

// TestClientTwoPeers: one client measures two servers from one thread and
// reports each peer on its own, with the "peer" key in JSON and a peer
// column in the table.
func TestClientTwoPeers(t *testing.T) {
	for _, be := range []string{"kernel", "busypoll"} {
		t.Run(be, func(t *testing.T) {
			a := startServer(t, nil, "--backend", be, "--addr", "127.0.0.1:0")
			b := startServer(t, nil, "--backend", be, "--addr", "127.0.0.1:0")
			r := runBinary(t, "client", "--peer", a.String(), "--peer", b.String(), "--backend", be,
				"--sizes", "64,256", "--count", "300", "--warmup", "20", "--timeout", "5s", "--json")
			if r.code != 0 {
				t.Fatalf("client exit %d: %s", r.code, r.stderr)
			}
			rs := parseReports(t, r.stdout)
			var got []string
			for _, rep := range rs {
				if rep.Sent != 300 || rep.Backend != be || rep.Proto != "udp" {
					t.Errorf("report %+v", rep)
				}
				got = append(got, fmt.Sprintf("%s %d", rep.Peer, rep.Size))
			}
			want := []string{a.String() + " 64", b.String() + " 64", a.String() + " 256", b.String() + " 256"}
			if !slices.Equal(got, want) {
				t.Fatalf("reports for %q, want %q", got, want)
			}
			r = runBinary(t, "client", "--peer", a.String(), "--peer", b.String(), "--backend", be,
				"--count", "100", "--warmup", "10", "--timeout", "5s")
			if r.code != 0 {
				t.Fatalf("client exit %d: %s", r.code, r.stderr)
			}
			for _, want := range []string{"peer", a.String() + " udp 64 B: sent 100,", b.String() + " udp 64 B: sent 100,"} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("table lacks %q:\n%s", want, r.stdout)
				}
			}
		})
	}
}

// TestServerClientVeth runs the server in one network namespace and the
// client in another, across a veth pair.
func TestServerClientVeth(t *testing.T) {
	p := testnet.NewPair(t, testnet.Config{})
	for _, be := range []string{"kernel", "busypoll"} {
		for _, proto := range []string{"udp", "tcp"} {
			t.Run(be+"/"+proto, func(t *testing.T) {
				addr := startServer(t, []string{"ip", "netns", "exec", p.B.Name},
					"--backend", be, "--proto", proto, "--addr", netip.AddrPortFrom(p.B.Addr, 0).String())
				cmd := p.A.Command(binary, "client", "--peer", addr.String(), "--backend", be, "--proto", proto,
					"--count", "300", "--warmup", "20", "--timeout", "5s", "--json")
				cmd.Env = cleanEnv()
				var out, errb bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errb
				if err := runBounded(cmd, time.Minute); err != nil {
					t.Fatalf("client: %v: %s", err, errb.String())
				}
				if got := parseReports(t, out.String())[0]; got.Sent != 300 {
					t.Fatalf("report %+v", got)
				}
			})
		}
	}
}

func runBounded(cmd *exec.Cmd, limit time.Duration) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("still running after %v", limit)
	}
}

// TestServerBindFailure: a server that cannot bind names the address and
// the cause, and exits 1.
func TestServerBindFailure(t *testing.T) {
	busy, err := bypass.ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), bypass.Options{Backend: "kernel"})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	r := runBinary(t, "server", "--addr", busy.LocalAddr().String())
	msg := strings.TrimSpace(r.stderr)
	if r.code != 1 || !strings.Contains(msg, busy.LocalAddr().String()) || !strings.Contains(msg, "address already in use") || strings.Contains(msg, "\n") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestClientNoServer: a client whose server never answers gives up with an
// error instead of hanging.
func TestClientNoServer(t *testing.T) {
	silent, err := bypass.ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), bypass.Options{Backend: "kernel"})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	r := runBinary(t, "client", "--peer", silent.LocalAddr().String(), "--backend", "kernel", "--timeout", "20ms", "--warmup", "0", "--count", "100000")
	if r.code != 1 || !strings.Contains(r.stderr, "stopped answering") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestDoctor: the host check prints a JSON report, and exits 1 only when a
// check failed.
func TestDoctor(t *testing.T) {
	r := runBinary(t, "doctor", "--json")
	var rep struct {
		Checks []struct {
			Name, Status string
		} `json:"checks"`
		Summary string `json:"summary"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, r.stdout)
	}
	if len(rep.Checks) == 0 {
		t.Fatal("doctor ran no checks")
	}
	if want := map[bool]int{true: 1, false: 0}[rep.Summary == "fail"]; r.code != want {
		t.Fatalf("summary %s, exit %d: %s", rep.Summary, r.code, r.stderr)
	}
}
