package msgbuf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/lowlat/lowlat/bypass/backend"
)

// chunks is a Source that hands out its bytes at most step at a time, as a
// stream's reads do, then returns end.
type chunks struct {
	data []byte
	step int
	end  error
}

func (c *chunks) Recv(b []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, c.end
	}
	n := copy(b, c.data[:min(len(c.data), c.step)])
	c.data = c.data[n:]
	return n, nil
}

func frame(msgs ...[]byte) []byte {
	var out []byte
	for _, m := range msgs {
		out = binary.BigEndian.AppendUint32(out, uint32(len(m)))
		out = append(out, m...)
	}
	return out
}

func TestReadMsgAcrossPartialReads(t *testing.T) {
	big := bytes.Repeat([]byte{9}, 3*Small)
	for _, step := range []int{1, 3, 4096, 1 << 20} {
		src := &chunks{data: frame([]byte("a"), nil, big, []byte("tail")), step: step, end: io.EOF}
		var r Reader
		b := make([]byte, len(big))
		for i, want := range [][]byte{[]byte("a"), {}, big, []byte("tail")} {
			n, err := r.ReadMsg(b, src)
			if err != nil || !bytes.Equal(b[:n], want) {
				t.Fatalf("step %d message %d: %d bytes, %v", step, i, n, err)
			}
		}
		if _, err := r.ReadMsg(b, src); err != io.EOF {
			t.Fatalf("step %d: at a boundary the close is %v, want io.EOF", step, err)
		}
	}
}

func TestReadMsgErrors(t *testing.T) {
	var r Reader
	src := &chunks{data: frame([]byte("too long"), []byte("ok")), step: 5, end: io.EOF}
	b := make([]byte, 4)
	if _, err := r.ReadMsg(b, src); !errors.Is(err, backend.ErrMessageTooLong) {
		t.Fatalf("a message longer than b: %v", err)
	}
	if n, err := r.ReadMsg(b, src); err != nil || string(b[:n]) != "ok" {
		t.Fatalf("the message after a long one: %q, %v", b[:n], err)
	}

	r = Reader{}
	hdr := binary.BigEndian.AppendUint32(nil, MaxMessage+1)
	if _, err := r.ReadMsg(b, &chunks{data: hdr, step: 4, end: io.EOF}); !errors.Is(err, ErrFrame) {
		t.Fatalf("a prefix beyond MaxMessage: %v", err)
	}
	if r.Size() > Small {
		t.Fatalf("a bad prefix grew the buffer to %d", r.Size())
	}

	r = Reader{}
	cut := frame([]byte("cut short"))[:7]
	if _, err := r.ReadMsg(b, &chunks{data: cut, step: 4, end: io.EOF}); err != io.ErrUnexpectedEOF {
		t.Fatalf("a close inside a message: %v", err)
	}
}

func TestBufferedThenShrinks(t *testing.T) {
	var r Reader
	big := bytes.Repeat([]byte{1}, 2*Small)
	msgs := [][]byte{big}
	for i := 0; i < ShrinkAfter; i++ {
		msgs = append(msgs, []byte("x"))
	}
	src := &chunks{data: frame(msgs...), step: 1, end: backend.ErrTimeout}
	b := make([]byte, len(big))
	if _, err := r.ReadMsg(b, src); err != nil {
		t.Fatal(err)
	}
	if r.Size() <= Small {
		t.Fatalf("a %d-byte message left the buffer at %d", len(big), r.Size())
	}
	for i := 0; i < ShrinkAfter; i++ {
		if _, err := r.ReadMsg(b, src); err != nil {
			t.Fatal(err)
		}
	}
	if r.Size() > Small {
		t.Fatalf("after %d small messages the buffer is %d bytes", ShrinkAfter, r.Size())
	}

	// Raw bytes left after a message come back through Buffered.
	r = Reader{}
	src = &chunks{data: append(frame([]byte("m")), "raw"...), step: 100, end: io.EOF}
	if _, err := r.ReadMsg(b, src); err != nil {
		t.Fatal(err)
	}
	if n := r.Buffered(b); string(b[:n]) != "raw" {
		t.Fatalf("Buffered gave %q", b[:n])
	}
	if n := r.Buffered(b); n != 0 {
		t.Fatalf("Buffered gave %d more bytes", n)
	}
}

// loop is a Source that serves the same framed message for ever.
type loop struct {
	msg []byte
	off int
}

func (l *loop) Recv(b []byte) (int, error) {
	n := copy(b, l.msg[l.off:])
	l.off = (l.off + n) % len(l.msg)
	return n, nil
}

func BenchmarkReadMsg(b *testing.B) {
	src := &loop{msg: frame(make([]byte, 64))}
	var r Reader
	buf := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReadMsg(buf, src); err != nil {
			b.Fatal(err)
		}
	}
}

func TestWriterFrames(t *testing.T) {
	var w Writer
	if w.Size() != 0 {
		t.Fatalf("a new writer holds %d bytes", w.Size())
	}
	f, whole := w.Frame([]byte("hi"), 64<<10)
	if !whole || !bytes.Equal(f, frame([]byte("hi"))) || w.Size() != Small {
		t.Fatalf("small message: %x whole=%v size %d", f, whole, w.Size())
	}
	msg := bytes.Repeat([]byte{3}, 10<<10)
	f, whole = w.Frame(msg, 64<<10)
	if !whole || !bytes.Equal(f, frame(msg)) || w.Size() != 16<<10 {
		t.Fatalf("10 KiB message: whole=%v size %d, want one frame in 16 KiB", whole, w.Size())
	}
	long := make([]byte, 100<<10)
	f, whole = w.Frame(long, 64<<10)
	if whole || !bytes.Equal(f, binary.BigEndian.AppendUint32(nil, uint32(len(long)))) || w.Size() != 64<<10 {
		t.Fatalf("a message over the limit: %d bytes whole=%v size %d, want the prefix alone and a 64 KiB buffer", len(f), whole, w.Size())
	}
	// What a Writer frames, a Reader reads back.
	var r Reader
	out := make([]byte, len(msg))
	f, _ = w.Frame(msg, Header+MaxMessage)
	if n, err := r.ReadMsg(out, &chunks{data: append([]byte(nil), f...), step: 1000, end: io.EOF}); err != nil || !bytes.Equal(out[:n], msg) {
		t.Fatalf("round trip: %d bytes, %v", n, err)
	}
}

func BenchmarkFrame(b *testing.B) {
	var w Writer
	msg := make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := w.Frame(msg, 64<<10); !ok {
			b.Fatal("a 64-byte message did not fit")
		}
	}
}
