//go:build !linux

package affinity

import "fmt"

// LatencyHold is not supported off Linux.
type LatencyHold struct{}

// HoldCPULatency is not supported off Linux.
func HoldCPULatency(us int) (*LatencyHold, error) {
	return nil, fmt.Errorf("hold cpu latency: %w", ErrNotSupported)
}

// Current is not supported off Linux.
func (h *LatencyHold) Current() (int, error) { return 0, ErrNotSupported }

// Requested is not supported off Linux.
func (h *LatencyHold) Requested() int { return 0 }

// Close does nothing off Linux.
func (h *LatencyHold) Close() error { return nil }

// CPULatency is not supported off Linux.
func CPULatency() (int, error) { return 0, fmt.Errorf("read cpu latency: %w", ErrNotSupported) }

// SetScheduler is not supported off Linux.
func SetScheduler(pid int, p Policy, priority int) error {
	return fmt.Errorf("sched_setattr: %w", ErrNotSupported)
}

// Scheduler is not supported off Linux.
func Scheduler(pid int) (Policy, int, error) {
	return 0, 0, fmt.Errorf("sched_getattr: %w", ErrNotSupported)
}

// LockMemory is not supported off Linux.
func LockMemory() error { return fmt.Errorf("mlockall: %w", ErrNotSupported) }

// UnlockMemory is not supported off Linux.
func UnlockMemory() error { return fmt.Errorf("munlockall: %w", ErrNotSupported) }

// InterfaceDriver is not known off Linux.
func InterfaceDriver(iface string) string { return "" }
