//go:build linux

package affinity

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// HostLock is the host-wide lock (flock(2) on a lock file) held for the
// life of one run. The kernel drops it when the holder dies, however it
// dies.
type HostLock struct {
	f    *os.File
	path string
}

// LockHost takes the host lock in path (flock(2) LOCK_EX|LOCK_NB) for a
// run that keeps its journal in journalDir, and records the caller in the
// lock file. It does not wait: when another process holds the lock, or the
// last holder died leaving a journal, it fails with *HostLockedError.
// With restoring set, a journal left by a dead holder in journalDir itself
// is not an error: the caller is about to restore it.
func LockHost(path, journalDir string, command []string, restoring bool) (*HostLock, error) {
	if path == "" || !filepath.IsAbs(path) {
		return nil, fmt.Errorf("host lock %q: not an absolute path", path)
	}
	for tries := 0; ; tries++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("host lock: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			old, _ := readOwner(f)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, &HostLockedError{LockFile: path, PID: old.PID, Running: true, JournalDir: old.JournalDir, Command: old.Command}
			}
			return nil, fmt.Errorf("host lock %s: %w", path, os.NewSyscallError("flock", err))
		}
		// The holder before us may have unlinked the file between our
		// open and our flock: then we hold a lock on a file nobody else
		// will open. Check that the path still names what we locked.
		var st1, st2 unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st1) != nil || unix.Lstat(path, &st2) != nil || st1.Ino != st2.Ino || st1.Dev != st2.Dev {
			f.Close()
			if tries < 10 {
				continue
			}
			return nil, fmt.Errorf("host lock %s: the file keeps changing under us", path)
		}
		if st1.Mode&unix.S_IFMT != unix.S_IFREG {
			f.Close()
			return nil, fmt.Errorf("host lock %s: not a regular file", path)
		}
		old, _ := readOwner(f)
		if old.JournalDir != "" && !(restoring && filepath.Clean(old.JournalDir) == filepath.Clean(journalDir)) {
			if _, err := os.Lstat(filepath.Join(old.JournalDir, JournalFile)); err == nil {
				f.Close()
				return nil, &HostLockedError{LockFile: path, PID: old.PID, JournalDir: old.JournalDir, Command: old.Command}
			}
		}
		l := &HostLock{f: f, path: path}
		if err := l.write(lockOwner{PID: os.Getpid(), Start: procStart(os.Getpid()), JournalDir: journalDir, Command: command}); err != nil {
			f.Close()
			return nil, err
		}
		return l, nil
	}
}

func readOwner(f *os.File) (lockOwner, error) {
	var o lockOwner
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<16))
	if err != nil {
		return o, err
	}
	if len(b) == 0 {
		return o, nil
	}
	return o, json.Unmarshal(b, &o)
}

func (l *HostLock) write(o lockOwner) error {
	b, _ := json.Marshal(o)
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("host lock %s: %w", l.path, err)
	}
	if _, err := l.f.WriteAt(append(b, '\n'), 0); err != nil {
		return fmt.Errorf("host lock %s: %w", l.path, err)
	}
	return l.f.Sync()
}

// Path is the lock file's path.
func (l *HostLock) Path() string { return l.path }

// Release empties and removes the lock file and drops the lock. Call it
// only once the host is restored (the journal is gone): a lock file that
// still names a journal directory tells the next run to look there.
// keepJournal says the journal could not be restored: the lock file then
// keeps naming it, so that the next run refuses until it is.
func (l *HostLock) Release(keepJournal bool) error {
	if l == nil || l.f == nil {
		return nil
	}
	var err error
	if !keepJournal {
		l.f.Truncate(0)
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("host lock: %w", rerr)
		}
	}
	if cerr := l.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("host lock: %w", cerr)
	}
	l.f = nil
	return err
}
