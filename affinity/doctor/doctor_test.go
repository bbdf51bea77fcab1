package doctor

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lowlat/lowlat/affinity"
)

// fake is a host whose files are a map.
func fake(files map[string]string, f affinity.Features) host {
	return host{
		read: func(p string) (string, error) {
			v, ok := files[p]
			if !ok {
				return "", &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
			}
			return v, nil
		},
		glob: func(pattern string) []string {
			// Like filepath.Glob over the map's paths and their parent
			// directories.
			set := map[string]bool{}
			for p := range files {
				for q := p; strings.Count(q, "/") > 1; q = filepath.Dir(q) {
					if ok, _ := filepath.Match(pattern, q); ok {
						set[q] = true
					}
				}
			}
			var out []string
			for q := range set {
				out = append(out, q)
			}
			return out
		},
		features:   f,
		irqbalance: func() int { return 0 },
	}
}

func TestHostChecks(t *testing.T) {
	tuned := fake(map[string]string{
		sysCPU + "/cpuidle/current_driver":                                 "intel_idle",
		sysCPU + "/cpu0/cpuidle/state0/latency":                            "0",
		sysCPU + "/cpu0/cpuidle/state0/name":                               "POLL",
		sysCPU + "/cpu0/cpuidle/state1/latency":                            "2",
		sysCPU + "/cpu0/cpuidle/state1/name":                               "C1",
		sysCPU + "/cpu0/cpuidle/state2/latency":                            "133",
		sysCPU + "/cpu0/cpuidle/state2/name":                               "C6",
		sysCPU + "/cpu0/cpuidle/state2/disable":                            "1",
		sysCPU + "/cpu0/cpufreq/scaling_governor":                          "performance",
		sysCPU + "/isolated":                                               "2-3",
		sysCPU + "/nohz_full":                                              "2-3",
		affinity.THPEnabledPath:                                            "always madvise [never]",
		"/proc/sys/kernel/numa_balancing":                                  "1",
		"/sys/devices/system/node/node0":                                   "",
		"/proc/sys/net/core/busy_read":                                     "50",
		"/proc/sys/net/core/busy_poll":                                     "50",
		"/proc/sys/kernel/timer_migration":                                 "0",
		"/sys/devices/system/clocksource/clocksource0/current_clocksource": "tsc",
		sysCPU + "/smt/active":                                             "0",
		sysCPU + "/smt/control":                                            "off",
	}, affinity.Features{InvariantTSC: true})
	untuned := fake(map[string]string{
		sysCPU + "/cpu0/cpufreq/scaling_governor":                          "powersave",
		sysCPU + "/isolated":                                               "",
		sysCPU + "/nohz_full":                                              "(null)",
		affinity.THPEnabledPath:                                            "[always] madvise never",
		"/proc/sys/kernel/numa_balancing":                                  "1",
		"/sys/devices/system/node/node0":                                   "",
		"/sys/devices/system/node/node1":                                   "",
		"/proc/sys/net/core/busy_read":                                     "0",
		"/proc/sys/net/core/busy_poll":                                     "0",
		"/proc/sys/kernel/timer_migration":                                 "1",
		"/sys/devices/system/clocksource/clocksource0/current_clocksource": "hpet",
		sysCPU + "/smt/active":                                             "1",
		"/proc/stat":                                                       "cpu  1 2 3 4 5 6 7 99 0 0\ncpu0 ...",
	}, affinity.Features{Hypervisor: true, HypervisorVendor: "KVMKVMKVM"})
	untuned.irqbalance = func() int { return 1234 }

	want := map[string][2]Status{ // name: tuned, untuned
		"cpuidle":               {OK, Warn},
		"cpufreq governor":      {OK, Warn},
		"isolated CPUs":         {OK, Warn},
		"nohz_full":             {OK, Warn},
		"irqbalance":            {OK, Warn},
		"transparent hugepages": {OK, Warn},
		"numa balancing":        {OK, Warn},
		"busy poll":             {OK, Warn},
		"timer migration":       {OK, Warn},
		"clocksource":           {OK, Fail},
		"invariant tsc":         {OK, Warn},
		"smt":                   {OK, Warn},
		"virtualization":        {OK, Warn},
	}
	for i, h := range []host{tuned, untuned} {
		checks := h.hostChecks()
		seen := map[string]bool{}
		for _, c := range checks {
			seen[c.Name] = true
			w, ok := want[c.Name]
			if !ok {
				continue // cpu_dma_latency reads the real device
			}
			if c.Status != w[i] {
				t.Errorf("host %d: %s = %s (%s), want %s", i, c.Name, c.Status, c.Detail, w[i])
			}
			if c.Status != OK && c.Fix == "" && c.Name != "invariant tsc" {
				t.Errorf("host %d: %s is %s without a fix", i, c.Name, c.Status)
			}
		}
		for name := range want {
			if !seen[name] {
				t.Errorf("no %s check", name)
			}
		}
	}
	if c := untuned.checkVirtualization(); !strings.Contains(c.Detail, "99 ticks stolen") {
		t.Errorf("steal time: %s", c.Detail)
	}
}

func TestRun(t *testing.T) {
	r := Run(Options{})
	if len(r.Checks) < 14 || r.Kernel == "" || r.Online == "" {
		t.Fatalf("report %+v", r)
	}
	for _, c := range r.Checks {
		if c.Status != OK && c.Status != Warn && c.Status != Fail {
			t.Errorf("%s: status %q", c.Name, c.Status)
		}
		if c.Detail == "" {
			t.Errorf("%s: no detail", c.Name)
		}
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Checks {
		if !strings.Contains(text.String(), c.Name) {
			t.Errorf("text lacks %s", c.Name)
		}
	}
	t.Logf("\n%s", text.String())
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Checks) != len(r.Checks) || back.Summary != r.Worst() || back.Checks[0] != r.Checks[0] {
		t.Fatalf("JSON round trip: %+v", back)
	}
}

func TestRunIface(t *testing.T) {
	r := Run(Options{Iface: "lo"})
	for _, name := range []string{"iface irqs", "iface queues", "iface xdp"} {
		if _, ok := r.Check(name); !ok {
			t.Errorf("no %s check for lo", name)
		}
	}
	if c, _ := r.Check("iface irqs"); c.Status != OK {
		t.Errorf("lo irqs: %+v", c)
	}
	r = Run(Options{Iface: "nosuchif0"})
	if c, ok := r.Check("iface"); !ok || c.Status != Fail || r.Worst() != Fail {
		t.Errorf("missing interface: %+v", r.Checks[len(r.Checks)-1])
	}
	r = Run(Options{Iface: "../etc"})
	if c, ok := r.Check("iface"); !ok || c.Status != Fail {
		t.Errorf("bad name: %+v", c)
	}
	// Every interface of the host, judged against CPU 0 as the program's.
	ents, _ := os.ReadDir("/sys/class/net")
	for _, e := range ents {
		r := Run(Options{Iface: e.Name(), CPUs: affinity.NewCPUSet(0)})
		for _, c := range r.Checks[len(r.Checks)-3:] {
			t.Logf("%s: %s %s: %s", e.Name(), c.Status, c.Name, c.Detail)
		}
	}
}

func TestCPUIdleDeepest(t *testing.T) {
	h := fake(map[string]string{
		sysCPU + "/cpuidle/current_driver":      "intel_idle",
		sysCPU + "/cpu0/cpuidle/state0/latency": "0",
		sysCPU + "/cpu0/cpuidle/state0/name":    "POLL",
		sysCPU + "/cpu0/cpuidle/state1/latency": "133",
		sysCPU + "/cpu0/cpuidle/state1/name":    "C6",
	}, affinity.Features{})
	c := h.checkCPUIdle()
	if c.Status != Warn || !strings.Contains(c.Detail, "C6 exits in 133 us") {
		t.Fatalf("%+v", c)
	}
}
