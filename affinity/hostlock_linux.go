//go:build linux

package affinity

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// HostLock is the host-wide lock (flock(2) on a lock file) held for the
// life of one run. The kernel drops it when the holder dies, however it
// dies.
type HostLock struct {
	f    *os.File
	path string
}

// lockRecordSize is the size of every lock record: JSON padded with
// spaces. A holder rewrites the record in place with one pwrite(2) of the
// same size, so the file is never empty or cut short, and is never
// truncated.
const lockRecordSize = 4096

// LockHost takes the host lock in path (flock(2) LOCK_EX|LOCK_NB) for a
// run that keeps its journal in journalDir, and records the caller in the
// lock file. It does not wait: when another process holds the lock, or the
// last holder died leaving a journal, it fails with *HostLockedError.
// With restoring set, a journal left by a dead holder in journalDir itself
// is not an error: the caller is about to restore it.
//
// A missing lock file is created whole, record and all: written under a
// temporary name, locked, and linked into place (link(2) fails when
// another run got there first). An existing one is used only when it is a
// regular file holding a lowlat lock record, owned by root and writable by
// no one else when the caller is root; anything else there is refused with
// ErrForeignLockFile and left as it is.
func LockHost(path, journalDir string, command []string, restoring bool) (*HostLock, error) {
	if path == "" || !filepath.IsAbs(path) {
		return nil, fmt.Errorf("host lock %q: not an absolute path", path)
	}
	me := lockOwner{Lowlat: lockMarker, PID: os.Getpid(), Start: procStart(os.Getpid()), JournalDir: journalDir, Command: command}
	rec, err := encodeOwner(me)
	if err != nil {
		return nil, fmt.Errorf("host lock %s: %w", path, err)
	}
	for tries := 0; ; tries++ {
		if tries == 20 {
			return nil, fmt.Errorf("host lock %s: the file keeps changing under us", path)
		}
		l, err := createLock(path, rec)
		if err == nil || !errors.Is(err, fs.ErrExist) {
			return l, err
		}
		// Never open what is not a regular file (a device may act on open).
		if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("host lock %s: %w: a %v, not a regular file (refused and left as it is)", path, ErrForeignLockFile, fi.Mode().Type())
		}
		f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed by its holder in between: create it
		}
		if err != nil {
			return nil, fmt.Errorf("host lock: %w", err)
		}
		if err := checkLockFile(path, f); err != nil {
			f.Close()
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				old := holder(path)
				if old.PID <= 0 && tries < 18 {
					continue // released as we looked: try again
				}
				return nil, &HostLockedError{LockFile: path, PID: old.PID, Running: true, JournalDir: old.JournalDir, Command: old.Command}
			}
			return nil, fmt.Errorf("host lock %s: %w", path, os.NewSyscallError("flock", err))
		}
		// The holder before us may have removed the file between our open
		// and our flock: then we hold a lock on a file nobody else will
		// open. Check that the path still names what we locked.
		if !samePath(path, f) {
			f.Close()
			continue
		}
		// Locked: no one else writes the record now.
		old, err := readOwner(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("host lock %s: %w (refused and left as it is; give another lock file, or remove it if it is a stale lowlat one)", path, err)
		}
		if old.JournalDir != "" && !(restoring && filepath.Clean(old.JournalDir) == filepath.Clean(journalDir)) {
			if _, err := os.Lstat(filepath.Join(old.JournalDir, JournalFile)); err == nil {
				f.Close()
				return nil, &HostLockedError{LockFile: path, PID: old.PID, JournalDir: old.JournalDir, Command: old.Command}
			}
		}
		if _, err := f.WriteAt(rec, 0); err != nil {
			f.Close()
			return nil, fmt.Errorf("host lock %s: %w", path, err)
		}
		if fi, err := f.Stat(); err == nil && fi.Size() > lockRecordSize {
			f.Truncate(lockRecordSize) // a longer record of an older lowlat
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("host lock %s: %w", path, err)
		}
		return &HostLock{f: f, path: path}, nil
	}
}

// createLock creates the lock file at path holding rec, locked by the
// caller, or fails with an error matching fs.ErrExist when a file is there.
func createLock(path string, rec []byte) (*HostLock, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fs.ErrExist
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return nil, fmt.Errorf("host lock: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	fail := func(err error) (*HostLock, error) {
		f.Close()
		return nil, fmt.Errorf("host lock %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fail(err)
	}
	if _, err := f.Write(rec); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fail(os.NewSyscallError("flock", err))
	}
	if err := os.Link(tmp, path); err != nil {
		f.Close()
		if errors.Is(err, fs.ErrExist) {
			return nil, fs.ErrExist
		}
		return nil, fmt.Errorf("host lock: %w", err)
	}
	syncDir(filepath.Dir(path))
	return &HostLock{f: f, path: path}, nil
}

// samePath reports whether path still names the file f has open.
func samePath(path string, f *os.File) bool {
	var st1, st2 unix.Stat_t
	return unix.Fstat(int(f.Fd()), &st1) == nil && unix.Lstat(path, &st2) == nil && st1.Ino == st2.Ino && st1.Dev == st2.Dev
}

// holder reads who holds the lock in path, for the message to a refused
// run. The holder may be between taking the lock and writing its record
// (the record then names the one before it, now gone): a few short waits,
// bounded, let it finish.
func holder(path string) lockOwner {
	var o lockOwner
	for i := 0; i < 5; i++ {
		f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return lockOwner{}
		}
		o, err = readOwner(f)
		f.Close()
		if err == nil && alive(o.PID, o.Start) {
			return o
		}
		time.Sleep(20 * time.Millisecond)
	}
	return lockOwner{}
}

// CheckLockFile reports whether path may serve as a lock file: it does not
// exist (LockHost creates it), or it is a regular file holding a lowlat
// lock record, owned by root and not writable by group or others when the
// caller is root. It changes nothing.
func CheckLockFile(path string) error {
	if path == "" || !filepath.IsAbs(path) {
		return fmt.Errorf("host lock %q: not an absolute path", path)
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("host lock: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("host lock %s: %w: a %v, not a regular file (refused and left as it is)", path, ErrForeignLockFile, fi.Mode().Type())
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("host lock: %w", err)
	}
	defer f.Close()
	if err := checkLockFile(path, f); err != nil {
		return err
	}
	if _, err := readOwner(f); err != nil {
		return fmt.Errorf("host lock %s: %w (refused and left as it is; give another lock file)", path, err)
	}
	return nil
}

// checkLockFile checks what f, opened at path, is: a regular file that the
// caller may trust (see checkTrusted).
func checkLockFile(path string, f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("host lock: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("host lock %s: %w: a %v, not a regular file (refused and left as it is)", path, ErrForeignLockFile, fi.Mode().Type())
	}
	if err := checkTrusted(path, fi); err != nil {
		return fmt.Errorf("host lock: %w (refused and left as it is)", err)
	}
	return nil
}

// maxLockFile bounds what readOwner reads.
const maxLockFile = 1 << 16

// readOwner reads the lock record in f: lowlat's, or an error wrapping
// ErrForeignLockFile. A record of an older lowlat (no marker) is taken
// when it holds exactly a record's keys and a process id.
func readOwner(f *os.File) (lockOwner, error) {
	var o lockOwner
	b, err := io.ReadAll(io.NewSectionReader(f, 0, maxLockFile+1))
	if err != nil {
		return o, err
	}
	if len(b) > maxLockFile {
		return o, fmt.Errorf("%w: larger than %d bytes", ErrForeignLockFile, maxLockFile)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return lockOwner{}, fmt.Errorf("%w: %d bytes that are no lock record", ErrForeignLockFile, len(b))
	}
	if rest, _ := io.ReadAll(dec.Buffered()); len(bytes.TrimSpace(rest)) > 0 || o.Lowlat != lockMarker && (o.Lowlat != "" || o.PID <= 0) {
		return lockOwner{}, fmt.Errorf("%w: %d bytes that are no lock record", ErrForeignLockFile, len(b))
	}
	return o, nil
}

// encodeOwner renders o as a record of exactly lockRecordSize bytes,
// shortening the command (each argument to 256 bytes, then dropping
// arguments from the end) when it is too long to fit.
func encodeOwner(o lockOwner) ([]byte, error) {
	cmd := make([]string, len(o.Command))
	for i, a := range o.Command {
		if len(a) > 256 {
			a = a[:256] + "..."
		}
		cmd[i] = a
	}
	for n := len(cmd); n >= 0; n-- {
		o.Command = cmd[:n]
		if n < len(cmd) {
			o.Command = append(cmd[:n:n], "...")
		}
		b, err := json.Marshal(o)
		if err != nil {
			return nil, err
		}
		if len(b) < lockRecordSize {
			rec := bytes.Repeat([]byte{' '}, lockRecordSize)
			copy(rec, b)
			rec[lockRecordSize-1] = '\n'
			return rec, nil
		}
	}
	return nil, fmt.Errorf("journal directory of %d bytes: too long for a lock record", len(o.JournalDir))
}

// Path is the lock file's path.
func (l *HostLock) Path() string { return l.path }

// Release removes the lock file and drops the lock. Call it only once the
// host is restored (the journal is gone): a lock file that still names a
// journal directory tells the next run to look there. keepJournal says the
// journal could not be restored: the lock file then stays, naming it, so
// that the next run refuses until it is.
func (l *HostLock) Release(keepJournal bool) error {
	if l == nil || l.f == nil {
		return nil
	}
	var err error
	if !keepJournal && samePath(l.path, l.f) {
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
