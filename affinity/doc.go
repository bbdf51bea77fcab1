// Package affinity controls where and how a latency-critical thread runs,
// and undoes every change it makes to the host.
//
// A thread that must answer within microseconds needs a CPU to itself
// (sched_setaffinity, ideally on a CPU listed in isolcpus= and nohz_full=),
// the network card's interrupts delivered to other CPUs
// (/proc/irq/N/smp_affinity_list), no deep C-state to wake from (a held
// /dev/cpu_dma_latency request, or per-state cpuidle disable switches), the
// kernel's busy-poll knobs set (net.core.busy_read, net.core.busy_poll), and
// often a real-time scheduling class and locked memory.
//
// CPUSet and the Pin functions are pure thread placement and change nothing
// outside the calling thread. Host-wide changes (sysctls, IRQ affinity,
// cpuidle states) go through a Journal: each change is written to a small
// JSON file under /run/lowlat/ before it is made, so that Undo, or a later
// process reading the journal after a crash, can put the old values back.
package affinity
