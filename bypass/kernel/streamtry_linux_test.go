//go:build linux

package kernel

import (
	"io"
	"testing"

	"github.com/lowlat/lowlat/bypass/backend"
)

// TestStreamTryAndStats: TryRead and TryWrite never wait (0, nil when
// there is nothing to read), TryRead returns what a ReadMsg left
// buffered first and io.EOF at the peer's close, and Stats counts bytes
// and framed messages both ways.
func TestStreamTryAndStats(t *testing.T) {
	for _, b := range []backend.StreamBackend{Kernel{}, BusyPoll{}} {
		t.Run(b.Name(), func(t *testing.T) {
			cli, srv := streamPair(t, b, backend.Options{})
			buf := make([]byte, 64)
			if n, err := srv.TryRead(buf); n != 0 || err != nil {
				t.Fatalf("TryRead on an idle stream: %d, %v; want 0, nil", n, err)
			}
			if err := cli.WriteMsg([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			if n, err := cli.TryWrite([]byte("tail")); n != 4 || err != nil {
				t.Fatalf("TryWrite: %d, %v", n, err)
			}
			if n, err := srv.ReadMsg(buf); err != nil || string(buf[:n]) != "hello" {
				t.Fatalf("ReadMsg: %q, %v", buf[:n], err)
			}
			var got []byte
			for len(got) < 4 {
				n, err := srv.TryRead(buf)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, buf[:n]...)
			}
			if string(got) != "tail" {
				t.Fatalf("TryRead after ReadMsg: %q, want %q", got, "tail")
			}
			want := backend.StreamStats{TxBytes: 4 + 5 + 4, TxMessages: 1}
			if st := cli.Stats(); st != want {
				t.Errorf("writer's Stats: %+v, want %+v", st, want)
			}
			if st := srv.Stats(); st.RxBytes != 13 || st.RxMessages != 1 {
				t.Errorf("reader's Stats: %+v, want 13 bytes and 1 message received", st)
			}
			if fd, exact := srv.ReadyFD(); fd != srv.fd || !exact {
				t.Errorf("ReadyFD: %d, %v", fd, exact)
			}
			cli.Close()
			for {
				n, err := srv.TryRead(buf)
				if err == io.EOF {
					break
				}
				if n != 0 || err != nil {
					t.Fatalf("TryRead after the peer closed: %d, %v; want io.EOF", n, err)
				}
			}
			srv.Close()
			if _, err := srv.TryRead(buf); err != backend.ErrClosed {
				t.Fatalf("TryRead after Close: %v, want ErrClosed", err)
			}
			if _, err := srv.TryWrite(buf); err != backend.ErrClosed {
				t.Fatalf("TryWrite after Close: %v, want ErrClosed", err)
			}
		})
	}
}
