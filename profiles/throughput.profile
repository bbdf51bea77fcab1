# throughput: many messages per second rather than the fastest single one.
# Larger socket buffer ceilings (tuned's network-throughput values), large
# batches, and blocking waits that leave CPUs to other work.
description = "Throughput: larger socket buffer limits, big batches, blocking waits"

[sysctl]
net.core.rmem_max = 16777216
net.core.wmem_max = 16777216

[env]
LOWLAT_WAIT = block
LOWLAT_BATCH = 256
