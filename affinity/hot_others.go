//go:build !linux

package affinity

import "fmt"

// HotThread is a thread with a CPU to itself; only Linux has them.
type HotThread struct{}

// MakeHot is not supported off Linux.
func MakeHot(cpu int, housekeeping CPUSet) (*HotThread, error) {
	return nil, fmt.Errorf("sched_setaffinity: %w", ErrNotSupported)
}

// Release does nothing off Linux.
func (*HotThread) Release() error { return nil }
