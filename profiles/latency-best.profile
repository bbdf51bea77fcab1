# latency-best: latency, plus real-time scheduling and locked memory for
# the program. A SCHED_FIFO thread that spins never yields its CPU: give
# the program CPUs of its own (--cpus), or kernel threads on those CPUs
# starve (the kernel's RT throttling then steals 50 ms of every second).
description = "latency plus SCHED_FIFO priority 49 and mlockall for the program"

[host]
cpu_dma_latency = 0
idle_max_latency = 0
transparent_hugepage = never
move_irqs = true

[sysctl]
net.core.busy_read = 50
net.core.busy_poll = 50

[sysctl.optional]
kernel.numa_balancing = 0

[program]
# Priority 49 stays below the kernel's threaded IRQ handlers (50).
sched = fifo
priority = 49
# mlockall does not survive exec: the program is asked to lock its own
# memory through LOWLAT_MLOCKALL=1 (affinity.LockMemory).
mlockall = true

[env]
LOWLAT_WAIT = spin
LOWLAT_BUSY_POLL_US = 50

[onload]
EF_POLL_USEC = 100000
EF_TCP_FASTSTART_INIT = 0
EF_TCP_FASTSTART_IDLE = 0
