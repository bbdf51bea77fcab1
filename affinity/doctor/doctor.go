package doctor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/lowlat/lowlat/affinity"
)

// Status is a check's verdict.
type Status string

// The verdicts, from good to bad.
const (
	OK   Status = "ok"   // nothing to do
	Warn Status = "warn" // costs latency; Fix says how to do better
	Fail Status = "fail" // latency work cannot go well until fixed
)

func (s Status) rank() int {
	switch s {
	case Warn:
		return 1
	case Fail:
		return 2
	}
	return 0
}

// Check is one finding.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix says what to do about a warn or fail, with the shell command.
	Fix string `json:"fix,omitempty"`
}

// Report is the result of Run. It marshals to JSON as it is.
type Report struct {
	Host    string  `json:"host"`
	Kernel  string  `json:"kernel"`
	Online  string  `json:"online_cpus"`
	Iface   string  `json:"iface,omitempty"`
	Checks  []Check `json:"checks"`
	Summary Status  `json:"summary"` // the worst status of all checks
}

// Options choose what Run checks beyond the host. The zero value checks the
// host only.
type Options struct {
	// Iface, when set, adds the checks of that network interface: IRQ
	// placement, queue count and XDP support.
	Iface string
	// CPUs are the CPUs the latency-critical program runs on, against
	// which IRQ placement is judged. Empty means the isolated CPUs.
	CPUs affinity.CPUSet
}

// Validate checks o without touching the system.
func (o Options) Validate() error {
	if o.Iface != "" && (len(o.Iface) > 15 || strings.ContainsAny(o.Iface, "/ \x00") || o.Iface == "." || o.Iface == "..") {
		return fmt.Errorf("interface %q: not an interface name", o.Iface)
	}
	return nil
}

// Worst returns the worst status in r.
func (r Report) Worst() Status {
	w := OK
	for _, c := range r.Checks {
		if c.Status.rank() > w.rank() {
			w = c.Status
		}
	}
	return w
}

// Check returns the check named name, and whether there is one.
func (r Report) Check(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// WriteText prints the report for a person: one line per check, the fix
// indented under each warn and fail.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "host %s, Linux %s, CPUs %s online\n", r.Host, r.Kernel, r.Online)
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Status, c.Name, c.Detail)
		if c.Fix != "" && c.Status != OK {
			fmt.Fprintf(tw, "\t\tfix: %s\n", c.Fix)
		}
	}
	fmt.Fprintf(tw, "summary: %s\n", r.Worst())
	return tw.Flush()
}

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	r.Summary = r.Worst()
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("doctor report: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// host is what the checks read; tests replace it.
type host struct {
	read       func(path string) (string, error)
	glob       func(pattern string) []string
	features   affinity.Features
	irqbalance func() int
}

func realHost() host {
	return host{
		read: func(p string) (string, error) {
			b, err := os.ReadFile(p)
			return strings.TrimSpace(string(b)), err
		},
		glob: func(p string) []string {
			m, _ := filepath.Glob(p)
			return m
		},
		features:   affinity.CPUFeatures(),
		irqbalance: affinity.IRQBalancePID,
	}
}

// Run performs every check. It never fails as a whole: a check that
// cannot read what it needs says so in its own result.
func Run(opts Options) Report {
	h := realHost()
	r := Report{Iface: opts.Iface}
	r.Host, _ = os.Hostname()
	r.Kernel, _ = h.read("/proc/sys/kernel/osrelease")
	online, err := affinity.OnlineCPUs()
	if err == nil {
		r.Online = online.String()
	}
	r.Checks = h.hostChecks()
	if opts.Iface != "" {
		if err := opts.Validate(); err != nil {
			r.Checks = append(r.Checks, Check{Name: "iface", Status: Fail, Detail: err.Error(), Fix: "give an interface from `ip -br link`"})
		} else {
			r.Checks = append(r.Checks, ifaceChecks(opts, h)...)
		}
	}
	r.Summary = r.Worst()
	return r
}

func (h host) hostChecks() []Check {
	return []Check{
		h.checkCPUIdle(),
		h.checkCPULatency(),
		h.checkGovernor(),
		h.checkIsolated(),
		h.checkNohzFull(),
		h.checkIRQBalance(),
		h.checkTHP(),
		h.checkNUMABalancing(),
		h.checkBusyPoll(),
		h.checkTimerMigration(),
		h.checkClocksource(),
		h.checkTSC(),
		h.checkSMT(),
		h.checkVirtualization(),
	}
}

const sysCPU = "/sys/devices/system/cpu"

func (h host) checkCPUIdle() Check {
	c := Check{Name: "cpuidle"}
	drv, err := h.read(sysCPU + "/cpuidle/current_driver")
	if errors.Is(err, fs.ErrNotExist) || drv == "none" || drv == "" {
		c.Status = Warn
		c.Detail = "no cpuidle driver: idle CPUs halt and the wake-up time is the platform's (a VM's hypervisor), beyond cpu_dma_latency's reach"
		c.Fix = "in a VM boot the guest with idle=poll (or load cpuidle-haltpoll); on bare metal use intel_idle or acpi_idle so that C-states can be bounded"
		return c
	}
	if err != nil {
		return unreadable(c, err)
	}
	// Exit latencies of cpu0's states: the deepest one bounds a wake-up.
	deepest, name := 0, ""
	for _, st := range h.glob(sysCPU + "/cpu0/cpuidle/state*") {
		lat, err := h.read(st + "/latency")
		if err != nil {
			continue
		}
		n, _ := strconv.Atoi(lat)
		dis, _ := h.read(st + "/disable")
		if n > deepest && dis != "1" {
			deepest = n
			name, _ = h.read(st + "/name")
		}
	}
	c.Detail = fmt.Sprintf("driver %s; deepest enabled state %s exits in %d us", drv, name, deepest)
	if deepest > 10 {
		c.Status = Warn
		c.Fix = "hold /dev/cpu_dma_latency at 0 while latency matters (onload-run --profile latency does), or disable deep states: echo 1 > " +
			sysCPU + "/cpuN/cpuidle/stateK/disable; or boot with intel_idle.max_cstate=1"
		return c
	}
	c.Status = OK
	return c
}

func (h host) checkCPULatency() Check {
	c := Check{Name: "cpu_dma_latency"}
	v, err := affinity.CPULatency()
	if err != nil {
		c.Status = Warn
		c.Detail = "cannot read the bound in force: " + err.Error()
		return c
	}
	if v >= 2_000_000_000 {
		c.Status = Warn
		c.Detail = "no process holds /dev/cpu_dma_latency: CPUs may enter any C-state"
		c.Fix = "run the program under onload-run --profile latency, which holds it at 0 (tuned's latency profiles do the same)"
		return c
	}
	c.Status = OK
	c.Detail = fmt.Sprintf("held at %d us by some process", v)
	return c
}

func (h host) checkGovernor() Check {
	c := Check{Name: "cpufreq governor"}
	files := h.glob(sysCPU + "/cpu[0-9]*/cpufreq/scaling_governor")
	if len(files) == 0 {
		c.Status = OK
		c.Detail = "no cpufreq control (a VM or fixed-frequency CPUs)"
		return c
	}
	govs := map[string]int{}
	for _, f := range files {
		if g, err := h.read(f); err == nil {
			govs[g]++
		}
	}
	c.Detail = describeCounts(govs)
	if len(govs) == 1 && govs["performance"] > 0 {
		c.Status = OK
		return c
	}
	c.Status = Warn
	c.Fix = "cpupower frequency-set -g performance (same as echo performance > " + sysCPU + "/cpuN/cpufreq/scaling_governor)"
	return c
}

func describeCounts(m map[string]int) string {
	var parts []string
	for k, n := range m {
		parts = append(parts, fmt.Sprintf("%s on %d CPU%s", k, n, plural(n)))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func (h host) cpuList(path string) (affinity.CPUSet, error) {
	v, err := h.read(path)
	if err != nil {
		return affinity.CPUSet{}, err
	}
	if v == "(null)" {
		return affinity.CPUSet{}, nil
	}
	return affinity.ParseCPUList(v)
}

func (h host) checkIsolated() Check {
	c := Check{Name: "isolated CPUs"}
	s, err := h.cpuList(sysCPU + "/isolated")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return unreadable(c, err)
	}
	if s.IsEmpty() {
		c.Status = Warn
		c.Detail = "none: the scheduler may put any task on the CPU a latency-critical thread spins on"
		c.Fix = "boot with isolcpus=managed_irq,domain,N-M (and nohz_full=N-M rcu_nocbs=N-M), then run the program with onload-run --cpus N-M"
		return c
	}
	c.Status = OK
	c.Detail = s.String()
	return c
}

func (h host) checkNohzFull() Check {
	c := Check{Name: "nohz_full"}
	s, err := h.cpuList(sysCPU + "/nohz_full")
	if errors.Is(err, fs.ErrNotExist) {
		c.Status = Warn
		c.Detail = "the kernel is built without CONFIG_NO_HZ_FULL: every CPU takes the scheduler tick"
		c.Fix = "use a kernel with CONFIG_NO_HZ_FULL=y and boot with nohz_full=N-M for the program's CPUs"
		return c
	}
	if err != nil {
		return unreadable(c, err)
	}
	if s.IsEmpty() {
		c.Status = Warn
		c.Detail = "none: the scheduler tick interrupts every CPU, a few hundred to a thousand times a second"
		c.Fix = "boot with nohz_full=N-M rcu_nocbs=N-M for the program's CPUs"
		return c
	}
	c.Status = OK
	c.Detail = s.String()
	return c
}

func (h host) checkIRQBalance() Check {
	c := Check{Name: "irqbalance"}
	if pid := h.irqbalance(); pid != 0 {
		c.Status = Warn
		c.Detail = fmt.Sprintf("running (pid %d): it rewrites IRQ affinity every few seconds and undoes manual placement", pid)
		c.Fix = "systemctl stop irqbalance, or keep it off the program's CPUs with IRQBALANCE_BANNED_CPULIST=N-M in /etc/default/irqbalance"
		return c
	}
	c.Status = OK
	c.Detail = "not running"
	return c
}

func (h host) checkTHP() Check {
	c := Check{Name: "transparent hugepages"}
	v, err := h.read(affinity.THPEnabledPath)
	if errors.Is(err, fs.ErrNotExist) {
		c.Status, c.Detail = OK, "not built into this kernel"
		return c
	}
	if err != nil {
		return unreadable(c, err)
	}
	mode := selected(v)
	c.Detail = mode
	if mode == "always" {
		c.Status = Warn
		c.Detail = "always: page faults may stop to compact memory, and khugepaged scans the program's memory"
		c.Fix = "echo never > " + affinity.THPEnabledPath + " (or madvise; onload-run --profile latency sets never)"
		return c
	}
	c.Status = OK
	return c
}

func selected(v string) string {
	i, j := strings.IndexByte(v, '['), strings.IndexByte(v, ']')
	if i >= 0 && j > i {
		return v[i+1 : j]
	}
	return v
}

func (h host) checkNUMABalancing() Check {
	c := Check{Name: "numa balancing"}
	v, err := h.read("/proc/sys/kernel/numa_balancing")
	if errors.Is(err, fs.ErrNotExist) {
		c.Status, c.Detail = OK, "not built into this kernel"
		return c
	}
	if err != nil {
		return unreadable(c, err)
	}
	nodes := len(h.glob("/sys/devices/system/node/node[0-9]*"))
	if v == "0" {
		c.Status, c.Detail = OK, "off"
		return c
	}
	if nodes <= 1 {
		c.Status = OK
		c.Detail = "kernel.numa_balancing=" + v + ", but one NUMA node: nothing to balance"
		return c
	}
	c.Status = Warn
	c.Detail = fmt.Sprintf("kernel.numa_balancing=%s on %d nodes: it unmaps pages to sample accesses, causing page faults on hot paths", v, nodes)
	c.Fix = "sysctl -w kernel.numa_balancing=0 (echo 0 > /proc/sys/kernel/numa_balancing), and bind the program to its NIC's node"
	return c
}

func (h host) checkBusyPoll() Check {
	c := Check{Name: "busy poll"}
	rd, err1 := h.read("/proc/sys/net/core/busy_read")
	pl, err2 := h.read("/proc/sys/net/core/busy_poll")
	if err := errors.Join(err1, err2); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			c.Status = Warn
			c.Detail = "the kernel is built without CONFIG_NET_RX_BUSY_POLL"
			return c
		}
		return unreadable(c, err)
	}
	c.Detail = fmt.Sprintf("net.core.busy_read=%s net.core.busy_poll=%s", rd, pl)
	if rd == "0" || pl == "0" {
		c.Status = Warn
		c.Detail += ": a blocking read or poll sleeps at once unless its socket sets SO_BUSY_POLL (lowlat's busypoll backend does)"
		c.Fix = "sysctl -w net.core.busy_read=50 net.core.busy_poll=50 (onload-run --profile latency sets both while the program runs)"
		return c
	}
	c.Status = OK
	return c
}

func (h host) checkTimerMigration() Check {
	c := Check{Name: "timer migration"}
	v, err := h.read("/proc/sys/kernel/timer_migration")
	if errors.Is(err, fs.ErrNotExist) {
		c.Status, c.Detail = OK, "no control in this kernel"
		return c
	}
	if err != nil {
		return unreadable(c, err)
	}
	if v == "0" {
		c.Status, c.Detail = OK, "off"
		return c
	}
	c.Status = Warn
	c.Detail = "kernel.timer_migration=" + v + ": timers of idle CPUs may fire on a busy (spinning) CPU"
	c.Fix = "sysctl -w kernel.timer_migration=0"
	return c
}

func (h host) checkClocksource() Check {
	c := Check{Name: "clocksource"}
	v, err := h.read("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	if err != nil {
		return unreadable(c, err)
	}
	c.Detail = v
	switch v {
	case "tsc", "arch_sys_counter":
		c.Status = OK
	case "kvm-clock", "hyperv_clocksource_tsc_page", "xen":
		c.Status = Warn
		c.Detail = v + ": clock_gettime stays in the vDSO, but every read goes through the hypervisor's scaling"
		c.Fix = "where the TSC is stable, boot with clocksource=tsc tsc=reliable"
	default:
		c.Status = Fail
		c.Detail = v + ": clock_gettime becomes a system call or a slow device read, microseconds per timestamp"
		c.Fix = "echo tsc > /sys/devices/system/clocksource/clocksource0/current_clocksource (see available_clocksource)"
	}
	return c
}

func (h host) checkTSC() Check {
	c := Check{Name: "invariant tsc"}
	f := h.features
	if f.InvariantTSC {
		c.Status = OK
		c.Detail = "constant and non-stop: rdtsc counts real time in every P- and C-state"
		return c
	}
	c.Status = Warn
	c.Detail = "the CPU does not report an invariant TSC (constant_tsc and nonstop_tsc): rdtsc-based clocks drift with frequency and sleep"
	c.Fix = "use clock_gettime(CLOCK_MONOTONIC) for timing, not raw rdtsc"
	return c
}

func (h host) checkSMT() Check {
	c := Check{Name: "smt"}
	active, err := h.read(sysCPU + "/smt/active")
	control, _ := h.read(sysCPU + "/smt/control")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return unreadable(c, err)
	}
	if active != "1" {
		c.Status = OK
		c.Detail = "off"
		if control != "" {
			c.Detail += " (" + control + ")"
		}
		return c
	}
	c.Status = Warn
	c.Detail = "on: two threads share each core's execution units and caches"
	c.Fix = "keep the SMT sibling of each latency CPU idle (see " + sysCPU + "/cpuN/topology/thread_siblings_list), or echo off > " + sysCPU + "/smt/control"
	return c
}

func (h host) checkVirtualization() Check {
	c := Check{Name: "virtualization"}
	f := h.features
	if !f.Hypervisor {
		c.Status, c.Detail = OK, "bare metal"
		return c
	}
	vendor, ok := hypervisors[f.HypervisorVendor]
	if !ok {
		vendor = "a hypervisor"
		if f.HypervisorVendor != "" {
			vendor += " (" + f.HypervisorVendor + ")"
		}
	}
	c.Status = Warn
	c.Detail = "runs under " + vendor + ": the host can preempt a vCPU for milliseconds (steal time), whatever the guest does"
	if st := h.stealTicks(); st >= 0 {
		c.Detail += fmt.Sprintf("; %d ticks stolen since boot", st)
	}
	c.Fix = "pin the vCPUs to dedicated host CPUs, with the host's own isolation; measure with cyclictest"
	return c
}

// hypervisors names the vendor strings of CPUID leaf 0x40000000.
var hypervisors = map[string]string{
	"KVMKVMKVM": "KVM", "Microsoft Hv": "Hyper-V", "VMwareVMware": "VMware",
	"XenVMMXenVMM": "Xen", "TCGTCGTCGTCG": "QEMU (TCG)", "ACRNACRNACRN": "ACRN",
	"bhyve bhyve ": "bhyve", " lrpepyh  vr": "Parallels", "VBoxVBoxVBox": "VirtualBox",
}

// stealTicks is the steal column of /proc/stat's cpu line, or -1.
func (h host) stealTicks() int64 {
	v, err := h.read("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(v, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return -1
	}
	n, err := strconv.ParseInt(f[8], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

func unreadable(c Check, err error) Check {
	c.Status = Warn
	c.Detail = "cannot read: " + err.Error()
	return c
}
