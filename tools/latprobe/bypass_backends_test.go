//go:build linux

package main

import (
	"bytes"
	"net/netip"
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
