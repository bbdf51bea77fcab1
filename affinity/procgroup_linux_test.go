//go:build linux

package affinity

import (
	"os/exec"
	"syscall"
	"testing"
)

// TestKillLeftovers: Restore ends a dead owner's process group only when
// the group's leader, if it runs, is the one the journal recorded.
func TestKillLeftovers(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot run sleep: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	pgid := cmd.Process.Pid
	if m := GroupMembers(pgid); len(m) != 1 || m[0] != pgid {
		t.Fatalf("GroupMembers(%d) = %v", pgid, m)
	}
	// A leader that is not the recorded one (the number was reused).
	if err := killLeftovers(record{PGID: pgid, PGStart: procStart(pgid) + 1}); err != nil {
		t.Fatal(err)
	}
	if err := killLeftovers(record{PGID: pgid}); err != nil {
		t.Fatal(err)
	}
	if len(GroupMembers(pgid)) != 1 {
		t.Fatal("killed a group whose leader is not the recorded one")
	}
	if err := killLeftovers(record{PGID: pgid, PGStart: procStart(pgid)}); err != nil {
		t.Fatal(err)
	}
	<-done
	done <- nil
	if m := GroupMembers(pgid); len(m) != 0 {
		t.Fatalf("group %d still has %v", pgid, m)
	}
}
