# latency: the lowest latency for one program on a shared host.
#
# Host settings follow RHEL tuned's network-latency profile where they bear
# on a busy-polling network program; each is written to the journal before
# it is made and restored when the program ends. See docs/tuning.md.
description = "Lowest latency: C-states held shallow, kernel busy polling, IRQs off the program's CPUs, spinning sockets"

[host]
# Hold /dev/cpu_dma_latency at 0 us while the program runs: no CPU enters
# an idle state it takes time to leave (tuned: force_latency).
cpu_dma_latency = 0
# Where per-state cpuidle switches exist, also disable the states slower
# than this on the program's CPUs.
idle_max_latency = 0
# Khugepaged compaction and huge page faults cause stalls.
transparent_hugepage = never
# Move the --iface interface's IRQs onto the --irq-cpus (default: the
# online CPUs the program does not use).
move_irqs = true

[sysctl]
# Busy poll the device queue for up to 50 us in blocking reads and in
# poll/select before sleeping (sockets on a NAPI device).
net.core.busy_read = 50
net.core.busy_poll = 50

[sysctl.optional]
# Automatic NUMA balancing unmaps pages to sample accesses: page faults on
# the hot path. Absent on kernels without CONFIG_NUMA_BALANCING.
kernel.numa_balancing = 0

[env]
# lowlat sockets poll without sleeping; SO_BUSY_POLL 50 us on kernel
# sockets, as the sysctls above.
LOWLAT_WAIT = spin
LOWLAT_BUSY_POLL_US = 50

[onload]
# Onload's own latency profile: spin up to 100 ms in blocking calls before
# sleeping, and no TCP fast start (its extra acks delay receives).
EF_POLL_USEC = 100000
EF_TCP_FASTSTART_INIT = 0
EF_TCP_FASTSTART_IDLE = 0
