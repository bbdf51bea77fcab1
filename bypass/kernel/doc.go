// Package kernel implements lowlat's two kernel-socket backends.
//
// "kernel" is a plain UDP or TCP socket that sleeps in the kernel until data
// arrives (recvfrom on a blocking descriptor, SO_RCVTIMEO for timeouts). It
// works everywhere and is the baseline the other backends are measured
// against.
//
// "busypoll" keeps the kernel's network stack but never sleeps: the socket is
// non-blocking and a read spins on recvfrom(MSG_DONTWAIT) until a datagram is
// there. The socket also asks the kernel to busy-poll the NIC queue it was
// last fed from (SO_BUSY_POLL, SO_PREFER_BUSY_POLL, SO_BUSY_POLL_BUDGET), so a
// driver with NAPI support delivers the next packet without an interrupt.
// Options the host refuses are recorded in Info().Notes, not fatal.
//
// Both backends issue their hot-path system calls through syscall.RawSyscall6
// when spinning, skipping the Go runtime's entersyscall/exitsyscall
// bookkeeping, which a non-blocking call does not need. Blocking calls go
// through syscall.Syscall6 so the scheduler can run other goroutines.
package kernel
