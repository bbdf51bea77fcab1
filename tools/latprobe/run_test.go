//go:build linux

package main

import (
	"bytes"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lowlat/lowlat/internal/testnet"
)

// TestRunRefusesNICBackends: run's two ends share one host, where afxdp
// and efvi cannot carry traffic between them, so run refuses them and the
// options that only they use, in one line that names the flag (or the
// variable) and points at server and client.
func TestRunRefusesNICBackends(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  []string
		name string // must appear in the message
	}{
		{args: []string{"run", "--backend", "afxdp"}, name: "--backend afxdp"},
		{args: []string{"run", "--backend", "efvi"}, name: "--backend efvi"},
		{args: []string{"run", "--iface", "lo"}, name: "--iface"},
		{args: []string{"run", "--backend", "auto", "--iface", "lo"}, name: "--iface"},
		{args: []string{"--iface", "lo"}, name: "--iface"}, // run is the default command
		{args: []string{"run", "--queue", "0"}, name: "--queue"},
		{args: []string{"run", "--xdp-mode", "skb"}, name: "--xdp-mode"},
		{args: []string{"run"}, env: []string{"LOWLAT_BACKEND=afxdp"}, name: "LOWLAT_BACKEND=afxdp"},
		{args: []string{"run"}, env: []string{"LOWLAT_IFACE=lo"}, name: "LOWLAT_IFACE=lo"},
	} {
		cmd := exec.Command(binary, tc.args...)
		cmd.Env = append(cleanEnv(), tc.env...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := runBounded(cmd, time.Minute); err != nil && cmd.ProcessState == nil {
			t.Fatal(err)
		}
		msg := strings.TrimSuffix(errb.String(), "\n")
		what := strings.Join(append(tc.env, tc.args...), " ")
		if code := cmd.ProcessState.ExitCode(); code != 2 || strings.Contains(msg, "\n") ||
			!strings.Contains(msg, tc.name) || !strings.Contains(msg, "latprobe server and latprobe client") {
			t.Errorf("latprobe %s: exit %d, stderr %q; want exit 2 and one line naming %s and server and client",
				what, code, errb.String(), tc.name)
		}
		if out.Len() != 0 {
			t.Errorf("latprobe %s: wrote to stdout: %q", what, out.String())
		}
	}
}

// TestRunAutoOnEthernet runs run with auto on the address of a veth
// interface, where auto alone would give the server afxdp: the client
// could not attach a second XDP program, fell back to another backend,
// and every message went through loopback into the server's kernel
// socket. Both ends must get the same backend, none lost, and the output
// must say why afxdp was passed over.
func TestRunAutoOnEthernet(t *testing.T) {
	p := testnet.NewPair(t, testnet.Config{TxChecksumOff: true})
	cmd := p.B.Command(binary, "run", "--addr", netip.AddrPortFrom(p.B.Addr, 0).String(),
		"--count", "200", "--warmup", "10", "--timeout", "2s", "--json")
	cmd.Env = cleanEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := runBounded(cmd, time.Minute); err != nil {
		t.Fatalf("run: %v: %s%s", err, out.String(), errb.String())
	}
	rs := parseReports(t, out.String())
	if len(rs) != 1 || rs[0].Lost != 0 || rs[0].Samples != 200 || rs[0].Backend == "afxdp" {
		t.Fatalf("reports %+v\n%s", rs, errb.String())
	}
	info := errb.String()
	if !strings.Contains(info, "skipped afxdp: not used by run") {
		t.Errorf("run does not say why it passed over afxdp:\n%s", info)
	}
	for _, end := range []string{"client", "server"} {
		if !strings.Contains(info, end+" "+p.B.Addr.String()+":") || strings.Count(info, ": backend "+rs[0].Backend) != 2 {
			t.Errorf("the two ends do not share backend %s:\n%s", rs[0].Backend, info)
		}
	}
}
