// Command onload-run applies a host tuning profile, runs a program under
// it, and restores the host when the program ends.
//
// Usage:
//
//	onload-run [--profile NAME|PATH] [--cpus LIST] [--irq-cpus LIST] [--iface IF]
//	           [--dry-run] [-v] [--journal-dir DIR] [--onload [--onload-lib PATH]] -- PROGRAM [ARGS...]
//	onload-run --restore [--journal-dir DIR]
//
// A profile (built in: latency, latency-best, throughput, safe; or a file,
// see package github.com/lowlat/lowlat/affinity/profile) names host
// settings: a /dev/cpu_dma_latency hold, sysctls such as
// net.core.busy_read, the transparent hugepage mode, cpuidle states to
// disable, and whether the IRQs of --iface move off the program's CPUs. It
// also names the program's scheduling policy and its environment.
//
// Every host change is written to a journal (DIR/journal.json, by default
// /run/lowlat, or $LOWLAT_JOURNAL_DIR) before it is made. When PROGRAM
// ends, for any reason, onload-run writes every old value back, reads each
// back to check it, and removes the journal. If onload-run itself is killed
// (SIGKILL), PROGRAM is killed with it and the journal stays:
// `onload-run --restore` undoes it. Every run that changes the host holds
// /run/lowlat.lock, which no flag or variable moves (--lock-file adds a
// second lock, it does not replace this one): while one runs, or while a
// dead run's journal waits for --restore, every other onload-run refuses
// to start rather than stack its changes on top. An existing file at a
// lock file's path that is not lowlat's is refused and left untouched.
//
// Run as root, onload-run trusts a profile file as it trusts a journal:
// only if root owns it and no one else may write it or any directory
// above it. A profile that sets LD_PRELOAD, LD_LIBRARY_PATH or another
// variable that makes PROGRAM load code is refused unless
// --allow-code-env is given.
//
// PROGRAM starts pinned to --cpus (inherited from the thread that forks
// it, so it never runs elsewhere) and with the profile's scheduling policy.
// onload-run forwards HUP, INT, QUIT, TERM, USR1, USR2, WINCH, ALRM and
// CONT to it, and exits with its exit status, or 128+N when signal N
// killed it.
//
// Non-Go programs: where Onload's libonload.so is installed, onload-run
// puts it in LD_PRELOAD and sets the profile's Onload variables. Go
// programs make their own system calls, so LD_PRELOAD cannot accelerate
// them: they must link github.com/lowlat/lowlat/bypass, which reads the
// LOWLAT_* variables the profile sets.
//
// --onload runs PROGRAM on Onload, or not at all: libonload.so (found in
// Onload's usual install places, or named with --onload-lib) in
// LD_PRELOAD, the profile's EF_* variables (the latency profiles carry
// Onload's own latency profile, EF_POLL_USEC and the rest), and
// LOWLAT_BACKEND=onload. A C program runs as under "onload -p latency". A
// Go program must have been built with the onload tag (its build
// information says so), whose backend makes its socket calls through the
// C library; one built without it is refused, with how to rebuild it.
// Without Onload installed, --onload fails with one line naming what is
// missing (exit status 1). See docs/onload.md.
//
// --dry-run prints, as a shell script, each change with its shell
// equivalent (echo 50 > /proc/sys/net/core/busy_read) and changes nothing.
//
// Bad input (an unknown profile, a CPU that is not online, a missing
// program, a bad flag) is reported in one line with exit status 2, before
// anything is changed.
package main
