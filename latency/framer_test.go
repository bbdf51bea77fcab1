package latency

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass"
)

// chunkStream is a bypass.Stream that hands out queued chunks, one per
// Read, and then ErrTimeout (a read timeout) or io.EOF.
type chunkStream struct {
	chunks [][]byte
	eof    bool
}

func (c *chunkStream) Read(b []byte) (int, error) {
	if len(c.chunks) == 0 {
		if c.eof {
			return 0, io.EOF
		}
		return 0, bypass.ErrTimeout
	}
	n := copy(b, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}
func (c *chunkStream) Write(b []byte) (int, error)          { return len(b), nil }
func (c *chunkStream) ReadMsg(b []byte) (int, error)        { return 0, io.EOF }
func (c *chunkStream) WriteMsg(b []byte) error              { return nil }
func (c *chunkStream) SetReadTimeout(d time.Duration) error { return nil }
func (c *chunkStream) LocalAddr() netip.AddrPort            { return netip.AddrPort{} }
func (c *chunkStream) RemoteAddr() netip.AddrPort           { return netip.AddrPort{} }
func (c *chunkStream) Info() bypass.Info                    { return bypass.Info{} }
func (c *chunkStream) Close() error                         { return nil }

func prefixed(msg []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(msg)))
	return append(b, msg...)
}

// TestFramerBuffer: the framer holds no buffer before its first read, a
// length field alone does not make it allocate the message it announces,
// it grows with the bytes that arrive, and it lets a grown buffer go after
// a run of small messages or when the stream is idle.
func TestFramerBuffer(t *testing.T) {
	st := &chunkStream{}
	f := newFramer(st, Sockperf)
	if f.bufferSize() != 0 {
		t.Fatalf("new framer holds %d bytes", f.bufferSize())
	}
	// A sockperf header announcing the largest message, and nothing more.
	big := sockperfMsg(SockperfMaxSize, 1, SockperfClient)
	st.chunks = [][]byte{big[:SockperfHeaderLen]}
	if _, err := f.next(); err != bypass.ErrTimeout {
		t.Fatalf("partial message: %v", err)
	}
	if f.bufferSize() > framerSmall {
		t.Fatalf("a header alone grew the buffer to %d bytes", f.bufferSize())
	}
	// The rest: the message comes whole, from where it stopped.
	st.chunks = [][]byte{big[SockperfHeaderLen:]}
	m, err := f.next()
	if err != nil || !bytes.Equal(m, big) {
		t.Fatalf("whole message: %d bytes, %v", len(m), err)
	}
	if f.bufferSize() > SockperfMaxSize+prefixLen {
		t.Fatalf("buffer %d bytes, past one largest message", f.bufferSize())
	}
	// Small messages after it: the grown buffer goes.
	small := sockperfMsg(64, 2, SockperfClient)
	for i := 0; i <= shrinkAfter; i++ {
		st.chunks = [][]byte{small}
		if m, err := f.next(); err != nil || !bytes.Equal(m, small) {
			t.Fatalf("small message %d: %v", i, err)
		}
	}
	if f.bufferSize() > framerSmall {
		t.Fatalf("after %d small messages the buffer is %d bytes", shrinkAfter, f.bufferSize())
	}
	// Grown again, then idle: a read timeout with nothing buffered lets it go.
	st.chunks = [][]byte{big}
	if _, err := f.next(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.next(); err != bypass.ErrTimeout {
		t.Fatalf("idle: %v", err)
	}
	if f.bufferSize() != 0 {
		t.Fatalf("idle framer holds %d bytes", f.bufferSize())
	}

	// lowlat framing: a prefix announcing the largest message, then the
	// stream ends: io.ErrUnexpectedEOF, with no large buffer taken.
	st = &chunkStream{chunks: [][]byte{binary.BigEndian.AppendUint32(nil, MaxSize)}, eof: true}
	f = newFramer(st, Lowlat)
	if _, err := f.next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated: %v", err)
	}
	if f.bufferSize() > framerSmall {
		t.Fatalf("a prefix alone grew the buffer to %d bytes", f.bufferSize())
	}
	// Messages split across reads at every point come out whole.
	msg := bytes.Repeat([]byte{9}, 5000)
	wire := append(prefixed(msg), prefixed(msg[:100])...)
	for cut := 1; cut < len(wire); cut += 97 {
		st = &chunkStream{chunks: [][]byte{wire[:cut], wire[cut:]}, eof: true}
		f = newFramer(st, Lowlat)
		if m, err := f.next(); err != nil || !bytes.Equal(m, msg) {
			t.Fatalf("cut %d: first: %d bytes, %v", cut, len(m), err)
		}
		if m, err := f.next(); err != nil || !bytes.Equal(m, msg[:100]) {
			t.Fatalf("cut %d: second: %d bytes, %v", cut, len(m), err)
		}
		if _, err := f.next(); err != io.EOF {
			t.Fatalf("cut %d: end: %v", cut, err)
		}
	}
}
