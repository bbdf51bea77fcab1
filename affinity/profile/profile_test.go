package profile

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lowlat/lowlat/affinity"
)

func TestBuiltins(t *testing.T) {
	names := Names()
	for _, want := range []string{"latency", "latency-best", "safe", "throughput"} {
		if !slices.Contains(names, want) {
			t.Fatalf("built-in %q missing from %v", want, names)
		}
	}
	for _, n := range names {
		p, err := Load(n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if p.Name != n || p.Description == "" {
			t.Errorf("%s: name %q description %q", n, p.Name, p.Description)
		}
		roundTrip(t, p)
	}
	lat, _ := Load("latency")
	if !lat.Host.HoldCPULatency || lat.Host.CPULatencyUS != 0 || lat.Host.THP != "never" || !lat.Host.MoveIRQs {
		t.Errorf("latency host %+v", lat.Host)
	}
	want := []Sysctl{{"net.core.busy_read", "50", false}, {"net.core.busy_poll", "50", false}, {"kernel.numa_balancing", "0", true}}
	if !reflect.DeepEqual(lat.Sysctls, want) {
		t.Errorf("latency sysctls %+v", lat.Sysctls)
	}
	if !slices.Contains(lat.Env, EnvVar{"LOWLAT_WAIT", "spin"}) || !slices.Contains(lat.OnloadEnv, EnvVar{"EF_POLL_USEC", "100000"}) {
		t.Errorf("latency env %+v onload %+v", lat.Env, lat.OnloadEnv)
	}
	best, _ := Load("latency-best")
	if best.Program.Sched != affinity.SchedFIFO || best.Program.Priority < 1 || !best.Program.Mlockall {
		t.Errorf("latency-best program %+v", best.Program)
	}
	safe, _ := Load("safe")
	if safe.ChangesHost() || safe.Program != (Program{}) {
		t.Errorf("safe changes the host: %+v", safe)
	}
}

func roundTrip(t *testing.T, p Profile) {
	t.Helper()
	text := p.Format()
	q, err := Parse([]byte(text))
	if err != nil {
		t.Fatalf("Format output does not parse: %v\n%s", err, text)
	}
	q.Name = p.Name
	if !reflect.DeepEqual(normal(p), normal(q)) {
		t.Fatalf("round trip changed the profile:\n%+v\n%+v\n%s", p, q, text)
	}
	if q.Format() != text {
		t.Fatalf("Format not stable:\n%s\n---\n%s", text, q.Format())
	}
}

// normal makes nil and empty slices compare equal.
func normal(p Profile) Profile {
	for _, s := range []*[]EnvVar{&p.Env, &p.OnloadEnv} {
		if len(*s) == 0 {
			*s = nil
		}
	}
	if len(p.Sysctls) == 0 {
		p.Sysctls = nil
	}
	return p
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load("nosuch"); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "latency") {
		t.Errorf("unknown name: %v", err)
	}
	if _, err := Load("../etc"); err == nil {
		t.Error("path-like name accepted")
	}
	if _, err := Load("bad name"); !errors.Is(err, ErrUnknown) {
		t.Errorf("bad name: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.profile")); err == nil {
		t.Error("missing file accepted")
	}
	p := filepath.Join(t.TempDir(), "mine.profile")
	os.WriteFile(p, []byte("[env]\nFOO = bar # comment\nLOWLAT_WAIT = \"block\"\n"), 0o644)
	prof, err := Load(p)
	if err != nil || prof.Name != "mine" || !reflect.DeepEqual(prof.Env, []EnvVar{{"FOO", "bar"}, {"LOWLAT_WAIT", "block"}}) {
		t.Errorf("user file: %+v %v", prof, err)
	}
}

func TestParse(t *testing.T) {
	good := `
# comment
description = "a \"quoted\" value # not a comment"
[host]
cpu_dma_latency = 10   # trailing comment
[sysctl]
net.core.busy_read = 50
[program]
sched = rr
priority = 5
[env]
EMPTY = ""
URL = http://x/#frag
TAB = "a\tb"
`
	p, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if p.Description != `a "quoted" value # not a comment` || p.Host.CPULatencyUS != 10 || p.Program.Sched != affinity.SchedRR {
		t.Fatalf("%+v", p)
	}
	if !reflect.DeepEqual(p.Env, []EnvVar{{"EMPTY", ""}, {"URL", "http://x/#frag"}, {"TAB", "a\tb"}}) {
		t.Fatalf("env %+v", p.Env)
	}
	roundTrip(t, p)

	for _, bad := range []string{
		"name = x",                          // unknown top-level key
		"[nosuch]",                          // unknown section
		"[env]\n[env]",                      // section twice
		"[env]\nA = 1\nA = 2",               // key twice
		"[env]\nA =",                        // empty value
		"[env]\nA = # c",                    // empty value before a comment
		"[env]\n= 1",                        // empty key
		"[env]\nA B = 1",                    // bad key
		"[env]\n1A = 1",                     // bad env name
		"[env]\nA = \"x",                    // open quote
		"[env]\nA = \"x\" y",                // text after quote
		"[env]\nA = \"\\q\"",                // bad escape
		"[env]\nA = x\"y",                   // bare quote
		"[env]\nLOWLAT_NOSUCH = 1",          // unknown LOWLAT_ variable
		"[env]\nLOWLAT_WAIT = spinning",     // value bypass refuses
		"[host]\ncpu_dma_latency = -1",      // out of range
		"[host]\ncpu_dma_latency = 01",      // leading zero
		"[host]\ntransparent_hugepage = on", // bad mode
		"[host]\nmove_irqs = yes",           // bad bool
		"[host]\nsomething = 1",             // unknown key
		"[program]\nsched = fifo",           // no priority
		"[program]\npriority = 5",           // priority without fifo
		"[program]\nsched = idle",           // unknown policy
		"[sysctl]\nnet..core = 1",           // bad sysctl name
		"[sysctl]\nnet.core.x = 1\n[sysctl.optional]\nnet.core.x = 2", // twice
		"[sysctl]\nnet.core.x = \"\"",                                 // empty sysctl value
		"[sysctl]\n/proc/sys/x = 1",                                   // path instead of name
		"[env",                                                        // broken header
		"[env] x",                                                     // text after header
		"just words",                                                  // no '='
	} {
		if p, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted: %+v", bad, p)
		}
	}
	var se *SyntaxError
	if _, err := Parse([]byte("\n\n[bad]")); !errors.As(err, &se) || se.Line != 3 {
		t.Errorf("line number: %v", err)
	}
}

// FuzzParseProfile checks that Parse never panics and that every profile
// it accepts prints, with Format, to text that parses to the same profile.
func FuzzParseProfile(f *testing.F) {
	for _, n := range Names() {
		p, _ := Load(n)
		f.Add([]byte(p.Format()))
	}
	f.Add([]byte("[env]\nA = \"x\\\"y\"\nB = c # d\n"))
	f.Add([]byte("[host]\ncpu_dma_latency = 0\n[program]\nsched = fifo\npriority = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		roundTrip(t, p)
	})
}
