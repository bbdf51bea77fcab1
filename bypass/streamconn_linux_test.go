//go:build linux

package bypass_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/nettest"
	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass"
)

// streamPair connects two streams of the named backend over 127.0.0.1.
func streamPair(name string, o bypass.Options) (cli, srv bypass.Stream, err error) {
	o.Backend = name
	ln, err := bypass.ListenTCP(loopback, o)
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	type res struct {
		s   bypass.Stream
		err error
	}
	acc := make(chan res, 1)
	go func() {
		s, err := ln.Accept()
		acc <- res{s, err}
	}()
	cli, err = bypass.DialTCP(ln.Addr(), o)
	if err != nil {
		return nil, nil, err
	}
	r := <-acc
	if r.err != nil {
		cli.Close()
		return nil, nil, r.err
	}
	return cli, r.s, nil
}

// TestNetConnConformance runs x/net's net.Conn conformance test over the
// adapter on kernel and busypoll streams.
func TestNetConnConformance(t *testing.T) {
	for _, name := range []string{"kernel", "busypoll"} {
		t.Run(name, func(t *testing.T) {
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				a, b, err := streamPair(name, bypass.Options{})
				if err != nil {
					return nil, nil, nil, err
				}
				c1, c2 = bypass.NetConn(a), bypass.NetConn(b)
				return c1, c2, func() { c1.Close(); c2.Close() }, nil
			})
		})
	}
}

// plainStream hides the kernel stream's optional interfaces, as a backend
// without them would look.
type plainStream struct{ bypass.Stream }

// TestNetConnCancelIdiom: context.AfterFunc → SetReadDeadline(time.Now())
// ends a waiting Read with os.ErrDeadlineExceeded, Close ends one with
// net.ErrClosed, and the peer's close reads as io.EOF; on a stream with
// TryStream and on one without (the short-slice fallback).
func TestNetConnCancelIdiom(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plain bool
	}{{"kernel", false}, {"busypoll", false}, {"fallback", true}} {
		t.Run(tc.name, func(t *testing.T) {
			backendName := tc.name
			if tc.plain {
				backendName = "kernel"
			}
			a, b, err := streamPair(backendName, bypass.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			var s bypass.Stream = a
			if tc.plain {
				s = plainStream{a}
			}
			c := bypass.NetConn(s)
			defer c.Close()
			if _, ok := c.(syscall.Conn); ok == tc.plain {
				t.Errorf("adapter is a syscall.Conn: %v, want %v", ok, !tc.plain)
			}
			ctx, cancel := context.WithCancel(context.Background())
			stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
			defer stop()
			done := make(chan error, 1)
			go func() {
				_, err := c.Read(make([]byte, 8))
				done <- err
			}()
			time.Sleep(20 * time.Millisecond) // let the read wait
			cancel()
			err = waitErr(t, done, "the cancelled read")
			var ne net.Error
			if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("cancelled read: %v, want a net.Error that wraps os.ErrDeadlineExceeded", err)
			}

			// The peer's bytes and then its close.
			c.SetReadDeadline(time.Time{})
			if _, err := b.Write([]byte("hi")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 8)
			if n, err := io.ReadAtLeast(c, buf, 2); err != nil || string(buf[:n]) != "hi" {
				t.Fatalf("read: %q, %v", buf[:n], err)
			}
			b.Close()
			if n, err := c.Read(buf); n != 0 || err != io.EOF {
				t.Fatalf("read after the peer closed: %d, %v; want io.EOF", n, err)
			}

			// Close ends a waiting read (a second stream pair, as this one is done).
			a2, b2, err := streamPair(backendName, bypass.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer b2.Close()
			s = a2
			if tc.plain {
				s = plainStream{a2}
			}
			c2 := bypass.NetConn(s)
			go func() {
				_, err := c2.Read(make([]byte, 8))
				done <- err
			}()
			time.Sleep(20 * time.Millisecond)
			c2.Close()
			if err := waitErr(t, done, "the read across Close"); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read across Close: %v, want net.ErrClosed", err)
			}
			if err := c2.Close(); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("second Close: %v, want net.ErrClosed", err)
			}
		})
	}
}

func waitErr(t *testing.T, done <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not return within 5s", what)
		return nil
	}
}

// TestNetConnWriteDeadlineOverWholeWrite: a write deadline bounds the
// whole Write, against a peer that reads nothing and against one that
// drains slowly (the room it makes lets sends through, which must not
// restart the clock, as a per-send timeout would); Write returns the
// bytes sent with the error.
func TestNetConnWriteDeadlineOverWholeWrite(t *testing.T) {
	for _, drain := range []bool{false, true} {
		name := "peer reads nothing"
		if drain {
			name = "peer drains slowly"
		}
		t.Run(name, func(t *testing.T) {
			// Small buffers fill at once; a draining peer gets the
			// default ones, as a tiny receive window on loopback (MSS
			// 64 KiB) opens only on the persist timer.
			o := bypass.Options{SendBuffer: 4096, RecvBuffer: 4096}
			if drain {
				o = bypass.Options{}
			}
			a, b, err := streamPair("kernel", o)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			c := bypass.NetConn(a)
			defer c.Close()
			var drained atomic.Int64
			defer func() { t.Logf("peer drained %d bytes", drained.Load()) }()
			stopDrain := make(chan struct{})
			defer close(stopDrain)
			if drain {
				go func() {
					buf := make([]byte, 4096)
					for {
						select {
						case <-stopDrain:
							return
						case <-time.After(2 * time.Millisecond):
						}
						k, err := b.Read(buf)
						if err != nil {
							return
						}
						drained.Add(int64(k))
					}
				}()
			}
			msg := make([]byte, 64<<20)
			c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			done := make(chan error, 1)
			var n int
			start := time.Now()
			go func() {
				var err error
				n, err = c.Write(msg)
				done <- err
			}()
			err = waitErr(t, done, "the write with a deadline")
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("write: %v, want os.ErrDeadlineExceeded", err)
			}
			if n <= 0 || n >= len(msg) {
				t.Fatalf("write returned %d bytes, want some of %d", n, len(msg))
			}
			if st := a.(bypass.StreamStater).Stats(); st.TxBytes != uint64(n) {
				t.Errorf("Stats().TxBytes = %d, want the %d bytes Write returned", st.TxBytes, n)
			}
			t.Logf("%d bytes written before the deadline, Write returned after %v", n, time.Since(start))
		})
	}
}

// TestDialTCPContext: a dial to a listener whose backlog is full, which
// never answers the handshake, returns ctx's error once ctx ends, on
// cancel and on ctx's deadline.
func TestDialTCPContext(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sa.(*unix.SockaddrInet4).Port))

	// Fill the backlog: dials succeed until one stays in the handshake.
	var held []bypass.Stream
	defer func() {
		for _, s := range held {
			s.Close()
		}
	}()
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		s, err := bypass.DialTCPContext(ctx, addr, bypass.Options{Backend: "kernel"})
		cancel()
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("dial %d: %v, want context.DeadlineExceeded", i, err)
			}
			break
		}
		held = append(held, s)
		if i == 16 {
			t.Fatal("16 dials to a listener that accepts none all succeeded")
		}
	}

	for _, name := range []string{"kernel", "busypoll"} {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		done := make(chan error, 1)
		go func() {
			s, err := bypass.DialTCPContext(ctx, addr, bypass.Options{Backend: name})
			if s != nil {
				s.Close()
			}
			done <- err
		}()
		if err := waitErr(t, done, name+": the cancelled dial"); !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: cancelled dial: %v, want context.Canceled", name, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := bypass.DialTCPContext(ctx, addr, bypass.Options{Backend: "kernel"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("dial with ctx already cancelled: %v", err)
	}
}
