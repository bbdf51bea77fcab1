package affinity

import (
	"fmt"
	"os"
	"strings"
)

// DefaultLockFile is the host-wide lock every onload-run holds while it
// may change the host, whatever its journal directory: the journal says
// what one run changed, the lock keeps two runs from stacking changes.
const DefaultLockFile = "/run/lowlat.lock"

// LockFileEnv names the environment variable that moves the lock file
// (tests point it at a temporary file).
const LockFileEnv = "LOWLAT_LOCK_FILE"

// LockFile returns the lock file from LockFileEnv, or DefaultLockFile.
func LockFile() string {
	if p := os.Getenv(LockFileEnv); p != "" {
		return p
	}
	return DefaultLockFile
}

// lockOwner is what the holder writes into the lock file, so that a
// refused run can name it, and a run that finds the lock free can tell
// that its last holder died with a journal left behind.
type lockOwner struct {
	PID        int      `json:"pid"`
	Start      uint64   `json:"start"`
	JournalDir string   `json:"journal_dir,omitempty"`
	Command    []string `json:"command,omitempty"`
}

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
	if e.Running {
		return fmt.Sprintf("host lock %s is held by running pid %d (%s, journal in %s); it restores the host when it ends",
			e.LockFile, e.PID, strings.Join(e.Command, " "), e.JournalDir)
	}
	return fmt.Sprintf("host lock %s: pid %d (%s) died leaving a journal in %s; run `onload-run --restore --journal-dir %s` first",
		e.LockFile, e.PID, strings.Join(e.Command, " "), e.JournalDir, e.JournalDir)
}
