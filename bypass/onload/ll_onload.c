//go:build linux && onload && cgo

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "ll_onload.h"

#if !defined(__x86_64__) && !defined(__aarch64__)
#error "the onload backend supports x86_64 and aarch64, as Onload does"
#endif

static int64_t ll_now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int ll_closed(struct ll_sock *s) { return __atomic_load_n(&s->closed, __ATOMIC_ACQUIRE); }

// ---------------------------------------------------------------- waiting

// A wait is what a call does between two attempts that found nothing to
// do (EAGAIN). Spinning, it returns at once, and reads the clock every 64
// attempts only, so a reply already on its way costs no clock read.
// Blocking, it sleeps in poll() on the socket, which Onload takes over (and
// spins in for EF_POLL_USEC before it sleeps), for at most a second at a
// time so that Close is noticed even by a stack whose shutdown does not
// wake a poller.
struct ll_wait {
	int64_t timeout; // ns; 0: none
	int64_t start;   // first clock read; 0: not yet
	unsigned spins;
};

// ll_wait_once returns 0 to try again, -ETIMEDOUT, -EBADF (closed) or
// -errno from poll().
static int ll_wait_once(struct ll_sock *s, struct ll_wait *w, short events, int spin) {
	if (ll_closed(s))
		return -EBADF;
	if (spin) {
		if ((++w->spins & 63) != 0 || w->timeout == 0)
			return 0;
		int64_t t = ll_now();
		if (w->start == 0)
			w->start = t;
		else if (t - w->start >= w->timeout)
			return -ETIMEDOUT;
		return 0;
	}
	int ms = 1000;
	if (w->timeout > 0) {
		int64_t t = ll_now();
		if (w->start == 0)
			w->start = t;
		int64_t left = w->timeout - (t - w->start);
		if (left <= 0)
			return -ETIMEDOUT;
		if (left < (int64_t)ms * 1000000)
			ms = (int)((left + 999999) / 1000000);
	}
	struct pollfd p = {.fd = s->fd, .events = events};
	if (poll(&p, 1, ms) < 0 && errno != EINTR)
		return -errno;
	return ll_closed(s) ? -EBADF : 0;
}

// ---------------------------------------------------------------- sockets

static int ll_scratch(struct ll_sock *s, int batch) {
	s->batch = batch;
	s->rmsg = calloc((size_t)batch, sizeof(struct mmsghdr));
	s->wmsg = calloc((size_t)batch, sizeof(struct mmsghdr));
	s->riov = calloc((size_t)batch, sizeof(struct iovec));
	s->wiov = calloc((size_t)batch, sizeof(struct iovec));
	if (!s->rmsg || !s->wmsg || !s->riov || !s->wiov)
		return -ENOMEM;
	struct mmsghdr *rm = s->rmsg, *wm = s->wmsg;
	struct iovec *ri = s->riov, *wi = s->wiov;
	for (int i = 0; i < batch; i++) {
		rm[i].msg_hdr.msg_iov = &ri[i];
		rm[i].msg_hdr.msg_iovlen = 1;
		wm[i].msg_hdr.msg_iov = &wi[i];
		wm[i].msg_hdr.msg_iovlen = 1;
	}
	return 0;
}

void ll_free(struct ll_sock *s) {
	if (s == NULL)
		return;
	free(s->rmsg);
	free(s->wmsg);
	free(s->riov);
	free(s->wiov);
	free(s);
}

struct ll_sock *ll_adopt(int fd, int spin, int batch, int64_t wtimeout, int *err) {
	struct ll_sock *s = calloc(1, sizeof *s);
	if (s == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	s->fd = fd;
	s->spin = spin;
	s->wtimeout = wtimeout;
	int rc = ll_scratch(s, batch);
	if (rc < 0) {
		ll_free(s);
		*err = rc;
		return NULL;
	}
	*err = 0;
	return s;
}

// ll_open creates a non-blocking socket: every call that would wait is
// retried or waited for by this file's loops, as the wait mode says.
struct ll_sock *ll_open(int family, int type, int spin, int batch, int64_t wtimeout, int *err) {
	int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = -errno;
		return NULL;
	}
	struct ll_sock *s = ll_adopt(fd, spin, batch, wtimeout, err);
	if (s == NULL)
		close(fd);
	return s;
}

// ll_wake marks the socket closed and wakes a reader sleeping in poll() or
// spinning: shutdown makes the socket readable (an empty read).
int ll_wake(struct ll_sock *s) {
	__atomic_store_n(&s->closed, 1, __ATOMIC_RELEASE);
	return shutdown(s->fd, SHUT_RDWR) < 0 ? -errno : 0;
}

int ll_close(struct ll_sock *s) { return close(s->fd) < 0 ? -errno : 0; }

int ll_setsockopt(int fd, int level, int opt, const void *val, uint32_t len) {
	return setsockopt(fd, level, opt, val, (socklen_t)len) < 0 ? -errno : 0;
}

int ll_setsockopt_int(int fd, int level, int opt, int val) {
	return setsockopt(fd, level, opt, &val, sizeof val) < 0 ? -errno : 0;
}

int ll_getsockopt_int(int fd, int level, int opt, int *val) {
	socklen_t l = sizeof *val;
	return getsockopt(fd, level, opt, val, &l) < 0 ? -errno : 0;
}

int ll_bind(int fd, const void *addr, uint32_t alen) {
	return bind(fd, (const struct sockaddr *)addr, (socklen_t)alen) < 0 ? -errno : 0;
}

int ll_listen(int fd, int backlog) { return listen(fd, backlog) < 0 ? -errno : 0; }

int ll_getsockname(int fd, void *addr, uint32_t *alen) {
	socklen_t l = *alen;
	int rc = getsockname(fd, (struct sockaddr *)addr, &l);
	*alen = (uint32_t)l;
	return rc < 0 ? -errno : 0;
}

int ll_getpeername(int fd, void *addr, uint32_t *alen) {
	socklen_t l = *alen;
	int rc = getpeername(fd, (struct sockaddr *)addr, &l);
	*alen = (uint32_t)l;
	return rc < 0 ? -errno : 0;
}

// ll_connect connects the non-blocking socket and waits for the handshake
// in poll() (whatever the wait mode: Onload spins there first), at most
// timeout ns (0: the stack's own limit), then reads SO_ERROR.
int ll_connect(struct ll_sock *s, const void *addr, uint32_t alen, int64_t timeout) {
	if (connect(s->fd, (const struct sockaddr *)addr, (socklen_t)alen) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR)
		return -errno;
	struct ll_wait w = {.timeout = timeout};
	for (;;) {
		struct pollfd p = {.fd = s->fd, .events = POLLOUT};
		int r = poll(&p, 1, 0);
		if (r > 0)
			break;
		if (r < 0 && errno != EINTR)
			return -errno;
		int rc = ll_wait_once(s, &w, POLLOUT, 0);
		if (rc < 0)
			return rc;
	}
	int soerr = 0;
	int rc = ll_getsockopt_int(s->fd, SOL_SOCKET, SO_ERROR, &soerr);
	if (rc < 0)
		return rc;
	return -soerr;
}

// ll_accept waits in poll() for a connection and accepts it non-blocking.
int ll_accept(struct ll_sock *s, void *addr, uint32_t *alen) {
	struct ll_wait w = {0};
	for (;;) {
		socklen_t l = *alen;
		int fd = accept4(s->fd, (struct sockaddr *)addr, &l, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			*alen = (uint32_t)l;
			return fd;
		}
		int e = errno;
		if (e == EINTR || e == ECONNABORTED)
			continue;
		if (e != EAGAIN)
			return ll_closed(s) ? -EBADF : -e;
		int rc = ll_wait_once(s, &w, POLLIN, 0);
		if (rc < 0)
			return rc;
	}
}

// ---------------------------------------------------------------- data

long ll_recvfrom(struct ll_sock *s, void *buf, size_t len, void *addr, uint32_t *alen, int64_t timeout) {
	struct ll_wait w = {.timeout = timeout};
	for (;;) {
		socklen_t l = *alen;
		ssize_t r = recvfrom(s->fd, buf, len, MSG_DONTWAIT | MSG_TRUNC, (struct sockaddr *)addr, &l);
		if (r >= 0) {
			*alen = (uint32_t)l;
			return (long)r;
		}
		int e = errno;
		if (e != EAGAIN && e != EINTR)
			return -e;
		int rc = ll_wait_once(s, &w, POLLIN, s->spin);
		if (rc < 0)
			return rc;
	}
}

long ll_sendto(struct ll_sock *s, const void *buf, size_t len, const void *addr, uint32_t alen) {
	struct ll_wait w = {.timeout = s->wtimeout};
	for (;;) {
		ssize_t r = sendto(s->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)addr, (socklen_t)alen);
		if (r >= 0)
			return (long)r;
		int e = errno;
		if (e != EAGAIN && e != EINTR && e != ENOBUFS)
			return -e;
		int rc = ll_wait_once(s, &w, POLLOUT, s->spin);
		if (rc < 0)
			return rc;
	}
}

// ll_recvmmsg receives up to n datagrams into m's buffers with one
// recvmmsg() per attempt; with wait, it waits as the socket's mode says
// for the first one. The scratch headers point at the Go buffers only for
// the length of the call.
int ll_recvmmsg(struct ll_sock *s, struct ll_msg *m, int n, int wait, int64_t timeout) {
	if (n > s->batch)
		n = s->batch;
	struct mmsghdr *h = s->rmsg;
	struct iovec *v = s->riov;
	for (int i = 0; i < n; i++) {
		v[i].iov_base = (void *)m[i].base;
		v[i].iov_len = m[i].len;
		h[i].msg_hdr.msg_name = m[i].addr;
		h[i].msg_hdr.msg_namelen = sizeof m[i].addr;
		h[i].msg_hdr.msg_flags = 0;
		h[i].msg_len = 0;
	}
	struct ll_wait w = {.timeout = timeout};
	int got;
	for (;;) {
		got = recvmmsg(s->fd, h, (unsigned)n, MSG_DONTWAIT, NULL);
		if (got >= 0)
			break;
		int e = errno;
		if (e != EAGAIN && e != EINTR) {
			got = -e;
			break;
		}
		if (!wait) {
			got = -EAGAIN;
			break;
		}
		int rc = ll_wait_once(s, &w, POLLIN, s->spin);
		if (rc < 0) {
			got = rc;
			break;
		}
	}
	for (int i = 0; i < n; i++) {
		if (i < got) {
			m[i].len = h[i].msg_len;
			m[i].flags = (uint32_t)h[i].msg_hdr.msg_flags;
			m[i].alen = h[i].msg_hdr.msg_namelen;
		}
		v[i].iov_base = NULL;
		h[i].msg_hdr.msg_name = NULL;
	}
	return got;
}

// ll_sendmmsg sends m[0:n] (n at most the batch size) with sendmmsg(),
// again for what the stack did not take, waiting as the socket's mode
// says when it takes nothing. *sent says how many went.
int ll_sendmmsg(struct ll_sock *s, struct ll_msg *m, int n, int *sent) {
	if (n > s->batch)
		n = s->batch;
	struct mmsghdr *h = s->wmsg;
	struct iovec *v = s->wiov;
	for (int i = 0; i < n; i++) {
		v[i].iov_base = (void *)m[i].base;
		v[i].iov_len = m[i].len;
		h[i].msg_hdr.msg_name = m[i].addr;
		h[i].msg_hdr.msg_namelen = m[i].alen;
	}
	struct ll_wait w = {.timeout = s->wtimeout};
	int done = 0, rc = 0;
	while (done < n) {
		int r = sendmmsg(s->fd, h + done, (unsigned)(n - done), MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r > 0) {
			done += r;
			continue;
		}
		int e = r == 0 ? EAGAIN : errno;
		if (e != EAGAIN && e != EINTR && e != ENOBUFS) {
			rc = -e;
			break;
		}
		rc = ll_wait_once(s, &w, POLLOUT, s->spin);
		if (rc < 0)
			break;
	}
	for (int i = 0; i < n; i++) {
		v[i].iov_base = NULL;
		h[i].msg_hdr.msg_name = NULL;
	}
	*sent = done;
	return rc;
}

// ll_recv reads what the stream has, up to len bytes, waiting for some as
// the socket's mode says. 0 is the end of the stream.
long ll_recv(struct ll_sock *s, void *buf, size_t len, int64_t timeout) {
	struct ll_wait w = {.timeout = timeout};
	for (;;) {
		ssize_t r = recv(s->fd, buf, len, MSG_DONTWAIT);
		if (r > 0)
			return (long)r;
		if (r == 0)
			return ll_closed(s) ? -EBADF : 0;
		int e = errno;
		if (e != EAGAIN && e != EINTR)
			return -e;
		int rc = ll_wait_once(s, &w, POLLIN, s->spin);
		if (rc < 0)
			return rc;
	}
}

// ll_send sends all of buf, one send() per attempt; *sent says how much
// went when it fails part way.
long ll_send(struct ll_sock *s, const void *buf, size_t len, size_t *sent) {
	struct ll_wait w = {.timeout = s->wtimeout};
	size_t done = 0;
	while (done < len) {
		ssize_t r = send(s->fd, (const char *)buf + done, len - done, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r > 0) {
			done += (size_t)r;
			continue;
		}
		int e = r == 0 ? EAGAIN : errno;
		if (e != EAGAIN && e != EINTR) {
			*sent = done;
			return -e;
		}
		int rc = ll_wait_once(s, &w, POLLOUT, s->spin);
		if (rc < 0) {
			*sent = done;
			return rc;
		}
	}
	*sent = done;
	return (long)done;
}

// ---------------------------------------------------------------- extensions

// The layouts below follow Onload's extension API (onload/extensions.h and
// extensions_zc.h); nothing links against Onload: each function is looked
// up once, at run time, and an absent one is reported, never called.
struct ll_onload_stat {
	int32_t stack_id;
	char *stack_name;
	int32_t endpoint_id;
	int32_t endpoint_state;
};
struct ll_tmpl_update {
	void *base;
	size_t len;
	off_t off;
	unsigned flags;
};

static struct {
	int (*is_present)(void);
	int (*set_stackname)(int, int, const char *);
	int (*thread_set_spin)(int, int);
	int (*fd_stat)(int, struct ll_onload_stat *);
	int (*tmpl_alloc)(int, const struct iovec *, int, void **, unsigned);
	int (*tmpl_update)(int, void *, const struct ll_tmpl_update *, int, unsigned);
	int (*tmpl_abort)(int, void *);
	void *zc_recv, *zc_send;
	unsigned found;
} ll_x;

unsigned ll_ext_find(void) {
	unsigned f = 0;
#define FIND(field, name, bit) \
	do { \
		*(void **)&ll_x.field = dlsym(RTLD_DEFAULT, name); \
		if (ll_x.field != NULL) \
			f |= (bit); \
	} while (0)
	FIND(is_present, "onload_is_present", LL_X_IS_PRESENT);
	FIND(set_stackname, "onload_set_stackname", LL_X_SET_STACKNAME);
	FIND(thread_set_spin, "onload_thread_set_spin", LL_X_THREAD_SET_SPIN);
	FIND(fd_stat, "onload_fd_stat", LL_X_FD_STAT);
	FIND(tmpl_alloc, "onload_msg_template_alloc", 0);
	FIND(tmpl_update, "onload_msg_template_update", 0);
	FIND(tmpl_abort, "onload_msg_template_abort", 0);
	FIND(zc_recv, "onload_zc_recv", LL_X_ZC_RECV);
	FIND(zc_send, "onload_zc_send", LL_X_ZC_SEND);
#undef FIND
	if (ll_x.tmpl_alloc && ll_x.tmpl_update && ll_x.tmpl_abort)
		f |= LL_X_TEMPLATES;
	__atomic_store_n(&ll_x.found, f, __ATOMIC_RELEASE);
	return f;
}

int ll_is_present(void) { return ll_x.is_present ? ll_x.is_present() : 0; }

int ll_set_stackname(int who, int scope, const char *name) {
	if (!ll_x.set_stackname)
		return -ENOSYS;
	int rc = ll_x.set_stackname(who, scope, name);
	return rc < 0 ? (rc == -1 ? -errno : rc) : 0;
}

int ll_thread_set_spin(int type, int spin) {
	if (!ll_x.thread_set_spin)
		return -ENOSYS;
	int rc = ll_x.thread_set_spin(type, spin);
	return rc < 0 ? (rc == -1 ? -errno : rc) : 0;
}

// ll_fd_stat returns 1 when Onload accelerates fd (and fills st), 0 when
// the kernel has it, -errno on error.
int ll_fd_stat(int fd, struct ll_stat *st) {
	if (!ll_x.fd_stat)
		return -ENOSYS;
	struct ll_onload_stat o;
	memset(&o, 0, sizeof o);
	int rc = ll_x.fd_stat(fd, &o);
	if (rc < 0)
		return rc == -1 ? -errno : rc;
	st->stack_id = o.stack_id;
	st->endpoint_id = o.endpoint_id;
	st->endpoint_state = o.endpoint_state;
	st->name[0] = 0;
	if (o.stack_name != NULL) {
		strncpy(st->name, o.stack_name, sizeof st->name - 1);
		st->name[sizeof st->name - 1] = 0;
		free(o.stack_name); // Onload allocates it for the caller
	}
	return rc > 0 ? 1 : 0;
}

int ll_tmpl_alloc(int fd, const void *buf, size_t len, void **handle) {
	if (!(ll_x.found & LL_X_TEMPLATES))
		return -ENOSYS;
	struct iovec v = {.iov_base = (void *)buf, .iov_len = len};
	int rc = ll_x.tmpl_alloc(fd, &v, 1, handle, 0);
	return rc < 0 ? rc : 0;
}

int ll_tmpl_update(int fd, void *handle, const void *buf, size_t len, int64_t off, unsigned flags) {
	if (!(ll_x.found & LL_X_TEMPLATES))
		return -ENOSYS;
	struct ll_tmpl_update u = {.base = (void *)buf, .len = len, .off = (off_t)off};
	int rc = ll_x.tmpl_update(fd, handle, len > 0 ? &u : NULL, len > 0 ? 1 : 0, flags);
	return rc < 0 ? rc : 0;
}

int ll_tmpl_abort(int fd, void *handle) {
	if (!(ll_x.found & LL_X_TEMPLATES))
		return -ENOSYS;
	int rc = ll_x.tmpl_abort(fd, handle);
	return rc < 0 ? rc : 0;
}

// ---------------------------------------------------------------- SIGONLOAD

// The kernel's view of a signal action on x86_64 and aarch64 (both have
// sa_restorer): what rt_sigaction(2) reads and writes.
struct ll_ksigaction {
	void *handler;
	unsigned long flags;
	void *restorer;
	uint64_t mask;
};

#ifndef SA_ONSTACK
#define SA_ONSTACK 0x08000000
#endif

static struct ll_ksigaction ll_sig_saved;
static int ll_sig_no, ll_sig_have;

static int ll_rt_sigaction(int sig, const struct ll_ksigaction *act, struct ll_ksigaction *old) {
	return syscall(SYS_rt_sigaction, sig, act, old, sizeof(uint64_t)) < 0 ? -errno : 0;
}

// Runs before the Go runtime starts (the executable's constructors run
// before its entry point), after every preloaded library's: libonload.so
// has installed its SIGONLOAD handler by then, and the runtime has not yet
// replaced it. The kernel's own record is read, restorer and flags
// included, so that it can be written back exactly.
__attribute__((constructor)) static void ll_sig_save(void) {
	ll_sig_no = SIGRTMAX - 10;
	struct ll_ksigaction k;
	if (ll_rt_sigaction(ll_sig_no, NULL, &k) != 0)
		return;
	if (k.handler == (void *)SIG_DFL || k.handler == (void *)SIG_IGN)
		return;
	ll_sig_saved = k;
	ll_sig_have = 1;
}

void ll_sig_state(struct ll_sigstate *st) {
	struct ll_ksigaction k;
	memset(st, 0, sizeof *st);
	st->signo = ll_sig_no;
	st->claimed = ll_sig_have;
	st->handler = (uintptr_t)ll_sig_saved.handler;
	if (ll_rt_sigaction(ll_sig_no, NULL, &k) == 0)
		st->current = (uintptr_t)k.handler;
}

// ll_sig_restore puts the saved handler back with the raw system call (the
// C library's sigaction is the one Onload refuses), adding SA_ONSTACK: a
// Go thread's signals must run on the alternate signal stack the runtime
// gives every thread, never on a goroutine's small stack. It returns 1 when
// it put the handler back, 0 when it was in place (or nothing was
// claimed), -errno on failure.
int ll_sig_restore(void) {
	if (!ll_sig_have)
		return 0;
	struct ll_ksigaction k;
	int rc = ll_rt_sigaction(ll_sig_no, NULL, &k);
	if (rc < 0)
		return rc;
	if (k.handler == ll_sig_saved.handler && (k.flags & SA_ONSTACK))
		return 0;
	struct ll_ksigaction want = ll_sig_saved;
	want.flags |= SA_ONSTACK;
	rc = ll_rt_sigaction(ll_sig_no, &want, NULL);
	return rc < 0 ? rc : 1;
}
