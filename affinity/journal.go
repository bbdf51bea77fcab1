package affinity

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultJournalDir is where a Journal is kept unless told otherwise. /run
// is a tmpfs: a journal does not outlive a reboot, and neither do the
// settings it records.
const DefaultJournalDir = "/run/lowlat"

// JournalDirEnv names the environment variable that moves the journal
// directory (tests point it at a temporary directory).
const JournalDirEnv = "LOWLAT_JOURNAL_DIR"

// JournalFile is the journal's file name inside its directory.
const JournalFile = "journal.json"

// JournalDir returns the directory from JournalDirEnv, or DefaultJournalDir
// when it is unset, empty or blank.
func JournalDir() string {
	if d := os.Getenv(JournalDirEnv); strings.TrimSpace(d) != "" {
		return d
	}
	return DefaultJournalDir
}

// Step kinds. The kind decides how a value is read back and compared.
const (
	KindSysctl  = "sysctl"  // a /proc/sys file
	KindIRQ     = "irq"     // /proc/irq/N/smp_affinity_list; compared as CPU sets
	KindTHP     = "thp"     // a transparent_hugepage file; the [selected] word is the value
	KindCPUIdle = "cpuidle" // a cpuN/cpuidle/stateK/disable switch
	KindFile    = "file"    // any other file holding one value
)

// Step is one change to a host file: Path held Old and is set to New.
// Undoing it writes Old back.
type Step struct {
	Kind string `json:"kind"`
	Path string `json:"path"`
	Old  string `json:"old"`
	New  string `json:"new"`
	// What says in words what the change is for.
	What string `json:"what,omitempty"`
	// Gone is set by Undo and Restore on an IRQ or cpuidle step whose file
	// no longer exists (the device was removed, the CPU went offline):
	// there is nothing left to restore, and that is not an error.
	Gone bool `json:"-"`
}

// Shell is the shell command that makes the change.
func (s Step) Shell() string { return shellWrite(s.New, s.Path) }

// UndoShell is the shell command that undoes it.
func (s Step) UndoShell() string { return shellWrite(s.Old, s.Path) }

func shellWrite(v, path string) string {
	return "echo " + shellQuote(v) + " > " + shellQuote(path)
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./,:=+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// record is the journal file's content.
type record struct {
	Version int      `json:"version"`
	PID     int      `json:"pid"`
	Start   uint64   `json:"start"` // the owner's start time in clock ticks after boot (/proc/PID/stat field 22)
	Command []string `json:"command,omitempty"`
	// PGID is the process group the owner started its program in, and
	// PGStart its leader's start time: Restore ends what is left of the
	// group before it restores the settings.
	PGID    int       `json:"pgid,omitempty"`
	PGStart uint64    `json:"pgid_start,omitempty"`
	Created time.Time `json:"created"`
	Steps   []Step    `json:"steps"`
}

// Journal records host changes in a file before it makes them, so that
// they can be undone by Undo, or by Restore in another process after this
// one has died. Only one journal may exist in a directory at a time: that
// is what keeps two wrappers from stacking their changes. A Journal is safe
// for concurrent use.
type Journal struct {
	mu   sync.Mutex
	dir  string
	path string
	rec  record
	done bool
}

// JournalExistsError is returned by CreateJournal when a journal already
// exists. Running says whether the process that wrote it is still alive.
type JournalExistsError struct {
	Path    string
	PID     int
	Running bool
	Command []string
}

func (e *JournalExistsError) Error() string {
	if e.Running {
		return fmt.Sprintf("create journal: %s is held by running pid %d (%s); it restores the host when it ends",
			e.Path, e.PID, strings.Join(e.Command, " "))
	}
	return fmt.Sprintf("create journal: %s was left by pid %d (%s), which is gone; run `onload-run --restore` to undo its changes first",
		e.Path, e.PID, strings.Join(e.Command, " "))
}

// Is makes errors.Is(err, fs.ErrExist) hold.
func (e *JournalExistsError) Is(target error) bool { return target == fs.ErrExist }

// ErrNoJournal is returned by Restore when there is nothing to restore.
var ErrNoJournal = errors.New("no journal")

// CreateJournal creates the journal file in dir (made if missing) for the
// calling process; command is recorded to tell an operator who made the
// changes. It fails with *JournalExistsError when dir already holds one.
func CreateJournal(dir string, command []string) (*Journal, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create journal directory: %w", err)
	}
	path := filepath.Join(dir, JournalFile)
	j := &Journal{dir: dir, path: path, rec: record{
		Version: 1,
		PID:     os.Getpid(),
		Start:   procStart(os.Getpid()),
		Command: command,
		Created: time.Now().UTC().Truncate(time.Second),
		Steps:   []Step{},
	}}
	// The journal appears whole or not at all: it is written to a
	// temporary file, synced, and linked into place with link(2), which
	// fails when a journal exists. A reader never sees it half written.
	b, _ := json.MarshalIndent(&j.rec, "", "  ")
	tmp, err := writeTemp(dir, append(b, '\n'))
	if err != nil {
		return nil, fmt.Errorf("create journal: %w", err)
	}
	err = os.Link(tmp, path)
	os.Remove(tmp)
	if errors.Is(err, fs.ErrExist) {
		old, rerr := readRecord(path)
		if rerr != nil {
			return nil, fmt.Errorf("create journal: %s exists and cannot be read (%v); remove it by hand once its changes are undone: %w", path, rerr, fs.ErrExist)
		}
		return nil, &JournalExistsError{Path: path, PID: old.PID, Running: alive(old.PID, old.Start), Command: old.Command}
	}
	if err != nil {
		return nil, fmt.Errorf("create journal: %w", err)
	}
	syncDir(dir)
	return j, nil
}

// writeTemp writes b to a new file of a fresh name in dir (O_EXCL: no
// existing file or link is followed) and syncs it.
func writeTemp(dir string, b []byte) (string, error) {
	f, err := os.CreateTemp(dir, "."+JournalFile+".*")
	if err != nil {
		return "", err
	}
	if err = f.Chmod(0o644); err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// SetProcessGroup records, and syncs to disk, the process group the
// journal's owner runs its program in, so that Restore, after the owner
// has died, can end what is left of it first.
func (j *Journal) SetProcessGroup(pgid int) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.done {
		return errJournalDone
	}
	j.rec.PGID, j.rec.PGStart = pgid, procStart(pgid)
	return j.persist()
}

// Path is the journal file's path.
func (j *Journal) Path() string { return j.path }

// Steps returns a copy of the steps recorded so far, oldest first.
func (j *Journal) Steps() []Step {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]Step(nil), j.rec.Steps...)
}

var errJournalDone = errors.New("journal already undone")

// Apply makes one change: it reads the current value of s.Path into s.Old,
// records the step in the journal file (synced to disk), and then writes
// s.New. When the write fails the step is taken out of the journal again,
// since nothing changed. A step whose file already holds s.New is recorded
// all the same, which keeps Undo simple and harmless. Apply returns the
// step as recorded.
func (j *Journal) Apply(s Step) (Step, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.done {
		return s, fmt.Errorf("apply %s: %w", s.Path, errJournalDone)
	}
	if s.Kind == "" {
		s.Kind = KindFile
	}
	old, err := readValue(s.Kind, s.Path)
	if err != nil {
		return s, err
	}
	s.Old = old
	j.rec.Steps = append(j.rec.Steps, s)
	if err := j.persist(); err != nil {
		j.rec.Steps = j.rec.Steps[:len(j.rec.Steps)-1]
		return s, err
	}
	if err := writeValue(s.Kind, s.Path, s.New); err != nil {
		j.rec.Steps = j.rec.Steps[:len(j.rec.Steps)-1]
		if perr := j.persist(); perr != nil {
			return s, errors.Join(err, perr)
		}
		return s, err
	}
	return s, nil
}

// Undo writes every recorded old value back, newest first, reads each back
// to check it, and removes the journal file when all are restored. On
// failure the journal is kept (so Restore can try again) and the error
// lists every step that did not restore. An IRQ or cpuidle step whose file
// has gone counts as restored, and is marked Gone in Steps. Undo after a
// successful Undo does nothing.
func (j *Journal) Undo() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.done {
		return nil
	}
	if err := undoSteps(j.rec.Steps); err != nil {
		return fmt.Errorf("undo journal %s: %w", j.path, err)
	}
	if err := removeJournal(j.dir, j.path); err != nil {
		return err
	}
	j.done = true
	return nil
}

// Restore ends what is left of the process group the journal records (see
// SetProcessGroup), then undoes the changes recorded in the journal in dir
// by a process that is no longer running, checks them, and removes the journal. It
// returns the steps it restored; an IRQ or cpuidle step whose file has gone
// is marked Gone and does not keep the journal. With no journal the error is ErrNoJournal;
// while the owner still runs (and is not the caller) it refuses with
// *JournalExistsError.
func Restore(dir string) ([]Step, error) {
	path := filepath.Join(dir, JournalFile)
	rec, err := readRecord(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("restore %s: %w", path, ErrNoJournal)
	}
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if rec.PID != os.Getpid() && alive(rec.PID, rec.Start) {
		return nil, fmt.Errorf("restore: %w", &JournalExistsError{Path: path, PID: rec.PID, Running: true, Command: rec.Command})
	}
	// The dead owner's program may have left children running with the
	// settings it wanted: end them before the settings go.
	if err := killLeftovers(rec); err != nil {
		return nil, fmt.Errorf("restore %s: %w", path, err)
	}
	if err := undoSteps(rec.Steps); err != nil {
		return rec.Steps, fmt.Errorf("restore %s: %w", path, err)
	}
	return rec.Steps, removeJournal(dir, path)
}

// ReadJournal returns the steps recorded in the journal in dir, without
// changing anything.
func ReadJournal(dir string) ([]Step, error) {
	rec, err := readRecord(filepath.Join(dir, JournalFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read journal: %w", ErrNoJournal)
	}
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	return rec.Steps, nil
}

// undoSteps writes the old values back, newest first, and marks as Gone
// the IRQ and cpuidle steps whose file has disappeared.
func undoSteps(steps []Step) error {
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		s := steps[i]
		if err := writeValue(s.Kind, s.Path, s.Old); err != nil {
			if (s.Kind == KindIRQ || s.Kind == KindCPUIdle) && errors.Is(err, fs.ErrNotExist) {
				steps[i].Gone = true
				continue
			}
			errs = append(errs, err)
			continue
		}
		if err := checkValue(s.Kind, s.Path, s.Old); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkValue reads path back and compares it with want.
func checkValue(kind, path, want string) error {
	got, err := readValue(kind, path)
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if !sameValue(kind, got, want) {
		return fmt.Errorf("check %s: reads %q after restoring %q", path, got, want)
	}
	return nil
}

func sameValue(kind, a, b string) bool {
	if kind == KindIRQ {
		x, err1 := ParseCPUList(a)
		y, err2 := ParseCPUList(b)
		if err1 == nil && err2 == nil {
			return x.Equal(y)
		}
	}
	return strings.Join(strings.Fields(a), " ") == strings.Join(strings.Fields(b), " ")
}

func removeJournal(dir, path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove journal: %w", err)
	}
	os.Remove(path + ".tmp")
	if filepath.Clean(dir) == DefaultJournalDir {
		os.Remove(dir) // only if empty; another tool's files keep it
	}
	return nil
}

// persist writes the record to a temporary file, syncs it, and renames it
// over the journal, so a crash leaves either the old or the new journal.
func (j *Journal) persist() error {
	b, err := json.MarshalIndent(&j.rec, "", "  ")
	if err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	tmp := j.path + ".tmp"
	// A stale temporary file (a crash between write and rename) is
	// removed first; a symbolic link there is removed, never followed.
	if fi, err := os.Lstat(tmp); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("write journal: %s is a directory", tmp)
		}
		if err := os.Remove(tmp); err != nil {
			return fmt.Errorf("write journal: %w", err)
		}
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|oNoFollow, 0o644)
	if err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, j.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write journal %s: %w", j.path, err)
	}
	if d, err := os.Open(j.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// maxJournalSize bounds what readRecord reads.
const maxJournalSize = 1 << 20

// readRecord reads and checks a journal file: a regular file (a symbolic
// link is not followed), in a directory, and itself owned by root and not
// writable by others when the caller is root, naming only files of the
// shapes checkStepPath allows.
func readRecord(path string) (record, error) {
	var rec record
	f, err := os.OpenFile(path, os.O_RDONLY|oNoFollow, 0)
	if err != nil {
		return rec, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return rec, err
	}
	if !fi.Mode().IsRegular() {
		return rec, fmt.Errorf("%s: not a regular file", path)
	}
	if err := checkTrusted(path, fi); err != nil {
		return rec, err
	}
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	if err != nil {
		return rec, err
	}
	if err := checkTrusted(dir, di); err != nil {
		return rec, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxJournalSize+1))
	if err != nil {
		return rec, err
	}
	if len(b) > maxJournalSize {
		return rec, fmt.Errorf("parse %s: larger than %d bytes", path, maxJournalSize)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("parse %s: %w", path, err)
	}
	if rec.Version != 1 {
		return rec, fmt.Errorf("parse %s: journal version %d, want 1", path, rec.Version)
	}
	for i, s := range rec.Steps {
		if s.Path == "" || !filepath.IsAbs(s.Path) {
			return rec, fmt.Errorf("parse %s: step %d has no absolute path", path, i)
		}
		if err := checkStepPath(s.Kind, s.Path); err != nil {
			return rec, fmt.Errorf("parse %s: step %d: %w", path, i, err)
		}
	}
	return rec, nil
}

// procStart returns the start time of pid in clock ticks after boot, or 0
// when it cannot be read. Together with the pid it names a process even
// after the pid is reused.
func procStart(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 {
		return 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n
}

// alive reports whether process pid, started at start, still runs (a
// zombie counts as gone: it can no longer change anything).
func alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
		if f := strings.Fields(string(b[i+1:])); len(f) > 0 && (f[0] == "Z" || f[0] == "X") {
			return false
		}
	}
	return start == 0 || procStart(pid) == start
}
