//go:build !linux

package affinity

import "fmt"

// ThreadAffinity is not supported off Linux.
func ThreadAffinity() (CPUSet, error) {
	return CPUSet{}, fmt.Errorf("sched_getaffinity: %w", ErrNotSupported)
}

// ProcessAffinity is not supported off Linux.
func ProcessAffinity(pid int) (CPUSet, error) {
	return CPUSet{}, fmt.Errorf("sched_getaffinity: %w", ErrNotSupported)
}

// PinThread is not supported off Linux.
func PinThread(cpus CPUSet) error { return fmt.Errorf("sched_setaffinity: %w", ErrNotSupported) }

// LockAndPin is not supported off Linux.
func LockAndPin(cpu int) (unlock func(), err error) {
	return nil, fmt.Errorf("sched_setaffinity: %w", ErrNotSupported)
}

// SetProcessAffinity is not supported off Linux.
func SetProcessAffinity(pid int, cpus CPUSet) error {
	return fmt.Errorf("sched_setaffinity: %w", ErrNotSupported)
}
