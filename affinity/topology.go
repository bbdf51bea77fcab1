package affinity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
	return readCPUListFile(filepath.Join(sysCPU, "online"))
}

// IsolatedCPUs returns the CPUs removed from the scheduler's load balancing
// with the isolcpus= boot parameter (/sys/devices/system/cpu/isolated). It
// is empty on a host booted without it.
func IsolatedCPUs() (CPUSet, error) {
	return readCPUListFile(filepath.Join(sysCPU, "isolated"))
}

// NohzFullCPUs returns the CPUs running without the periodic scheduler tick
// while they run one task (nohz_full= boot parameter,
// /sys/devices/system/cpu/nohz_full). A kernel built without
// CONFIG_NO_HZ_FULL has no such file: the set is then empty and err nil.
func NohzFullCPUs() (CPUSet, error) {
	s, err := readCPUListFile(filepath.Join(sysCPU, "nohz_full"))
	if errors.Is(err, fs.ErrNotExist) {
		return CPUSet{}, nil
	}
	// The file reads "(null)" when nohz_full= was not given.
	if err != nil && isNullList(filepath.Join(sysCPU, "nohz_full")) {
		return CPUSet{}, nil
	}
	return s, err
}

func isNullList(path string) bool {
	b, err := os.ReadFile(path)
	return err == nil && string(b) == "(null)\n"
}
