//go:build !linux

package affinity

import "fmt"

// HostLock is not supported off Linux.
type HostLock struct{}

// LockHost is not supported off Linux.
func LockHost(path, journalDir string, command []string, restoring bool) (*HostLock, error) {
	return nil, fmt.Errorf("host lock: %w", ErrNotSupported)
}

// CheckLockFile is not supported off Linux.
func CheckLockFile(path string) error { return fmt.Errorf("host lock: %w", ErrNotSupported) }

// Path is empty off Linux.
func (l *HostLock) Path() string { return "" }

// Release does nothing off Linux.
func (l *HostLock) Release(keepJournal bool) error { return nil }
