//go:build !linux

package affinity

import (
	"fmt"
	"time"
)

// GroupMembers returns nothing off Linux.
func GroupMembers(pgid int) []int { return nil }

// KillProcessGroup is not supported off Linux.
func KillProcessGroup(pgid int, grace time.Duration) error {
	return fmt.Errorf("kill process group: %w", ErrNotSupported)
}

func killLeftovers(rec record) error { return nil }
