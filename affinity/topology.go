package affinity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// sysCPU is the sysfs directory describing CPUs.
const sysCPU = "/sys/devices/system/cpu"

// readCPUListFile reads a file holding a CPU list, such as
// /sys/devices/system/cpu/online.
func readCPUListFile(path string) (CPUSet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return CPUSet{}, fmt.Errorf("read cpu list: %w", err)
	}
	s, err := ParseCPUList(string(b))
	if err != nil {
		return CPUSet{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// OnlineCPUs returns the CPUs the kernel has online
// (/sys/devices/system/cpu/online).
func OnlineCPUs() (CPUSet, error) {
	return readCPUListFile(filepath.Join(sysCPUDir, "online"))
}

// IsolatedCPUs returns the CPUs removed from the scheduler's load balancing
// with the isolcpus= boot parameter (/sys/devices/system/cpu/isolated). It
// is empty on a host booted without it.
func IsolatedCPUs() (CPUSet, error) {
	return readCPUListFile(filepath.Join(sysCPUDir, "isolated"))
}

// NohzFullCPUs returns the CPUs running without the periodic scheduler tick
// while they run one task (nohz_full= boot parameter,
// /sys/devices/system/cpu/nohz_full). A kernel built without
// CONFIG_NO_HZ_FULL has no such file: the set is then empty and err nil.
func NohzFullCPUs() (CPUSet, error) {
	s, err := readCPUListFile(filepath.Join(sysCPUDir, "nohz_full"))
	if errors.Is(err, fs.ErrNotExist) {
		return CPUSet{}, nil
	}
	// The file reads "(null)" when nohz_full= was not given.
	if err != nil && isNullList(filepath.Join(sysCPUDir, "nohz_full")) {
		return CPUSet{}, nil
	}
	return s, err
}

func isNullList(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && string(b) == "(null)\n"
}

// CPUInfo places one CPU in the machine.
type CPUInfo struct {
	CPU      int    `json:"cpu"`
	Core     int    `json:"core"`     // core_id, unique within a package
	Package  int    `json:"package"`  // physical_package_id (socket)
	Node     int    `json:"node"`     // NUMA node; 0 on a machine without NUMA
	Siblings CPUSet `json:"siblings"` // SMT threads of the same core, cpu included
}

// Topology describes cpu from /sys/devices/system/cpu/cpuN/topology and
// its nodeN link.
func Topology(cpu int) (CPUInfo, error) {
	dir := filepath.Join(sysCPUDir, "cpu"+strconv.Itoa(cpu))
	info := CPUInfo{CPU: cpu}
	num := func(name string) (int, error) {
		v, err := readValue(KindFile, filepath.Join(dir, "topology", name))
		if err != nil {
			return 0, fmt.Errorf("cpu %d topology: %w", cpu, err)
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("cpu %d topology %s %q: %w", cpu, name, v, err)
		}
		return n, nil
	}
	var err error
	if info.Core, err = num("core_id"); err != nil {
		return info, err
	}
	if info.Package, err = num("physical_package_id"); err != nil {
		return info, err
	}
	if info.Siblings, err = readCPUListFile(filepath.Join(dir, "topology", "thread_siblings_list")); err != nil {
		return info, fmt.Errorf("cpu %d topology: %w", cpu, err)
	}
	info.Node = NUMANode(cpu)
	return info, nil
}

// SMTSiblings returns the CPUs that share cpu's core (cpu included). A
// spinning thread slows its sibling, and the sibling's work slows it: keep
// the sibling of a latency-critical CPU idle.
func SMTSiblings(cpu int) (CPUSet, error) {
	s, err := readCPUListFile(filepath.Join(sysCPUDir, "cpu"+strconv.Itoa(cpu), "topology", "thread_siblings_list"))
	if err != nil {
		return CPUSet{}, fmt.Errorf("cpu %d siblings: %w", cpu, err)
	}
	return s, nil
}

// NUMANode returns the NUMA node of cpu from its nodeN link in sysfs, or 0
// when the kernel shows none (a kernel without NUMA).
func NUMANode(cpu int) int {
	m, _ := filepath.Glob(filepath.Join(sysCPUDir, "cpu"+strconv.Itoa(cpu), "node[0-9]*"))
	for _, p := range m {
		if n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(p), "node")); err == nil {
			return n
		}
	}
	return 0
}

// SMTActive reports whether simultaneous multithreading is on
// (/sys/devices/system/cpu/smt/active), and the control's state
// ("on", "off", "forceoff", "notsupported", "notimplemented").
func SMTActive() (active bool, control string, err error) {
	a, err := readValue(KindFile, filepath.Join(sysCPUDir, "smt", "active"))
	if err != nil {
		return false, "", fmt.Errorf("smt state: %w", err)
	}
	control, _ = readValue(KindFile, filepath.Join(sysCPUDir, "smt", "control"))
	return a == "1", control, nil
}
