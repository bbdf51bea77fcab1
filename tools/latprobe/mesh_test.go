//go:build linux

package main

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lowlat/lowlat/latency"
)

func TestLookupPeers(t *testing.T) {
	lookup := func(ctx context.Context, network, host string) ([]netip.Addr, error) {
		if host != "latprobe-mesh.default.svc" {
			return nil, errors.New("no such host")
		}
		return []netip.Addr{
			netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("::ffff:10.0.0.2"), netip.MustParseAddr("10.0.0.2"),
			netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1"),
		}, nil
	}
	self := map[netip.Addr]bool{netip.MustParseAddr("10.0.0.3"): true}
	got, err := lookupPeers(context.Background(), lookup, "latprobe-mesh.default.svc", 7471, self)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{
		netip.MustParseAddrPort("10.0.0.1:7471"), netip.MustParseAddrPort("10.0.0.2:7471"), netip.MustParseAddrPort("[fd00::1]:7471"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("peers %v, want %v (sorted, unmapped, once each, without self)", got, want)
	}
	if _, err := lookupPeers(context.Background(), lookup, "other", 7471, nil); err == nil {
		t.Error("a failed lookup gave no error")
	}
}

// gatheredPeers lists the peer labels of the series in reg, sorted.
func gatheredPeers(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var peers []string
	for _, mf := range mfs {
		if mf.GetName() != "latprobe_sent_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "peer" {
					peers = append(peers, l.GetValue())
				}
			}
		}
	}
	slices.Sort(peers)
	return peers
}

// TestMeshWatch: as the looked-up peers change, monitors start and stop
// and the series of a peer that left are removed; a failed lookup keeps
// the peers there were.
func TestMeshWatch(t *testing.T) {
	w, err := latency.WireByName("lowlat")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ms := newMesh(reg, monitor{
		wire: w, size: latency.DefaultSize, timeout: 20 * time.Millisecond,
		interval: 10 * time.Millisecond, every: time.Second, stderr: io.Discard,
	})
	// Nothing listens on these ports: the probes are lost, which is fine.
	a, b, c := netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("127.0.0.2:9"), netip.MustParseAddrPort("127.0.0.3:9")
	steps := []struct {
		peers []netip.AddrPort
		err   error
		want  []string
	}{
		{[]netip.AddrPort{a, b}, nil, []string{"127.0.0.1:9", "127.0.0.2:9"}},
		{nil, errors.New("SERVFAIL"), []string{"127.0.0.1:9", "127.0.0.2:9"}},
		{[]netip.AddrPort{b, c}, nil, []string{"127.0.0.2:9", "127.0.0.3:9"}},
		{nil, nil, nil},
	}
	var mu sync.Mutex
	step := 0
	looked, checked := make(chan int), make(chan struct{})
	lookup := func(ctx context.Context) ([]netip.AddrPort, error) {
		mu.Lock()
		defer mu.Unlock()
		if step > 0 {
			select {
			case looked <- step - 1: // the previous step has been applied
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			<-checked // and the test has looked at it
		}
		if step == len(steps) {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		s := steps[step]
		step++
		return s.peers, s.err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ms.watch(ctx, lookup, time.Millisecond) }()
	for range steps {
		i := <-looked
		if got := gatheredPeers(t, reg); !slices.Equal(got, steps[i].want) {
			t.Errorf("step %d: peers with series %v, want %v", i, got, steps[i].want)
		}
		checked <- struct{}{}
	}
	cancel()
	<-done
	ms.stopAll()
	if got := gatheredPeers(t, reg); len(got) != 0 {
		t.Errorf("after stopAll: series of %v remain", got)
	}
}

// rttCounts reads latprobe_rtt_seconds_count for each peer from a scrape.
var rttCount = regexp.MustCompile(`(?m)^latprobe_rtt_seconds_count\{peer="([^"]+)"\} (\S+)$`)

func rttCounts(text string) map[string]float64 {
	v := map[string]float64{}
	for _, m := range rttCount.FindAllStringSubmatch(text, -1) {
		v[m[1]], _ = strconv.ParseFloat(m[2], 64)
	}
	return v
}

// runMonitorUntil starts the monitor with args against servers on the
// given loopback ports and scrapes until every peer in want has replies.
func runMonitorUntil(t *testing.T, ports []int, args []string, want []string) string {
	t.Helper()
	for _, p := range ports {
		srv := exec.Command(binary, "server", "--backend", "kernel", "--addr", "127.0.0.1:"+strconv.Itoa(p))
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Process.Signal(syscall.SIGINT); srv.Wait() })
	}
	args = append([]string{"monitor", "--mps", "200", "--interval", "200ms", "--timeout", "50ms", "--listen", "127.0.0.1:0", "--duration", "50s"}, args...)
	lines, stop, err := startLogged(exec.Command(binary, args...))
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
	deadline := time.Now().Add(15 * time.Second)
	for {
		text, _ := scrape(t, "http://"+m[1]+"/metrics")
		v := rttCounts(text)
		ok := true
		for _, p := range want {
			ok = ok && v[p] > 0
		}
		if ok {
			return text
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replies from every one of %v within 15 s:\n%s", want, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMonitorPeers: repeated --peer probes every peer, each with its own
// series; --self drops a peer.
func TestMonitorPeers(t *testing.T) {
	p1, err := freePort("udp")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := freePort("udp")
	if err != nil {
		t.Fatal(err)
	}
	a, b := "127.0.0.1:"+strconv.Itoa(p1), "127.0.0.1:"+strconv.Itoa(p2)
	text := runMonitorUntil(t, []int{p1, p2}, []string{"--peer", a, "--peer", b, "--peer", "127.0.0.9:9", "--self", "127.0.0.9"}, []string{a, b})
	if _, ok := rttCounts(text)["127.0.0.9:9"]; ok {
		t.Errorf("--self 127.0.0.9 was probed:\n%s", text)
	}
}

// TestMonitorPeersDNS: --peers-dns probes what a name resolves to
// (localhost here), skipping --self.
func TestMonitorPeersDNS(t *testing.T) {
	p, err := freePort("udp")
	if err != nil {
		t.Fatal(err)
	}
	peer := "127.0.0.1:" + strconv.Itoa(p)
	text := runMonitorUntil(t, []int{p}, []string{"--peers-dns", "localhost:" + strconv.Itoa(p), "--resolve-every", "200ms", "--self", "::1"}, []string{peer})
	for k := range rttCounts(text) {
		if k != peer {
			t.Errorf("probed %s, want only %s", k, peer)
		}
	}
}

func TestMonitorPeerFlags(t *testing.T) {
	for _, args := range [][]string{
		{"monitor"},
		{"monitor", "--peer", "127.0.0.1:1", "--peers-dns", "localhost:1"},
		{"monitor", "--peers-dns", "localhost"},
		{"monitor", "--peer", "127.0.0.1:1", "--peer", "127.0.0.1:2", "--hlog", "x.hlog"},
		{"monitor", "--peer", "127.0.0.1:1", "--self", "node"},
	} {
		if r := runBinary(t, args...); r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage): %s", args, r.code, r.stderr)
		}
	}
}
