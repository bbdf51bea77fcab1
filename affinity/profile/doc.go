// Package profile reads host tuning profiles: small text files that name
// the host settings a latency-critical program wants (a held
// cpu_dma_latency, sysctls, transparent hugepages, IRQ placement), how the
// program itself is scheduled, and the environment it is given.
//
// The format is line based, a small subset of TOML:
//
//	# a comment
//	description = "Lowest latency for one pinned program"
//
//	[host]
//	cpu_dma_latency = 0      # µs, held while the program runs
//	transparent_hugepage = never
//	move_irqs = true         # the --iface IRQs go to the other CPUs
//	idle_max_latency = 0     # disable deeper cpuidle states, where possible
//
//	[sysctl]                 # must apply
//	net.core.busy_read = 50
//
//	[sysctl.optional]        # applied where present and writable
//	kernel.numa_balancing = 0
//
//	[program]
//	sched = fifo
//	priority = 49
//	mlockall = true
//
//	[env]                    # given to every program
//	LOWLAT_WAIT = spin
//
//	[onload]                 # given to non-Go programs run under Onload
//	EF_POLL_USEC = 100000
//
// A value is a bare word (up to a " #" comment) or a double-quoted string
// with \" \\ \n and \t escapes. Keys may appear once per section. Parse
// checks every value; Format prints a profile back in this form.
package profile
