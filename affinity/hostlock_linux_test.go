//go:build linux

package affinity

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLockHost(t *testing.T) {
	lockFile := filepath.Join(t.TempDir(), "lowlat.lock")
	dirA, dirB := t.TempDir(), t.TempDir()
	a, err := LockHost(lockFile, dirA, []string{"run-a"}, false)
	if err != nil {
		t.Fatal(err)
	}
	// Another run, with another journal directory, is refused and told
	// who holds the lock (flock conflicts between open file descriptions,
	// so this holds inside one process too).
	_, err = LockHost(lockFile, dirB, []string{"run-b"}, false)
	var le *HostLockedError
	if !errors.As(err, &le) || !le.Running || le.PID != os.Getpid() || le.JournalDir != dirA || !strings.Contains(err.Error(), "run-a") {
		t.Fatalf("second LockHost: %v", err)
	}
	// A holder that ends with its journal restored leaves nothing.
	if err := a.Release(false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(lockFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file left: %v", err)
	}

	// A holder that dies (here: releases without restoring) with a journal
	// left in dirA: a run in dirB refuses and names dirA; only the restore
	// of dirA may take the lock.
	a, err = LockHost(lockFile, dirA, []string{"run-a"}, false)
	if err != nil {
		t.Fatal(err)
	}
	j, err := CreateJournal(dirA, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Release(true)
	if _, err := LockHost(lockFile, dirB, nil, false); !errors.As(err, &le) || le.Running || le.JournalDir != dirA ||
		!strings.Contains(err.Error(), "--restore --journal-dir "+dirA) {
		t.Fatalf("LockHost over a dead holder's journal: %v", err)
	}
	if _, err := LockHost(lockFile, dirB, nil, true); err == nil {
		t.Fatal("restore of another directory took the lock over a dead holder's journal")
	}
	r, err := LockHost(lockFile, dirA, nil, true)
	if err != nil {
		t.Fatalf("restore of the dead holder's directory: %v", err)
	}
	if err := j.Undo(); err != nil {
		t.Fatal(err)
	}
	r.Release(false)
	b, err := LockHost(lockFile, dirB, nil, false)
	if err != nil {
		t.Fatalf("after the restore: %v", err)
	}
	b.Release(false)

	// A symlink in the lock file's place is not followed.
	target := filepath.Join(t.TempDir(), "target")
	os.WriteFile(target, []byte("keep"), 0o644)
	os.Symlink(target, lockFile)
	if l, err := LockHost(lockFile, dirA, nil, false); err == nil {
		l.Release(false)
		t.Fatal("LockHost followed a symlink")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("symlink target changed: %q", b)
	}
}
