package affinity

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeKnob makes a file standing in for a host setting.
func fakeKnob(t *testing.T, name, value string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(value+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// allowFakeKnobs lets journals on disk name files under the temporary
// directory, where fakeKnob makes them, for the rest of the test.
func allowFakeKnobs(t *testing.T) {
	t.Helper()
	orig := checkStepPath
	tmp := filepath.Clean(os.TempDir()) + "/"
	checkStepPath = func(kind, path string) error {
		if strings.HasPrefix(path, tmp) {
			return nil
		}
		return orig(kind, path)
	}
	t.Cleanup(func() { checkStepPath = orig })
}

func readKnob(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestJournalApplyUndo(t *testing.T) {
	allowFakeKnobs(t)
	dir := t.TempDir()
	read := fakeKnob(t, "busy_read", "0")
	thp := fakeKnob(t, "enabled", "always [madvise] never")
	irq := fakeKnob(t, "smp_affinity_list", "0-1")

	j, err := CreateJournal(dir, []string{"onload-run", "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Apply(Step{Kind: KindSysctl, Path: read, New: "50"}); err != nil {
		t.Fatal(err)
	}
	s, err := j.Apply(Step{Kind: KindTHP, Path: thp, New: "never"})
	if err != nil || s.Old != "madvise" {
		t.Fatalf("thp step %+v, %v", s, err)
	}
	// The real file would then read "always madvise [never]"; the fake
	// holds what was written.
	if _, err := j.Apply(Step{Kind: KindIRQ, Path: irq, New: "0"}); err != nil {
		t.Fatal(err)
	}
	// The journal on disk holds every step, with the old values, before
	// Undo runs.
	steps, err := ReadJournal(dir)
	if err != nil || len(steps) != 3 || steps[0].Old != "0" || steps[0].New != "50" || steps[2].Old != "0-1" {
		t.Fatalf("journal on disk: %+v, %v", steps, err)
	}
	if readKnob(t, read) != "50" || readKnob(t, irq) != "0" {
		t.Fatal("changes not made")
	}
	// A second journal in the same directory is refused, naming the owner.
	_, err = CreateJournal(dir, nil)
	var ex *JournalExistsError
	if !errors.As(err, &ex) || !ex.Running || ex.PID != os.Getpid() || !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second journal: %v", err)
	}
	if err := j.Undo(); err != nil {
		t.Fatal(err)
	}
	if readKnob(t, read) != "0" || readKnob(t, thp) != "madvise" || readKnob(t, irq) != "0-1" {
		t.Fatalf("not restored: %q %q %q", readKnob(t, read), readKnob(t, thp), readKnob(t, irq))
	}
	if _, err := os.Stat(filepath.Join(dir, JournalFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("journal left behind: %v", err)
	}
	if err := j.Undo(); err != nil {
		t.Fatalf("second Undo: %v", err)
	}
	if _, err := j.Apply(Step{Path: read, New: "1"}); err == nil {
		t.Fatal("Apply after Undo succeeded")
	}
}

func TestJournalFailedWriteNotRecorded(t *testing.T) {
	dir := t.TempDir()
	knob := fakeKnob(t, "knob", "7")
	j, err := CreateJournal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Undo() })
	if _, err := j.Apply(Step{Path: filepath.Join(dir, "missing"), New: "1"}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	// A file that reads but refuses writes: a directory named like a knob
	// cannot be opened for writing.
	ro := t.TempDir()
	if _, err := j.Apply(Step{Path: ro, New: "1"}); err == nil {
		t.Fatal("write to a directory succeeded")
	}
	if _, err := j.Apply(Step{Path: knob, New: "8"}); err != nil {
		t.Fatal(err)
	}
	if steps := j.Steps(); len(steps) != 1 || steps[0].Path != knob {
		t.Fatalf("steps %+v", steps)
	}
	if err := j.Undo(); err != nil {
		t.Fatal(err)
	}
	if readKnob(t, knob) != "7" {
		t.Fatal("not restored")
	}
}

func TestUndoReportsUnrestorable(t *testing.T) {
	allowFakeKnobs(t)
	dir := t.TempDir()
	knob := fakeKnob(t, "knob", "1")
	j, err := CreateJournal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Apply(Step{Path: knob, New: "2"}); err != nil {
		t.Fatal(err)
	}
	os.Remove(knob)
	if err := os.Mkdir(knob, 0o755); err != nil {
		t.Fatal(err)
	}
	err = j.Undo()
	if err == nil || !strings.Contains(err.Error(), knob) {
		t.Fatalf("Undo: %v", err)
	}
	// The journal stays for a later Restore.
	if _, err := os.Stat(filepath.Join(dir, JournalFile)); err != nil {
		t.Fatalf("journal removed after a failed undo: %v", err)
	}
	os.Remove(knob)
	os.WriteFile(knob, []byte("2\n"), 0o644)
	if _, err := Restore(dir); err != nil {
		t.Fatal(err)
	}
	if readKnob(t, knob) != "1" {
		t.Fatal("Restore did not restore")
	}
}

// TestRestoreAfterKill writes a journal as a process that is gone would
// have left it, and restores it.
func TestRestoreAfterKill(t *testing.T) {
	allowFakeKnobs(t)
	dir := t.TempDir()
	knob := fakeKnob(t, "knob", "50")
	// A process that has exited: its pid is not running any more.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	rec := record{Version: 1, PID: cmd.ProcessState.Pid(), Start: 1, Command: []string{"onload-run"},
		Steps: []Step{{Kind: KindSysctl, Path: knob, Old: "0", New: "50"}}}
	b, _ := json.Marshal(rec)
	if err := os.WriteFile(filepath.Join(dir, JournalFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := CreateJournal(dir, nil)
	var ex *JournalExistsError
	if !errors.As(err, &ex) || ex.Running || !strings.Contains(err.Error(), "--restore") {
		t.Fatalf("CreateJournal over a dead owner's journal: %v", err)
	}
	steps, err := Restore(dir)
	if err != nil || len(steps) != 1 {
		t.Fatalf("Restore: %v %+v", err, steps)
	}
	if readKnob(t, knob) != "0" {
		t.Fatal("not restored")
	}
	if _, err := Restore(dir); !errors.Is(err, ErrNoJournal) {
		t.Fatalf("second Restore: %v", err)
	}
	// A live owner (this process, as seen from its journal) is refused by
	// another process; here we fake "another" by naming pid 1, which runs.
	rec.PID, rec.Start = 1, 0
	b, _ = json.Marshal(rec)
	os.WriteFile(filepath.Join(dir, JournalFile), b, 0o644)
	if _, err := Restore(dir); !errors.As(err, &ex) || !ex.Running {
		t.Fatalf("Restore with a live owner: %v", err)
	}
	os.Remove(filepath.Join(dir, JournalFile))
}

func TestBadJournal(t *testing.T) {
	dir := t.TempDir()
	for _, body := range []string{"{", `{"version":2}`, `{"version":1,"steps":[{"path":"rel"}]}`} {
		os.WriteFile(filepath.Join(dir, JournalFile), []byte(body), 0o644)
		if _, err := Restore(dir); err == nil {
			t.Errorf("Restore accepted %q", body)
		}
		if _, err := CreateJournal(dir, nil); !errors.Is(err, fs.ErrExist) {
			t.Errorf("CreateJournal over %q: %v", body, err)
		}
	}
}

func TestStepShell(t *testing.T) {
	s := Step{Path: "/proc/sys/net/core/busy_read", Old: "0", New: "50"}
	if s.Shell() != "echo 50 > /proc/sys/net/core/busy_read" || s.UndoShell() != "echo 0 > /proc/sys/net/core/busy_read" {
		t.Fatalf("%q / %q", s.Shell(), s.UndoShell())
	}
	if got := (Step{Path: "/x y", New: "a'b"}).Shell(); got != `echo 'a'\''b' > '/x y'` {
		t.Fatalf("quoting: %s", got)
	}
}

func TestSysctlPath(t *testing.T) {
	for in, want := range map[string]string{
		"net.core.busy_read":              "/proc/sys/net/core/busy_read",
		"/proc/sys/kernel/numa_balancing": "/proc/sys/kernel/numa_balancing",
	} {
		if got, err := SysctlPath(in); err != nil || got != want {
			t.Errorf("SysctlPath(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "net..core", "../etc/passwd", "/proc/sys/../../etc", ".net", "a/b"} {
		if _, err := SysctlPath(bad); err == nil {
			t.Errorf("SysctlPath(%q) accepted", bad)
		}
	}
}

// TestRestoreRefusesUntrustedJournal: --restore, as root, writes only the
// files a step's kind may name, and only from a journal that only root
// could have written.
func TestRestoreRefusesUntrustedJournal(t *testing.T) {
	victim := fakeKnob(t, "victim", "precious")
	write := func(dir string, steps []Step, mode os.FileMode) {
		t.Helper()
		b, _ := json.Marshal(record{Version: 1, PID: 0, Steps: steps})
		p := filepath.Join(dir, JournalFile)
		os.Remove(p)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
	}
	dir := t.TempDir()
	for _, s := range []Step{
		{Kind: KindSysctl, Path: victim, Old: "pwned"},
		{Kind: KindFile, Path: victim, Old: "pwned"},
		{Kind: KindSysctl, Path: "/proc/sys/../../" + victim, Old: "pwned"},
		{Kind: KindIRQ, Path: "/proc/irq/1/../../.." + victim, Old: "pwned"},
		{Kind: KindTHP, Path: victim, Old: "pwned"},
		{Kind: KindCPUIdle, Path: "/sys/devices/system/cpu/cpu0/cpuidle/state1/disable/../../../../../../.." + victim, Old: "pwned"},
		{Kind: "", Path: victim, Old: "pwned"},
	} {
		write(dir, []Step{s}, 0o644)
		if _, err := Restore(dir); err == nil {
			t.Errorf("Restore accepted %+v", s)
		}
	}
	if got := readKnob(t, victim); got != "precious" {
		t.Fatalf("victim now %q", got)
	}
	os.Remove(filepath.Join(dir, JournalFile))

	// Known shapes pass.
	for _, s := range []Step{
		{Kind: KindSysctl, Path: "/proc/sys/net/core/busy_read"},
		{Kind: KindIRQ, Path: "/proc/irq/38/smp_affinity_list"},
		{Kind: KindCPUIdle, Path: "/sys/devices/system/cpu/cpu3/cpuidle/state2/disable"},
		{Kind: KindTHP, Path: THPEnabledPath},
	} {
		if err := checkStepPath(s.Kind, s.Path); err != nil {
			t.Errorf("%v", err)
		}
	}

	if os.Geteuid() != 0 {
		return
	}
	// As root: a journal (or its directory) that others could write, or
	// that another user owns, is refused.
	allowFakeKnobs(t)
	bad := []Step{{Kind: KindSysctl, Path: victim, Old: "pwned"}}
	write(dir, bad, 0o666)
	if _, err := Restore(dir); err == nil || !strings.Contains(err.Error(), "not trusted") {
		t.Errorf("Restore of a world-writable journal: %v", err)
	}
	write(dir, bad, 0o644)
	os.Chown(filepath.Join(dir, JournalFile), 65534, 65534)
	if _, err := Restore(dir); err == nil || !strings.Contains(err.Error(), "not trusted") {
		t.Errorf("Restore of a journal owned by nobody: %v", err)
	}
	write(dir, bad, 0o644)
	os.Chmod(dir, 0o777)
	if _, err := Restore(dir); err == nil || !strings.Contains(err.Error(), "not trusted") {
		t.Errorf("Restore in a world-writable directory: %v", err)
	}
	os.Chmod(dir, 0o700)
	// A symbolic link in the journal's place is not followed.
	os.Remove(filepath.Join(dir, JournalFile))
	other := t.TempDir()
	write(other, bad, 0o644)
	os.Symlink(filepath.Join(other, JournalFile), filepath.Join(dir, JournalFile))
	if _, err := Restore(dir); err == nil {
		t.Error("Restore followed a symbolic link to a journal")
	}
	if got := readKnob(t, victim); got != "precious" {
		t.Fatalf("victim now %q", got)
	}
}

// TestPersistDoesNotFollowTmpSymlink: a journal.json.tmp planted as a
// symbolic link is removed, not written through.
func TestPersistDoesNotFollowTmpSymlink(t *testing.T) {
	allowFakeKnobs(t)
	dir := t.TempDir()
	victim := fakeKnob(t, "victim", "precious")
	knob := fakeKnob(t, "knob", "0")
	if err := os.Symlink(victim, filepath.Join(dir, JournalFile+".tmp")); err != nil {
		t.Fatal(err)
	}
	j, err := CreateJournal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Apply(Step{Kind: KindSysctl, Path: knob, New: "1"}); err != nil {
		t.Fatal(err)
	}
	if err := j.Undo(); err != nil {
		t.Fatal(err)
	}
	if got := readKnob(t, victim); got != "precious" {
		t.Fatalf("victim now %q", got)
	}
}

// TestUndoStepGone: an IRQ or cpuidle step whose file disappeared (device
// unplugged, CPU offline) is noted as gone and does not keep the journal;
// a sysctl whose file disappeared still does.
func TestUndoStepGone(t *testing.T) {
	allowFakeKnobs(t)
	for _, viaRestore := range []bool{false, true} {
		dir := t.TempDir()
		sysctl := fakeKnob(t, "busy_read", "0")
		irq := fakeKnob(t, "smp_affinity_list", "0-1")
		idle := fakeKnob(t, "disable", "0")
		j, err := CreateJournal(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []Step{{Kind: KindSysctl, Path: sysctl, New: "50"}, {Kind: KindIRQ, Path: irq, New: "1"}, {Kind: KindCPUIdle, Path: idle, New: "1"}} {
			if _, err := j.Apply(s); err != nil {
				t.Fatal(err)
			}
		}
		os.Remove(irq)
		os.Remove(idle)
		var steps []Step
		if viaRestore {
			// As a dead owner's journal: mark it as another process's.
			j.rec.PID, j.rec.Start = 0, 0
			if err := j.persist(); err != nil {
				t.Fatal(err)
			}
			steps, err = Restore(dir)
		} else {
			err = j.Undo()
			steps = j.Steps()
		}
		if err != nil {
			t.Fatalf("restore=%v: %v", viaRestore, err)
		}
		if len(steps) != 3 || steps[0].Gone || !steps[1].Gone || !steps[2].Gone {
			t.Fatalf("restore=%v: steps %+v", viaRestore, steps)
		}
		if readKnob(t, sysctl) != "0" {
			t.Fatal("sysctl not restored")
		}
		if _, err := os.Stat(filepath.Join(dir, JournalFile)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("restore=%v: journal left: %v", viaRestore, err)
		}
	}
	// A sysctl that disappeared is an error: the journal stays.
	dir := t.TempDir()
	sysctl := fakeKnob(t, "busy_poll", "0")
	j, err := CreateJournal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Apply(Step{Kind: KindSysctl, Path: sysctl, New: "50"}); err != nil {
		t.Fatal(err)
	}
	os.Remove(sysctl)
	if err := j.Undo(); err == nil {
		t.Fatal("Undo of a vanished sysctl succeeded")
	}
	os.Remove(filepath.Join(dir, JournalFile))
}

// TestCreateJournalWhole: concurrent creators in one directory see either
// no journal or a whole one: one wins, every other is told who holds it,
// and no temporary file is left.
func TestCreateJournalWhole(t *testing.T) {
	for range 50 {
		dir := t.TempDir()
		const n = 8
		errs := make(chan error, n)
		js := make(chan *Journal, n)
		for range n {
			go func() {
				j, err := CreateJournal(dir, []string{"racer"})
				if err == nil {
					js <- j
				}
				errs <- err
			}()
		}
		won := 0
		for range n {
			err := <-errs
			var ex *JournalExistsError
			switch {
			case err == nil:
				won++
			case !errors.As(err, &ex) || !ex.Running:
				t.Fatalf("losing creator: %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d creators won", won)
		}
		(<-js).Undo()
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("left in %s: %v", dir, ents)
		}
	}
}

// FuzzReadJournal: whatever a journal file holds, reading it does not
// panic, and what it accepts names only files a step's kind may name.
func FuzzReadJournal(f *testing.F) {
	f.Add([]byte(`{"version":1,"pid":1,"steps":[{"kind":"sysctl","path":"/proc/sys/net/core/busy_read","old":"0","new":"50"}]}`))
	f.Add([]byte(`{"version":1,"steps":[{"kind":"irq","path":"/proc/irq/38/smp_affinity_list","old":"0-1"}],"pgid":7}`))
	f.Add([]byte(`{"version":1,"steps":[{"kind":"sysctl","path":"/proc/sys/../../etc/shadow"}]}`))
	f.Add([]byte(`{`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, JournalFile)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		rec, err := readRecord(p)
		if err != nil {
			return
		}
		if rec.Version != 1 {
			t.Fatalf("accepted version %d", rec.Version)
		}
		for _, s := range rec.Steps {
			if err := checkStepPath(s.Kind, s.Path); err != nil || strings.Contains(s.Path, "..") {
				t.Fatalf("accepted step %+v", s)
			}
		}
	})
}
