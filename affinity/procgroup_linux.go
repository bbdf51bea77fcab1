//go:build linux

package affinity

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// GroupMembers returns the pids of the live (not zombie) processes in
// process group pgid, read from /proc/PID/stat field 5.
func GroupMembers(pgid int) []int {
	if pgid <= 0 {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		// f[0] is field 3 (state), f[2] field 5 (pgrp).
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// KillProcessGroup ends process group pgid: SIGTERM to the group
// (kill(2) with -pgid), then, if members still live after grace, SIGKILL,
// and waits a bounded time for them to go. It returns an error naming the
// members left. A group with no live members is left alone.
func KillProcessGroup(pgid int, grace time.Duration) error {
	if pgid <= 1 {
		return fmt.Errorf("kill process group %d: not a process group", pgid)
	}
	wait := func(d time.Duration) bool {
		for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
			if len(GroupMembers(pgid)) == 0 {
				return true
			}
			if time.Now().After(deadline) {
				return false
			}
		}
	}
	if len(GroupMembers(pgid)) == 0 {
		return nil
	}
	if err := unix.Kill(-pgid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", pgid, os.NewSyscallError("kill", err))
	}
	if wait(grace) {
		return nil
	}
	if err := unix.Kill(-pgid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", pgid, os.NewSyscallError("kill", err))
	}
	if wait(2 * time.Second) {
		return nil
	}
	return fmt.Errorf("kill process group %d: pids %v still run after SIGKILL", pgid, GroupMembers(pgid))
}

// killLeftovers ends what is left of the process group a dead owner
// recorded in its journal, before its settings are restored. It is
// conservative: it does nothing when no live process is in the group, or
// when a process with the group's number runs that is not the leader the
// journal recorded (a newer process that reused the number).
func killLeftovers(rec record) error {
	if rec.PGID <= 1 || len(GroupMembers(rec.PGID)) == 0 {
		return nil
	}
	if alive(rec.PGID, 0) && (rec.PGStart == 0 || procStart(rec.PGID) != rec.PGStart) {
		return nil
	}
	return KillProcessGroup(rec.PGID, time.Second)
}
