//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lowlat/lowlat/affinity"
	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/internal/cli"
)

// defaultLockGone fails the test if it leaves affinity.DefaultLockFile
// behind when there was none before it.
func defaultLockGone(t *testing.T) {
	t.Helper()
	if _, err := os.Lstat(affinity.DefaultLockFile); err == nil {
		return
	}
	t.Cleanup(func() {
		if _, err := os.Lstat(affinity.DefaultLockFile); err == nil {
			t.Errorf("%s left behind", affinity.DefaultLockFile)
		}
	})
}

// TestTwoRunsCannotSidestepTheLock: two onload-run processes with
// different --lock-file and --journal-dir values (flags or variables)
// cannot both apply changes; once the first is killed, its unrestored
// journal blocks every run, whatever its lock file and journal directory,
// until --restore of that journal.
func TestTwoRunsCannotSidestepTheLock(t *testing.T) {
	requireRoot(t)
	dirA := guard(t)
	defaultLockGone(t)
	dirB, dirC := t.TempDir(), t.TempDir()
	locks := t.TempDir()
	lockA, lockB, lockC := filepath.Join(locks, "a.lock"), filepath.Join(locks, "b.lock"), filepath.Join(locks, "c.lock")
	before := readTrim(t, "/proc/sys/net/core/busy_read")

	s := startRun(t, "--journal-dir", dirA, "--lock-file", lockA, "--profile", "latency", "--", "sh", "-c", "echo ready; exec sleep 30")
	held := fmt.Sprintf("running pid %d", s.cmd.Process.Pid)
	for _, r := range []result{
		onloadRun(t, nil, "--journal-dir", dirB, "--lock-file", lockB, "--profile", "latency", "--", "true"),
		onloadRun(t, []string{affinity.JournalDirEnv + "=" + dirC, affinity.LockFileEnv + "=" + lockC}, "--profile", "latency", "--", "true"),
	} {
		if r.status != 1 || !strings.Contains(r.stderr, held) {
			t.Fatalf("second run: status %d stderr %q; want 1 and the first run named", r.status, r.stderr)
		}
	}
	noJournal(t, dirB)
	noJournal(t, dirC)
	for _, l := range []string{lockB, lockC} {
		if _, err := os.Lstat(l); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("refused run left %s: %v", l, err)
		}
	}
	if got := readTrim(t, "/proc/sys/net/core/busy_read"); got != "50" {
		t.Fatalf("busy_read %s while the first run runs", got)
	}

	// Killed outright, the first run leaves its journal: every run is
	// refused and told which journal to restore, whatever its lock file
	// and journal directory.
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.wait(t)
	for _, args := range [][]string{
		{"--journal-dir", dirB, "--lock-file", lockB},
		{"--journal-dir", dirC, "--lock-file", lockC},
		{"--journal-dir", dirA, "--lock-file", lockC},
		{"--journal-dir", dirC},
	} {
		r := onloadRun(t, nil, append(args, "--profile", "latency", "--", "true")...)
		if r.status != 1 || !strings.Contains(r.stderr, "--restore --journal-dir "+dirA) {
			t.Fatalf("run %q after a killed run: status %d stderr %q", args, r.status, r.stderr)
		}
	}
	noJournal(t, dirB)
	noJournal(t, dirC)
	if r := onloadRun(t, nil, "--restore", "--journal-dir", dirB, "--lock-file", lockB); r.status != 1 {
		t.Fatalf("--restore of another directory: status %d", r.status)
	}
	if got := readTrim(t, "/proc/sys/net/core/busy_read"); got != "50" {
		t.Fatalf("busy_read %s before the restore: a refused run touched it", got)
	}
	if r := onloadRun(t, nil, "--restore", "--journal-dir", dirA, "--lock-file", lockC); r.status != 0 {
		t.Fatalf("--restore: status %d", r.status)
	}
	if got := readTrim(t, "/proc/sys/net/core/busy_read"); got != before {
		t.Fatalf("busy_read %s after --restore, was %s", got, before)
	}
	if r := onloadRun(t, nil, "--journal-dir", dirB, "--lock-file", lockB, "--profile", "latency", "--", "true"); r.status != 0 {
		t.Fatalf("run after the restore: status %d", r.status)
	}
	noJournal(t, dirB)
	for _, l := range []string{lockB, lockC} {
		if _, err := os.Lstat(l); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("lock file %s left: %v", l, err)
		}
	}
}

// TestExistingLockFileRefused: an existing file that is not lowlat's,
// given as --lock-file or $LOWLAT_LOCK_FILE, is refused (status 2, named),
// for a run, a dry run and --restore alike, and left exactly as it was.
func TestExistingLockFileRefused(t *testing.T) {
	dir := t.TempDir()
	jdir := t.TempDir()
	before := snapshot(t)
	mine := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(mine, []byte("do not lose this\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	os.Chtimes(mine, old, old)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	os.Chtimes(empty, old, old)
	link := filepath.Join(dir, "link")
	os.Symlink(mine, link)
	for _, f := range []string{mine, empty, link, dir} {
		for _, tc := range []struct {
			env  []string
			args []string
			name string
		}{
			{nil, []string{"--lock-file", f, "--profile", "latency", "--", "true"}, "--lock-file"},
			{nil, []string{"--lock-file", f, "--dry-run", "--profile", "latency", "--", "true"}, "--lock-file"},
			{nil, []string{"--lock-file", f, "--restore"}, "--lock-file"},
			{[]string{affinity.LockFileEnv + "=" + f}, []string{"--restore"}, affinity.LockFileEnv},
			{[]string{affinity.LockFileEnv + "=" + f}, []string{"--profile", "latency", "--", "true"}, affinity.LockFileEnv},
		} {
			r := onloadRun(t, tc.env, append([]string{"--journal-dir", jdir}, tc.args...)...)
			if r.status != 2 || !strings.Contains(r.stderr, tc.name) || !strings.Contains(r.stderr, "not a lowlat lock file") ||
				strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("%v %q: status %d stderr %q; want 2 and one line naming %s", tc.env, tc.args, r.status, r.stderr, tc.name)
			}
		}
	}
	for p, want := range map[string]string{mine: "do not lose this\n", empty: ""} {
		st, err := os.Stat(p)
		if b, _ := os.ReadFile(p); err != nil || string(b) != want || !st.ModTime().Equal(old) {
			t.Errorf("%s changed: %q, %v", p, b, err)
		}
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("symlink changed: %v", err)
	}
	if d := before.diff(snapshot(t)); len(d) > 0 {
		t.Fatalf("refused runs changed the host:\n%s", strings.Join(d, "\n"))
	}
	if ents, _ := os.ReadDir(jdir); len(ents) != 0 {
		t.Fatalf("refused runs left %v", ents)
	}
}

// TestProfileTrust: run as root, a profile file that someone else owns or
// could write (itself, or any directory above it, or the file a symbolic
// link leads to) is refused with the reason, before anything changes; one
// that only root could have written is taken, and built-in names keep
// working.
func TestProfileTrust(t *testing.T) {
	requireRoot(t)
	const body = "description = test\n[sysctl]\nkernel.core_pattern = |/tmp/x\n"
	jdir := t.TempDir()
	before := snapshot(t)
	corePattern := readTrim(t, "/proc/sys/kernel/core_pattern")
	root := t.TempDir() // root's, 0700, in sticky /tmp
	write := func(p string, mode os.FileMode, uid int) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	nobodyDir := filepath.Join(root, "nobody")
	openDir := filepath.Join(root, "open")
	for _, d := range []string{nobodyDir, openDir} {
		os.Mkdir(d, 0o755)
	}
	os.Chown(nobodyDir, 65534, 65534)
	os.Chmod(openDir, 0o777) // not sticky: anyone may replace what is in it
	link := filepath.Join(root, "link.profile")
	os.Symlink(write(filepath.Join(nobodyDir, "target.profile"), 0o644, 0), link)
	for _, tc := range []struct {
		path, why string
	}{
		{write(filepath.Join(root, "theirs.profile"), 0o644, 65534), "owned by uid 65534"},
		{write(filepath.Join(root, "open.profile"), 0o666, 0), "writable by group or others"},
		{write(filepath.Join(root, "group.profile"), 0o664, 0), "writable by group or others"},
		{write(filepath.Join(openDir, "in-open-dir.profile"), 0o644, 0), openDir + " is writable by group or others"},
		{write(filepath.Join(nobodyDir, "in-nobody-dir.profile"), 0o644, 0), nobodyDir + " is owned by uid 65534"},
		{link, nobodyDir + " is owned by uid 65534"},
	} {
		for _, extra := range [][]string{nil, {"--dry-run"}} {
			args := append(append([]string{"--journal-dir", jdir, "--profile", tc.path}, extra...), "--", "true")
			r := onloadRun(t, nil, args...)
			if r.status != 2 || !strings.Contains(r.stderr, tc.why) || !strings.Contains(r.stderr, "not trusted") || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("profile %s: status %d stderr %q; want 2 and %q", tc.path, r.status, r.stderr, tc.why)
			}
		}
	}
	if got := readTrim(t, "/proc/sys/kernel/core_pattern"); got != corePattern {
		put("/proc/sys/kernel/core_pattern", corePattern)
		t.Fatalf("kernel.core_pattern changed to %q by an untrusted profile", got)
	}
	// Only root could have written these: taken (a dry run, to change nothing).
	good := write(filepath.Join(root, "good.profile"), 0o644, 0)
	for _, p := range []string{good, "latency"} {
		if r := onloadRun(t, nil, "--journal-dir", jdir, "--dry-run", "--profile", p, "--", "true"); r.status != 0 {
			t.Errorf("profile %s: status %d stderr %q", p, r.status, r.stderr)
		}
	}
	if d := before.diff(snapshot(t)); len(d) > 0 {
		t.Fatalf("the host changed:\n%s", strings.Join(d, "\n"))
	}
}

// TestProfileCodeEnv: a profile whose [env] or [onload] sets a variable
// that makes PROGRAM load code (LD_PRELOAD and kin) is refused, naming it
// and the flag, unless --allow-code-env is given.
func TestProfileCodeEnv(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ section, name string }{
		{"env", "LD_PRELOAD"}, {"env", "LD_LIBRARY_PATH"}, {"env", "LD_AUDIT"}, {"env", "PYTHONPATH"},
		{"onload", "LD_PRELOAD"}, {"env", "BASH_ENV"},
	} {
		prof := filepath.Join(dir, tc.section+"-"+tc.name+".profile")
		lib := filepath.Join(t.TempDir(), "evil.so")
		if err := os.WriteFile(prof, []byte("description = test\n["+tc.section+"]\n"+tc.name+" = "+lib+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := onloadRun(t, nil, "--profile", prof, "--", "true")
		if r.status != 2 || !strings.Contains(r.stderr, tc.name) || !strings.Contains(r.stderr, "--allow-code-env") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("[%s] %s: status %d stderr %q; want 2 naming it and --allow-code-env", tc.section, tc.name, r.status, r.stderr)
		}
	}
	// Allowed: PROGRAM gets the variable. (ld.so warns that the library
	// does not exist, and runs PROGRAM all the same.)
	prof := filepath.Join(dir, "env-LD_PRELOAD.profile")
	r := onloadRun(t, nil, "--allow-code-env", "--profile", prof, "--", "sh", "-c", `echo "$LD_PRELOAD"`)
	if r.status != 0 || !strings.HasSuffix(strings.TrimSpace(r.stdout), "evil.so") {
		t.Fatalf("with --allow-code-env: status %d stdout %q stderr %q", r.status, r.stdout, r.stderr)
	}
}

// maxMessage bounds one line of onload-run's about a bad command line.
const maxMessage = len("onload-run: ") + cli.MaxLine + 16

// runQuiet is onloadRun for hostile arguments: it logs a bounded quote of
// them, not a 100 KB argument whole.
func runQuiet(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run onload-run: %v", err)
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// TestHostileCommandLines feeds onload-run malformed flags and LOWLAT_*
// values: each is refused with status 2, before anything changes, in one
// bounded line that names the flag or variable; an empty variable is read
// as unset, whichever it is.
func TestHostileCommandLines(t *testing.T) {
	dir := t.TempDir()
	before := snapshot(t)
	long := strings.Repeat("A", 100_000)
	userFile := filepath.Join(t.TempDir(), "mine")
	os.WriteFile(userFile, []byte("mine\n"), 0o644)
	type tc struct {
		env  []string
		args []string
		name string
	}
	cases := []tc{
		{nil, []string{"--bogus", "--", "true"}, "--bogus"},
		{nil, []string{"-bogus", "--", "true"}, "--bogus"},
		{nil, []string{"--" + long, "--", "true"}, "unknown flag"},
		{nil, []string{"--profile"}, "--profile"},
		{nil, []string{"--dry-run=maybe", "--", "true"}, "--dry-run"},
		{nil, []string{"--restore=" + long}, "--restore"},
		{nil, []string{"--profile", "nosuch", "--", "true"}, "--profile"},
		{nil, []string{"--profile", "/" + long, "--", "true"}, "--profile"},
		{nil, []string{"--profile", "/proc/kmsg", "--", "true"}, "--profile"},
		{nil, []string{"--cpus", "0-", "--", "true"}, "--cpus"},
		{nil, []string{"--cpus", long, "--", "true"}, "--cpus"},
		{nil, []string{"--irq-cpus", "x", "--iface", "lo", "--", "true"}, "--irq-cpus"},
		{nil, []string{"--iface", long, "--", "true"}, "--iface"},
		{nil, []string{"--iface", "no\nsuch\x1b[2J", "--", "true"}, "--iface"},
		{nil, []string{"--journal-dir", "relative", "--", "true"}, "--journal-dir"},
		{nil, []string{"--journal-dir", long, "--", "true"}, "--journal-dir"},
		{nil, []string{"--lock-file", "relative", "--", "true"}, "--lock-file"},
		{nil, []string{"--lock-file", userFile, "--", "true"}, "--lock-file"},
		{[]string{affinity.JournalDirEnv + "=relative"}, []string{"--", "true"}, affinity.JournalDirEnv},
		{[]string{affinity.LockFileEnv + "=relative"}, []string{"--restore"}, affinity.LockFileEnv},
		{nil, []string{"--", "/nonexistent/" + long}, "program"},
		{nil, []string{"--restore", "--", "true"}, "--restore"},
		{nil, nil, "program"},
		{[]string{affinity.EnvCPUs + "=x"}, []string{"--profile", "safe", "--", "true"}, affinity.EnvCPUs},
		{[]string{affinity.EnvMlockall + "=maybe"}, []string{"--profile", "safe", "--", "true"}, affinity.EnvMlockall},
	}
	bad := map[string]string{
		"LOWLAT_BACKEND": "warp", "LOWLAT_WAIT": "sometimes", "LOWLAT_READ_TIMEOUT": "-1s", "LOWLAT_BATCH": "-1",
		"LOWLAT_BUSY_POLL_US": "0", "LOWLAT_BUSY_POLL_BUDGET": "99999", "LOWLAT_IFACE": long, "LOWLAT_QUEUE": "-2",
		"LOWLAT_XDP_MODE": "fast", "LOWLAT_XDP_BIND": "glue", "LOWLAT_XDP_FRAMES": "3", "LOWLAT_XDP_RING": "0",
		"LOWLAT_XDP_BUSY_POLL": "maybe",
	}
	for _, v := range backend.EnvVars {
		val, ok := bad[v.Name]
		if !ok {
			t.Errorf("no malformed value for %s", v.Name)
			continue
		}
		cases = append(cases, tc{[]string{v.Name + "=" + val}, []string{"--profile", "safe", "--", "true"}, v.Name})
	}
	for _, c := range cases {
		args := c.args
		if !strings.HasPrefix(strings.Join(c.env, ""), affinity.JournalDirEnv+"=") {
			args = append([]string{"--journal-dir", dir}, args...)
		}
		r := runQuiet(t, c.env, args...)
		line := strings.TrimSuffix(r.stderr, "\n")
		if r.status != 2 || strings.Contains(line, "\n") || !strings.HasPrefix(line, "onload-run: ") ||
			!strings.Contains(line, c.name) || len(line) > maxMessage || strings.ContainsRune(line, 0x1b) || r.stdout != "" {
			t.Errorf("%.60q %.60q: status %d, stderr %d bytes %.300q; want 2 and one bounded line naming %s",
				c.env, c.args, r.status, len(r.stderr), r.stderr, c.name)
		}
	}
	// Empty, or blank, is unset for every variable.
	names := []string{affinity.EnvCPUs, affinity.EnvMlockall, affinity.JournalDirEnv, affinity.LockFileEnv}
	for _, v := range backend.EnvVars {
		names = append(names, v.Name)
	}
	for _, n := range names {
		for _, empty := range []string{"", " "} {
			if r := runQuiet(t, []string{n + "=" + empty}, "--journal-dir", dir, "--profile", "safe", "--", "true"); r.status != 0 {
				t.Errorf("%s=%q: status %d stderr %q; want it read as unset", n, empty, r.status, r.stderr)
			}
		}
	}
	if d := before.diff(snapshot(t)); len(d) > 0 {
		t.Fatalf("bad input changed the host:\n%s", strings.Join(d, "\n"))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("bad input left %v", ents)
	}
}

// TestDryRunValuesStayQuoted: no value from a profile, the host or the
// command line starts a shell line of its own in the --dry-run script.
func TestDryRunValuesStayQuoted(t *testing.T) {
	dir := t.TempDir()
	prof := filepath.Join(dir, "odd.profile")
	os.WriteFile(prof, []byte("description = \"line one\\nrm -rf / # two\"\n[env]\nLOWLAT_WAIT = block\n"), 0o644)
	r := runQuiet(t, nil, "--dry-run", "--profile", prof, "--", "printf", "a b;rm -rf /")
	if r.status != 0 {
		t.Fatalf("status %d stderr %q", r.status, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	for _, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix(l, "#") {
			t.Errorf("a line that is not a comment: %q", l)
		}
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, `'a b;rm -rf /`) {
		t.Errorf("command line %q: want PROGRAM's arguments quoted", last)
	}
}

// FuzzCommandLine: whatever the arguments (NUL-separated here), reading
// the command line and working out the plan never panics, never changes
// anything, and ends in status 0 (help), 1 or 2 with one bounded line, or
// in a plan to carry out. Run with -fuzz to explore; the normal test run
// tries the seeds only.
func FuzzCommandLine(f *testing.F) {
	for _, args := range [][]string{
		{}, {"-h"}, {"--help"}, {"--bogus"}, {"-bogus"}, {"--profile"}, {"--profile", "nosuch", "--", "true"},
		{"--profile", "/dev/zero", "--", "true"}, {"--profile", "/proc/kmsg", "--", "true"},
		{"--cpus", "0-", "--", "true"}, {"--cpus", "99999", "--", "true"}, {"--irq-cpus", "1", "--", "true"},
		{"--iface", "../../etc", "--", "true"}, {"--journal-dir", "", "--", "true"}, {"--lock-file", "x"},
		{"--lock-file", "/etc/passwd", "--restore"}, {"--restore", "--dry-run"}, {"--dry-run", "--", "/nonexistent"},
		{"--dry-run", "--profile", "safe", "--", "true"}, {"--dry-run=2"}, {"--v=x"}, {"--onload-lib", "/etc/passwd", "--", "true"},
		{"--allow-code-env=1", "--", "true"}, {"---", "x"}, {"--=x"}, {"--cpus", strings.Repeat("1,", 5000), "--", "true"},
	} {
		f.Add(strings.Join(args, "\x00"))
	}
	f.Fuzz(func(t *testing.T, in string) {
		if len(in) > 1<<16 {
			return
		}
		var args []string
		if in != "" {
			args = strings.Split(in, "\x00")
		}
		if len(args) > 64 {
			return
		}
		var out, errb bytes.Buffer
		o, p, status := prepare(args, &out, &errb)
		switch status {
		case -1:
			if !o.restore && p == nil {
				t.Fatalf("%q: no plan and no status", args)
			}
		case 0:
			if errb.Len() != 0 {
				t.Fatalf("%q: help with stderr %q", args, errb.String())
			}
		case 1, 2:
			line := strings.TrimSuffix(errb.String(), "\n")
			if strings.Contains(line, "\n") || !strings.HasPrefix(line, "onload-run: ") || len(line) > maxMessage || out.Len() != 0 {
				t.Fatalf("%q: status %d, stderr %d bytes %.200q, stdout %d bytes", args, status, errb.Len(), errb.String(), out.Len())
			}
		default:
			t.Fatalf("%q: status %d", args, status)
		}
	})
}
