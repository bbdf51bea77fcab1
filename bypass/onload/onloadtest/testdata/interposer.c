// A stand-in for libonload.so, for tests on hosts without Onload.
//
// Preloaded (LD_PRELOAD) into a process, it takes over the C library's
// socket calls the way Onload does, counts each call made on a socket it
// created, and hands the call on to the real C library (dlsym RTLD_NEXT).
// Like an Onload socket, the descriptor socket() returns is not a kernel
// socket: it is an eventfd that stands for one, and only the calls this
// library takes over reach the socket behind it. A system call made on it
// around the C library fails (ENOTSOCK) or never sees data, so a program
// that bypassed the C library would fail its tests instead of passing them
// with kernel sockets. It also
//   - exports stand-ins for Onload's extension API (onload_is_present,
//     onload_set_stackname, onload_thread_set_spin, onload_fd_stat and the
//     send templates), which report a stack named after onload_set_stackname;
//   - claims signal SIGRTMAX-10 in its constructor, and refuses with EINVAL
//     any sigaction() that would replace that handler (one that asks for
//     SIG_DFL succeeds and changes nothing), as libonload does.
//
// A Go program exits without running C destructors, so the counts are kept
// in a file mapped shared (LOWLAT_INTERPOSER_COUNTS names it): the file is
// current at every moment and any process may read it. Its layout, native
// byte order:
//   header  8 bytes magic "LLITCNT1", u32 entries, u32 header size (64),
//           u64 address of the SIGRTMAX-10 handler, u64 signal number,
//           32 bytes reserved
//   entry   32 bytes name (NUL-padded), u64 calls, u64 calls that succeeded
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

enum {
	F_SOCKET, F_BIND, F_CONNECT, F_LISTEN, F_ACCEPT, F_ACCEPT4,
	F_SEND, F_SENDTO, F_SENDMSG, F_SENDMMSG,
	F_RECV, F_RECVFROM, F_RECVMSG, F_RECVMMSG,
	F_READ, F_WRITE, F_POLL, F_PPOLL, F_SELECT,
	F_EPOLL_CREATE1, F_EPOLL_CTL, F_EPOLL_WAIT,
	F_CLOSE, F_SHUTDOWN, F_SETSOCKOPT, F_GETSOCKOPT, F_GETSOCKNAME, F_GETPEERNAME,
	F_FCNTL, F_IOCTL,
	// Extension API.
	X_IS_PRESENT, X_SET_STACKNAME, X_THREAD_SET_SPIN, X_FD_STAT,
	X_TMPL_ALLOC, X_TMPL_UPDATE, X_TMPL_ABORT,
	// Signals.
	S_DELIVERED, S_REFUSED, S_DFL_IGNORED,
	N_COUNTERS
};

static const char *names[N_COUNTERS] = {
	"socket", "bind", "connect", "listen", "accept", "accept4",
	"send", "sendto", "sendmsg", "sendmmsg",
	"recv", "recvfrom", "recvmsg", "recvmmsg",
	"read", "write", "poll", "ppoll", "select",
	"epoll_create1", "epoll_ctl", "epoll_wait",
	"close", "shutdown", "setsockopt", "getsockopt", "getsockname", "getpeername",
	"fcntl", "ioctl",
	"onload_is_present", "onload_set_stackname", "onload_thread_set_spin", "onload_fd_stat",
	"onload_msg_template_alloc", "onload_msg_template_update", "onload_msg_template_abort",
	"sigonload_delivered", "sigaction_refused", "sigaction_dfl_ignored",
};

struct header {
	char magic[8];
	uint32_t entries, size;
	uint64_t handler, signo;
	char reserved[32];
};
struct entry {
	char name[32];
	uint64_t calls, ok;
};

static struct entry local[N_COUNTERS];
static struct entry *counts = local;
static struct header *hdr;

static void count(int f, long rc) {
	__atomic_fetch_add(&counts[f].calls, 1, __ATOMIC_RELAXED);
	if (rc >= 0)
		__atomic_fetch_add(&counts[f].ok, 1, __ATOMIC_RELAXED);
}

// Sockets this library created: the descriptor handed out (an eventfd)
// maps to the kernel socket behind it, stored plus one (0: none). Only
// calls on them are counted.
#define MAXFD 65536
static int shadow[MAXFD];
static int real_of(int fd) {
	if (fd < 0 || fd >= MAXFD)
		return -1;
	return __atomic_load_n(&shadow[fd], __ATOMIC_ACQUIRE) - 1;
}
static int mine(int fd) { return real_of(fd) >= 0; }

#define REAL(ret, name, ...) \
	static ret (*real_##name)(__VA_ARGS__); \
	static void resolve_##name(void) { real_##name = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name); }

REAL(int, socket, int, int, int)
REAL(int, bind, int, const struct sockaddr *, socklen_t)
REAL(int, connect, int, const struct sockaddr *, socklen_t)
REAL(int, listen, int, int)
REAL(int, accept, int, struct sockaddr *, socklen_t *)
REAL(int, accept4, int, struct sockaddr *, socklen_t *, int)
REAL(ssize_t, send, int, const void *, size_t, int)
REAL(ssize_t, sendto, int, const void *, size_t, int, const struct sockaddr *, socklen_t)
REAL(ssize_t, sendmsg, int, const struct msghdr *, int)
REAL(int, sendmmsg, int, struct mmsghdr *, unsigned int, int)
REAL(ssize_t, recv, int, void *, size_t, int)
REAL(ssize_t, recvfrom, int, void *, size_t, int, struct sockaddr *, socklen_t *)
REAL(ssize_t, recvmsg, int, struct msghdr *, int)
REAL(int, recvmmsg, int, struct mmsghdr *, unsigned int, int, struct timespec *)
REAL(ssize_t, read, int, void *, size_t)
REAL(ssize_t, write, int, const void *, size_t)
REAL(int, poll, struct pollfd *, nfds_t, int)
REAL(int, ppoll, struct pollfd *, nfds_t, const struct timespec *, const sigset_t *)
REAL(int, epoll_create1, int)
REAL(int, epoll_ctl, int, int, int, struct epoll_event *)
REAL(int, epoll_wait, int, struct epoll_event *, int, int)
REAL(int, close, int)
REAL(int, shutdown, int, int)
REAL(int, setsockopt, int, int, int, const void *, socklen_t)
REAL(int, getsockopt, int, int, int, void *, socklen_t *)
REAL(int, getsockname, int, struct sockaddr *, socklen_t *)
REAL(int, getpeername, int, struct sockaddr *, socklen_t *)
REAL(int, fcntl, int, int, ...)
REAL(int, ioctl, int, unsigned long, ...)
REAL(int, sigaction, int, const struct sigaction *, struct sigaction *)

static int sigonload(void) { return SIGRTMAX - 10; }

static void on_sigonload(int sig, siginfo_t *info, void *ctx) {
	(void)sig; (void)info; (void)ctx;
	__atomic_fetch_add(&counts[S_DELIVERED].calls, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&counts[S_DELIVERED].ok, 1, __ATOMIC_RELAXED);
}

// Point the counters at the shared file, when one is named.
static void map_counts(void) {
	const char *path = getenv("LOWLAT_INTERPOSER_COUNTS");
	if (path == NULL || *path == 0)
		return;
	size_t len = sizeof(struct header) + sizeof(struct entry) * N_COUNTERS;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	void *p = MAP_FAILED;
	if (ftruncate(fd, (off_t)len) == 0)
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	real_close(fd);
	if (p == MAP_FAILED)
		return;
	hdr = p;
	counts = (struct entry *)(hdr + 1);
	// A file shared by several processes (a parent and the child it
	// preloads into) keeps the counts it has.
	if (memcmp(hdr->magic, "LLITCNT1", 8) != 0) {
		memset(p, 0, len);
		hdr->entries = N_COUNTERS;
		hdr->size = sizeof(struct header);
		for (int i = 0; i < N_COUNTERS; i++)
			strncpy(counts[i].name, names[i], sizeof counts[i].name - 1);
		memcpy(hdr->magic, "LLITCNT1", 8);
	}
}

__attribute__((constructor)) static void interposer_init(void) {
	resolve_socket(); resolve_bind(); resolve_connect(); resolve_listen();
	resolve_accept(); resolve_accept4(); resolve_send(); resolve_sendto();
	resolve_sendmsg(); resolve_sendmmsg(); resolve_recv(); resolve_recvfrom();
	resolve_recvmsg(); resolve_recvmmsg(); resolve_read(); resolve_write();
	resolve_poll(); resolve_ppoll(); resolve_epoll_create1(); resolve_epoll_ctl();
	resolve_epoll_wait(); resolve_close(); resolve_shutdown(); resolve_setsockopt();
	resolve_getsockopt(); resolve_getsockname(); resolve_getpeername();
	resolve_fcntl(); resolve_ioctl(); resolve_sigaction();
	for (int i = 0; i < N_COUNTERS; i++)
		strncpy(local[i].name, names[i], sizeof local[i].name - 1);
	map_counts();

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_flags = SA_SIGINFO;
	sa.sa_sigaction = on_sigonload;
	real_sigaction(sigonload(), &sa, NULL);
	if (hdr != NULL) {
		hdr->handler = (uint64_t)(uintptr_t)on_sigonload;
		hdr->signo = (uint64_t)sigonload();
	}
}

// The reserved signal's handler stays: a request for SIG_DFL is accepted
// and changes nothing, anything else is refused.
EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
	if (sig == sigonload() && act != NULL) {
		if (act->sa_handler == SIG_DFL) {
			count(S_DFL_IGNORED, 0);
			return real_sigaction(sig, NULL, old);
		}
		count(S_REFUSED, 0);
		errno = EINVAL;
		return -1;
	}
	return real_sigaction(sig, act, old);
}

EXPORT sighandler_t signal(int sig, sighandler_t h) {
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = h;
	sa.sa_flags = SA_RESTART;
	if (sigaction(sig, &sa, &old) < 0)
		return SIG_ERR;
	return old.sa_handler;
}

// Socket calls.

// wrap gives the kernel socket rfd a stand-in descriptor.
static int wrap(int rfd, int nonblock) {
	if (rfd < 0)
		return rfd;
	int sfd = eventfd(0, EFD_CLOEXEC | (nonblock ? EFD_NONBLOCK : 0));
	if (sfd < 0 || sfd >= MAXFD) {
		int e = sfd < 0 ? errno : EMFILE;
		if (sfd >= 0)
			real_close(sfd);
		real_close(rfd);
		errno = e;
		return -1;
	}
	__atomic_store_n(&shadow[sfd], rfd + 1, __ATOMIC_RELEASE);
	return sfd;
}

EXPORT int socket(int domain, int type, int proto) {
	int rfd = real_socket(domain, type, proto);
	count(F_SOCKET, rfd);
	return wrap(rfd, type & SOCK_NONBLOCK);
}

// ON_FD runs call with fd replaced by the kernel socket behind it, and
// counts it, when fd is one of ours; otherwise it runs call on fd.
#define ON_FD(f, fd, call) \
	do { \
		int r_ = real_of(fd); \
		if (r_ < 0) \
			return call; \
		fd = r_; \
		long rc_ = (long)(call); \
		count(f, rc_); \
		return rc_; \
	} while (0)

EXPORT int bind(int fd, const struct sockaddr *a, socklen_t l) { ON_FD(F_BIND, fd, real_bind(fd, a, l)); }
EXPORT int connect(int fd, const struct sockaddr *a, socklen_t l) { ON_FD(F_CONNECT, fd, real_connect(fd, a, l)); }
EXPORT int listen(int fd, int n) { ON_FD(F_LISTEN, fd, real_listen(fd, n)); }

EXPORT int accept(int fd, struct sockaddr *a, socklen_t *l) {
	int r = real_of(fd);
	if (r < 0)
		return real_accept(fd, a, l);
	int nfd = real_accept(r, a, l);
	count(F_ACCEPT, nfd);
	return wrap(nfd, 0);
}

EXPORT int accept4(int fd, struct sockaddr *a, socklen_t *l, int flags) {
	int r = real_of(fd);
	if (r < 0)
		return real_accept4(fd, a, l, flags);
	int nfd = real_accept4(r, a, l, flags);
	count(F_ACCEPT4, nfd);
	return wrap(nfd, flags & SOCK_NONBLOCK);
}

EXPORT ssize_t send(int fd, const void *b, size_t n, int fl) { ON_FD(F_SEND, fd, real_send(fd, b, n, fl)); }
EXPORT ssize_t sendto(int fd, const void *b, size_t n, int fl, const struct sockaddr *a, socklen_t l) {
	ON_FD(F_SENDTO, fd, real_sendto(fd, b, n, fl, a, l));
}
EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int fl) { ON_FD(F_SENDMSG, fd, real_sendmsg(fd, m, fl)); }
EXPORT int sendmmsg(int fd, struct mmsghdr *v, unsigned int n, int fl) { ON_FD(F_SENDMMSG, fd, real_sendmmsg(fd, v, n, fl)); }
EXPORT ssize_t recv(int fd, void *b, size_t n, int fl) { ON_FD(F_RECV, fd, real_recv(fd, b, n, fl)); }
EXPORT ssize_t recvfrom(int fd, void *b, size_t n, int fl, struct sockaddr *a, socklen_t *l) {
	ON_FD(F_RECVFROM, fd, real_recvfrom(fd, b, n, fl, a, l));
}
EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int fl) { ON_FD(F_RECVMSG, fd, real_recvmsg(fd, m, fl)); }
EXPORT int recvmmsg(int fd, struct mmsghdr *v, unsigned int n, int fl, struct timespec *t) {
	ON_FD(F_RECVMMSG, fd, real_recvmmsg(fd, v, n, fl, t));
}
EXPORT ssize_t read(int fd, void *b, size_t n) { ON_FD(F_READ, fd, real_read(fd, b, n)); }
EXPORT ssize_t write(int fd, const void *b, size_t n) { ON_FD(F_WRITE, fd, real_write(fd, b, n)); }

// poll and ppoll hand the kernel the sockets behind our descriptors, and
// count once per call that names one of ours.
static int translate(const struct pollfd *p, struct pollfd *q, nfds_t n) {
	int ours = 0;
	for (nfds_t i = 0; i < n; i++) {
		q[i] = p[i];
		int r = real_of(p[i].fd);
		if (r >= 0) {
			q[i].fd = r;
			ours = 1;
		}
	}
	return ours;
}
static void untranslate(struct pollfd *p, const struct pollfd *q, nfds_t n) {
	for (nfds_t i = 0; i < n; i++)
		p[i].revents = q[i].revents;
}
EXPORT int poll(struct pollfd *p, nfds_t n, int ms) {
	if (n > 64)
		return real_poll(p, n, ms);
	struct pollfd q[64];
	int ours = translate(p, q, n);
	int rc = real_poll(q, n, ms);
	int e = errno;
	untranslate(p, q, n);
	if (ours)
		count(F_POLL, rc);
	errno = e;
	return rc;
}
EXPORT int ppoll(struct pollfd *p, nfds_t n, const struct timespec *t, const sigset_t *m) {
	if (n > 64)
		return real_ppoll(p, n, t, m);
	struct pollfd q[64];
	int ours = translate(p, q, n);
	int rc = real_ppoll(q, n, t, m);
	int e = errno;
	untranslate(p, q, n);
	if (ours)
		count(F_PPOLL, rc);
	errno = e;
	return rc;
}

EXPORT int epoll_create1(int flags) {
	int fd = real_epoll_create1(flags);
	count(F_EPOLL_CREATE1, fd);
	return fd;
}
EXPORT int epoll_ctl(int ep, int op, int fd, struct epoll_event *ev) { ON_FD(F_EPOLL_CTL, fd, real_epoll_ctl(ep, op, fd, ev)); }
EXPORT int epoll_wait(int ep, struct epoll_event *ev, int n, int ms) {
	int rc = real_epoll_wait(ep, ev, n, ms);
	count(F_EPOLL_WAIT, rc);
	return rc;
}

EXPORT int close(int fd) {
	int r = real_of(fd);
	if (r < 0)
		return real_close(fd);
	__atomic_store_n(&shadow[fd], 0, __ATOMIC_RELEASE);
	int rc = real_close(r);
	int e = errno;
	real_close(fd);
	count(F_CLOSE, rc);
	errno = e;
	return rc;
}
EXPORT int shutdown(int fd, int how) { ON_FD(F_SHUTDOWN, fd, real_shutdown(fd, how)); }
EXPORT int setsockopt(int fd, int lvl, int opt, const void *v, socklen_t l) { ON_FD(F_SETSOCKOPT, fd, real_setsockopt(fd, lvl, opt, v, l)); }
EXPORT int getsockopt(int fd, int lvl, int opt, void *v, socklen_t *l) { ON_FD(F_GETSOCKOPT, fd, real_getsockopt(fd, lvl, opt, v, l)); }
EXPORT int getsockname(int fd, struct sockaddr *a, socklen_t *l) { ON_FD(F_GETSOCKNAME, fd, real_getsockname(fd, a, l)); }
EXPORT int getpeername(int fd, struct sockaddr *a, socklen_t *l) { ON_FD(F_GETPEERNAME, fd, real_getpeername(fd, a, l)); }

EXPORT int fcntl(int fd, int cmd, ...) {
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	ON_FD(F_FCNTL, fd, real_fcntl(fd, cmd, arg));
}
EXPORT int ioctl(int fd, unsigned long req, ...) {
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	ON_FD(F_IOCTL, fd, real_ioctl(fd, req, arg));
}

// Extension API stand-ins.

static char stackname[64] = "";

EXPORT int onload_is_present(void) {
	count(X_IS_PRESENT, 0);
	return 1;
}

EXPORT int onload_set_stackname(int who, int scope, const char *name) {
	(void)who; (void)scope;
	count(X_SET_STACKNAME, 0);
	if (name == NULL)
		stackname[0] = 0;
	else
		strncpy(stackname, name, sizeof stackname - 1);
	return 0;
}

EXPORT int onload_thread_set_spin(int type, int spin) {
	(void)spin;
	if (type < 0 || type > 16) {
		count(X_THREAD_SET_SPIN, -1);
		return -EINVAL;
	}
	count(X_THREAD_SET_SPIN, 0);
	return 0;
}

struct onload_stat {
	int32_t stack_id;
	char *stack_name;
	int32_t endpoint_id;
	int32_t endpoint_state;
};

// A socket this library created is "accelerated" on stack 7; any other
// descriptor is not (0), as Onload answers for a kernel socket.
EXPORT int onload_fd_stat(int fd, struct onload_stat *st) {
	if (!mine(fd)) {
		count(X_FD_STAT, 0);
		return 0;
	}
	count(X_FD_STAT, 1);
	st->stack_id = 7;
	st->stack_name = strdup(stackname);
	st->endpoint_id = fd;
	st->endpoint_state = 1;
	return 1;
}

// Templates: the base message is kept, updates overwrite it, and a
// send-now update sends it with send(2) and frees it.
struct tmpl {
	int fd;
	size_t len;
	char data[];
};

struct update_iov {
	void *base;
	size_t len;
	off_t off;
	unsigned flags;
};

EXPORT int onload_msg_template_alloc(int fd, const struct iovec *iov, int n, void **handle, unsigned flags) {
	(void)flags;
	size_t len = 0;
	for (int i = 0; i < n; i++)
		len += iov[i].iov_len;
	if (!mine(fd)) {
		count(X_TMPL_ALLOC, -1);
		return -ESOCKTNOSUPPORT;
	}
	struct tmpl *t = malloc(sizeof *t + len);
	if (t == NULL) {
		count(X_TMPL_ALLOC, -1);
		return -ENOMEM;
	}
	t->fd = fd;
	t->len = len;
	len = 0;
	for (int i = 0; i < n; i++) {
		memcpy(t->data + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	*handle = t;
	count(X_TMPL_ALLOC, 0);
	return 0;
}

EXPORT int onload_msg_template_update(int fd, void *handle, const struct update_iov *u, int n, unsigned flags) {
	struct tmpl *t = handle;
	if (t == NULL || t->fd != fd) {
		count(X_TMPL_UPDATE, -1);
		return -EINVAL;
	}
	for (int i = 0; i < n; i++) {
		if (u[i].off < 0 || (size_t)u[i].off + u[i].len > t->len) {
			count(X_TMPL_UPDATE, -1);
			return -EINVAL;
		}
		memcpy(t->data + u[i].off, u[i].base, u[i].len);
	}
	if (flags & 1) {
		size_t sent = 0;
		while (sent < t->len) {
			ssize_t r = real_send(real_of(fd), t->data + sent, t->len - sent, MSG_NOSIGNAL | (flags & MSG_DONTWAIT));
			if (r < 0) {
				int e = errno;
				free(t);
				count(X_TMPL_UPDATE, -1);
				return -e;
			}
			sent += (size_t)r;
		}
		free(t);
	}
	count(X_TMPL_UPDATE, 0);
	return 0;
}

EXPORT int onload_msg_template_abort(int fd, void *handle) {
	struct tmpl *t = handle;
	if (t == NULL || t->fd != fd) {
		count(X_TMPL_ABORT, -1);
		return -EINVAL;
	}
	free(t);
	count(X_TMPL_ABORT, 0);
	return 0;
}
