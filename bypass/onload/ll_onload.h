//go:build linux && onload && cgo

// The C side of the onload backend: every socket operation is a call into
// the C library, which Onload's libonload.so takes over when it is
// preloaded. Functions return a count (>= 0) or -errno, never set errno
// for Go to read.
#ifndef LL_ONLOAD_H
#define LL_ONLOAD_H

#include <stddef.h>
#include <stdint.h>

// One socket: its descriptor, how it waits, and the scratch headers of the
// reader's and the writer's batches. Allocated in C and freed by Close, so
// the headers may point at Go buffers for the length of one call.
struct ll_sock {
	int fd;
	int closed;       // set by ll_wake; every wait loop reads it
	int spin;         // 1: retry non-blocking calls; 0: sleep in poll()
	int batch;        // entries in each scratch array
	int64_t wtimeout; // write timeout in ns, fixed at creation; 0: none
	void *rmsg, *riov;
	void *wmsg, *wiov;
};

// One datagram of a batch, in Go memory. base is the address of a Go
// buffer as an integer: the Go side keeps the buffer referenced for the
// call (see batch.go), and C keeps no copy after it returns.
struct ll_msg {
	uintptr_t base;
	uint32_t len;   // in: buffer length; out (receive): bytes received
	uint32_t flags; // out (receive): the message flags (MSG_TRUNC)
	uint32_t alen;  // in (send), out (receive): address length
	uint8_t addr[28];
};

// Socket life.
struct ll_sock *ll_open(int family, int type, int spin, int batch, int64_t wtimeout, int *err);
struct ll_sock *ll_adopt(int fd, int spin, int batch, int64_t wtimeout, int *err);
void ll_free(struct ll_sock *s);
int ll_wake(struct ll_sock *s);
int ll_close(struct ll_sock *s);

// Setup calls, each one C library call.
int ll_setsockopt(int fd, int level, int opt, const void *val, uint32_t len);
int ll_setsockopt_int(int fd, int level, int opt, int val);
int ll_getsockopt_int(int fd, int level, int opt, int *val);
int ll_bind(int fd, const void *addr, uint32_t alen);
int ll_listen(int fd, int backlog);
int ll_getsockname(int fd, void *addr, uint32_t *alen);
int ll_getpeername(int fd, void *addr, uint32_t *alen);
int ll_connect(struct ll_sock *s, const void *addr, uint32_t alen, int64_t timeout);
int ll_accept(struct ll_sock *s, void *addr, uint32_t *alen);

// Data calls. timeout is the read timeout in ns (0: none); wait 0 never
// waits (returns -EAGAIN at once).
long ll_recvfrom(struct ll_sock *s, void *buf, size_t len, void *addr, uint32_t *alen, int64_t timeout);
long ll_sendto(struct ll_sock *s, const void *buf, size_t len, const void *addr, uint32_t alen);
int ll_recvmmsg(struct ll_sock *s, struct ll_msg *m, int n, int wait, int64_t timeout);
int ll_sendmmsg(struct ll_sock *s, struct ll_msg *m, int n, int *sent);
long ll_recv(struct ll_sock *s, void *buf, size_t len, int64_t timeout);
long ll_send(struct ll_sock *s, const void *buf, size_t len, size_t *sent);

// Onload's extension API, looked up with dlsym.
enum {
	LL_X_IS_PRESENT = 1 << 0,
	LL_X_SET_STACKNAME = 1 << 1,
	LL_X_THREAD_SET_SPIN = 1 << 2,
	LL_X_FD_STAT = 1 << 3,
	LL_X_TEMPLATES = 1 << 4,
	LL_X_ZC_RECV = 1 << 5,
	LL_X_ZC_SEND = 1 << 6,
};
struct ll_stat {
	int32_t stack_id;
	int32_t endpoint_id;
	int32_t endpoint_state;
	char name[64];
};
unsigned ll_ext_find(void);
int ll_is_present(void);
int ll_set_stackname(int who, int scope, const char *name);
int ll_thread_set_spin(int type, int spin);
int ll_fd_stat(int fd, struct ll_stat *st);
int ll_tmpl_alloc(int fd, const void *buf, size_t len, void **handle);
int ll_tmpl_update(int fd, void *handle, const void *buf, size_t len, int64_t off, unsigned flags);
int ll_tmpl_abort(int fd, void *handle);

// SIGONLOAD (SIGRTMAX-10): the handler found before the Go runtime
// started, and putting it back.
struct ll_sigstate {
	int signo;
	int claimed;        // a handler (not SIG_DFL or SIG_IGN) was there before the runtime started
	uintptr_t handler;  // that handler
	uintptr_t current;  // the kernel's handler now
};
void ll_sig_state(struct ll_sigstate *st);
int ll_sig_restore(void);

#endif
