//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/internal/cli"
	"github.com/lowlat/lowlat/latency"
)

// maxMessage bounds latprobe's one line about a bad command line.
const maxMessage = len("latprobe monitor: ") + cli.MaxLine + 16

// runEnv runs the built binary with extra environment, bounded in time,
// without logging its (possibly huge) arguments.
func runEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(cleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("latprobe %.80q: still running after 60s", args)
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// badEnv is a malformed value for every LOWLAT_* variable latprobe reads.
var badEnv = map[string]string{
	"LOWLAT_BACKEND": "warp", "LOWLAT_WAIT": "sometimes", "LOWLAT_READ_TIMEOUT": "-1s", "LOWLAT_BATCH": "-1",
	"LOWLAT_BUSY_POLL_US": "0", "LOWLAT_BUSY_POLL_BUDGET": "99999", "LOWLAT_IFACE": strings.Repeat("e", 100_000),
	"LOWLAT_QUEUE": "-2", "LOWLAT_XDP_MODE": "fast", "LOWLAT_XDP_BIND": "glue", "LOWLAT_XDP_FRAMES": "3",
	"LOWLAT_XDP_RING": "0", "LOWLAT_XDP_BUSY_POLL": "maybe", latency.ClockEnv: "tsc",
}

// TestHostileCommandLines feeds every latprobe command malformed flags and
// LOWLAT_* values: each is refused with status 2, before anything runs, in
// one bounded line that names the flag or variable and prints nothing that
// could drive a terminal; an empty variable is read as unset.
func TestHostileCommandLines(t *testing.T) {
	long := strings.Repeat("9", 100_000)
	type tc struct {
		args []string
		name string // the flag or word the message must hold
	}
	var cases []tc
	for _, c := range commands {
		cases = append(cases,
			tc{[]string{c.name, "-bogus"}, "--bogus"},
			tc{[]string{c.name, "--bogus=1"}, "--bogus"},
			tc{[]string{c.name, "--" + long}, "unknown flag"},
			tc{[]string{c.name, "--json=" + long}, "--json"}, // a bad value where it exists, else unknown
			tc{[]string{c.name, "stray\x1b[2J"}, "stray"},
		)
	}
	cases = append(cases,
		tc{[]string{"nosuch" + long}, "unknown command"},
		tc{[]string{"run", "--size", "x"}, "--size"},
		tc{[]string{"run", "--count", long}, "--count"},
		tc{[]string{"run", "--duration", "-1s"}, "--duration"},
		tc{[]string{"run", "--timeout", "soon"}, "--timeout"},
		tc{[]string{"run", "--sizes", "64," + long}, "--sizes"},
		tc{[]string{"run", "--addr", long}, "--addr"},
		tc{[]string{"run", "--cpu", "-5"}, "--cpu"},
		tc{[]string{"run", "--warmup"}, "--warmup"},
		tc{[]string{"server", "--duration", "-1s"}, "--duration"},
		tc{[]string{"server", "--max-conns", "0"}, "--max-conns"},
		tc{[]string{"server", "--max-conns", "99999"}, "--max-conns"},
		tc{[]string{"server", "--proto", "tcp", "--idle-timeout", "-1s"}, "--idle-timeout"},
		tc{[]string{"server", "--max-conns", "5"}, "--max-conns"},
		tc{[]string{"server", "--addr", long}, "--addr"},
		tc{[]string{"client", "--peer", "127.0.0.1:" + long}, "--peer"},
		tc{[]string{"client", "--peer", "127.0.0.1:9", "--timeout", "-1s"}, "--timeout"},
		tc{[]string{"client", "--peer", "127.0.0.1:9", "--mps", "-1"}, "--mps"},
		tc{[]string{"doctor", "--iface", "nosuch0"}, "--iface"},
		tc{[]string{"doctor", "--iface", long}, "--iface"},
		tc{[]string{"spec", "--image", "a b;rm -rf /"}, "--image"},
		tc{[]string{"spec", "--image", "x\n$(reboot)"}, "--image"},
		tc{[]string{"spec", "--image", long}, "--image"},
		tc{[]string{"spec", "--cpus", "0"}, "--cpus"},
		tc{[]string{"spec", "--engine", long}, "--engine"},
		tc{[]string{"suite", "--count", "0"}, "--count"},
		tc{[]string{"suite", "--engine", "docker"}, "--engine"},
		tc{[]string{"suite", "--cpus", long}, "--cpus"},
		tc{[]string{"client", "--peer", "127.0.0.1:9", "--hot"}, "--hot"},
		tc{[]string{"server", "--hot", "--cpu", "0", "--proto", "tcp"}, "--hot"},
		tc{[]string{"jitter", "--yield-every", "-1s"}, "--yield-every"},
		tc{[]string{"compare", "--count", "0"}, "--count"},
		tc{[]string{"compare", "--repeats", "0"}, "--repeats"},
		tc{[]string{"compare", "--proto", "sctp"}, "--proto"},
		tc{[]string{"compare", "--cpus", "9999,9998"}, "--cpus"},
		tc{[]string{"monitor", "--peer", "127.0.0.1:9", "--duration", "-1s"}, "--duration"},
		tc{[]string{"monitor", "--peer", "127.0.0.1:9", "--listen", "nowhere"}, "--listen"},
		tc{[]string{"monitor", "--peer", "127.0.0.1:9", "--listen", "no-such-host.invalid:9464"}, "--listen"},
		tc{[]string{"monitor", "--peer", "127.0.0.1:9", "--listen", ":" + long}, "--listen"},
		tc{[]string{"monitor", "--peer", "127.0.0.1:9", "--interval", "0s"}, "--interval"},
		tc{[]string{"monitor", "--peer", "127.0.0.1:9", "--resolve-every", "-1s"}, "--resolve-every"},
		tc{[]string{"monitor"}, "--peer"},
	)
	check := func(env []string, c tc) {
		t.Helper()
		r := runEnv(t, env, c.args...)
		line := strings.TrimSuffix(r.stderr, "\n")
		if r.code != 2 || strings.Contains(line, "\n") || !strings.Contains(line, c.name) || len(line) > maxMessage ||
			strings.ContainsRune(line, 0x1b) || r.stdout != "" {
			t.Errorf("latprobe %.80q %.60q: exit %d, stderr %d bytes %.300q, stdout %.100q; want exit 2 and one bounded line naming %s",
				c.args, env, r.code, len(r.stderr), r.stderr, r.stdout, c.name)
		}
	}
	for _, c := range cases {
		check(nil, c)
	}
	// Every malformed LOWLAT_* value, under every command.
	for _, v := range backend.EnvVars {
		if _, ok := badEnv[v.Name]; !ok {
			t.Errorf("no malformed value for %s", v.Name)
		}
	}
	for name, val := range badEnv {
		for _, c := range commands {
			args := []string{c.name}
			if c.name == "client" || c.name == "monitor" {
				args = append(args, "--peer", "127.0.0.1:9")
			}
			check([]string{name + "=" + val}, tc{args, name})
		}
	}
	// Empty or blank is unset, for every variable.
	for name := range badEnv {
		for _, empty := range []string{"", "  "} {
			if r := runEnv(t, []string{name + "=" + empty}, "spec"); r.code != 0 {
				t.Errorf("%s=%q: exit %d, stderr %q; want it read as unset", name, empty, r.code, r.stderr)
			}
		}
	}
}

// TestSpecQuotesImage: the image name is quoted in the shell lines spec
// prints.
func TestSpecQuotesImage(t *testing.T) {
	r := runBinary(t, "spec", "--image", "registry.example.com:5000/team/latprobe:1.0@sha256:abc")
	if r.code != 0 || !strings.Contains(r.stdout, "build -t 'registry.example.com:5000/team/latprobe:1.0@sha256:abc' -f Containerfile") {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

// FuzzCommandLine: whatever the arguments (NUL-separated here), every
// latprobe command reads and checks its command line without a panic and
// ends in status 0, 1 or 2, an error being one bounded line on stderr and
// nothing on stdout. Commands stop once their command line is checked
// (parseOnly), so nothing runs. Run with -fuzz to explore; the normal test
// run tries the seeds only.
func FuzzCommandLine(f *testing.F) {
	for _, args := range [][]string{
		{}, {"help"}, {"-h"}, {"run", "-h"}, {"nosuch"}, {"run", "--size", "x"}, {"run", "--duration", "-1s"},
		{"run", "--count", "5", "--duration", "1s"}, {"run", "--sizes", "64,,"}, {"run", "--addr", "0.0.0.0:0"},
		{"server", "--proto", "tcp", "--max-conns", "0"}, {"server", "--idle-timeout", "1s"}, {"server", "--addr", "127.0.0.1:0", "--addr", "127.0.0.1:0"},
		{"client"}, {"client", "--peer", "127.0.0.1:0"}, {"client", "--peer", "[::1]:9", "--proto", "tcp", "--addr", "x"},
		{"doctor", "--iface", "lo"}, {"doctor", "--iface", "../x"}, {"spec", "--image", "a b"}, {"spec", "--mesh"},
		{"spec", "--engine", "kubernetes", "--hugepages", "1G"}, {"suite", "--count", "-1"}, {"suite", "--plot", "x.gif"},
		{"compare", "--cpus", "1"}, {"compare", "--with", "iperf"}, {"monitor", "--peers-dns", "x"},
		{"monitor", "--peer", "127.0.0.1:9", "--listen", "::"}, {"monitor", "--peer", "127.0.0.1:9", "--hlog", "x", "--peers-dns", "a:1"},
		{"run", "--wire", "sockperf", "--size", "10"}, {"run", "--plot", "x.svg", "--mps", "-3"}, {"run", "--", "x"},
	} {
		f.Add(strings.Join(args, "\x00"))
	}
	ctx := parseOnly(context.Background())
	// Names in --peer are looked up: here they fail at once (after
	// /etc/hosts) instead of waiting on a DNS server for each.
	saved := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS in this test")
	}}
	f.Cleanup(func() { net.DefaultResolver = saved })
	f.Fuzz(func(t *testing.T, in string) {
		if len(in) > 1<<16 {
			return
		}
		var args []string
		if in != "" {
			args = strings.Split(in, "\x00")
		}
		if len(args) > 64 {
			return
		}
		var out, errb bytes.Buffer
		code := latprobe(ctx, args, &out, &errb)
		switch code {
		case 0:
		case 1, 2:
			line := strings.TrimSuffix(errb.String(), "\n")
			if strings.Contains(line, "\n") || !strings.HasPrefix(line, "latprobe") || len(line) > maxMessage || out.Len() != 0 {
				t.Fatalf("%q: exit %d, stderr %d bytes %.200q, stdout %d bytes", args, code, errb.Len(), errb.String(), out.Len())
			}
		default:
			t.Fatalf("%q: exit %d", args, code)
		}
	})
}
