//go:build linux

package containerize

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// HostRealtime reads the real-time budget of this process's cpu cgroup,
// under which runc creates a container's (same as `cat
// /sys/fs/cgroup/cpu/$(awk -F: '$2~/(^|,)cpu(,|$)/{print $3}'
// /proc/self/cgroup)/cpu.rt_runtime_us`). It fails with ErrNoRealtime when
// the file does not exist (cgroup v2, or a kernel without
// CONFIG_RT_GROUP_SCHED) or the budget is zero: SCHED_FIFO is then EPERM
// in a container.
func HostRealtime() (RealtimeBudget, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return RealtimeBudget{}, fmt.Errorf("containerize: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		ctrls := strings.Split(f[1], ",")
		isCPU := false
		for _, c := range ctrls {
			isCPU = isCPU || c == "cpu"
		}
		if !isCPU {
			continue
		}
		for _, mount := range []string{f[1], "cpu", "cpu,cpuacct"} {
			dir := filepath.Join("/sys/fs/cgroup", mount, f[2])
			rt, err := readInt(filepath.Join(dir, "cpu.rt_runtime_us"))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return RealtimeBudget{}, err
			}
			period, err := readInt(filepath.Join(dir, "cpu.rt_period_us"))
			if err != nil {
				return RealtimeBudget{}, err
			}
			if rt <= 0 {
				return RealtimeBudget{}, fmt.Errorf("%w: %s/cpu.rt_runtime_us is %d", ErrNoRealtime, dir, rt)
			}
			return RealtimeBudget{Runtime: rt, Period: period}, nil
		}
	}
	return RealtimeBudget{}, fmt.Errorf("%w: no cpu.rt_runtime_us in this process's cgroup (cgroup v2, or no CONFIG_RT_GROUP_SCHED)", ErrNoRealtime)
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("containerize: %w", err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("containerize: %s: %w", path, err)
	}
	return v, nil
}
