# safe: changes nothing on the host. The program gets the plain kernel
# socket backend and blocking waits: lowlat behaves as the standard
# library's sockets do. Use it to compare against, or where the host
# belongs to someone else.
description = "No host changes: kernel sockets, blocking waits"

[env]
LOWLAT_BACKEND = kernel
LOWLAT_WAIT = block
