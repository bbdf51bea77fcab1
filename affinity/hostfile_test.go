package affinity

import (
	"errors"
	"strings"
	"syscall"
	"testing"
)

// TestWriteErrNamesWhatLiftsIt: a refused write names what the file's
// permission check wants, and keeps the errno.
func TestWriteErrNamesWhatLiftsIt(t *testing.T) {
	for path, want := range map[string]string{
		"/proc/sys/net/core/busy_read":                        "CAP_NET_ADMIN",
		"/proc/sys/kernel/numa_balancing":                     "needs root: euid 0",
		"/proc/irq/38/smp_affinity_list":                      "CAP_DAC_OVERRIDE",
		"/sys/devices/system/cpu/cpu1/cpuidle/state2/disable": "CAP_DAC_OVERRIDE",
		"/sys/kernel/mm/transparent_hugepage/enabled":         "CAP_DAC_OVERRIDE",
	} {
		for _, errno := range []syscall.Errno{syscall.EPERM, syscall.EACCES} {
			err := writeErr(path, "1", errno)
			if !strings.Contains(err.Error(), want) || !errors.Is(err, errno) {
				t.Errorf("%s, %v: %v; want it to name %s", path, errno, err, want)
			}
			if want != "CAP_SYS_ADMIN" && strings.Contains(err.Error(), "CAP_SYS_ADMIN") {
				t.Errorf("%s: %v names CAP_SYS_ADMIN", path, err)
			}
		}
	}
}
