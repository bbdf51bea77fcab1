// Package msgbuf is the receive side of lowlat's stream framing (a 4-byte
// big-endian length, then the message), shared by the stream backends: a
// read buffer that holds nothing until a stream is used, starts small,
// doubles only when full of bytes that arrived, up to one whole message
// with its prefix, and lets a grown buffer go when the stream is idle or
// its messages are small again.
package msgbuf

import (
	"encoding/binary"
	"errors"
	"io"

	"github.com/lowlat/lowlat/bypass/backend"
)

// Sizes of the framing and of the buffer.
const (
	Header      = 4       // the length prefix
	MaxMessage  = 1 << 20 // the longest framed message
	Small       = 4 << 10 // the buffer a stream starts with, and goes back to
	ShrinkAfter = 64      // messages in a row that fit Small before a grown buffer goes
)

// ErrFrame reports a length prefix larger than MaxMessage: the stream is
// not speaking lowlat's framing and cannot be resynchronised.
var ErrFrame = errors.New("framed message longer than the largest a stream carries")

// Source is the stream a Reader reads from: Recv reads at least one byte
// into b or returns an error (io.EOF when the peer has closed). A stream
// passes a pointer-shaped adapter, so calls allocate nothing.
type Source interface {
	Recv(b []byte) (int, error)
}

// Reader buffers one stream's received bytes. It belongs to the stream's
// reader. The zero value is ready to use.
type Reader struct {
	buf       []byte
	head, end int // buf[head:end] is received and not yet returned
	small     int // messages in a row that fit Small, while buf is larger
}

// Buffered copies bytes already received into b, for a raw Read, and
// returns how many (0 when none are buffered).
func (r *Reader) Buffered(b []byte) int {
	if r.head == r.end {
		return 0
	}
	n := copy(b, r.buf[r.head:r.end])
	r.head += n
	return n
}

// Size is the buffer's current size, for tests.
func (r *Reader) Size() int { return len(r.buf) }

// ReadMsg returns the next framed message into b, calling src.Recv for more
// bytes until it has it whole. A message longer than b is consumed and
// reported as backend.ErrMessageTooLong; a prefix beyond MaxMessage is
// ErrFrame; a peer that closes inside a message, io.ErrUnexpectedEOF.
// src's own errors come back as they are (io.EOF at a message boundary).
func (r *Reader) ReadMsg(b []byte, src Source) (int, error) {
	if err := r.fill(Header, src); err != nil {
		return 0, err
	}
	l := int(binary.BigEndian.Uint32(r.buf[r.head:]))
	if l > MaxMessage {
		return 0, ErrFrame
	}
	if err := r.fill(Header+l, src); err != nil {
		return 0, err
	}
	start := r.head + Header
	r.head = start + l
	if l > len(b) {
		r.consumed(l)
		return 0, backend.ErrMessageTooLong
	}
	n := copy(b, r.buf[start:start+l])
	r.consumed(l)
	return n, nil
}

// fill reads until at least need bytes (at most Header+MaxMessage) are
// buffered.
func (r *Reader) fill(need int, src Source) error {
	if r.end-r.head >= need {
		return nil
	}
	if r.head > 0 {
		r.end = copy(r.buf, r.buf[r.head:r.end])
		r.head = 0
	}
	for r.end < need {
		if r.end == len(r.buf) {
			r.grow()
		}
		n, err := src.Recv(r.buf[r.end:])
		if err != nil {
			if err == io.EOF && r.end > 0 {
				return io.ErrUnexpectedEOF
			}
			if err == backend.ErrTimeout && r.end == 0 && len(r.buf) > Small {
				r.buf, r.small = nil, 0 // idle: let the grown buffer go
			}
			return err
		}
		r.end += n
	}
	return nil
}

// grow doubles the buffer, which is full (from nothing to Small), up to one
// whole message with its prefix.
func (r *Reader) grow() {
	nb := make([]byte, min(max(2*len(r.buf), Small), Header+MaxMessage))
	copy(nb, r.buf[:r.end])
	r.buf = nb
}

// consumed notes that a message of l bytes was taken, and lets a grown
// buffer go once it is empty and has not been needed for ShrinkAfter
// messages in a row.
func (r *Reader) consumed(l int) {
	if r.head == r.end {
		r.head, r.end = 0, 0
	}
	if len(r.buf) <= Small {
		return
	}
	if Header+l > Small {
		r.small = 0
		return
	}
	if r.small++; r.small >= ShrinkAfter && r.end == 0 {
		r.buf, r.small = nil, 0
	}
}

// Writer frames one stream's outgoing messages. It belongs to the stream's
// writer. The zero value is ready to use and holds nothing until the first
// message.
type Writer struct {
	buf []byte
}

// Frame returns b with its length prefix in one buffer, ready for one send,
// growing the buffer (doubling from Small) to hold both, up to limit bytes.
// When both do not fit limit it returns the prefix alone and false: the
// caller sends it and then b itself, rather than copy a long message. b must
// be at most MaxMessage long. The frame is valid until the next call.
func (w *Writer) Frame(b []byte, limit int) ([]byte, bool) {
	need := Header + len(b)
	if len(w.buf) < min(need, limit) {
		size := max(len(w.buf), Small)
		for size < need && size < limit {
			size *= 2
		}
		w.buf = make([]byte, min(size, limit))
	}
	binary.BigEndian.PutUint32(w.buf, uint32(len(b)))
	if need > len(w.buf) {
		return w.buf[:Header], false
	}
	n := copy(w.buf[Header:], b)
	return w.buf[:Header+n], true
}

// Size is the buffer's current size, for tests.
func (w *Writer) Size() int { return len(w.buf) }
