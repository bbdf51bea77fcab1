//go:build linux

package kernel

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/msgbuf"
	"github.com/lowlat/lowlat/bypass/internal/sockaddr"
)

// MaxStreamMessage is the largest message ReadMsg and WriteMsg carry.
const MaxStreamMessage = msgbuf.MaxMessage

// streamHeader is the length prefix WriteMsg puts before each message.
const streamHeader = msgbuf.Header

// Stream buffers. A stream holds no buffer until it first reads or writes
// a framed message, and then a small one. The read buffer is a
// msgbuf.Reader: it grows only for bytes that have arrived, and lets a
// grown buffer go when the stream idles or its messages are small again.
// The write buffer grows to the largest message written, up to
// streamWriteMax; a longer message is sent in two send(2) calls, the prefix
// with MSG_MORE, rather than copied.
const (
	streamBufSmall = msgbuf.Small
	streamWriteMax = 64 << 10
	shrinkAfter    = msgbuf.ShrinkAfter
)

// DialTCP connects to raddr; wait mode defaults to block.
func (Kernel) DialTCP(raddr netip.AddrPort, o backend.Options) (backend.Stream, error) {
	return dialTCP(context.Background(), raddr, o, "kernel", o.Wait == backend.WaitSpin, false)
}

// DialTCPContext is DialTCP that gives up when ctx ends: the connect in
// progress is abandoned, its socket closed, and the error wraps ctx's.
func (Kernel) DialTCPContext(ctx context.Context, raddr netip.AddrPort, o backend.Options) (backend.Stream, error) {
	return dialTCP(ctx, raddr, o, "kernel", o.Wait == backend.WaitSpin, false)
}

// ListenTCP listens on laddr; accepted streams default to block.
func (Kernel) ListenTCP(laddr netip.AddrPort, o backend.Options) (backend.StreamListener, error) {
	return listenTCP(laddr, o, "kernel", o.Wait == backend.WaitSpin, false)
}

// DialTCP connects to raddr with a spinning, busy-polling stream.
func (BusyPoll) DialTCP(raddr netip.AddrPort, o backend.Options) (backend.Stream, error) {
	return dialTCP(context.Background(), raddr, o, "busypoll", o.Wait != backend.WaitBlock, true)
}

// DialTCPContext is DialTCP that gives up when ctx ends, as Kernel's.
func (BusyPoll) DialTCPContext(ctx context.Context, raddr netip.AddrPort, o backend.Options) (backend.Stream, error) {
	return dialTCP(ctx, raddr, o, "busypoll", o.Wait != backend.WaitBlock, true)
}

// ListenTCP listens on laddr; accepted streams spin and busy-poll.
func (BusyPoll) ListenTCP(laddr netip.AddrPort, o backend.Options) (backend.StreamListener, error) {
	return listenTCP(laddr, o, "busypoll", o.Wait != backend.WaitBlock, true)
}

// TCPStream is a connected TCP socket with TCP_NODELAY set, and
// TCP_QUICKACK set once at setup. Linux clears quick-ack mode again as it
// sees fit; in request/response traffic the reply carries the ACK, so the
// stream does not re-arm it per read (that would be a syscall a message).
// Options.DialTimeout bounds the connect and Options.WriteTimeout a write
// that finds no room (a peer that stopped reading).
type TCPStream struct {
	sock
	laddr, raddr netip.AddrPort
	info         backend.Info

	rbuf msgbuf.Reader // reader-owned: bytes received but not yet returned
	wbuf msgbuf.Writer // writer-owned: header and payload of one message up to streamWriteMax

	rxBytes, txBytes atomic.Uint64
	rxMsgs, txMsgs   atomic.Uint64
}

var (
	_ backend.Stream       = (*TCPStream)(nil)
	_ backend.TryStream    = (*TCPStream)(nil)
	_ backend.StreamStater = (*TCPStream)(nil)
	_ syscall.Conn         = (*TCPStream)(nil)
)

func newStream(fd int, spin bool, info backend.Info) (*TCPStream, error) {
	for _, opt := range []struct {
		name string
		opt  int
	}{{"TCP_NODELAY", unix.TCP_NODELAY}, {"TCP_QUICKACK", unix.TCP_QUICKACK}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, opt.opt, 1); err != nil {
			return nil, os.NewSyscallError("setsockopt "+opt.name, err)
		}
	}
	if spin {
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, os.NewSyscallError("fcntl O_NONBLOCK", err)
		}
	}
	s := &TCPStream{
		sock: sock{fd: fd, spin: spin},
		info: info,
	}
	if sa, err := unix.Getsockname(fd); err == nil {
		s.laddr = sockaddr.From(sa)
	}
	if sa, err := unix.Getpeername(fd); err == nil {
		s.raddr = sockaddr.From(sa)
	}
	return s, nil
}

func dialTCP(ctx context.Context, raddr netip.AddrPort, o backend.Options, name string, spin, busy bool) (_ backend.Stream, err error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("%s: dial tcp %v: %w", name, raddr, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: dial tcp %v: %w", name, raddr, err)
	}
	family, v6 := sockaddr.Family(raddr)
	fd, err := newSocket(family, unix.SOCK_STREAM, false)
	if err != nil {
		return nil, fmt.Errorf("%s: dial tcp %v: %w", name, raddr, err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	info := backend.Info{Backend: name, Wait: waitOf(spin), Queue: -1, Skipped: o.Skipped}
	if err := applyCommon(fd, o, busy, &info); err != nil {
		return nil, fmt.Errorf("%s: dial tcp %v: %w", name, raddr, err)
	}
	if err := connect(ctx, fd, sockaddr.To(raddr, v6), o.DialTimeout); err != nil {
		return nil, fmt.Errorf("%s: dial tcp %v: %w", name, raddr, err)
	}
	s, err := newStream(fd, spin, info)
	if err != nil {
		return nil, fmt.Errorf("%s: dial tcp %v: %w", name, raddr, err)
	}
	if err := s.setTimeouts(o); err != nil {
		return nil, fmt.Errorf("%s: dial tcp %v: %w", name, raddr, err)
	}
	return s, nil
}

func waitOf(spin bool) backend.WaitMode {
	if spin {
		return backend.WaitSpin
	}
	return backend.WaitBlock
}

// connect is connect(2) on a non-blocking descriptor, then ppoll(2) for
// the handshake with the timeout (zero: the kernel's own), then SO_ERROR.
// A signal cannot make it retry into EALREADY, as a blocking connect can.
// When ctx can end, ppoll also waits on an eventfd that ctx's end
// signals, and connect then returns ctx's error (the caller closes the
// socket, which abandons the handshake). The descriptor is blocking again
// when it returns.
func connect(ctx context.Context, fd int, sa unix.Sockaddr, timeout time.Duration) error {
	if err := unix.SetNonblock(fd, true); err != nil {
		return os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	err := unix.Connect(fd, sa)
	if err == unix.EINPROGRESS || err == unix.EINTR {
		fds := make([]unix.PollFd, 1, 2)
		if ctx.Done() != nil {
			efd, stop, err := ctxEventfd(ctx)
			if err != nil {
				return err
			}
			defer stop()
			fds = append(fds, unix.PollFd{Fd: int32(efd), Events: unix.POLLIN})
		}
		var ts *unix.Timespec
		deadline := time.Now().Add(timeout)
		for {
			if timeout > 0 {
				left := time.Until(deadline)
				if left <= 0 {
					return fmt.Errorf("connect: %w after %v", backend.ErrTimeout, timeout)
				}
				t := unix.NsecToTimespec(int64(left))
				ts = &t
			}
			fds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT}
			n, perr := unix.Ppoll(fds, ts, nil)
			if perr == unix.EINTR {
				continue
			}
			if perr != nil {
				return os.NewSyscallError("ppoll", perr)
			}
			if len(fds) > 1 && fds[1].Revents != 0 {
				return fmt.Errorf("connect: %w", context.Cause(ctx))
			}
			if n > 0 {
				break
			}
		}
		soerr, gerr := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if gerr != nil {
			return os.NewSyscallError("getsockopt SO_ERROR", gerr)
		}
		err = nil
		if soerr != 0 {
			err = syscall.Errno(soerr)
		}
	}
	if err != nil {
		return os.NewSyscallError("connect", err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	return nil
}

// ctxEventfd returns an eventfd that becomes readable when ctx ends, and
// the function that stops watching ctx and closes it.
func ctxEventfd(ctx context.Context) (int, func(), error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, nil, os.NewSyscallError("eventfd", err)
	}
	signalled := make(chan struct{})
	stopWatch := context.AfterFunc(ctx, func() {
		one := [8]byte{1}
		unix.Write(efd, one[:])
		close(signalled)
	})
	return efd, func() {
		if !stopWatch() {
			<-signalled // the write may be under way: let it finish before close
		}
		unix.Close(efd)
	}, nil
}

// setTimeouts applies the options' read and write timeouts.
func (s *TCPStream) setTimeouts(o backend.Options) error {
	if o.ReadTimeout > 0 {
		if err := s.setReadTimeout(o.ReadTimeout); err != nil {
			return err
		}
	}
	return s.setWriteTimeout(o.WriteTimeout)
}

// Read returns buffered bytes first, then reads the socket with recvfrom(2).
// It returns io.EOF when the peer has closed the stream.
func (s *TCPStream) Read(b []byte) (int, error) {
	if n := s.rbuf.Buffered(b); n > 0 {
		return n, nil
	}
	return s.recv(b)
}

// tcpSource is the stream as its read buffer's msgbuf.Source.
type tcpSource TCPStream

func (t *tcpSource) Recv(b []byte) (int, error) { return (*TCPStream)(t).recv(b) }

func (s *TCPStream) recv(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r, e := s.call(unix.SYS_RECVFROM, unsafe.Pointer(&b[0]), uintptr(len(b)), 0, nil, nil, 0, true)
	if e != 0 {
		return 0, s.mapErr("recvfrom", e)
	}
	if r == 0 {
		if s.gate.Closed() {
			return 0, backend.ErrClosed
		}
		return 0, io.EOF
	}
	s.rxBytes.Add(uint64(r))
	return int(r), nil
}

// bufferSizes reports the read and write buffers' sizes, for tests.
func (s *TCPStream) bufferSizes() (read, write int) { return s.rbuf.Size(), s.wbuf.Size() }

// ReadMsg returns the next message written by WriteMsg. A message longer
// than b is consumed and reported as ErrMessageTooLong.
func (s *TCPStream) ReadMsg(b []byte) (int, error) {
	n, err := s.rbuf.ReadMsg(b, (*tcpSource)(s))
	if err != nil {
		return 0, err
	}
	s.rxMsgs.Add(1)
	return n, nil
}

// Write sends all of b with send(2), retrying partial writes.
func (s *TCPStream) Write(b []byte) (int, error) { return s.send(b, 0) }

// send sends all of b with send(2) and flags (MSG_NOSIGNAL is added),
// retrying partial writes.
func (s *TCPStream) send(b []byte, flags uintptr) (int, error) {
	sent := 0
	for sent < len(b) {
		r, e := s.call(unix.SYS_SENDTO, unsafe.Pointer(&b[sent]), uintptr(len(b)-sent), unix.MSG_NOSIGNAL|flags, nil, nil, 0, false)
		if e != 0 {
			s.txBytes.Add(uint64(sent))
			return sent, s.mapErr("sendto", e)
		}
		sent += int(r)
	}
	s.txBytes.Add(uint64(sent))
	return sent, nil
}

// WriteMsg sends b with its length prefix: in one send(2) when both fit
// streamWriteMax (the write buffer grows to hold them), else the prefix
// with MSG_MORE (the kernel holds it for the payload) and then b itself.
func (s *TCPStream) WriteMsg(b []byte) error {
	if len(b) > MaxStreamMessage {
		return backend.ErrMessageTooLong
	}
	frame, whole := s.wbuf.Frame(b, streamWriteMax)
	if whole {
		if _, err := s.Write(frame); err != nil {
			return err
		}
		s.txMsgs.Add(1)
		return nil
	}
	if _, err := s.send(frame, unix.MSG_MORE); err != nil {
		return err
	}
	if _, err := s.Write(b); err != nil {
		return err
	}
	s.txMsgs.Add(1)
	return nil
}

// TryRead returns buffered bytes first, then what recvfrom(2) with
// MSG_DONTWAIT finds: 0, nil when nothing has arrived. It never waits,
// whatever the wait mode and timeout.
func (s *TCPStream) TryRead(b []byte) (int, error) {
	if n := s.rbuf.Buffered(b); n > 0 {
		return n, nil
	}
	if len(b) == 0 {
		return 0, nil
	}
	if !s.gate.R.Enter() {
		return 0, backend.ErrClosed
	}
	defer s.gate.R.Exit()
	for {
		r, _, e := syscall.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return 0, nil
		case e != 0:
			return 0, s.mapErr("recvfrom", e)
		case r == 0:
			if s.gate.Closed() {
				return 0, backend.ErrClosed
			}
			return 0, io.EOF
		}
		s.rxBytes.Add(uint64(r))
		return int(r), nil
	}
}

// TryWrite sends what the socket takes now of b, with send(2) and
// MSG_DONTWAIT: 0, nil when it has no room. It never waits.
func (s *TCPStream) TryWrite(b []byte) (int, error) {
	if !s.gate.W.Enter() {
		return 0, backend.ErrClosed
	}
	defer s.gate.W.Exit()
	sent := 0
	defer func() { s.txBytes.Add(uint64(sent)) }()
	for sent < len(b) {
		r, _, e := syscall.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), uintptr(unsafe.Pointer(&b[sent])), uintptr(len(b)-sent), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			sent += int(r)
		case unix.EINTR:
		case unix.EAGAIN:
			return sent, nil
		default:
			return sent, s.mapErr("sendto", e)
		}
	}
	return sent, nil
}

// ReadyFD returns the socket's descriptor, which polls readable exactly
// when TryRead would return something beyond what the stream buffered
// (the adapter tries TryRead before it waits), and writable when
// TryWrite has room.
func (s *TCPStream) ReadyFD() (int, bool) { return s.fd, true }

// Stats returns the stream's byte and message counters.
func (s *TCPStream) Stats() backend.StreamStats {
	return backend.StreamStats{
		RxBytes: s.rxBytes.Load(), TxBytes: s.txBytes.Load(),
		RxMessages: s.rxMsgs.Load(), TxMessages: s.txMsgs.Load(),
	}
}

// SyscallConn returns the socket's raw descriptor access, for options
// lowlat does not wrap. Reading or writing through it bypasses the
// stream's buffer and counters.
func (s *TCPStream) SyscallConn() (syscall.RawConn, error) { return rawConn{&s.sock}, nil }

func (s *TCPStream) SetReadTimeout(d time.Duration) error { return s.setReadTimeout(d) }
func (s *TCPStream) LocalAddr() netip.AddrPort            { return s.laddr }
func (s *TCPStream) RemoteAddr() netip.AddrPort           { return s.raddr }
func (s *TCPStream) Info() backend.Info                   { return s.info }
func (s *TCPStream) Close() error                         { return s.close() }

// TCPListener accepts TCPStreams.
type TCPListener struct {
	sock
	addr   netip.AddrPort
	o      backend.Options
	name   string
	busy   bool
	stream bool // accepted streams spin
}

func listenTCP(laddr netip.AddrPort, o backend.Options, name string, spin, busy bool) (_ backend.StreamListener, err error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("%s: listen tcp %v: %w", name, laddr, err)
	}
	family, v6 := sockaddr.Family(laddr)
	fd, err := newSocket(family, unix.SOCK_STREAM, false)
	if err != nil {
		return nil, fmt.Errorf("%s: listen tcp %v: %w", name, laddr, err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return nil, fmt.Errorf("%s: listen tcp %v: %w", name, laddr, os.NewSyscallError("setsockopt SO_REUSEADDR", err))
	}
	if err := unix.Bind(fd, sockaddr.To(laddr, v6)); err != nil {
		return nil, fmt.Errorf("%s: listen tcp %v: %w", name, laddr, os.NewSyscallError("bind", err))
	}
	if err := unix.Listen(fd, backend.DefaultBacklog); err != nil {
		return nil, fmt.Errorf("%s: listen tcp %v: %w", name, laddr, os.NewSyscallError("listen", err))
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("%s: listen tcp %v: %w", name, laddr, os.NewSyscallError("getsockname", err))
	}
	return &TCPListener{sock: sock{fd: fd}, addr: sockaddr.From(sa), o: o, name: name, busy: busy, stream: spin}, nil
}

// Accept waits in accept4(2) for the next connection. Close from another
// goroutine wakes it with ErrClosed.
func (l *TCPListener) Accept() (backend.Stream, error) {
	if !l.gate.R.Enter() {
		return nil, backend.ErrClosed
	}
	defer l.gate.R.Exit()
	for {
		nfd, _, err := unix.Accept4(l.fd, unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			if l.gate.Closed() {
				return nil, backend.ErrClosed
			}
			return nil, fmt.Errorf("%s: accept on %v: %w", l.name, l.addr, os.NewSyscallError("accept4", err))
		}
		info := backend.Info{Backend: l.name, Wait: waitOf(l.stream), Queue: -1, Skipped: l.o.Skipped}
		if err := applyCommon(nfd, l.o, l.busy, &info); err != nil {
			unix.Close(nfd)
			return nil, fmt.Errorf("%s: accept on %v: %w", l.name, l.addr, err)
		}
		s, err := newStream(nfd, l.stream, info)
		if err != nil {
			unix.Close(nfd)
			return nil, fmt.Errorf("%s: accept on %v: %w", l.name, l.addr, err)
		}
		if err := s.setTimeouts(l.o); err != nil {
			s.Close()
			return nil, fmt.Errorf("%s: accept on %v: %w", l.name, l.addr, err)
		}
		return s, nil
	}
}

func (l *TCPListener) Addr() netip.AddrPort { return l.addr }
func (l *TCPListener) Close() error         { return l.close() }
