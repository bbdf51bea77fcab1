//go:build linux

package kernel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass/backend"
)

// streamPair connects a client to a server stream over 127.0.0.1.
func streamPair(t *testing.T, b backend.StreamBackend, o backend.Options) (cli, srv *TCPStream) {
	t.Helper()
	ln, err := b.ListenTCP(netip.MustParseAddrPort("127.0.0.1:0"), o)
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
	c, err := b.DialTCP(ln.Addr(), o)
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		c.Close()
		t.FailNow()
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*TCPStream), s.(*TCPStream)
}

// TestStreamBuffersBounded: a stream holds no buffer until it is used, a
// length prefix alone does not make it allocate the message it announces,
// the read buffer grows only with bytes that arrived, and a grown buffer
// is let go again, after a run of small messages or a read timeout with
// nothing buffered. The write buffer grows to the messages written, up to
// streamWriteMax; larger ones go out without being copied.
func TestStreamBuffersBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    backend.StreamBackend
		o    backend.Options
	}{
		{"kernel", Kernel{}, backend.Options{}},
		{"busypoll", BusyPoll{}, backend.Options{BusyPollUS: -1, BusyPollBudget: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.ReadTimeout = 200 * time.Millisecond
			cli, srv := streamPair(t, tc.b, o)
			if r, w := srv.bufferSizes(); r != 0 || w != 0 {
				t.Fatalf("fresh stream holds buffers of %d and %d bytes", r, w)
			}

			// A prefix announcing the largest message, and 10 bytes of it.
			var hdr [streamHeader]byte
			binary.BigEndian.PutUint32(hdr[:], MaxStreamMessage)
			if _, err := cli.Write(append(hdr[:], make([]byte, 10)...)); err != nil {
				t.Fatal(err)
			}
			big := make([]byte, MaxStreamMessage)
			if _, err := srv.ReadMsg(big); !errors.Is(err, backend.ErrTimeout) {
				t.Fatalf("partial message: %v, want a timeout", err)
			}
			if r, _ := srv.bufferSizes(); r > streamBufSmall {
				t.Fatalf("a prefix and 10 bytes made the read buffer %d bytes, want at most %d", r, streamBufSmall)
			}
			// The rest arrives: the message is read whole, where it left off.
			rest := bytes.Repeat([]byte{7}, MaxStreamMessage-10)
			wroteRest := make(chan error, 1)
			go func() { _, err := cli.Write(rest); wroteRest <- err }()
			if err := srv.SetReadTimeout(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			n, err := srv.ReadMsg(big)
			if err != nil || n != MaxStreamMessage || big[9] != 0 || big[10] != 7 || big[n-1] != 7 {
				t.Fatalf("whole message: %d bytes, %v", n, err)
			}
			if err := <-wroteRest; err != nil {
				t.Fatal(err)
			}
			if r, _ := srv.bufferSizes(); r > streamHeader+MaxStreamMessage {
				t.Fatalf("read buffer %d bytes, want at most %d", r, streamHeader+MaxStreamMessage)
			}

			// A jumbo-frame message out: one write buffer just large enough.
			if err := cli.WriteMsg(make([]byte, 8972)); err != nil {
				t.Fatal(err)
			}
			if _, w := cli.bufferSizes(); w != 16<<10 {
				t.Fatalf("write buffer %d bytes for an 8972-byte message, want %d", w, 16<<10)
			}
			if n, err := srv.ReadMsg(big); err != nil || n != 8972 {
				t.Fatalf("jumbo message: %d bytes, %v", n, err)
			}

			// Small messages after it: the grown buffer goes.
			small := make([]byte, 64)
			for i := 0; i < shrinkAfter; i++ {
				if err := cli.WriteMsg(small); err != nil {
					t.Fatal(err)
				}
				if _, err := srv.ReadMsg(small); err != nil {
					t.Fatal(err)
				}
			}
			if r, _ := srv.bufferSizes(); r > streamBufSmall {
				t.Fatalf("after %d small messages the read buffer is %d bytes", shrinkAfter, r)
			}

			// A large message out: the write buffer stays small, and the
			// message arrives whole, followed by the next one in step.
			msg := bytes.Repeat([]byte("lowlat"), 20000)
			wrote := make(chan error, 1)
			go func() {
				err := srv.WriteMsg(msg)
				if err == nil {
					err = srv.WriteMsg([]byte("next"))
				}
				wrote <- err
			}()
			if err := cli.SetReadTimeout(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			if n, err := cli.ReadMsg(big); err != nil || !bytes.Equal(big[:n], msg) {
				t.Fatalf("large message: %d bytes, %v", n, err)
			}
			if n, err := cli.ReadMsg(big); err != nil || string(big[:n]) != "next" {
				t.Fatalf("after the large message: %q, %v", big[:n], err)
			}
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
			if _, w := srv.bufferSizes(); w > streamWriteMax {
				t.Fatalf("write buffer %d bytes, want at most %d", w, streamWriteMax)
			}

			// Idle: a read timeout with nothing buffered lets a grown buffer go.
			if r, _ := cli.bufferSizes(); r <= streamBufSmall {
				t.Fatalf("client read buffer %d bytes after a large message: want it grown", r)
			}
			cli.SetReadTimeout(50 * time.Millisecond)
			if _, err := cli.ReadMsg(big); !errors.Is(err, backend.ErrTimeout) {
				t.Fatalf("idle read: %v, want a timeout", err)
			}
			if r, _ := cli.bufferSizes(); r != 0 {
				t.Fatalf("idle stream keeps a read buffer of %d bytes", r)
			}
		})
	}
}
