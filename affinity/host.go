package affinity

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
)

// SysctlPath turns a sysctl name ("net.core.busy_read") into its file
// (/proc/sys/net/core/busy_read). A name that already is a path under
// /proc/sys is returned as it is.
func SysctlPath(name string) (string, error) {
	if strings.HasPrefix(name, "/proc/sys/") {
		if filepath.Clean(name) != name || strings.Contains(name, "..") {
			return "", fmt.Errorf("sysctl %q: not a clean path", name)
		}
		return name, nil
	}
	if name == "" || strings.Contains(name, "/") || strings.Contains(name, "..") ||
		strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") {
		return "", fmt.Errorf("sysctl %q: want a dotted name such as net.core.busy_read", name)
	}
	return "/proc/sys/" + strings.ReplaceAll(name, ".", "/"), nil
}

// Sysctl reads a sysctl by its dotted name.
func Sysctl(name string) (string, error) {
	p, err := SysctlPath(name)
	if err != nil {
		return "", err
	}
	return readValue(KindSysctl, p)
}

// SetSysctl records and makes a sysctl change; same as
// `sysctl -w name=value`, or `echo value > /proc/sys/...`.
func (j *Journal) SetSysctl(name, value, what string) (Step, error) {
	p, err := SysctlPath(name)
	if err != nil {
		return Step{}, err
	}
	return j.Apply(Step{Kind: KindSysctl, Path: p, New: value, What: what})
}

// THPEnabledPath is the transparent hugepage mode switch.
const THPEnabledPath = "/sys/kernel/mm/transparent_hugepage/enabled"

// THPMode returns the selected transparent hugepage mode: "always",
// "madvise" or "never".
func THPMode() (string, error) { return readValue(KindTHP, THPEnabledPath) }

// SetTHPMode records and sets the transparent hugepage mode; same as
// `echo never > /sys/kernel/mm/transparent_hugepage/enabled`.
func (j *Journal) SetTHPMode(mode, what string) (Step, error) {
	switch mode {
	case "always", "madvise", "never":
	default:
		return Step{}, fmt.Errorf("transparent hugepage mode %q: want always, madvise or never", mode)
	}
	return j.Apply(Step{Kind: KindTHP, Path: THPEnabledPath, New: mode, What: what})
}

// IRQAffinityPath is the file holding irq's allowed CPUs.
func IRQAffinityPath(irq int) string {
	return "/proc/irq/" + strconv.Itoa(irq) + "/smp_affinity_list"
}

// IRQAffinity returns the CPUs irq may be delivered to.
func IRQAffinity(irq int) (CPUSet, error) {
	v, err := readValue(KindIRQ, IRQAffinityPath(irq))
	if err != nil {
		return CPUSet{}, err
	}
	s, err := ParseCPUList(v)
	if err != nil {
		return CPUSet{}, fmt.Errorf("irq %d affinity: %w", irq, err)
	}
	return s, nil
}

// SetIRQAffinity records and moves irq to cpus; same as
// `echo LIST > /proc/irq/N/smp_affinity_list`. Some interrupts (per-CPU
// timers, managed NVMe queues) refuse with EIO: the error says so.
func (j *Journal) SetIRQAffinity(irq int, cpus CPUSet, what string) (Step, error) {
	if cpus.IsEmpty() {
		return Step{}, fmt.Errorf("irq %d affinity: empty cpu set", irq)
	}
	return j.Apply(Step{Kind: KindIRQ, Path: IRQAffinityPath(irq), New: cpus.String(), What: what})
}

// DisableIdleStates disables, on each CPU of cpus, every idle state whose
// exit latency exceeds maxLatencyUS, through
// /sys/devices/system/cpu/cpuN/cpuidle/stateK/disable (same as `echo 1 >`
// that file). States already disabled are left alone. With no cpuidle
// driver there are no such switches and the error wraps ErrNotSupported.
func (j *Journal) DisableIdleStates(cpus CPUSet, maxLatencyUS int, what string) ([]Step, error) {
	var steps []Step
	for _, cpu := range cpus.CPUs() {
		states, err := IdleStates(cpu)
		if err != nil {
			return steps, err
		}
		for _, st := range states {
			if st.LatencyUS <= maxLatencyUS || st.Disabled {
				continue
			}
			s, err := j.Apply(Step{Kind: KindCPUIdle, Path: st.disablePath, New: "1", What: what})
			if err != nil {
				return steps, err
			}
			steps = append(steps, s)
		}
	}
	return steps, nil
}

// IdleState is one C-state of one CPU as cpuidle describes it.
type IdleState struct {
	CPU       int    `json:"cpu"`
	Index     int    `json:"index"`
	Name      string `json:"name"`
	LatencyUS int    `json:"latency_us"` // exit latency
	Disabled  bool   `json:"disabled"`

	disablePath string
}

// DisablePath is the state's disable switch
// (/sys/devices/system/cpu/cpuN/cpuidle/stateK/disable).
func (s IdleState) DisablePath() string { return s.disablePath }

// sysCPUDir is sysCPU; tests point it at a fake tree.
var sysCPUDir = sysCPU

// IdleStates lists cpu's idle states. Without a cpuidle driver (as in many
// VMs) the error wraps ErrNotSupported.
func IdleStates(cpu int) ([]IdleState, error) {
	dir := filepath.Join(sysCPUDir, "cpu"+strconv.Itoa(cpu), "cpuidle")
	matches, _ := filepath.Glob(filepath.Join(dir, "state[0-9]*"))
	if len(matches) == 0 {
		return nil, fmt.Errorf("cpu %d idle states: no %s (no cpuidle driver): %w", cpu, dir, ErrNotSupported)
	}
	var out []IdleState
	for _, m := range matches {
		idx, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(m), "state"))
		if err != nil {
			continue
		}
		st := IdleState{CPU: cpu, Index: idx, disablePath: filepath.Join(m, "disable")}
		st.Name, _ = readValue(KindFile, filepath.Join(m, "name"))
		lat, err := readValue(KindFile, filepath.Join(m, "latency"))
		if err != nil {
			return nil, fmt.Errorf("cpu %d idle state %d: %w", cpu, idx, err)
		}
		if st.LatencyUS, err = strconv.Atoi(lat); err != nil {
			return nil, fmt.Errorf("cpu %d idle state %d latency %q: %w", cpu, idx, lat, err)
		}
		d, err := readValue(KindFile, st.disablePath)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("cpu %d idle state %d: %w", cpu, idx, err)
		}
		st.Disabled = d == "1"
		out = append(out, st)
	}
	// Glob sorts by name, so state10 precedes state2: order by index.
	for i := 1; i < len(out); i++ {
		for k := i; k > 0 && out[k].Index < out[k-1].Index; k-- {
			out[k], out[k-1] = out[k-1], out[k]
		}
	}
	return out, nil
}

// CPUIdleDriver returns the active cpuidle driver's name, "none" when there
// is none.
func CPUIdleDriver() (string, error) {
	v, err := readValue(KindFile, filepath.Join(sysCPUDir, "cpuidle", "current_driver"))
	if errors.Is(err, fs.ErrNotExist) {
		return "none", nil
	}
	return v, err
}
