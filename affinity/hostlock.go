package affinity

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// DefaultLockFile is the host-wide lock every onload-run holds while it
// may change the host, whatever its journal directory and whatever other
// lock file it is given: the journal says what one run changed, the lock
// keeps two runs from stacking changes. No flag or variable moves it.
const DefaultLockFile = "/run/lowlat.lock"

// LockFileEnv names the environment variable that gives onload-run a lock
// file to hold as well as DefaultLockFile (one shared with runs that see
// another /run, such as a container's).
const LockFileEnv = "LOWLAT_LOCK_FILE"

// LockFile returns the lock file from LockFileEnv, or DefaultLockFile when
// it is unset, empty or blank.
func LockFile() string {
	if p := os.Getenv(LockFileEnv); strings.TrimSpace(p) != "" {
		return p
	}
	return DefaultLockFile
}

// lockMarker is the value of every lock record's "lowlat" key: what tells
// a lock file lowlat wrote from any other file at the same path.
const lockMarker = "host-lock"

// lockOwner is what the holder writes into the lock file, so that a
// refused run can name it, and a run that finds the lock free can tell
// that its last holder died with a journal left behind.
type lockOwner struct {
	Lowlat     string   `json:"lowlat,omitempty"` // lockMarker; absent in records of older versions
	PID        int      `json:"pid"`
	Start      uint64   `json:"start"`
	JournalDir string   `json:"journal_dir,omitempty"`
	Command    []string `json:"command,omitempty"`
}

// ErrForeignLockFile is wrapped by LockHost and CheckLockFile for a path
// that holds something other than a lowlat lock file: it is refused and
// left as it is, never emptied or removed.
var ErrForeignLockFile = errors.New("not a lowlat lock file")

// HostLockedError is returned by LockHost when another process holds the
// host lock (Running), or when the last holder died leaving a journal that
// must be restored first.
type HostLockedError struct {
	LockFile   string
	PID        int
	Running    bool
	JournalDir string
	Command    []string
}

func (e *HostLockedError) Error() string {
	if e.Running && e.PID <= 0 {
		return fmt.Sprintf("host lock %s is held by another process that has not yet said who it is; it restores the host when it ends", e.LockFile)
	}
	if e.Running {
		return fmt.Sprintf("host lock %s is held by running pid %d (%s, journal in %s); it restores the host when it ends",
			e.LockFile, e.PID, strings.Join(e.Command, " "), e.JournalDir)
	}
	return fmt.Sprintf("host lock %s: pid %d (%s) died leaving an unrestored journal in %s; every run is refused until `onload-run --restore --journal-dir %s` undoes it",
		e.LockFile, e.PID, strings.Join(e.Command, " "), e.JournalDir, e.JournalDir)
}
