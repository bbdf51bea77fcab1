package bypass

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lowlat/lowlat/bypass/backend"
)

// Optional stream interfaces, re-exported.
type (
	TryStream    = backend.TryStream
	StreamStats  = backend.StreamStats
	StreamStater = backend.StreamStater
	// TCPInfo is a user-space TCP connection's state and counters;
	// afxdp and efvi streams implement TCPInfoer.
	TCPInfo   = backend.TCPInfo
	TCPInfoer = backend.TCPInfoer
)

// NetConn adapts a Stream to net.Conn, with the net package's rules:
//
//   - SetDeadline, SetReadDeadline and SetWriteDeadline reach a Read or
//     Write already waiting (the context.AfterFunc →
//     SetReadDeadline(time.Now()) cancel idiom works), and an expired
//     deadline fails with a *net.OpError that wraps os.ErrDeadlineExceeded
//     (a net.Error whose Timeout() is true).
//   - A write deadline bounds the whole Write: a peer that drains slowly
//     cannot keep it going past the deadline. Write returns the bytes sent
//     so far together with the error.
//   - After Close, calls fail with an error that wraps net.ErrClosed; a
//     Read or Write waiting in another goroutine returns at once.
//   - Read returns io.EOF once the peer has closed the stream.
//
// Reads are serialised among themselves, and so are writes, so the
// adapter may be used from several goroutines. It never changes the
// stream's own timeouts on streams that implement TryStream (kernel and
// busypoll streams): it tries the socket without waiting and waits itself,
// in ppoll(2) on the stream's descriptor and an eventfd that deadline
// changes and Close signal. A stream without TryStream (onload's) is
// driven with its own calls: the adapter sets the stream's read timeout to
// short slices (1 ms) and checks the deadline between them, so the
// stream's read timeout is the adapter's from then on; a write deadline
// is checked before each Write starts, and a Write blocked on a peer that
// does not read ends only with the stream's own write timeout
// (Options.WriteTimeout) or Close.
//
// The adapter allocates (net.Addr values, errors); keep it off hot paths,
// and do not use the stream directly while the adapter is in use. When
// the stream implements syscall.Conn (kernel streams), so does the
// returned value.
func NetConn(s Stream) net.Conn {
	c := &netConn{s: s, fd: -1,
		laddr: net.TCPAddrFromAddrPort(s.LocalAddr()),
		raddr: net.TCPAddrFromAddrPort(s.RemoteAddr()),
	}
	if ts, ok := s.(backend.TryStream); ok {
		c.ts = ts
		c.fd, _ = ts.ReadyFD()
	}
	initWakeup(&c.rw, c)
	initWakeup(&c.ww, c)
	if sc, ok := s.(syscall.Conn); ok {
		return &netSyscallConn{netConn: c, sc: sc}
	}
	return c
}

type netConn struct {
	s            Stream
	ts           backend.TryStream // nil: the stream has no non-blocking calls
	fd           int               // the stream's descriptor; -1: none
	laddr, raddr net.Addr
	rdl, wdl     atomic.Int64 // deadlines, UnixNano; 0: none
	closed       atomic.Bool
	rw, ww       wakeup     // wake a waiting read, a waiting write
	rmu, wmu     sync.Mutex // one read, one write at a time
	sliced       bool       // fallback: the stream's read timeout is set to streamSlice (under rmu)
}

type netSyscallConn struct {
	*netConn
	sc syscall.Conn
}

// SyscallConn returns the stream's raw descriptor access.
func (c *netSyscallConn) SyscallConn() (syscall.RawConn, error) { return c.sc.SyscallConn() }

var (
	_ net.Conn     = (*netConn)(nil)
	_ syscall.Conn = (*netSyscallConn)(nil)
)

// streamSlice is how long one read of a stream without TryStream waits
// before the adapter looks at its deadline again.
const streamSlice = time.Millisecond

// left returns how long until the deadline dl (UnixNano, 0: none): -1
// without one, 0 when it has passed.
func left(dl int64) time.Duration {
	if dl == 0 {
		return -1
	}
	return max(time.Until(time.Unix(0, dl)), 0)
}

func (c *netConn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.closed.Load() {
			return 0, c.opErr("read", net.ErrClosed)
		}
		wait := left(c.rdl.Load())
		if wait == 0 {
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		}
		if c.ts == nil {
			n, again, err := c.readSlice(b)
			if again {
				continue
			}
			return n, err
		}
		n, err := c.ts.TryRead(b)
		if err == io.EOF {
			return 0, io.EOF
		}
		if err != nil {
			return n, c.opErr("read", err)
		}
		if n > 0 || len(b) == 0 {
			return n, nil
		}
		if err := c.rw.wait(c.fd, false, wait); err != nil {
			return 0, c.opErr("read", err)
		}
	}
}

// readSlice is one read of a stream without TryStream, bounded by
// streamSlice; again is true when it timed out and the caller should look
// at the deadline and try again.
func (c *netConn) readSlice(b []byte) (n int, again bool, err error) {
	if !c.sliced {
		if err := c.s.SetReadTimeout(streamSlice); err != nil {
			return 0, false, c.opErr("read", err)
		}
		c.sliced = true
	}
	n, err = c.s.Read(b)
	switch {
	case err == nil:
		return n, false, nil
	case err == io.EOF:
		return 0, false, io.EOF
	case errors.Is(err, ErrTimeout):
		return 0, true, nil
	}
	return n, false, c.opErr("read", err)
}

func (c *netConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	sent := 0
	for {
		if c.closed.Load() {
			return sent, c.opErr("write", net.ErrClosed)
		}
		wait := left(c.wdl.Load())
		if wait == 0 {
			return sent, c.opErr("write", os.ErrDeadlineExceeded)
		}
		if c.ts == nil {
			n, err := c.s.Write(b)
			if err != nil {
				return n, c.opErr("write", err)
			}
			return n, nil
		}
		n, err := c.ts.TryWrite(b[sent:])
		sent += n
		if err != nil {
			return sent, c.opErr("write", err)
		}
		if sent == len(b) {
			return sent, nil
		}
		if err := c.ww.wait(c.fd, true, wait); err != nil {
			return sent, c.opErr("write", err)
		}
	}
}

// Close closes the stream and wakes a Read or Write waiting on the
// adapter.
func (c *netConn) Close() error {
	if c.closed.Swap(true) {
		return c.opErr("close", net.ErrClosed)
	}
	c.rw.wake()
	c.ww.wake()
	if err := c.s.Close(); err != nil {
		return c.opErr("close", err)
	}
	return nil
}

func (c *netConn) LocalAddr() net.Addr  { return c.laddr }
func (c *netConn) RemoteAddr() net.Addr { return c.raddr }

func (c *netConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline moves the deadline of reads, the one waiting included.
func (c *netConn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opErr("set", net.ErrClosed)
	}
	c.rdl.Store(unixNano(t))
	c.rw.wake()
	return nil
}

// SetWriteDeadline moves the deadline of writes, the one waiting
// included (on streams without TryStream: writes not yet started).
func (c *netConn) SetWriteDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opErr("set", net.ErrClosed)
	}
	c.wdl.Store(unixNano(t))
	c.ww.wake()
	return nil
}

func (c *netConn) opErr(op string, err error) error {
	if errors.Is(err, ErrClosed) {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}

// DialTCPContext is DialTCP that returns when ctx ends, with an error
// that wraps ctx's (context.Canceled or context.DeadlineExceeded). On
// the kernel and busypoll backends the connect in progress is abandoned
// and its socket closed at once; on a backend without a context-aware
// dial the dial goes on in the background and the stream it yields, if
// any, is closed. Options.DialTimeout still applies.
func DialTCPContext(ctx context.Context, raddr netip.AddrPort, o Options) (Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial tcp %v: %w", raddr, err)
	}
	b, skipped, err := streamBackend(o)
	if err != nil {
		return nil, fmt.Errorf("dial tcp %v: %w", raddr, err)
	}
	o.Skipped = skipped
	if cd, ok := b.(backend.ContextDialer); ok {
		return cd.DialTCPContext(ctx, raddr, o)
	}
	type result struct {
		s   Stream
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := b.DialTCP(raddr, o)
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		return r.s, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, fmt.Errorf("%s: dial tcp %v: %w", b.Name(), raddr, context.Cause(ctx))
	}
}
