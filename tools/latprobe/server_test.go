//go:build linux

package main

import (
	"context"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency"
)

// fakeListener hands out the streams the test gives it. Once closed it
// still hands out one stream queued on late, as a listener does with a
// connection it accepted just before Close.
type fakeListener struct {
	accept    chan bypass.Stream
	late      chan bypass.Stream
	closed    chan struct{}
	closeOnce sync.Once
}

func newFakeListener() *fakeListener {
	return &fakeListener{accept: make(chan bypass.Stream), late: make(chan bypass.Stream, 1), closed: make(chan struct{})}
}

func (f *fakeListener) Accept() (bypass.Stream, error) {
	select {
	case s := <-f.accept:
		return s, nil
	case <-f.closed:
	}
	select {
	case s := <-f.late:
		return s, nil
	default:
		return nil, bypass.ErrClosed
	}
}

func (f *fakeListener) Addr() netip.AddrPort { return netip.MustParseAddrPort("127.0.0.1:1") }
func (f *fakeListener) Close() error         { f.closeOnce.Do(func() { close(f.closed) }); return nil }

// fakeStream blocks in Read until it is closed.
type fakeStream struct {
	reading   chan struct{} // closed on the first Read
	readOnce  sync.Once
	closed    chan struct{}
	closeOnce sync.Once
}

func newFakeStream() *fakeStream {
	return &fakeStream{reading: make(chan struct{}), closed: make(chan struct{})}
}

func (s *fakeStream) Read(b []byte) (int, error) {
	s.readOnce.Do(func() { close(s.reading) })
	<-s.closed
	return 0, bypass.ErrClosed
}
func (s *fakeStream) Write(b []byte) (int, error)        { return 0, bypass.ErrClosed }
func (s *fakeStream) ReadMsg(b []byte) (int, error)      { return s.Read(b) }
func (s *fakeStream) WriteMsg(b []byte) error            { return bypass.ErrClosed }
func (s *fakeStream) SetReadTimeout(time.Duration) error { return nil }
func (s *fakeStream) LocalAddr() netip.AddrPort          { return netip.MustParseAddrPort("127.0.0.1:1") }
func (s *fakeStream) RemoteAddr() netip.AddrPort         { return netip.MustParseAddrPort("127.0.0.1:2") }
func (s *fakeStream) Info() bypass.Info                  { return bypass.Info{Backend: "fake"} }
func (s *fakeStream) Close() error                       { s.closeOnce.Do(func() { close(s.closed) }); return nil }

func (s *fakeStream) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// lockedWriter is an io.Writer for several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// serveUntilCancelled runs serveStreams on l, calls during once it has
// started, cancels, and fails the test if serveStreams does not return.
func serveUntilCancelled(t *testing.T, l bypass.StreamListener, during func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- serveStreams(ctx, l, &latency.EchoServer{}, streamConfig{cpu: -1, maxConns: defaultMaxConns}, &lockedWriter{}, &lockedWriter{})
	}()
	during()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serveStreams: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serveStreams still running 10s after it was cancelled")
	}
	checkNoServeGoroutines(t)
}

// checkNoServeGoroutines fails if a goroutine serveStreams started is
// still running. One that has called wg.Done may still be unwinding for
// a moment, so it looks a bounded number of times.
func checkNoServeGoroutines(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	var stacks string
	for range 1000 {
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "main.serveStreams.func") {
			return
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("goroutines of serveStreams left after it returned:\n%s", stacks)
}

// TestServeStreamsLateConnection gives the server a connection that its
// listener accepted just before Close and hands over after it: the server
// must close it, not serve it past its own return.
func TestServeStreamsLateConnection(t *testing.T) {
	f := newFakeListener()
	live, late := newFakeStream(), newFakeStream()
	serveUntilCancelled(t, f, func() {
		f.accept <- live
		<-live.reading // registered and being served
		f.late <- late
	})
	if !live.isClosed() {
		t.Error("the connection being served was not closed")
	}
	if !late.isClosed() {
		t.Error("the connection accepted as the server stopped was not closed")
	}
}

// TestServeStreamsShutdownCycles connects and stops the server over real
// kernel TCP a bounded number of times, with connections arriving while it
// stops; each cycle must end with every connection closed and no goroutine
// left (and, under -race, no WaitGroup misuse).
func TestServeStreamsShutdownCycles(t *testing.T) {
	o := bypass.Options{Backend: "kernel"}
	for range 50 {
		l, err := bypass.ListenTCP(netip.MustParseAddrPort("127.0.0.1:0"), o)
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var dialers sync.WaitGroup
		var conns []net.Conn
		var mu sync.Mutex
		first := make(chan struct{})
		var firstOnce sync.Once
		serveUntilCancelled(t, l, func() {
			for range 4 {
				dialers.Add(1)
				go func() {
					defer dialers.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						c, err := net.Dial("tcp", l.Addr().String())
						if err != nil {
							return // the listener is closed
						}
						mu.Lock()
						conns = append(conns, c)
						mu.Unlock()
						firstOnce.Do(func() { close(first) })
					}
				}()
			}
			<-first
		})
		close(stop)
		dialers.Wait()
		// Every connection the server took was closed: reads end.
		for _, c := range conns {
			// A dialer whose handshake ACK the server dropped (its accept
			// queue was full) believes it is connected while the server
			// holds no state for it: nothing will ever arrive unless the
			// client sends. A byte written here draws the RST (or is
			// answered by the FIN already queued) either way.
			c.Write([]byte{0})
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != io.EOF && !isReset(err) {
				t.Fatalf("connection %v after shutdown: read %v, want EOF", c.LocalAddr(), err)
			}
			c.Close()
		}
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}
