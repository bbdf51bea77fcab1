// Package stack is lowlat's user-space IPv4 core, UDP and TCP: what the
// afxdp and efvi backends share, written once against a small driver
// contract. TCP (tcp_linux.go) runs package tcp's connections on it,
// inline on the polling thread; docs/tcp.md describes it.
//
// A Stack owns one driver (the AF_XDP sockets and UMEM of an interface, or
// an ef_vi VI pair) and any number of Sockets on it. Frames are received
// from the driver, validated (package frame) and demultiplexed in user space
// by destination address and port; datagrams are framed from a per-socket
// template, their next hop resolved through the kernel once per
// destination and cached with an expiry. The goroutine that reads a socket
// polls the whole stack: one pass over the receive ring serves every socket
// on it, and datagrams for the other sockets wait in those sockets' receive
// queues (a bounded byte ring each; a full queue drops and counts). This is
// Onload's model -- a stack per thread, the polling thread does the protocol
// work for all of its sockets, inline -- in Go.
//
// The driver contract (Driver) is the seam a backend implements:
//
//	receive:  Poll (take the frames the device has delivered), Release (give
//	          their buffers back)
//	transmit: Reserve (a free buffer to build a frame in), Commit (queue it),
//	          Kick (hand the queued frames to the device), Reap (take back the
//	          buffers the device has finished with)
//
// MemDriver implements it in memory, so the core's logic is tested without
// root or hardware; afxdp and efvi hold only their driver code.
//
// Locking: the receive side of a stack (driver receive, filter, socket
// table, receive queues) is guarded by one mutex that a reader holds for
// one poll batch at a time; the transmit side (driver transmit, neighbour
// cache, templates) by another. A stack served by one thread never
// contends on either.
package stack
