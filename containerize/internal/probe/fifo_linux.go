//go:build linux

package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// setFIFO switches the calling thread to SCHED_FIFO priority 1
// (sched_setattr(2)).
func setFIFO() error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 1}
	if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
		return fmt.Errorf("sched_setattr SCHED_FIFO: %w", err)
	}
	return nil
}
