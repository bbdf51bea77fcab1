//go:build linux

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lowlat/lowlat/affinity"
)

// bin is the onload-run binary under test, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "onload-run-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "onload-run")
	gobin, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "onload-run tests need the go command:", err)
		os.Exit(1)
	}
	if out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hostState is the value of every host setting the tests may touch.
type hostState map[string]string

const thpPath = "/sys/kernel/mm/transparent_hugepage/enabled"

func snapshot(t *testing.T) hostState {
	t.Helper()
	s := hostState{}
	paths := []string{
		"/proc/sys/net/core/busy_read", "/proc/sys/net/core/busy_poll",
		"/proc/sys/kernel/numa_balancing", thpPath,
	}
	irqs, _ := filepath.Glob("/proc/irq/*/smp_affinity_list")
	paths = append(paths, irqs...)
	if m, _ := filepath.Glob("/sys/devices/system/cpu/cpu*/cpuidle/state*/disable"); len(m) > 0 {
		paths = append(paths, m...)
	}
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			s[p] = strings.TrimSpace(string(b))
		}
	}
	return s
}

func (s hostState) diff(o hostState) []string {
	var d []string
	for p, v := range s {
		if o[p] != v {
			d = append(d, fmt.Sprintf("%s: %q, was %q", p, o[p], v))
		}
	}
	return d
}

// put writes a snapshot value back (the cleanup of last resort).
func put(path, v string) error {
	if path == thpPath {
		if i, j := strings.IndexByte(v, '['), strings.IndexByte(v, ']'); i >= 0 && j > i {
			v = v[i+1 : j]
		}
	}
	return os.WriteFile(path, []byte(v+"\n"), 0)
}

// guard makes a journal directory for the test and, when the test ends,
// pass or fail, restores whatever a journal was left holding and checks
// that every host setting is back as it was; anything that is not gets
// written back and fails the test.
func guard(t *testing.T) string {
	t.Helper()
	before := snapshot(t)
	dir := t.TempDir()
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(dir, affinity.JournalFile)); err == nil {
			out, err := exec.Command(bin, "--restore", "--journal-dir", dir).CombinedOutput()
			t.Errorf("journal left in %s; --restore: %v %s", dir, err, out)
		}
		after := snapshot(t)
		if d := before.diff(after); len(d) > 0 {
			for p, v := range before {
				if after[p] != v {
					put(p, v)
				}
			}
			t.Errorf("host not restored:\n%s", strings.Join(d, "\n"))
		}
	})
	return dir
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: changes sysctls and IRQ affinity and holds /dev/cpu_dma_latency")
	}
}

type result struct {
	status         int
	stdout, stderr string
}

// onloadRun runs the binary to completion.
func onloadRun(t *testing.T, env []string, args ...string) result {
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
	r := result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
	t.Logf("onload-run %s: status %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.status, r.stdout, r.stderr)
	return r
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func noJournal(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, affinity.JournalFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("journal still in %s (%v)", dir, err)
	}
}

func TestLatencyProfileSetsBusyRead(t *testing.T) {
	requireRoot(t)
	dir := guard(t)
	before := readTrim(t, "/proc/sys/net/core/busy_read")
	r := onloadRun(t, nil, "--journal-dir", dir, "--profile", "latency", "--", "sh", "-c", "cat /proc/sys/net/core/busy_read")
	if r.status != 0 || strings.TrimSpace(r.stdout) != "50" {
		t.Fatalf("status %d, stdout %q: want 0 and 50", r.status, r.stdout)
	}
	if got := readTrim(t, "/proc/sys/net/core/busy_read"); got != before {
		t.Fatalf("busy_read %s after the run, was %s", got, before)
	}
	noJournal(t, dir)
}

func TestCPUDMALatencyHeldWhileRunning(t *testing.T) {
	requireRoot(t)
	dir := guard(t)
	r := onloadRun(t, nil, "--journal-dir", dir, "--profile", "latency", "--", "od", "-An", "-td4", "-N4", affinity.CPUDMALatencyPath)
	if r.status != 0 || strings.TrimSpace(r.stdout) != "0" {
		t.Fatalf("status %d, /dev/cpu_dma_latency read %q while held: want 0", r.status, r.stdout)
	}
	noJournal(t, dir)
}

// lastOnline returns the highest online CPU this process may use.
func lastOnline(t *testing.T) int {
	t.Helper()
	allowed, err := affinity.ProcessAffinity(0)
	if err != nil {
		t.Fatal(err)
	}
	cpus := allowed.CPUs()
	return cpus[len(cpus)-1]
}

func TestCPUsInChild(t *testing.T) {
	cpu := strconv.Itoa(lastOnline(t))
	// safe changes nothing on the host: this part runs without root.
	r := onloadRun(t, nil, "--profile", "safe", "--cpus", cpu, "--", "sh", "-c", "grep Cpus_allowed_list /proc/self/status; echo $LOWLAT_CPUS")
	if r.status != 0 || !strings.Contains(r.stdout, "Cpus_allowed_list:\t"+cpu+"\n") || !strings.HasSuffix(r.stdout, cpu+"\n") {
		t.Fatalf("status %d stdout %q: want Cpus_allowed_list %s", r.status, r.stdout, cpu)
	}

	requireRoot(t)
	dir := guard(t)
	// latency-best adds SCHED_FIFO: field 41 of /proc/PID/stat is the
	// policy (1 = SCHED_FIFO), field 40 the real-time priority.
	r = onloadRun(t, nil, "--journal-dir", dir, "--profile", "latency-best", "--cpus", cpu, "--",
		"sh", "-c", "grep Cpus_allowed_list /proc/self/status; cat /proc/$$/stat; echo $LOWLAT_MLOCKALL")
	if r.status != 0 || !strings.Contains(r.stdout, "Cpus_allowed_list:\t"+cpu+"\n") {
		t.Fatalf("latency-best: status %d stdout %q", r.status, r.stdout)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	stat := lines[1]
	f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
	if len(f) < 39 || f[38] != "1" || f[37] != "49" {
		t.Fatalf("child policy/priority fields %v, want 1 (SCHED_FIFO) and 49", f[37:39])
	}
	if lines[2] != "1" {
		t.Fatalf("LOWLAT_MLOCKALL %q", lines[2])
	}
	noJournal(t, dir)
}

func TestExitStatusPassesThrough(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{{"exit 0", 0}, {"exit 7", 7}, {"kill -TERM $$", 128 + 15}, {"kill -KILL $$", 128 + 9}} {
		r := onloadRun(t, nil, "--profile", "safe", "--", "sh", "-c", tc.script)
		if r.status != tc.want {
			t.Errorf("%q: status %d, want %d", tc.script, r.status, tc.want)
		}
	}
	requireRoot(t)
	dir := guard(t)
	r := onloadRun(t, nil, "--journal-dir", dir, "--profile", "latency", "--", "sh", "-c", "exit 42")
	if r.status != 42 {
		t.Fatalf("latency: status %d, want 42", r.status)
	}
	noJournal(t, dir)
}

// started is an onload-run running in the background whose PROGRAM has
// printed its first line.
type started struct {
	cmd   *exec.Cmd
	first string
	out   *bufio.Reader
	errb  *bytes.Buffer
	done  chan struct{}
}

// startRun starts onload-run and waits (at most 10 s) for PROGRAM's first
// line of output.
func startRun(t *testing.T, args ...string) *started {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &started{cmd: cmd, out: bufio.NewReader(stdout), errb: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = s.errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.done
	})
	lines := make(chan string, 1)
	go func() {
		l, _ := s.out.ReadString('\n')
		lines <- l
	}()
	go func() {
		cmd.Wait()
		close(s.done)
	}()
	select {
	case s.first = <-lines:
	case <-time.After(10 * time.Second):
		t.Fatalf("no output from PROGRAM in 10s; stderr: %s", s.errb)
	}
	return s
}

func (s *started) wait(t *testing.T) (int, string) {
	t.Helper()
	rest := make(chan string, 1)
	go func() {
		b, _ := s.out.ReadString(0)
		rest <- b
	}()
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		// s.errb is still being written by the copying goroutine: do
		// not read it here.
		t.Fatalf("onload-run did not end in 20s")
	}
	out := <-rest
	return s.cmd.ProcessState.ExitCode(), out
}

func TestSignalsForwarded(t *testing.T) {
	script := `trap 'echo got USR1; exit 5' USR1; echo ready; i=0; while [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; exit 9`
	s := startRun(t, "--profile", "safe", "--", "sh", "-c", script)
	s.cmd.Process.Signal(syscall.SIGUSR1)
	status, out := s.wait(t)
	if status != 5 || !strings.Contains(out, "got USR1") {
		t.Fatalf("after SIGUSR1: status %d, output %q; want 5 and got USR1", status, out)
	}

	requireRoot(t)
	dir := guard(t)
	s = startRun(t, "--journal-dir", dir, "--profile", "latency", "--", "sh", "-c", "echo ready; exec sleep 20")
	if got := readTrim(t, "/proc/sys/net/core/busy_read"); got != "50" {
		t.Fatalf("busy_read %s while running", got)
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	status, _ = s.wait(t)
	if status != 128+int(syscall.SIGTERM) {
		t.Fatalf("after SIGTERM: status %d, want %d; stderr %s", status, 128+int(syscall.SIGTERM), s.errb)
	}
	noJournal(t, dir)
}

// ifaceWithIRQs finds a network interface that has IRQs of its own.
func ifaceWithIRQs(t *testing.T) (string, []affinity.IRQ) {
	t.Helper()
	ents, _ := os.ReadDir("/sys/class/net")
	for _, e := range ents {
		if irqs, err := affinity.InterfaceIRQs(e.Name()); err == nil && len(irqs) > 0 {
			return e.Name(), irqs
		}
	}
	t.Skip("no network interface with IRQs of its own on this host (veth and loopback have none)")
	return "", nil
}

func TestIRQAffinityMovedAndRestored(t *testing.T) {
	requireRoot(t)
	online, _ := affinity.OnlineCPUs()
	if online.Len() < 2 {
		t.Skip("needs two online CPUs to move an IRQ away from the program")
	}
	iface, irqs := ifaceWithIRQs(t)
	dir := guard(t)
	first, last := online.First(), lastOnline(t)
	var script strings.Builder
	for _, q := range irqs {
		fmt.Fprintf(&script, "cat %s; ", affinity.IRQAffinityPath(q.Num))
	}
	r := onloadRun(t, nil, "--journal-dir", dir, "--profile", "latency", "--iface", iface,
		"--cpus", strconv.Itoa(last), "--irq-cpus", strconv.Itoa(first), "--", "sh", "-c", script.String())
	if r.status != 0 {
		t.Fatalf("status %d", r.status)
	}
	for i, got := range strings.Fields(r.stdout) {
		if got != strconv.Itoa(first) {
			t.Errorf("irq %d affinity %q while running, want %d", irqs[i].Num, got, first)
		}
	}
	for _, q := range irqs {
		if a, _ := affinity.IRQAffinity(q.Num); !a.Equal(q.Affinity) {
			t.Errorf("irq %d affinity %s after the run, was %s", q.Num, a, q.Affinity)
		}
	}
	noJournal(t, dir)
}

func TestKilledThenRestore(t *testing.T) {
	requireRoot(t)
	dir := guard(t)
	before := snapshot(t)
	args := []string{"--journal-dir", dir, "--profile", "latency"}
	online, _ := affinity.OnlineCPUs()
	if online.Len() >= 2 {
		if iface, _ := tryIfaceWithIRQs(); iface != "" {
			args = append(args, "--iface", iface, "--cpus", strconv.Itoa(lastOnline(t)))
		}
	}
	s := startRun(t, append(args, "--", "sh", "-c", "echo $$; exec sleep 30")...)
	child, err := strconv.Atoi(strings.TrimSpace(s.first))
	if err != nil || child <= 0 {
		t.Fatalf("PROGRAM printed %q, not its pid", s.first)
	}
	if got := readTrim(t, "/proc/sys/net/core/busy_read"); got != "50" {
		t.Fatalf("busy_read %s while running", got)
	}
	// A second onload-run refuses while the first runs, and changes
	// nothing.
	r := onloadRun(t, nil, "--journal-dir", dir, "--profile", "throughput", "--", "true")
	if r.status == 0 || !strings.Contains(r.stderr, "running pid") {
		t.Fatalf("second onload-run: status %d stderr %q", r.status, r.stderr)
	}

	s.cmd.Process.Signal(syscall.SIGKILL)
	s.wait(t)
	// PROGRAM dies with onload-run.
	deadline := time.Now().Add(5 * time.Second)
	for running(child) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if running(child) {
		t.Errorf("PROGRAM (pid %d) still runs after onload-run was killed", child)
		syscall.Kill(child, syscall.SIGKILL)
	}
	// The changes stay, and so does the journal.
	if got := readTrim(t, "/proc/sys/net/core/busy_read"); got != "50" {
		t.Fatalf("busy_read %s after SIGKILL: the kill test proves nothing", got)
	}
	steps, err := affinity.ReadJournal(dir)
	if err != nil || len(steps) == 0 {
		t.Fatalf("journal after SIGKILL: %v %v", steps, err)
	}
	// A new onload-run says so instead of stacking changes.
	r = onloadRun(t, nil, "--journal-dir", dir, "--profile", "latency", "--", "true")
	if r.status == 0 || !strings.Contains(r.stderr, "--restore") {
		t.Fatalf("onload-run over a dead journal: status %d stderr %q", r.status, r.stderr)
	}
	r = onloadRun(t, nil, "--restore", "--journal-dir", dir)
	if r.status != 0 {
		t.Fatalf("--restore: status %d", r.status)
	}
	if d := before.diff(snapshot(t)); len(d) > 0 {
		t.Fatalf("--restore left:\n%s", strings.Join(d, "\n"))
	}
	noJournal(t, dir)
	r = onloadRun(t, nil, "--restore", "--journal-dir", dir)
	if r.status != 0 || !strings.Contains(r.stderr, "nothing to restore") {
		t.Fatalf("second --restore: status %d stderr %q", r.status, r.stderr)
	}
}

// running reports whether pid runs: a zombie waiting for its new parent
// to reap it counts as dead.
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

func tryIfaceWithIRQs() (string, []affinity.IRQ) {
	ents, _ := os.ReadDir("/sys/class/net")
	for _, e := range ents {
		if irqs, err := affinity.InterfaceIRQs(e.Name()); err == nil && len(irqs) > 0 {
			return e.Name(), irqs
		}
	}
	return "", nil
}

func TestDryRunChangesNothing(t *testing.T) {
	dir := t.TempDir()
	before := snapshot(t)
	args := []string{"--dry-run", "--journal-dir", dir, "--profile", "latency-best"}
	if iface, _ := tryIfaceWithIRQs(); iface != "" {
		if online, _ := affinity.OnlineCPUs(); online.Len() >= 2 {
			args = append(args, "--iface", iface, "--cpus", strconv.Itoa(lastOnline(t)))
		}
	}
	r := onloadRun(t, nil, append(args, "--", "sh", "-c", "touch "+filepath.Join(dir, "ran"))...)
	if r.status != 0 {
		t.Fatalf("status %d", r.status)
	}
	for _, want := range []string{
		"echo 50 > /proc/sys/net/core/busy_read", "echo 50 > /proc/sys/net/core/busy_poll",
		"/dev/cpu_dma_latency", "chrt -f 49", "LOWLAT_WAIT=spin",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dry run output lacks %q", want)
		}
	}
	if d := before.diff(snapshot(t)); len(d) > 0 {
		t.Fatalf("dry run changed the host:\n%s", strings.Join(d, "\n"))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("dry run wrote %v (or ran the program)", ents)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	before := snapshot(t)
	online, _ := affinity.OnlineCPUs()
	offline := -1
	for c := 0; c < affinity.MaxCPU; c++ {
		if !online.Contains(c) {
			offline = c
			break
		}
	}
	for _, args := range [][]string{
		{"--profile", "nosuch", "--", "true"},
		{"--profile", filepath.Join(dir, "missing.profile"), "--", "true"},
		{"--profile", "/dev/zero", "--", "true"},
		{"--cpus", strconv.Itoa(offline), "--", "true"},
		{"--cpus", "0-", "--", "true"},
		{"--irq-cpus", "0", "--", "true"},
		{"--iface", "nosuchif0", "--", "true"},
		{"--", "/nonexistent/program"},
		{"--", "no-such-program-anywhere"},
		{"--bogus-flag", "--", "true"},
		{"--restore", "--", "true"},
		{"--restore", "--journal-dir", ""},
		{"--restore", "--journal-dir", "relative"},
		{"--journal-dir", "", "--", "true"},
		{"--lock-file", "relative.lock", "--", "true"},
		{},
	} {
		r := onloadRun(t, nil, append([]string{"--journal-dir", dir}, args...)...)
		lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
		if r.status != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "onload-run: ") || r.stdout != "" {
			t.Errorf("%q: status %d, stderr %q: want status 2 and one line", args, r.status, r.stderr)
		}
	}
	if d := before.diff(snapshot(t)); len(d) > 0 {
		t.Fatalf("bad input changed the host:\n%s", strings.Join(d, "\n"))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("bad input left %v", ents)
	}
}

// TestDefaultJournalPath runs once with the journal where it lives in
// production, /run/lowlat.
func TestDefaultJournalPath(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat(filepath.Join(affinity.DefaultJournalDir, affinity.JournalFile)); err == nil {
		t.Skipf("%s holds a journal already: another onload-run is active on this host", affinity.DefaultJournalDir)
	}
	_, dirErr := os.Stat(affinity.DefaultJournalDir)
	guard(t)
	t.Setenv(affinity.JournalDirEnv, "")
	os.Unsetenv(affinity.JournalDirEnv)
	j := filepath.Join(affinity.DefaultJournalDir, affinity.JournalFile)
	r := onloadRun(t, nil, "--profile", "latency", "--", "sh", "-c", "test -s "+j+" && echo journal")
	if r.status != 0 || strings.TrimSpace(r.stdout) != "journal" {
		t.Fatalf("status %d stdout %q: want the journal at %s while running", r.status, r.stdout, j)
	}
	if _, err := os.Stat(j); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s left behind", j)
	}
	if errors.Is(dirErr, fs.ErrNotExist) {
		if _, err := os.Stat(affinity.DefaultJournalDir); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s left behind", affinity.DefaultJournalDir)
		}
	}
}

func TestEnvironment(t *testing.T) {
	dir := t.TempDir()
	prof := filepath.Join(dir, "mine.profile")
	os.WriteFile(prof, []byte("description = test\n[env]\nLOWLAT_WAIT = spin\nLOWLAT_BATCH = 16\n[onload]\nEF_POLL_USEC = 100000\n"), 0o644)
	lib := filepath.Join(dir, "libonload.so")
	os.WriteFile(lib, []byte("not a library"), 0o644)

	// A caller's variable wins over the profile; a non-Go program under
	// Onload gets LD_PRELOAD and the EF_* variables. (ld.so complains
	// about the fake library on stderr and runs the program anyway.)
	r := onloadRun(t, []string{"LOWLAT_WAIT=block"}, "--profile", prof, "--onload-lib", lib, "--",
		"sh", "-c", `echo "$LOWLAT_WAIT $LOWLAT_BATCH $EF_POLL_USEC $LD_PRELOAD"`)
	if r.status != 0 || strings.TrimSpace(r.stdout) != "block 16 100000 "+lib {
		t.Fatalf("status %d stdout %q", r.status, r.stdout)
	}

	// Variables derived from flags beat the environment; the profile's
	// [env] values still defer to it.
	cpu := strconv.Itoa(lastOnline(t))
	r = onloadRun(t, []string{"LOWLAT_CPUS=999", "LOWLAT_IFACE=bogus0", "LOWLAT_WAIT=block"}, "--profile", prof, "--cpus", cpu, "--iface", "lo", "--",
		"sh", "-c", `echo "$LOWLAT_CPUS $LOWLAT_IFACE $LOWLAT_WAIT"; env | grep -c '^LOWLAT_CPUS='`)
	if r.status != 0 || r.stdout != cpu+" lo block\n1\n" {
		t.Fatalf("flags over the environment: status %d stdout %q", r.status, r.stdout)
	}

	// A Go program that does not link lowlat: told why LD_PRELOAD cannot
	// help, and given no LD_PRELOAD.
	src := filepath.Join(dir, "goprog")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module example.com/goprog\n\ngo 1.22\n"), 0o644)
	os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nimport (\"fmt\"; \"os\")\n\nfunc main() { fmt.Println(os.Getenv(\"LD_PRELOAD\") == \"\") }\n"), 0o644)
	prog := filepath.Join(dir, "goprog.bin")
	build := exec.Command("go", "build", "-o", prog, ".")
	build.Dir = src
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a Go program: %v\n%s", err, out)
	}
	r = onloadRun(t, nil, "--profile", prof, "--onload-lib", lib, "--", prog)
	if r.status != 0 || strings.TrimSpace(r.stdout) != "true" || !strings.Contains(r.stderr, "is a Go program") ||
		!strings.Contains(r.stderr, "github.com/lowlat/lowlat/bypass") {
		t.Fatalf("Go program: status %d stdout %q stderr %q", r.status, r.stdout, r.stderr)
	}
	// onload-run itself links lowlat: no such note.
	r = onloadRun(t, nil, "--profile", prof, "--", bin, "--help")
	if strings.Contains(r.stderr, "is a Go program") {
		t.Fatalf("note for a program that links lowlat: %q", r.stderr)
	}
}

// TestUnprivilegedHostProfile checks the message a user without the
// privileges gets. As root (CI) it runs the binary as nobody (uid 65534),
// so it runs everywhere.
func TestUnprivilegedHostProfile(t *testing.T) {
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		r := onloadRun(t, nil, "--journal-dir", dir, "--profile", "latency", "--", "true")
		if r.status != 1 || !strings.Contains(r.stderr, "root") {
			t.Fatalf("status %d stderr %q", r.status, r.stderr)
		}
		return
	}
	// nobody needs to reach the binary and its directories.
	pub, err := os.MkdirTemp("", "onload-run-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pub) })
	exe := filepath.Join(pub, "onload-run")
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	jdir := filepath.Join(pub, "journal")
	if err := os.Mkdir(jdir, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{pub, jdir} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	before := readTrim(t, "/proc/sys/net/core/busy_read")
	cmd := exec.Command(exe, "--journal-dir", jdir, "--lock-file", filepath.Join(jdir, "lowlat.lock"), "--profile", "latency", "--", "true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(errb.String(), "root") {
		t.Fatalf("as nobody: %v, stderr %q; want status 1 and a message about root", err, errb.String())
	}
	if after := readTrim(t, "/proc/sys/net/core/busy_read"); after != before {
		t.Fatalf("busy_read changed from %s to %s by an unprivileged run", before, after)
	}
}

// TestHostLockAcrossJournalDirs: two runs with different journal
// directories but the same host lock do not stack their changes.
func TestHostLockAcrossJournalDirs(t *testing.T) {
	requireRoot(t)
	dirA := guard(t)
	dirB := t.TempDir()
	lockFile := filepath.Join(t.TempDir(), "lowlat.lock")
	t.Setenv(affinity.LockFileEnv, lockFile)
	before := readTrim(t, "/proc/sys/net/core/busy_read")

	s := startRun(t, "--journal-dir", dirA, "--profile", "latency", "--", "sh", "-c", "echo ready; exec sleep 30")
	r := onloadRun(t, nil, "--journal-dir", dirB, "--profile", "latency", "--", "true")
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if r.status != 1 || !strings.Contains(lines[len(lines)-1], fmt.Sprintf("running pid %d", s.cmd.Process.Pid)) {
		t.Fatalf("second run in another journal directory: status %d stderr %q", r.status, r.stderr)
	}
	noJournal(t, dirB)
	if got := readTrim(t, "/proc/sys/net/core/busy_read"); got != "50" {
		t.Fatalf("busy_read %s while the first run runs", got)
	}

	// Killed outright, the first run leaves its journal; a run in another
	// directory still refuses, and says which journal to restore.
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.wait(t)
	r = onloadRun(t, nil, "--journal-dir", dirB, "--profile", "latency", "--", "true")
	if r.status != 1 || !strings.Contains(r.stderr, "--restore --journal-dir "+dirA) {
		t.Fatalf("run after a killed run: status %d stderr %q", r.status, r.stderr)
	}
	noJournal(t, dirB)
	if r := onloadRun(t, nil, "--restore", "--journal-dir", dirB); r.status != 1 {
		t.Fatalf("--restore of the wrong directory: status %d", r.status)
	}
	if r := onloadRun(t, nil, "--restore", "--journal-dir", dirA); r.status != 0 {
		t.Fatalf("--restore: status %d", r.status)
	}
	if got := readTrim(t, "/proc/sys/net/core/busy_read"); got != before {
		t.Fatalf("busy_read %s after --restore, was %s", got, before)
	}
	if _, err := os.Lstat(lockFile); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("lock file left: %v", err)
	}
	r = onloadRun(t, nil, "--journal-dir", dirB, "--profile", "latency", "--", "true")
	if r.status != 0 {
		t.Fatalf("run after the restore: status %d", r.status)
	}
	noJournal(t, dirB)
}

// TestBrokenStderr: a reader of onload-run's stderr that goes away
// (onload-run -v ... 2>&1 | head) kills neither onload-run nor the
// restore, and PROGRAM's exit status passes through.
func TestBrokenStderr(t *testing.T) {
	requireRoot(t)
	dir := guard(t)
	before := readTrim(t, "/proc/sys/net/core/busy_read")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	cmd := exec.Command(bin, "-v", "--journal-dir", dir, "--profile", "latency", "--",
		"sh", "-c", `test "$(cat /proc/sys/net/core/busy_read)" = 50 && exit 3`)
	cmd.Stderr = w
	err = cmd.Run()
	w.Close()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if got := cmd.ProcessState.ExitCode(); got != 3 {
		t.Fatalf("status %d (%v), want PROGRAM's 3", got, cmd.ProcessState)
	}
	if got := readTrim(t, "/proc/sys/net/core/busy_read"); got != before {
		t.Fatalf("busy_read %s after the run, was %s", got, before)
	}
	noJournal(t, dir)
}

// TestRestoreRefusesCraftedJournal: a journal naming a file that no step
// kind may name is refused by --restore, and the file is left alone.
func TestRestoreRefusesCraftedJournal(t *testing.T) {
	requireRoot(t)
	dir := guard(t)
	t.Setenv(affinity.LockFileEnv, filepath.Join(t.TempDir(), "lowlat.lock"))
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("precious\n"), 0o644)
	j := filepath.Join(dir, affinity.JournalFile)
	for _, step := range []string{
		`{"kind":"sysctl","path":"` + victim + `","old":"pwned","new":"x"}`,
		`{"kind":"irq","path":"/proc/irq/1/../../..` + victim + `","old":"pwned","new":"x"}`,
		`{"kind":"file","path":"` + victim + `","old":"pwned","new":"x"}`,
	} {
		os.WriteFile(j, []byte(`{"version":1,"pid":0,"steps":[`+step+`]}`), 0o644)
		r := onloadRun(t, nil, "--restore", "--journal-dir", dir)
		if r.status != 1 || !strings.Contains(r.stderr, "may name") {
			t.Errorf("--restore of %s: status %d stderr %q", step, r.status, r.stderr)
		}
	}
	os.Remove(j)
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Fatalf("victim now %q", b)
	}
}

// childrenOf returns the live children of pid, waiting (at most 10 s)
// until there are n of them.
func childrenOf(t *testing.T, pid, n int) []int {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var kids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			k, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil {
				continue
			}
			f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
			if len(f) > 1 && f[0] != "Z" && f[1] == strconv.Itoa(pid) {
				kids = append(kids, k)
			}
		}
		if len(kids) >= n {
			return kids
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d has children %v, want %d", pid, kids, n)
		}
	}
}

// TestGrandchildrenEnded: what PROGRAM starts (here the two sides of a
// pipeline) does not outlive onload-run, whether onload-run is stopped
// with SIGTERM or killed with SIGKILL and its journal restored.
func TestGrandchildrenEnded(t *testing.T) {
	requireRoot(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := guard(t)
			s := startRun(t, "--journal-dir", dir, "--profile", "latency", "--", "sh", "-c", "echo $$; sleep 30 | cat")
			sh, err := strconv.Atoi(strings.TrimSpace(s.first))
			if err != nil {
				t.Fatalf("PROGRAM printed %q, not its pid", s.first)
			}
			kids := childrenOf(t, sh, 2)
			t.Cleanup(func() {
				for _, k := range kids {
					if running(k) {
						syscall.Kill(k, syscall.SIGKILL)
					}
				}
			})
			if sig == syscall.SIGKILL {
				// onload-run journals PROGRAM's group just after starting
				// it; a SIGKILL inside that instant is the one case
				// --restore cannot clean (see the package doc). Wait for
				// the record, which under load can lag the children.
				waitGroupJournaled(t, dir, sh)
			}
			s.cmd.Process.Signal(sig)
			if sig == syscall.SIGKILL {
				// The pipeline outlives onload-run and holds its stdout
				// and stderr open, so s.wait would wait for it: wait for
				// onload-run itself, then --restore ends the rest.
				for deadline := time.Now().Add(10 * time.Second); running(s.cmd.Process.Pid) && time.Now().Before(deadline); {
					time.Sleep(10 * time.Millisecond)
				}
				if r := onloadRun(t, nil, "--restore", "--journal-dir", dir); r.status != 0 {
					t.Fatalf("--restore: status %d", r.status)
				}
			}
			s.wait(t)
			for _, pid := range append(kids, sh) {
				for deadline := time.Now().Add(5 * time.Second); running(pid) && time.Now().Before(deadline); {
					time.Sleep(10 * time.Millisecond)
				}
				if running(pid) {
					t.Errorf("pid %d (started by PROGRAM) still runs", pid)
				}
			}
			if m := affinity.GroupMembers(sh); len(m) > 0 {
				t.Errorf("PROGRAM's process group %d still has %v", sh, m)
			}
			noJournal(t, dir)
		})
	}
}

// waitGroupJournaled waits (bounded) until the journal in dir records
// process group pgid.
func waitGroupJournaled(t *testing.T, dir string, pgid int) {
	t.Helper()
	want := fmt.Sprintf(`"pgid":%d`, pgid)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(dir, affinity.JournalFile))
		if bytes.Contains(bytes.ReplaceAll(b, []byte(" "), nil), []byte(want)) {
			return
		}
	}
	t.Fatalf("the journal in %s never recorded process group %d", dir, pgid)
}

// TestPanicRestores: a panic after a host change restores the host before
// it goes on (run in this process, with a panic injected after the first
// change).
func TestPanicRestores(t *testing.T) {
	requireRoot(t)
	dir := guard(t)
	lock := filepath.Join(t.TempDir(), "lowlat.lock")
	before := readTrim(t, "/proc/sys/net/core/busy_read")
	p, err := makePlan(options{profile: "latency", journalDir: dir, lockFile: lock, argv: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	orig := afterChange
	t.Cleanup(func() { afterChange = orig })
	afterChange = func(change) { panic("injected") }
	var errb bytes.Buffer
	func() {
		defer func() {
			if r := recover(); r != "injected" {
				t.Errorf("recovered %v, want the injected panic passed on", r)
			}
		}()
		p.execute(&logger{w: &errb})
		t.Error("execute returned")
	}()
	t.Logf("stderr: %s", errb.String())
	if got := readTrim(t, "/proc/sys/net/core/busy_read"); got != before {
		t.Fatalf("busy_read %s after the panic, was %s", got, before)
	}
	noJournal(t, dir)
	if _, err := os.Lstat(lock); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("lock file left: %v", err)
	}
}

// TestIgnoredSignalsStayIgnored: SIGHUP and SIGINT ignored when onload-run
// starts (nohup, a background job) are still ignored in PROGRAM.
func TestIgnoredSignalsStayIgnored(t *testing.T) {
	script := `trap "" HUP INT; exec ` + shq(bin) + ` --profile safe -- sh -c 'kill -HUP $$; kill -INT $$; echo alive'`
	cmd := exec.Command("sh", "-c", script)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "alive" {
		t.Fatalf("PROGRAM with SIGHUP and SIGINT ignored: %v, output %q", err, out)
	}
}

// TestProfileMissingSysctl: a profile naming a sysctl this kernel lacks is
// bad input (status 2) named by the profile, found before any change.
func TestProfileMissingSysctl(t *testing.T) {
	before := snapshot(t)
	dir := t.TempDir()
	prof := filepath.Join(dir, "mine.profile")
	os.WriteFile(prof, []byte("description = test\n[sysctl]\nnet.core.busy_read = 50\nnet.core.no_such_knob_lowlat = 1\n"), 0o644)
	r := onloadRun(t, nil, "--journal-dir", filepath.Join(dir, "j"), "--profile", prof, "--", "true")
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if r.status != 2 || len(lines) != 1 || !strings.Contains(lines[0], "profile mine") || !strings.Contains(lines[0], "no_such_knob_lowlat") {
		t.Fatalf("status %d stderr %q: want 2 and one line naming the profile and the sysctl", r.status, r.stderr)
	}
	if d := before.diff(snapshot(t)); len(d) > 0 {
		t.Fatalf("changed the host:\n%s", strings.Join(d, "\n"))
	}
}

// TestRealTimeWithoutCPUsWarns: latency-best (SCHED_FIFO) without --cpus
// is worth a note; with --cpus it is not.
func TestRealTimeWithoutCPUsWarns(t *testing.T) {
	dir := t.TempDir()
	r := onloadRun(t, nil, "--dry-run", "--journal-dir", dir, "--profile", "latency-best", "--", "true")
	if r.status != 0 || !strings.Contains(r.stdout, "# note: profile latency-best runs PROGRAM SCHED_FIFO without --cpus") {
		t.Fatalf("status %d stdout %q", r.status, r.stdout)
	}
	r = onloadRun(t, nil, "--dry-run", "--journal-dir", dir, "--profile", "latency-best", "--cpus", strconv.Itoa(lastOnline(t)), "--", "true")
	if r.status != 0 || strings.Contains(r.stdout, "without --cpus") {
		t.Fatalf("with --cpus: status %d stdout %q", r.status, r.stdout)
	}
}
