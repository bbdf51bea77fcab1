//go:build linux

package kernel_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/kernel"
)

var lo = netip.MustParseAddrPort("127.0.0.1:0")

type mode struct {
	name string
	b    backend.Backend
	o    backend.Options
}

var modes = []mode{
	{"kernel-block", kernel.Kernel{}, backend.Options{}},
	{"kernel-spin", kernel.Kernel{}, backend.Options{Wait: backend.WaitSpin}},
	{"busypoll-spin", kernel.BusyPoll{}, backend.Options{}},
	{"busypoll-block", kernel.BusyPoll{}, backend.Options{Wait: backend.WaitBlock}},
}

func open(t testing.TB, m mode) backend.PacketConn {
	t.Helper()
	o := m.o
	o.ReadTimeout = 2 * time.Second
	c, err := m.b.ListenUDP(lo, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestUDPExchange(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			a, b := open(t, m), open(t, m)
			buf := make([]byte, 64)
			for i := range 50 {
				msg := fmt.Appendf(nil, "msg %d", i)
				if _, err := a.WriteTo(msg, b.LocalAddr()); err != nil {
					t.Fatal(err)
				}
				n, from, err := b.ReadFrom(buf)
				if err != nil || !bytes.Equal(buf[:n], msg) || from != a.LocalAddr() {
					t.Fatalf("read %q from %v (%v), want %q from %v", buf[:n], from, err, msg, a.LocalAddr())
				}
			}
			// A datagram longer than the buffer is cut and counted.
			a.WriteTo(make([]byte, 100), b.LocalAddr())
			if n, _, err := b.ReadFrom(buf[:10]); err != nil || n != 10 {
				t.Fatalf("truncated read = %d, %v", n, err)
			}
			if st := b.Stats(); st.RxTrunc != 1 || st.RxPackets != 51 {
				t.Fatalf("stats %+v: want 51 received, 1 truncated", st)
			}
			if want := m.b.Name(); b.Info().Backend != want {
				t.Fatalf("Info().Backend = %q", b.Info().Backend)
			}
		})
	}
}

func TestUDPBatch(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			a, b := open(t, m), open(t, m)
			out := make([]backend.Message, 8)
			for i := range out {
				out[i] = backend.Message{Buf: fmt.Appendf(nil, "batch %d", i), Addr: b.LocalAddr()}
			}
			if n, err := a.WriteBatch(out); n != len(out) || err != nil {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			in := make([]backend.Message, 8)
			for i := range in {
				in[i].Buf = make([]byte, 32)
			}
			got := 0
			for got < len(out) {
				n, err := b.ReadBatch(in[got:])
				if err != nil {
					t.Fatalf("ReadBatch after %d: %v", got, err)
				}
				got += n
			}
			for i, m := range in {
				if want := fmt.Sprintf("batch %d", i); string(m.Buf[:m.N]) != want || m.Addr != a.LocalAddr() {
					t.Fatalf("message %d: %q from %v", i, m.Buf[:m.N], m.Addr)
				}
			}
		})
	}
}

func TestUDPTimeoutAndClose(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := open(t, m)
			c.SetReadTimeout(20 * time.Millisecond)
			buf := make([]byte, 8)
			if _, _, err := c.ReadFrom(buf); !errors.Is(err, backend.ErrTimeout) {
				t.Fatalf("read with nothing to read: %v, want ErrTimeout", err)
			}
			c.SetReadTimeout(0)
			done := make(chan error, 1)
			go func() { _, _, err := c.ReadFrom(buf); done <- err }()
			time.Sleep(20 * time.Millisecond)
			c.Close()
			select {
			case err := <-done:
				if !errors.Is(err, backend.ErrClosed) {
					t.Fatalf("reader woke with %v, want ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not wake the reader")
			}
			if _, err := c.WriteTo(buf, lo); !errors.Is(err, backend.ErrClosed) {
				t.Fatalf("write after close: %v", err)
			}
		})
	}
}

func TestUDPBatchCloseAndChunks(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			o := m.o
			o.BatchSize = 4
			a, err := m.b.ListenUDP(lo, o)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b := open(t, m)
			// More messages than the batch size: all are sent.
			out := make([]backend.Message, 10)
			for i := range out {
				out[i] = backend.Message{Buf: []byte{byte(i)}, Addr: b.LocalAddr()}
			}
			if n, err := a.WriteBatch(out); n != len(out) || err != nil {
				t.Fatalf("WriteBatch of %d with batch size 4 = %d, %v", len(out), n, err)
			}
			buf := make([]byte, 8)
			for i := range out {
				if n, _, err := b.ReadFrom(buf); err != nil || n != 1 || buf[0] != byte(i) {
					t.Fatalf("message %d: %v %v", i, buf[:n], err)
				}
			}
			// A batch read woken by Close reports ErrClosed, not an empty
			// datagram from nowhere.
			in := []backend.Message{{Buf: make([]byte, 8)}}
			b.SetReadTimeout(0)
			done := make(chan error, 1)
			go func() { _, err := b.ReadBatch(in); done <- err }()
			time.Sleep(20 * time.Millisecond)
			b.Close()
			select {
			case err := <-done:
				if !errors.Is(err, backend.ErrClosed) {
					t.Fatalf("ReadBatch woken by Close: %v, want ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not wake ReadBatch")
			}
		})
	}
}

func TestTCPMessages(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			sb := m.b.(backend.StreamBackend)
			o := m.o
			o.ReadTimeout = 2 * time.Second
			ln, err := sb.ListenTCP(lo, o)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			accepted := make(chan backend.Stream, 1)
			go func() {
				s, err := ln.Accept()
				if err != nil {
					t.Error(err)
				}
				accepted <- s
			}()
			cli, err := sb.DialTCP(ln.Addr(), o)
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			srv := <-accepted
			if srv == nil {
				t.FailNow()
			}
			defer srv.Close()
			buf := make([]byte, 4096)
			for _, size := range []int{0, 1, 64, 4000} {
				msg := bytes.Repeat([]byte{byte(size)}, size)
				if err := cli.WriteMsg(msg); err != nil {
					t.Fatal(err)
				}
				n, err := srv.ReadMsg(buf)
				if err != nil || !bytes.Equal(buf[:n], msg) {
					t.Fatalf("size %d: got %d bytes, %v", size, n, err)
				}
			}
			// Too long for the reader's buffer: reported, and the stream
			// stays in step for the next message.
			cli.WriteMsg(make([]byte, 100))
			cli.WriteMsg([]byte("next"))
			if _, err := srv.ReadMsg(buf[:10]); !errors.Is(err, backend.ErrMessageTooLong) {
				t.Fatalf("oversized: %v", err)
			}
			if n, err := srv.ReadMsg(buf); err != nil || string(buf[:n]) != "next" {
				t.Fatalf("after oversized: %q, %v", buf[:n], err)
			}
			cli.Close()
			if _, err := srv.ReadMsg(buf); !errors.Is(err, io.EOF) {
				t.Fatalf("after peer close: %v, want EOF", err)
			}
		})
	}
}

func TestBusyPollNotesRefusals(t *testing.T) {
	c, err := kernel.BusyPoll{}.ListenUDP(lo, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// As root every option applies; otherwise the refusals are noted with
	// the capability, never fatal.
	for _, n := range c.Info().Notes {
		if !bytes.Contains([]byte(n), []byte("CAP_NET_ADMIN")) {
			t.Errorf("note %q does not name the capability", n)
		}
	}
	if c.Info().Wait != backend.WaitSpin {
		t.Fatalf("busypoll waits %v, want spin", c.Info().Wait)
	}
}

func TestValidateRejectsBeforeSyscalls(t *testing.T) {
	for _, o := range []backend.Options{
		{BatchSize: -1}, {BatchSize: backend.MaxBatch + 1}, {Backend: "nope"},
		{ReadTimeout: -1}, {Queue: -2}, {XDP: backend.XDPOptions{FrameSize: 1000}},
	} {
		if _, err := (kernel.Kernel{}).ListenUDP(lo, o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
}

// BenchmarkUDPRoundTrip sends and receives one datagram per op between two
// spinning loopback sockets in one goroutine: the per-message cost of the
// raw-syscall path, and proof that it allocates nothing.
func BenchmarkUDPRoundTrip(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			a, c := open(b, m), open(b, m)
			msg, buf := make([]byte, 64), make([]byte, 128)
			dst := c.LocalAddr()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.WriteTo(msg, dst); err != nil {
					b.Fatal(err)
				}
				if _, _, err := c.ReadFrom(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGCWhileSpinning runs a garbage collection per op while another
// goroutine spins on an empty busypoll socket. The spin loop's preemption
// point is what lets each collection stop the spinner; without it a
// collection waits until asynchronous preemption happens to land outside
// the system call, tens of milliseconds to seconds.
func BenchmarkGCWhileSpinning(b *testing.B) {
	c := open(b, modes[2])
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			if _, _, err := c.ReadFrom(buf); errors.Is(err, backend.ErrClosed) {
				return
			}
		}
	}()
	c.SetReadTimeout(0)
	for b.Loop() {
		runtime.GC()
	}
	b.StopTimer()
	c.Close()
	<-done
}

// TestDialTimeout: a listener whose accept queue is full drops further
// SYNs, so a third connect hangs in SYN_SENT until DialTimeout ends it.
func TestDialTimeout(t *testing.T) {
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
	o := backend.Options{DialTimeout: 200 * time.Millisecond}
	var held []backend.Stream
	defer func() {
		for _, s := range held {
			s.Close()
		}
	}()
	for i := 0; ; i++ {
		s, err := kernel.Kernel{}.DialTCP(addr, o)
		if err != nil {
			if !errors.Is(err, backend.ErrTimeout) {
				t.Fatalf("connect %d: %v, want ErrTimeout", i, err)
			}
			return
		}
		held = append(held, s)
		if i == 16 {
			t.Fatal("16 connects to a listener that accepts none all succeeded")
		}
	}
}

// TestWriteTimeout: writes to a TCP peer that never reads end with
// ErrTimeout once the buffers are full, in both wait modes.
func TestWriteTimeout(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			sb := m.b.(backend.StreamBackend)
			o := m.o
			o.WriteTimeout = 100 * time.Millisecond
			o.SendBuffer = 4096
			ln, err := sb.ListenTCP(lo, backend.Options{RecvBuffer: 4096})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			cli, err := sb.DialTCP(ln.Addr(), o)
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			peer, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close() // never read
			msg := make([]byte, 64<<10)
			for i := 0; ; i++ {
				err := cli.WriteMsg(msg)
				if errors.Is(err, backend.ErrTimeout) {
					return
				}
				if err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
				if i == 1000 {
					t.Fatal("64 MiB written to a peer that reads nothing")
				}
			}
		})
	}
}
