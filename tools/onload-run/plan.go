//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/lowlat/lowlat/affinity"
	"github.com/lowlat/lowlat/affinity/profile"
	"github.com/lowlat/lowlat/internal/cli"
)

// change is one journaled host change.
type change struct {
	step     affinity.Step // Kind, Path, New and What; Old is filled in when applied
	name     string        // how an operator knows it: "net.core.busy_read", "irq 38 (virtio2-input.0)"
	optional bool          // skipped, with a note, when absent or refused
	current  string        // the value when planned
	absent   bool          // the file does not exist
}

// plan is everything onload-run will do, worked out before it changes
// anything. Building it reads the host and checks the input; only execute
// changes the host.
type plan struct {
	o       options
	prof    profile.Profile
	online  affinity.CPUSet
	cpus    affinity.CPUSet // empty: PROGRAM is not pinned
	irqCPUs affinity.CPUSet

	hold    bool
	holdUS  int
	holdNow string // the cpu_dma_latency bound in force when planned

	changes []change
	notes   []string // always shown
	infos   []string // shown with -v, and as comments in a dry run

	path        string   // PROGRAM resolved through PATH
	env         []string // PROGRAM's whole environment
	envAdded    []string // NAME=VALUE pairs onload-run added
	isGo        bool
	linksLowlat bool
}

func makePlan(o options) (*plan, error) {
	p := &plan{o: o}
	prof, err := profile.Load(o.profile)
	if err != nil {
		return nil, badInput("--profile: %w", err)
	}
	if names := prof.CodeEnv(); len(names) > 0 && !o.codeEnv {
		return nil, badInput("profile %s: [env] or [onload] sets %s, which makes PROGRAM load code from where it points: refused without --allow-code-env",
			prof.Name, strings.Join(names, ", "))
	}
	p.prof = prof
	if p.online, err = affinity.OnlineCPUs(); err != nil {
		return nil, err
	}
	allowed, err := affinity.ProcessAffinity(0)
	if err != nil {
		return nil, err
	}
	if o.cpus != "" {
		if p.cpus, err = p.cpuFlag("--cpus", o.cpus); err != nil {
			return nil, err
		}
		if !p.cpus.IsSubsetOf(allowed) {
			return nil, badInput("--cpus %s: CPU %s is outside this process's allowed CPUs %s (cpuset cgroup or taskset)",
				p.cpus, p.cpus.Difference(allowed), allowed)
		}
	}
	if o.irqCPUs != "" {
		if o.iface == "" {
			return nil, badInput("--irq-cpus needs --iface (whose IRQs to move)")
		}
		if p.irqCPUs, err = p.cpuFlag("--irq-cpus", o.irqCPUs); err != nil {
			return nil, err
		}
	}
	var irqs []affinity.IRQ
	if o.iface != "" {
		if irqs, err = affinity.InterfaceIRQs(o.iface); err != nil {
			return nil, badInput("--iface %s: %w", cli.Quote(o.iface), err)
		}
	}
	if p.path, err = exec.LookPath(o.argv[0]); err != nil {
		return nil, badInput("program %s: %w", cli.Quote(o.argv[0]), unwrapExec(err))
	}
	p.isGo, p.linksLowlat = inspectProgram(p.path)

	// Host settings.
	h := prof.Host
	if h.HoldCPULatency {
		p.hold, p.holdUS = true, h.CPULatencyUS
		if v, err := affinity.CPULatency(); err == nil {
			p.holdNow = strconv.Itoa(v)
		} else {
			p.holdNow = "unreadable: " + err.Error()
		}
	}
	for _, s := range prof.Sysctls {
		path, err := affinity.SysctlPath(s.Name)
		if err != nil {
			return nil, badInput("profile %s: %v", prof.Name, err)
		}
		c := change{step: affinity.Step{Kind: affinity.KindSysctl, Path: path, New: s.Value, What: "sysctl " + s.Name},
			name: s.Name, optional: s.Optional}
		if err := c.readCurrent(); err != nil && !s.Optional {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, badInput("profile %s: sysctl %s: %s does not exist on this kernel (list it under [%s] if it may be missing): %w",
					prof.Name, s.Name, path, "sysctl.optional", err)
			}
			return nil, fmt.Errorf("profile %s: sysctl %s: %w", prof.Name, s.Name, err)
		}
		p.changes = append(p.changes, c)
	}
	if h.THP != "" {
		c := change{step: affinity.Step{Kind: affinity.KindTHP, Path: affinity.THPEnabledPath, New: h.THP, What: "transparent hugepages"},
			name: "transparent_hugepage", optional: true}
		c.readCurrent()
		p.changes = append(p.changes, c)
	}
	if err := p.planIRQs(irqs); err != nil {
		return nil, err
	}
	if h.DisableIdle {
		p.planIdle()
	}
	if prof.Program.Sched != affinity.SchedOther && p.cpus.IsEmpty() {
		p.note("profile %s runs PROGRAM SCHED_%s without --cpus: a spinning real-time thread may take a CPU from the kernel's own threads on any CPU; give --cpus",
			prof.Name, strings.ToUpper(prof.Program.Sched.String()))
	}
	if prof.Program.Sched != affinity.SchedOther {
		p.info("PROGRAM runs SCHED_%s priority %d (inherited from the thread that starts it)",
			strings.ToUpper(prof.Program.Sched.String()), prof.Program.Priority)
	}
	if err := p.buildEnv(); err != nil {
		return nil, err
	}
	if err := checkProgramEnv(p.env); err != nil {
		return nil, badInput("%w", err)
	}
	if p.cpus.IsEmpty() {
		if iso, err := affinity.IsolatedCPUs(); err == nil && !iso.IsEmpty() {
			p.note("no --cpus: PROGRAM is not pinned (isolated CPUs %s are free for it)", iso)
		} else {
			p.info("no --cpus: PROGRAM is not pinned")
		}
	}
	return p, nil
}

// cpuFlag parses a CPU list flag and checks it against the online CPUs.
func (p *plan) cpuFlag(flag, v string) (affinity.CPUSet, error) {
	s, err := affinity.ParseCPUList(v)
	if err != nil {
		return s, badInput("%s %s: %w", flag, cli.Quote(v), err)
	}
	if s.IsEmpty() {
		return s, badInput("%s: empty CPU list", flag)
	}
	if !s.IsSubsetOf(p.online) {
		return s, badInput("%s %s: CPU %s is not online (online: %s)", flag, s, s.Difference(p.online), p.online)
	}
	return s, nil
}

func (p *plan) planIRQs(irqs []affinity.IRQ) error {
	switch {
	case !p.prof.Host.MoveIRQs:
		if p.o.iface != "" {
			p.info("profile %s does not move IRQs: --iface %s only sets LOWLAT_IFACE", p.prof.Name, p.o.iface)
		}
		return nil
	case p.o.iface == "":
		p.info("no --iface: no IRQ is moved")
		return nil
	case len(irqs) == 0:
		p.note("--iface %s has no IRQs of its own (a virtual device): nothing to move", p.o.iface)
		return nil
	}
	if p.irqCPUs.IsEmpty() {
		if p.cpus.IsEmpty() {
			p.note("no --cpus and no --irq-cpus: the IRQs of %s stay where they are", p.o.iface)
			return nil
		}
		p.irqCPUs = p.online.Difference(p.cpus)
		if p.irqCPUs.IsEmpty() {
			return badInput("--cpus %s covers every online CPU: none is left for the IRQs of %s (give --irq-cpus)", p.cpus, p.o.iface)
		}
	}
	if overlap := p.irqCPUs.Intersect(p.cpus); !overlap.IsEmpty() {
		p.note("--irq-cpus %s overlaps --cpus %s on CPU %s", p.irqCPUs, p.cpus, overlap)
	}
	for _, q := range irqs {
		c := change{step: affinity.Step{Kind: affinity.KindIRQ, Path: affinity.IRQAffinityPath(q.Num), New: p.irqCPUs.String(),
			What: fmt.Sprintf("IRQ %d of %s off the program's CPUs", q.Num, p.o.iface)},
			name: fmt.Sprintf("irq %d (%s)", q.Num, q.Name)}
		if err := c.readCurrent(); err != nil {
			return fmt.Errorf("irq %d of %s: %w", q.Num, p.o.iface, err)
		}
		p.changes = append(p.changes, c)
	}
	if pid := affinity.IRQBalancePID(); pid != 0 {
		p.note("irqbalance (pid %d) is running and will move these IRQs back; stop it (systemctl stop irqbalance) or ban CPUs %s (IRQBALANCE_BANNED_CPULIST)",
			pid, p.online.Difference(p.irqCPUs))
	}
	return nil
}

func (p *plan) planIdle() {
	target := p.cpus
	if target.IsEmpty() {
		target = p.online
	}
	max := p.prof.Host.IdleMaxLatencyUS
	for _, cpu := range target.CPUs() {
		states, err := affinity.IdleStates(cpu)
		if errors.Is(err, affinity.ErrNotSupported) {
			drv, _ := affinity.CPUIdleDriver()
			p.info("no per-state C-state switches (cpuidle driver %q): the cpu_dma_latency hold is the only C-state control", drv)
			return
		}
		if err != nil {
			p.note("cpuidle states of cpu %d: %v", cpu, err)
			continue
		}
		for _, st := range states {
			if st.LatencyUS <= max || st.Disabled {
				continue
			}
			c := change{step: affinity.Step{Kind: affinity.KindCPUIdle, Path: st.DisablePath(), New: "1",
				What: fmt.Sprintf("cpu %d idle state %s (%d us exit latency)", cpu, st.Name, st.LatencyUS)},
				name: fmt.Sprintf("cpu%d %s", cpu, st.Name), optional: true}
			c.readCurrent()
			p.changes = append(p.changes, c)
		}
	}
}

// readCurrent reads the value a change will replace, for the dry run.
func (c *change) readCurrent() error {
	steps, err := readStep(c.step)
	if errors.Is(err, fs.ErrNotExist) {
		c.absent = true
		return err
	}
	c.current = steps
	return err
}

func readStep(s affinity.Step) (string, error) {
	b, err := os.ReadFile(s.Path)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if s.Kind == affinity.KindTHP {
		if i, j := strings.IndexByte(v, '['), strings.IndexByte(v, ']'); i >= 0 && j > i {
			v = v[i+1 : j]
		}
	}
	return v, nil
}

func (p *plan) note(format string, a ...any) { p.notes = append(p.notes, fmt.Sprintf(format, a...)) }
func (p *plan) info(format string, a ...any) { p.infos = append(p.infos, fmt.Sprintf(format, a...)) }

func unwrapExec(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}

// holdShell is the shell way to hold cpu_dma_latency: write the 32-bit
// value and keep the file open.
func holdShell(us int) string {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], uint32(us))
	var oct strings.Builder
	for _, c := range b {
		fmt.Fprintf(&oct, `\%03o`, c)
	}
	return fmt.Sprintf(`exec 3<>%s && printf '%s' >&3`, affinity.CPUDMALatencyPath, oct.String())
}

// commandLine is PROGRAM as a shell command with its placement,
// scheduling and the variables onload-run adds.
func (p *plan) commandLine() string {
	var parts []string
	if !p.cpus.IsEmpty() {
		parts = append(parts, "taskset -c "+p.cpus.String())
	}
	switch p.prof.Program.Sched {
	case affinity.SchedFIFO:
		parts = append(parts, "chrt -f "+strconv.Itoa(p.prof.Program.Priority))
	case affinity.SchedRR:
		parts = append(parts, "chrt -r "+strconv.Itoa(p.prof.Program.Priority))
	}
	if len(p.envAdded) > 0 {
		parts = append(parts, "env "+shellWords(p.envAdded))
	}
	parts = append(parts, shellWords(p.o.argv))
	return strings.Join(parts, " ")
}

// print writes the plan as a shell script: each change is a command, with
// what it replaces and how to undo it in a comment. Every value in a
// command is shell-quoted, and every comment is kept to its one line
// (cli.Line), whatever a profile, the host or the command line holds: no
// value can start a line of its own.
func (p *plan) print(w io.Writer) {
	comment := func(cmd, format string, a ...any) {
		if cmd != "" {
			cmd += "   "
		}
		fmt.Fprintf(w, "%s# %s\n", cmd, cli.Line(fmt.Sprintf(format, a...)))
	}
	comment("", "onload-run --dry-run: profile %s: %s", p.prof.Name, p.prof.Description)
	comment("", "Nothing has been changed. Each command below is one change onload-run would make,")
	comment("", "journaled first in %s/%s and undone when PROGRAM ends.", p.o.journalDir, affinity.JournalFile)
	for _, n := range p.notes {
		comment("", "note: %s", n)
	}
	for _, n := range p.infos {
		comment("", "%s", n)
	}
	if p.hold {
		comment(holdShell(p.holdUS), "hold cpu_dma_latency at %d us while PROGRAM runs (now %s); released when fd 3 closes", p.holdUS, p.holdNow)
	}
	for _, c := range p.changes {
		if c.absent {
			comment("", "skip %s: %s does not exist on this kernel", c.name, c.step.Path)
			continue
		}
		undo := affinity.Step{Path: c.step.Path, Old: c.current}.UndoShell()
		comment(c.step.Shell(), "%s: %s -> %s; undo: %s", c.name, c.current, c.step.New, undo)
	}
	fmt.Fprintln(w, p.commandLine())
}
