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
                  [--dry-run] [-v] [--journal-dir DIR] [--lock-file PATH] [--onload-lib PATH] -- PROGRAM [ARGS...]
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
	fs.StringVar(&o.lockFile, "lock-file", affinity.LockFile(), "host-wide lock held while the host is changed, whatever the journal directory ($"+affinity.LockFileEnv+")")
	fs.StringVar(&o.onloadLib, "onload-lib", "", "path of libonload.so (default: searched in the usual library directories)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage, "\nflags:\n")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return o, flag.ErrHelp
		}
		return o, badInput("%v", err)
	}
	o.argv = fs.Args()
	// Both name where root reads and writes: never relative to wherever
	// onload-run happens to be started (an empty one meant ./journal.json).
	if !filepath.IsAbs(o.journalDir) {
		return o, badInput("--journal-dir %q: want an absolute directory", o.journalDir)
	}
	if !filepath.IsAbs(o.lockFile) {
		return o, badInput("--lock-file %q: want an absolute path", o.lockFile)
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
	o, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "onload-run: %v\n", err)
		return exitBadInput
	}
	log := &logger{w: stderr, verbose: o.verbose}
	if o.restore {
		return restore(o.journalDir, o.lockFile, log)
	}
	p, err := makePlan(o)
	if err != nil {
		var u *usageError
		if errors.As(err, &u) {
			fmt.Fprintf(stderr, "onload-run: %v\n", err)
			return exitBadInput
		}
		fmt.Fprintf(stderr, "onload-run: %v\n", err)
		return exitFailed
	}
	if o.dryRun {
		p.print(stdout)
		return 0
	}
	return p.execute(log)
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

func restore(dir, lockFile string, log *logger) int {
	lock, err := affinity.LockHost(lockFile, dir, []string{"onload-run", "--restore", "--journal-dir", dir}, true)
	if err != nil {
		log.note("%v", err)
		return exitFailed
	}
	steps, err := affinity.Restore(dir)
	if errors.Is(err, affinity.ErrNoJournal) {
		lock.Release(false)
		log.note("nothing to restore: no journal in %s", dir)
		return 0
	}
	var ex *affinity.JournalExistsError
	if errors.As(err, &ex) {
		lock.Release(true)
		log.note("%v", err)
		return exitFailed
	}
	if rerr := lock.Release(err != nil); rerr != nil {
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
