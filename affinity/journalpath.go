package affinity

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
)

// The only files a journal read from disk may name, per step kind: Restore
// runs as root and writes what the journal says, so a journal must not be
// able to name any other file.
var (
	irqPathRE     = regexp.MustCompile(`^/proc/irq/[0-9]+/smp_affinity_list$`)
	cpuidlePathRE = regexp.MustCompile(`^/sys/devices/system/cpu/cpu[0-9]+/cpuidle/state[0-9]+/disable$`)
)

// checkStepPath says whether a journal step's path has the shape its kind
// allows: a clean path under /proc/sys for a sysctl,
// /proc/irq/N/smp_affinity_list, /sys/devices/system/cpu/cpuN/cpuidle/
// stateK/disable, or THPEnabledPath. KindFile steps are never accepted from
// a journal on disk. Tests replace it to restore fake knobs.
var checkStepPath = func(kind, path string) error {
	ok := false
	clean := path != "" && filepath.Clean(path) == path && !strings.Contains(path, "..")
	switch kind {
	case KindSysctl:
		ok = clean && strings.HasPrefix(path, "/proc/sys/") && len(path) > len("/proc/sys/")
	case KindIRQ:
		ok = irqPathRE.MatchString(path)
	case KindCPUIdle:
		ok = cpuidlePathRE.MatchString(path)
	case KindTHP:
		ok = path == THPEnabledPath
	}
	if !ok {
		return fmt.Errorf("step %q %q: not a file a %s step may name", kind, path, kind)
	}
	return nil
}
