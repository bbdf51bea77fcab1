//go:build linux && onload && cgo

package onload

/*
#include "ll_onload.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/internal/msgbuf"
	"github.com/lowlat/lowlat/bypass/internal/sockaddr"
)

// MaxStreamMessage is the largest message ReadMsg and WriteMsg carry, as
// on the kernel backends.
const MaxStreamMessage = msgbuf.MaxMessage

// streamHeader is the length prefix WriteMsg puts before each message.
const streamHeader = msgbuf.Header

// Stream is a connected TCP socket whose every operation is a C library
// call, with TCP_NODELAY set, and TCP_QUICKACK once at setup.
type Stream struct {
	sock
	laddr, raddr netip.AddrPort
	info         backend.Info
	stat         Stat

	rbuf  msgbuf.Reader // reader-owned: bytes received but not yet returned
	wbuf  msgbuf.Writer // writer-owned: header and payload of one message
	wsent C.size_t
}

var (
	_ backend.Stream         = (*Stream)(nil)
	_ backend.StreamListener = (*Listener)(nil)
	_ stater                 = (*Stream)(nil)
	_ stater                 = (*Listener)(nil)
)

func newStream(s *C.struct_ll_sock, spin bool, o backend.Options) (*Stream, error) {
	for _, opt := range []struct {
		name string
		opt  int
	}{{"TCP_NODELAY", unix.TCP_NODELAY}, {"TCP_QUICKACK", unix.TCP_QUICKACK}} {
		if err := setInt(s.fd, unix.IPPROTO_TCP, opt.opt, 1, opt.name); err != nil {
			return nil, err
		}
	}
	st := &Stream{
		sock: sock{s: s, fd: s.fd, spin: spin},
		info: backend.Info{Backend: "onload", Wait: waitOf(spin), Queue: -1, Skipped: o.Skipped},
	}
	st.timeout.Store(int64(o.ReadTimeout))
	st.laddr, _ = sockName(s.fd, false)
	st.raddr, _ = sockName(s.fd, true)
	st.stat = statFD(s.fd)
	st.info.Notes = onloadNotes(st.stat)
	return st, nil
}

// sockName is getsockname(3), or getpeername(3) when peer is set.
func sockName(fd C.int, peer bool) (netip.AddrPort, error) {
	var ra sockaddr.Raw
	l := C.uint32_t(unsafe.Sizeof(ra))
	op, rc := "getsockname", C.int(0)
	if peer {
		op, rc = "getpeername", C.ll_getpeername(fd, unsafe.Pointer(&ra), &l)
	} else {
		rc = C.ll_getsockname(fd, unsafe.Pointer(&ra), &l)
	}
	if rc < 0 {
		return netip.AddrPort{}, os.NewSyscallError(op, errnoOf(rc))
	}
	return sockaddr.Decode(&ra), nil
}

func dialTCP(raddr netip.AddrPort, o backend.Options) (_ *Stream, err error) {
	if _, err := KeepSignal(); err != nil {
		return nil, err
	}
	family, v6 := sockaddr.Family(raddr)
	spin := o.Wait != backend.WaitBlock
	s, err := openSock(C.int(family), unix.SOCK_STREAM, spin, 1, o.WriteTimeout)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			discard(s)
		}
	}()
	var info backend.Info
	if err := applyOptions(s.fd, o, v6, &info); err != nil {
		return nil, err
	}
	var ra sockaddr.Raw
	l := sockaddr.Encode(&ra, raddr, v6)
	if rc := C.ll_connect(s, unsafe.Pointer(&ra), C.uint32_t(l), C.int64_t(o.DialTimeout)); rc < 0 {
		if e := errnoOf(rc); e == unix.ETIMEDOUT && o.DialTimeout > 0 {
			return nil, errors.Join(backend.ErrTimeout, os.NewSyscallError("connect", e))
		}
		return nil, os.NewSyscallError("connect", errnoOf(rc))
	}
	st, err := newStream(s, spin, o)
	if err != nil {
		return nil, err
	}
	st.info.Notes = append(info.Notes, st.info.Notes...)
	return st, nil
}

// Read returns buffered bytes first, then reads the socket: one recv(3)
// call per attempt. It returns io.EOF when the peer has closed the stream.
func (s *Stream) Read(b []byte) (int, error) {
	if n := s.rbuf.Buffered(b); n > 0 {
		return n, nil
	}
	return s.recv(b)
}

// source is the stream as its read buffer's msgbuf.Source.
type source Stream

func (t *source) Recv(b []byte) (int, error) { return (*Stream)(t).recv(b) }

func (s *Stream) recv(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if !s.gate.R.Enter() {
		return 0, backend.ErrClosed
	}
	r := C.ll_recv(s.s, unsafe.Pointer(&b[0]), C.size_t(len(b)), C.int64_t(s.timeout.Load()))
	s.gate.R.Exit()
	if r < 0 {
		return 0, s.mapErr("recv", errnoOf(r))
	}
	if r == 0 {
		return 0, io.EOF
	}
	return int(r), nil
}

// ReadMsg returns the next message written by WriteMsg. A message longer
// than b is consumed and reported as ErrMessageTooLong. The read buffer
// starts small and grows only for bytes that have arrived (msgbuf).
func (s *Stream) ReadMsg(b []byte) (int, error) {
	return s.rbuf.ReadMsg(b, (*source)(s))
}

// Write sends all of b: one send(3) call, more when the stack takes part.
func (s *Stream) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if !s.gate.W.Enter() {
		return 0, backend.ErrClosed
	}
	r := C.ll_send(s.s, unsafe.Pointer(&b[0]), C.size_t(len(b)), &s.wsent)
	sent := int(s.wsent)
	s.gate.W.Exit()
	if r < 0 {
		return sent, s.mapErr("send", errnoOf(r))
	}
	return sent, nil
}

// WriteMsg sends b with its length prefix in one send(3).
func (s *Stream) WriteMsg(b []byte) error {
	if len(b) > MaxStreamMessage {
		return backend.ErrMessageTooLong
	}
	frame, _ := s.wbuf.Frame(b, streamHeader+MaxStreamMessage) // always whole
	_, err := s.Write(frame)
	return err
}

// SetReadTimeout bounds each read.
func (s *Stream) SetReadTimeout(d time.Duration) error { return s.setReadTimeout(d) }

// LocalAddr is the stream's own address.
func (s *Stream) LocalAddr() netip.AddrPort { return s.laddr }

// RemoteAddr is the peer's address.
func (s *Stream) RemoteAddr() netip.AddrPort { return s.raddr }

// Info names the backend, its wait mode, and whether Onload has the socket.
func (s *Stream) Info() backend.Info { return s.info }

// Onload is what Onload said about the socket when it connected.
func (s *Stream) Onload() Stat { return s.stat }

// Close closes the stream; a reader waiting in another goroutine returns
// ErrClosed.
func (s *Stream) Close() error { return s.close() }

// Listener accepts Streams.
type Listener struct {
	sock
	addr netip.AddrPort
	o    backend.Options
	stat Stat
}

func listenTCP(laddr netip.AddrPort, o backend.Options) (_ *Listener, err error) {
	if _, err := KeepSignal(); err != nil {
		return nil, err
	}
	family, v6 := sockaddr.Family(laddr)
	s, err := openSock(C.int(family), unix.SOCK_STREAM, false, 1, 0)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			discard(s)
		}
	}()
	if err := setInt(s.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"); err != nil {
		return nil, err
	}
	var ra sockaddr.Raw
	l := sockaddr.Encode(&ra, laddr, v6)
	if rc := C.ll_bind(s.fd, unsafe.Pointer(&ra), C.uint32_t(l)); rc < 0 {
		return nil, os.NewSyscallError("bind", errnoOf(rc))
	}
	if rc := C.ll_listen(s.fd, backend.DefaultBacklog); rc < 0 {
		return nil, os.NewSyscallError("listen", errnoOf(rc))
	}
	addr, err := sockName(s.fd, false)
	if err != nil {
		return nil, err
	}
	return &Listener{sock: sock{s: s, fd: s.fd}, addr: addr, o: o, stat: statFD(s.fd)}, nil
}

// Accept waits in poll(3) for the next connection and takes it with
// accept4(3). Close from another goroutine wakes it with ErrClosed.
func (l *Listener) Accept() (backend.Stream, error) {
	if !l.gate.R.Enter() {
		return nil, backend.ErrClosed
	}
	defer l.gate.R.Exit()
	var ra sockaddr.Raw
	alen := C.uint32_t(unsafe.Sizeof(ra))
	fd := C.ll_accept(l.s, unsafe.Pointer(&ra), &alen)
	if fd < 0 {
		if l.gate.Closed() {
			return nil, backend.ErrClosed
		}
		return nil, acceptErr(l.addr, os.NewSyscallError("accept4", errnoOf(fd)))
	}
	spin := l.o.Wait != backend.WaitBlock
	var e C.int
	s := C.ll_adopt(fd, boolInt(spin), 1, C.int64_t(l.o.WriteTimeout), &e)
	if s == nil {
		C.ll_close(&C.struct_ll_sock{fd: fd})
		return nil, acceptErr(l.addr, os.NewSyscallError("accept", errnoOf(e)))
	}
	st, err := newStream(s, spin, l.o)
	if err != nil {
		discard(s)
		return nil, acceptErr(l.addr, err)
	}
	return st, nil
}

func acceptErr(addr netip.AddrPort, err error) error {
	return fmt.Errorf("onload: accept on %v: %w", addr, err)
}

func boolInt(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// Addr is the listening address.
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// Onload is what Onload said about the listening socket.
func (l *Listener) Onload() Stat { return l.stat }

// Close stops listening; an Accept waiting in another goroutine returns
// ErrClosed.
func (l *Listener) Close() error { return l.close() }
