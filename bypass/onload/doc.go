// Package onload is lowlat's Onload backend: UDP and TCP sockets whose
// every operation is a call into the C library, so that Onload, preloaded
// (LD_PRELOAD=libonload.so), runs them on its own user-space stack over an
// AMD (Solarflare) adapter. A Go program makes its own system calls, which
// Onload cannot take over; through this backend a service written against
// package bypass gets Onload's TCP and UDP by naming the backend.
//
// The backend is cgo behind the build tag onload (go build -tags onload,
// CGO_ENABLED=1). Each read, write or batch is one C call (recvfrom,
// sendto, recvmmsg, sendmmsg, recv, send) that also does the waiting:
// spinning on non-blocking calls, or sleeping in poll(3), which Onload
// takes over too. Onload's extension API (onload_is_present,
// onload_set_stackname, onload_thread_set_spin, onload_fd_stat, send
// templates) is looked up at run time; nothing links against Onload.
//
// libonload.so claims signal SIGRTMAX-10 and the Go runtime takes it at
// start-up; this package puts Onload's handler back (see Signal,
// KeepSignal and docs/onload.md). Without Onload in the process the
// sockets are kernel sockets reached through the C library, and auto
// selection passes the backend over (ErrNotLoaded). Without the tag the
// package still builds, pure Go, and every call returns ErrNoOnload.
package onload
