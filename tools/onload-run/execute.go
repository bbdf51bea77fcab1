//go:build linux

package main

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/affinity"
)

// forwarded are the signals onload-run passes on to PROGRAM.
var forwarded = []os.Signal{
	unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGTERM, unix.SIGUSR1,
	unix.SIGUSR2, unix.SIGWINCH, unix.SIGALRM, unix.SIGCONT,
}

// notified returns the forwarded signals that were not ignored when
// onload-run started. One that was ignored (nohup ignores SIGHUP, a shell
// ignores SIGINT for a background job) stays ignored, so PROGRAM inherits
// it ignored: Notify would install a handler, and PROGRAM would start with
// the default action instead, which kills it.
func notified() []os.Signal {
	var out []os.Signal
	for _, s := range forwarded {
		if !signal.Ignored(s) {
			out = append(out, s)
		}
	}
	return out
}

// execute applies the plan, runs PROGRAM, and restores the host. It
// returns onload-run's exit status.
func (p *plan) execute(log *logger) int {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, notified()...)
	defer signal.Stop(sigs)

	for _, n := range p.notes {
		log.note("%s", n)
	}
	for _, n := range p.infos {
		log.info("%s", n)
	}
	if p.prof.ChangesHost() && os.Geteuid() != 0 {
		log.note("profile %s changes host settings (sysctls, IRQ affinity, /dev/cpu_dma_latency): run as root, or use --profile safe", p.prof.Name)
		return exitFailed
	}

	var (
		lock hostLocks
		j    *affinity.Journal
		hold *affinity.LatencyHold
	)
	// restore undoes everything applied so far, newest first, and checks
	// it. It reports whether the host is back as it was.
	restore := func() bool {
		ok := true
		if j != nil {
			if err := j.Undo(); err != nil {
				log.note("restore failed: %v", err)
				log.note("the journal %s is kept: fix the cause, then run onload-run --restore --journal-dir %s", j.Path(), p.o.journalDir)
				ok = false
			} else {
				logRestored(log, j.Steps())
			}
		}
		if hold != nil {
			if err := hold.Close(); err != nil {
				log.note("%v", err)
				ok = false
			} else {
				log.info("released %s", affinity.CPUDMALatencyPath)
			}
		}
		if lock != nil {
			if err := lock.release(!ok); err != nil {
				log.note("%v", err)
			}
			lock = nil
		}
		return ok
	}
	// abort is the way out before PROGRAM runs.
	abort := func(status int) int {
		if !restore() && status == 0 {
			status = exitFailed
		}
		return status
	}
	// A panic, wherever it comes from in here, restores the host first.
	pgid := 0
	defer func() {
		if r := recover(); r != nil {
			log.note("panic: %v: restoring the host", r)
			if pgid > 0 {
				endGroup(pgid, log)
			}
			restore()
			panic(r)
		}
	}()
	// pending returns the status for a terminating signal that arrived
	// while onload-run was still setting up, or -1.
	pending := func() int {
		select {
		case s := <-sigs:
			if s == unix.SIGWINCH || s == unix.SIGCONT {
				return -1
			}
			log.note("%v before %s started: restoring and exiting", s, p.o.argv[0])
			return 128 + int(s.(syscall.Signal))
		default:
			return -1
		}
	}

	if len(p.changes) > 0 || p.hold {
		// One run at a time on the host, whatever its journal directory
		// and lock file: two runs would each take the other's settings for
		// the baseline.
		command := append([]string{"onload-run", "--profile", p.prof.Name, "--"}, p.o.argv...)
		var err error
		if lock, err = lockHost(p.o, command, false); err != nil {
			log.note("%v", err)
			return exitFailed
		}
		log.info("host lock %s", lock.paths())
	}
	if len(p.changes) > 0 {
		var err error
		j, err = affinity.CreateJournal(p.o.journalDir, append([]string{"onload-run", "--profile", p.prof.Name, "--"}, p.o.argv...))
		if err != nil {
			log.note("%v", err)
			// Keep the lock file naming this directory: if a dead run's
			// journal is there, later runs in any directory refuse too.
			lock.release(true)
			return exitFailed
		}
		log.info("journal %s", j.Path())
	}
	if p.hold {
		var err error
		if hold, err = affinity.HoldCPULatency(p.holdUS); err != nil {
			log.note("%v", err)
			return abort(exitFailed)
		}
		log.info("holding %s at %d us", affinity.CPUDMALatencyPath, p.holdUS)
	}
	for _, c := range p.changes {
		if st := pending(); st >= 0 {
			return abort(st)
		}
		if c.absent && c.optional {
			log.info("skipped %s: %s does not exist on this kernel", c.name, c.step.Path)
			continue
		}
		s, err := j.Apply(c.step)
		if err != nil {
			if c.optional || (c.step.Kind == affinity.KindIRQ && errors.Is(err, unix.EIO)) {
				log.note("skipped %s: %v", c.name, err)
				continue
			}
			log.note("%v", err)
			return abort(exitFailed)
		}
		log.info("set %s: %s (was %s)", c.name, s.Shell(), s.Old)
		afterChange(c)
	}
	if st := pending(); st >= 0 {
		return abort(st)
	}

	cmd := &exec.Cmd{
		Path:   p.path,
		Args:   p.o.argv,
		Env:    p.env,
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		// PROGRAM leads a process group of its own, so that onload-run can
		// end everything it started (a shell's pipeline, a daemon's
		// workers) before it restores the host, and --restore can end
		// what is left after onload-run was killed.
		// If onload-run dies (SIGKILL), PROGRAM dies with it rather than
		// run on with the host settings gone: the kernel sends the signal
		// when the thread that forked PROGRAM exits, and that thread lives
		// until PROGRAM ends. (Only PROGRAM: --restore ends the rest.)
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	startErr := make(chan error, 1)
	done := make(chan *os.ProcessState, 1)
	go p.startAndWait(cmd, startErr, done)
	if err := <-startErr; err != nil {
		log.note("start %s: %v", p.o.argv[0], err)
		status := exitFailed // placing or scheduling PROGRAM failed
		var ee *exec.Error
		var pe *os.PathError
		if errors.As(err, &ee) || errors.As(err, &pe) {
			status = 126 // the exec itself failed, as a shell reports it
		}
		return abort(status)
	}
	pgid = cmd.Process.Pid
	if j != nil {
		if err := j.SetProcessGroup(pgid); err != nil {
			log.note("record process group %d: %v", pgid, err)
		}
	}
	p.checkChild(pgid, log)

	// PROGRAM's group is not the terminal's foreground group: a Ctrl-C
	// reaches onload-run alone, and, like every other signal onload-run
	// gets, whoever sent it, it is forwarded to the whole group.
	for {
		select {
		case s := <-sigs:
			if err := syscall.Kill(-pgid, s.(syscall.Signal)); err != nil && !errors.Is(err, syscall.ESRCH) {
				log.note("forward %v: %v", s, err)
			}
		case ps := <-done:
			status := exitStatus(ps)
			endGroup(pgid, log)
			if !restore() {
				return exitFailed
			}
			return status
		}
	}
}

// afterChange is called after each host change is made; tests replace it.
var afterChange = func(change) {}

// groupGrace is how long PROGRAM's leftover processes get to end after
// SIGTERM before SIGKILL.
const groupGrace = 2 * time.Second

// endGroup ends what is left of PROGRAM's process group (same as
// `kill -TERM -PGID`, then `kill -KILL -PGID`): nothing PROGRAM started
// runs on once the host settings are restored.
func endGroup(pgid int, log *logger) {
	if n := len(affinity.GroupMembers(pgid)); n > 0 {
		log.info("ending %d process%s left in PROGRAM's group %d", n, map[bool]string{true: "", false: "es"}[n == 1], pgid)
	}
	if err := affinity.KillProcessGroup(pgid, groupGrace); err != nil {
		log.note("%v", err)
	}
}

// startAndWait starts cmd on a thread locked for the purpose: the thread is
// given PROGRAM's CPU set and scheduling policy before the fork, so PROGRAM
// inherits both from its first instruction, and gets its own back after.
// The thread then waits for PROGRAM, which keeps it alive for Pdeathsig.
// It is never unlocked, so the runtime discards it when PROGRAM is done.
func (p *plan) startAndWait(cmd *exec.Cmd, started chan<- error, done chan<- *os.ProcessState) {
	runtime.LockOSThread()
	prevMask, err := affinity.ThreadAffinity()
	if err != nil {
		started <- err
		return
	}
	if !p.cpus.IsEmpty() {
		if err := affinity.PinThread(p.cpus); err != nil {
			started <- err
			return
		}
	}
	pol, prio := p.prof.Program.Sched, p.prof.Program.Priority
	if pol != affinity.SchedOther {
		if err := affinity.SetScheduler(0, pol, prio); err != nil {
			started <- err
			return
		}
	}
	err = cmd.Start()
	if pol != affinity.SchedOther {
		affinity.SetScheduler(0, affinity.SchedOther, 0)
	}
	affinity.PinThread(prevMask)
	started <- err
	if err != nil {
		return
	}
	cmd.Wait()
	done <- cmd.ProcessState
}

// checkChild reads PROGRAM's CPU mask and policy back.
func (p *plan) checkChild(pid int, log *logger) {
	if !p.cpus.IsEmpty() {
		if got, err := affinity.ProcessAffinity(pid); err == nil && !got.Equal(p.cpus) {
			log.note("PROGRAM runs on CPUs %s, not %s", got, p.cpus)
		}
	}
	if p.prof.Program.Sched != affinity.SchedOther {
		if pol, prio, err := affinity.Scheduler(pid); err == nil && (pol != p.prof.Program.Sched || prio != p.prof.Program.Priority) {
			log.note("PROGRAM runs %v priority %d, not %v %d", pol, prio, p.prof.Program.Sched, p.prof.Program.Priority)
		}
	}
	log.info("started %s (pid %d)", p.commandLine(), pid)
}

// exitStatus maps PROGRAM's end to onload-run's exit status: its exit
// code, or 128+N when signal N killed it (as shells report it).
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
