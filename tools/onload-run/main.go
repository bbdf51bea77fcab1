//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/affinity"
	"github.com/lowlat/lowlat/internal/cli"
)

// Exit statuses of onload-run itself (PROGRAM's status passes through).
const (
	exitFailed   = 1 // a host change or its restore failed
	exitBadInput = 2 // bad flags, profile, CPU list, interface or program
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is bad input: one line, exit status 2. It keeps its cause.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// badInput formats as fmt.Errorf does: %w keeps the cause.
func badInput(format string, a ...any) error { return &usageError{fmt.Errorf(format, a...)} }

const usage = `usage: onload-run [--profile NAME|PATH] [--cpus LIST] [--irq-cpus LIST] [--iface IF]
                  [--dry-run] [-v] [--journal-dir DIR] [--lock-file PATH] [--onload [--onload-lib PATH]]
                  [--allow-code-env] -- PROGRAM [ARGS...]
       onload-run --restore [--journal-dir DIR] [--lock-file PATH]
`

// options are the parsed command line.
type options struct {
	profile    string
	cpus       string
	irqCPUs    string
	iface      string
	dryRun     bool
	restore    bool
	verbose    bool
	journalDir string
	lockFile   string
	onloadLib  string
	onload     bool // run PROGRAM on Onload, or refuse
	codeEnv    bool // the profile may set LD_PRELOAD and kin
	argv       []string
}

func parseFlags(args []string, stdout io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("onload-run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.profile, "profile", "latency", "built-in profile name or profile file path")
	fs.StringVar(&o.cpus, "cpus", "", "CPUs to run PROGRAM on (kernel list syntax, e.g. 2-3)")
	fs.StringVar(&o.irqCPUs, "irq-cpus", "", "CPUs for --iface's IRQs (default: online CPUs not in --cpus)")
	fs.StringVar(&o.iface, "iface", "", "network interface whose IRQs move off PROGRAM's CPUs")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the changes as shell commands; change nothing")
	fs.BoolVar(&o.restore, "restore", false, "undo what a killed onload-run left in its journal")
	fs.BoolVar(&o.verbose, "v", false, "report each change and each restore on stderr")
	fs.StringVar(&o.journalDir, "journal-dir", affinity.JournalDir(), "directory of the journal ($"+affinity.JournalDirEnv+")")
	fs.StringVar(&o.lockFile, "lock-file", affinity.LockFile(), "a lock file to hold as well as "+affinity.DefaultLockFile+
		", which every run holds while it changes the host: one shared with runs that see another /run, such as a container's ($"+affinity.LockFileEnv+")")
	fs.StringVar(&o.onloadLib, "onload-lib", "", "path of libonload.so (default: searched in the usual library directories)")
	fs.BoolVar(&o.onload, "onload", false, "run PROGRAM on Onload: LD_PRELOAD libonload.so, the profile's EF_* variables, LOWLAT_BACKEND=onload (a Go PROGRAM must be built with -tags onload)")
	fs.BoolVar(&o.codeEnv, "allow-code-env", false, "let the profile's [env] and [onload] set variables that make PROGRAM load code (LD_PRELOAD, LD_LIBRARY_PATH and kin)")
	if err := cli.ParseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage, "\nflags:\n")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return o, flag.ErrHelp
		}
		return o, badInput("%w", err)
	}
	o.argv = fs.Args()
	// A value that came from the environment is named by its variable.
	source := func(flagName, env string) string {
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == flagName })
		if !set && os.Getenv(env) != "" {
			return "$" + env
		}
		return "--" + flagName
	}
	// Both name where root reads and writes: never relative to wherever
	// onload-run happens to be started (an empty one meant ./journal.json).
	if !filepath.IsAbs(o.journalDir) {
		return o, badInput("%s %s: want an absolute directory", source("journal-dir", affinity.JournalDirEnv), cli.Quote(o.journalDir))
	}
	if !filepath.IsAbs(o.lockFile) {
		return o, badInput("%s %s: want an absolute path", source("lock-file", affinity.LockFileEnv), cli.Quote(o.lockFile))
	}
	// A lock file is never a file the user already had: refused, untouched.
	for _, f := range o.lockFiles() {
		if err := affinity.CheckLockFile(f); err != nil {
			name := "host lock"
			if f != affinity.DefaultLockFile {
				name = source("lock-file", affinity.LockFileEnv)
			}
			return o, badInput("%s %s: %w", name, cli.Quote(f), err)
		}
	}
	if o.restore {
		if len(o.argv) > 0 || o.dryRun {
			return o, badInput("--restore takes no program and no --dry-run")
		}
		return o, nil
	}
	if len(o.argv) == 0 {
		return o, badInput("no program given (onload-run [flags] -- PROGRAM [ARGS...])")
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	// A reader that goes away (onload-run -v ... 2>&1 | head) must not kill
	// onload-run between a host change and its restore: with SIGPIPE
	// notified, a write to a broken stdout or stderr fails with EPIPE
	// instead, and the logger ignores write errors. Notify, not Ignore: an
	// ignored SIGPIPE would be inherited by PROGRAM across exec.
	signal.Notify(make(chan os.Signal, 1), unix.SIGPIPE)
	o, p, status := prepare(args, stdout, stderr)
	if status >= 0 {
		return status
	}
	log := &logger{w: stderr, verbose: o.verbose}
	if o.restore {
		return restore(o, log)
	}
	if o.dryRun {
		p.print(stdout)
		return 0
	}
	return p.execute(log)
}

// prepare reads the command line and, unless it asks for --restore, works
// out the plan; it changes nothing. A status of 0 or more is onload-run's
// exit status (help was printed, or a one-line error to stderr); -1 means
// go on with o (and p).
func prepare(args []string, stdout, stderr io.Writer) (options, *plan, int) {
	o, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return o, nil, 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "onload-run: %s\n", cli.Line(err.Error()))
		return o, nil, exitBadInput
	}
	if o.restore {
		return o, nil, -1
	}
	p, err := makePlan(o)
	if err != nil {
		fmt.Fprintf(stderr, "onload-run: %s\n", cli.Line(err.Error()))
		var u *usageError
		if errors.As(err, &u) {
			return o, nil, exitBadInput
		}
		return o, nil, exitFailed
	}
	return o, p, -1
}

// logger writes onload-run's own messages to stderr.
type logger struct {
	w       io.Writer
	verbose bool
}

// note is always shown: something was skipped or needs the operator. A
// write error (stderr closed, a full disk) is ignored: it must change
// neither what onload-run does to the host nor PROGRAM's exit status.
func (l *logger) note(format string, a ...any) {
	_, _ = fmt.Fprintf(l.w, "onload-run: "+format+"\n", a...)
}

// info is shown with -v.
func (l *logger) info(format string, a ...any) {
	if l.verbose {
		l.note(format, a...)
	}
}

// lockFiles are the lock files a run holds while it may change the host:
// affinity.DefaultLockFile, which no flag or variable moves, so that no
// two runs anywhere on the host change it at once, and --lock-file when it
// names another.
func (o options) lockFiles() []string {
	files := []string{affinity.DefaultLockFile}
	if f := filepath.Clean(o.lockFile); f != affinity.DefaultLockFile {
		files = append(files, f)
	}
	return files
}

// hostLocks are the locks of lockFiles, held together.
type hostLocks []*affinity.HostLock

// lockHost takes every lock of o.lockFiles, or none.
func lockHost(o options, command []string, restoring bool) (hostLocks, error) {
	var ls hostLocks
	for _, f := range o.lockFiles() {
		l, err := affinity.LockHost(f, o.journalDir, command, restoring)
		if err != nil {
			ls.release(false)
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// release drops the locks, newest first (see affinity.HostLock.Release).
func (ls hostLocks) release(keepJournal bool) error {
	var errs []error
	for i := len(ls) - 1; i >= 0; i-- {
		errs = append(errs, ls[i].Release(keepJournal))
	}
	return errors.Join(errs...)
}

func (ls hostLocks) paths() string {
	var p []string
	for _, l := range ls {
		p = append(p, l.Path())
	}
	return strings.Join(p, " and ")
}

func restore(o options, log *logger) int {
	dir := o.journalDir
	lock, err := lockHost(o, []string{"onload-run", "--restore", "--journal-dir", dir}, true)
	if err != nil {
		log.note("%v", err)
		return exitFailed
	}
	steps, err := affinity.Restore(dir)
	if errors.Is(err, affinity.ErrNoJournal) {
		lock.release(false)
		log.note("nothing to restore: no journal in %s", dir)
		return 0
	}
	var ex *affinity.JournalExistsError
	if errors.As(err, &ex) {
		lock.release(true)
		log.note("%v", err)
		return exitFailed
	}
	if rerr := lock.release(err != nil); rerr != nil {
		log.note("%v", rerr)
	}
	logRestored(log, steps)
	if err != nil {
		log.note("%v", err)
		log.note("the journal is kept; fix the cause and run onload-run --restore again")
		return exitFailed
	}
	log.note("restored %d setting%s from %s", len(steps), plural(len(steps)), dir)
	return 0
}

// logRestored reports each restored step, newest first, and each whose
// file has gone (nothing to restore).
func logRestored(log *logger, steps []affinity.Step) {
	for i := len(steps) - 1; i >= 0; i-- {
		if steps[i].Gone {
			log.note("not restored: %s no longer exists (device or CPU gone); nothing to restore", steps[i].Path)
			continue
		}
		log.info("restored: %s", steps[i].UndoShell())
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// shellWords quotes argv for display as one shell command.
func shellWords(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shq(a)
	}
	return strings.Join(q, " ")
}

func shq(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./,:=+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
