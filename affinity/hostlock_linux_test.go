//go:build linux

package affinity

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
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

// TestLockFileNeverAUsersFile: a path that holds anything but a lowlat lock
// record (a user's file, an empty file, a directory, a FIFO) is refused by
// LockHost and CheckLockFile, with or without restoring, and left exactly
// as it was; a record of an older lowlat, without the marker, is taken.
func TestLockFileNeverAUsersFile(t *testing.T) {
	dir := t.TempDir()
	journalDir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"precious": "my thesis, chapter 1\n",
		"empty":    "",
		"json":     `{"pid": 1, "mine": true}`,
		"trailing": `{"lowlat":"host-lock","pid":1} and more`,
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		before, _ := os.Stat(p)
		for _, restoring := range []bool{false, true} {
			if l, err := LockHost(p, journalDir, []string{"run"}, restoring); !errors.Is(err, ErrForeignLockFile) {
				if l != nil {
					l.Release(false)
				}
				t.Errorf("LockHost(%s, restoring %v): %v, want ErrForeignLockFile", name, restoring, err)
			}
		}
		if err := CheckLockFile(p); !errors.Is(err, ErrForeignLockFile) {
			t.Errorf("CheckLockFile(%s): %v", name, err)
		}
		after, err := os.Stat(p)
		if b, _ := os.ReadFile(p); err != nil || string(b) != content || !after.ModTime().Equal(before.ModTime()) {
			t.Errorf("%s changed: %q, %v", name, b, err)
		}
	}
	for _, p := range []string{fifo, t.TempDir()} {
		if _, err := LockHost(p, journalDir, nil, false); !errors.Is(err, ErrForeignLockFile) {
			t.Errorf("LockHost(%s): %v", p, err)
		}
		if err := CheckLockFile(p); !errors.Is(err, ErrForeignLockFile) {
			t.Errorf("CheckLockFile(%s): %v", p, err)
		}
	}

	// An older lowlat's record (no marker), left by a holder that died
	// with nothing to restore: taken, and removed on release.
	legacy := filepath.Join(dir, "legacy.lock")
	os.WriteFile(legacy, []byte(`{"pid":999999,"start":1,"journal_dir":"`+journalDir+`","command":["onload-run"]}`+"\n"), 0o644)
	if err := CheckLockFile(legacy); err != nil {
		t.Fatalf("CheckLockFile of an older record: %v", err)
	}
	l, err := LockHost(legacy, journalDir, []string{"run"}, false)
	if err != nil {
		t.Fatalf("LockHost over an older record: %v", err)
	}
	if st, _ := os.Stat(legacy); st.Size() != lockRecordSize {
		t.Errorf("record of %d bytes, want %d", st.Size(), lockRecordSize)
	}
	if err := l.Release(false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(legacy); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file left: %v", err)
	}
}

// TestLockHostContended: many takers at once; exactly one holds the lock at
// any moment, and every refusal names a live holder, never pid 0.
func TestLockHostContended(t *testing.T) {
	lockFile := filepath.Join(t.TempDir(), "lowlat.lock")
	dir := t.TempDir()
	var (
		mu      sync.Mutex
		holding int
		wg      sync.WaitGroup
	)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				l, err := LockHost(lockFile, dir, []string{"taker"}, false)
				if err != nil {
					var le *HostLockedError
					if !errors.As(err, &le) || !le.Running || le.PID <= 0 || strings.Contains(err.Error(), "pid 0") {
						t.Errorf("refusal: %v", err)
					}
					continue
				}
				mu.Lock()
				holding++
				if holding != 1 {
					t.Errorf("%d holders at once", holding)
				}
				holding--
				mu.Unlock()
				if err := l.Release(false); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if _, err := os.Lstat(lockFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file left: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(lockFile)); len(ents) != 0 {
		t.Fatalf("left in the lock file's directory: %v", ents)
	}
}
