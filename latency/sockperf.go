package latency

import (
	"encoding/binary"
	"errors"
	"io"
	"time"

	"github.com/lowlat/lowlat/bypass"
)

// sockperf's message starts with a 14-byte header, every field big-endian
// (network order), followed by padding up to the message size:
//
//	offset  size  field
//	0       8     sequence number, counted by the client from 1
//	8       2     flags: SockperfClient, SockperfPong, SockperfWarmup
//	10      4     length of the whole message, header included
//
// A sockperf server answers a message only when it carries both the client
// and the pong-request flags and not the warm-up flag: it clears the client
// flag and sends the message back whole. Under load, sockperf's client asks
// for a pong on only some of its messages (every 100th by default); the rest
// are read and dropped. Over TCP, sockperf frames messages by the header's
// length field alone, with no prefix of its own.
//
// Sockperf writes the send time into bytes 14 to 21 of a request when the
// message is long enough (22 bytes or more), so that a reply also carries
// it; sockperf ignores the bytes after its header.
const (
	SockperfHeaderLen = 14
	SockperfMinSize   = SockperfHeaderLen
	// SockperfMaxSize is the largest UDP payload over IPv4, sockperf's own
	// limit for a message.
	SockperfMaxSize = 65507
)

// Flags in the sockperf header.
const (
	SockperfClient uint16 = 1 << 0 // sent by a client; a server clears it in its answer
	SockperfPong   uint16 = 1 << 1 // the client asks for an answer
	SockperfWarmup uint16 = 1 << 2 // warm-up message: never answered
)

// Errors of the sockperf format that the lowlat ones do not cover.
var (
	ErrSockperfShort = errors.New("latency: message shorter than sockperf's 14-byte header")
	// ErrFraming ends a stream whose length field cannot be trusted (zero,
	// shorter than the header, or longer than the wire's maximum): the
	// stream cannot be resynchronised.
	ErrFraming = errors.New("latency: stream framing lost: length field out of range")
)

// Sockperf is the wire format of sockperf (ping-pong and under-load modes).
var Sockperf Wire = sockperfWire{}

type sockperfWire struct{}

func (sockperfWire) Name() string { return "sockperf" }
func (sockperfWire) MinSize() int { return SockperfMinSize }
func (sockperfWire) MaxSize() int { return SockperfMaxSize }

func (sockperfWire) PutRequest(b []byte, seq uint64, sendNS int64) {
	binary.BigEndian.PutUint64(b[0:8], seq)
	binary.BigEndian.PutUint16(b[8:10], SockperfClient|SockperfPong)
	binary.BigEndian.PutUint32(b[10:14], uint32(len(b)))
	if len(b) >= SockperfHeaderLen+8 {
		binary.BigEndian.PutUint64(b[14:22], uint64(sendNS))
	}
}

// sockperfHeader checks that b is one whole sockperf message and returns
// its sequence number and flags.
func sockperfHeader(b []byte) (seq uint64, flags uint16, err error) {
	switch {
	case len(b) == 0:
		return 0, 0, ErrEmpty
	case len(b) > SockperfMaxSize:
		return 0, 0, ErrTooLong
	case len(b) < SockperfHeaderLen:
		return 0, 0, ErrSockperfShort
	case int(binary.BigEndian.Uint32(b[10:14])) != len(b):
		return 0, 0, ErrLength
	}
	return binary.BigEndian.Uint64(b[0:8]), binary.BigEndian.Uint16(b[8:10]), nil
}

func (sockperfWire) ParseReply(b []byte) (uint64, int64, error) {
	seq, flags, err := sockperfHeader(b)
	if err != nil {
		return 0, 0, err
	}
	if flags&SockperfClient != 0 {
		return 0, 0, ErrNotReply
	}
	var sendNS int64
	if len(b) >= SockperfHeaderLen+8 {
		sendNS = int64(binary.BigEndian.Uint64(b[14:22]))
	}
	return seq, sendNS, nil
}

func (sockperfWire) Answer(b []byte) ([]byte, error) {
	_, flags, err := sockperfHeader(b)
	if err != nil {
		return nil, err
	}
	if flags&SockperfClient == 0 {
		return nil, ErrNotRequest
	}
	if flags&SockperfWarmup != 0 || flags&SockperfPong == 0 {
		return nil, nil
	}
	binary.BigEndian.PutUint16(b[8:10], flags&^SockperfClient)
	return b, nil
}

// Auto answers both formats, telling them apart by each message's first
// four bytes: lowlat's magic "LLTP" there means a lowlat message, anything
// else is read as sockperf's (its first four bytes are the top half of a
// sequence number that counts from 1, so they match the magic only after
// 5.5e18 messages). As a client format it sends lowlat requests.
var Auto Wire = autoWire{}

type autoWire struct{}

func (autoWire) Name() string { return "auto" }
func (autoWire) MinSize() int { return SockperfMinSize }
func (autoWire) MaxSize() int { return SockperfMaxSize }

func isLowlat(b []byte) bool { return len(b) >= 4 && binary.BigEndian.Uint32(b[0:4]) == Magic }

func (autoWire) PutRequest(b []byte, seq uint64, sendNS int64) { Lowlat.PutRequest(b, seq, sendNS) }

func (autoWire) ParseReply(b []byte) (uint64, int64, error) {
	if isLowlat(b) {
		return Lowlat.ParseReply(b)
	}
	return Sockperf.ParseReply(b)
}

func (autoWire) Answer(b []byte) ([]byte, error) {
	if isLowlat(b) || len(b) < SockperfHeaderLen {
		// Too short for either: the lowlat decoder names it (empty, short).
		return Lowlat.Answer(b)
	}
	return Sockperf.Answer(b)
}

// Stream framings: how messages are cut out of a TCP byte stream.
const (
	framingUnknown  = iota // auto, before the first bytes arrive
	framingPrefix          // lowlat: a 4-byte big-endian length, then the message
	framingSockperf        // sockperf: the message's own length field
)

// prefixLen is the length prefix of bypass.Stream's WriteMsg framing.
const prefixLen = 4

// framer cuts messages out of a raw byte stream read with Read. Its one
// buffer is sized to what is in flight: none until the first read, then
// framerSmall bytes, doubled only when it is full of bytes that arrived and
// the message needs more, up to one largest message (a length field alone
// allocates nothing: a peer must send what it makes the framer hold). A
// grown buffer is let go once it is empty after shrinkAfter small messages
// in a row, or after a read timeout with nothing buffered. In a steady
// stream it allocates nothing per message. A message it returns stays valid
// until the next call.
type framer struct {
	st        bypass.Stream
	mode      int
	max       int // largest message
	buf       []byte
	head, end int
	small     int // messages in a row that fit framerSmall, while buf is larger
}

// Framer buffer sizes.
const (
	framerSmall = 4 << 10
	shrinkAfter = 64
)

func newFramer(st bypass.Stream, w Wire) *framer {
	f := &framer{st: st, max: w.MaxSize()}
	switch w.Name() {
	case "sockperf":
		f.mode = framingSockperf
	case "auto":
		f.mode = framingUnknown
	default:
		f.mode = framingPrefix
	}
	return f
}

// fill reads until at least need bytes are buffered after head (need is at
// most prefixLen plus the largest message).
func (f *framer) fill(need int) error {
	if f.end-f.head >= need {
		return nil
	}
	if f.head+need > len(f.buf) {
		f.end = copy(f.buf, f.buf[f.head:f.end])
		f.head = 0
	}
	for f.end-f.head < need {
		if f.end == len(f.buf) {
			nb := make([]byte, min(max(2*len(f.buf), framerSmall), f.max+prefixLen))
			f.end = copy(nb, f.buf[f.head:f.end])
			f.head = 0
			f.buf = nb
		}
		n, err := f.st.Read(f.buf[f.end:])
		if err != nil {
			if err == io.EOF && f.end > f.head {
				return io.ErrUnexpectedEOF
			}
			if f.end == f.head && len(f.buf) > framerSmall && errors.Is(err, bypass.ErrTimeout) {
				f.release() // idle
			}
			return err
		}
		f.end += n
	}
	return nil
}

// release lets the buffer go; the next read takes a small one.
func (f *framer) release() { f.buf, f.head, f.end, f.small = nil, 0, 0, 0 }

// took notes a message of l bytes (with its framing) taken from the buffer.
func (f *framer) took(l int) {
	if len(f.buf) <= framerSmall {
		return
	}
	if l > framerSmall {
		f.small = 0
		return
	}
	f.small++
}

// bufferSize reports the buffer's size, for tests.
func (f *framer) bufferSize() int { return len(f.buf) }

// next returns the next message.
func (f *framer) next() ([]byte, error) {
	if f.head == f.end {
		f.head, f.end = 0, 0
		if f.small >= shrinkAfter {
			f.release()
		}
	}
	if f.mode == framingUnknown {
		// lowlat's stream starts with a length prefix and then the magic.
		if err := f.fill(prefixLen + 4); err != nil {
			return nil, err
		}
		if isLowlat(f.buf[f.head+prefixLen : f.end]) {
			f.mode = framingPrefix
		} else {
			f.mode = framingSockperf
		}
	}
	if f.mode == framingPrefix {
		if err := f.fill(prefixLen); err != nil {
			return nil, err
		}
		l := int(binary.BigEndian.Uint32(f.buf[f.head:]))
		if l == 0 || l > f.max {
			return nil, ErrFraming
		}
		if err := f.fill(prefixLen + l); err != nil {
			return nil, err
		}
		m := f.buf[f.head+prefixLen : f.head+prefixLen+l]
		f.head += prefixLen + l
		f.took(prefixLen + l)
		return m, nil
	}
	if err := f.fill(SockperfHeaderLen); err != nil {
		return nil, err
	}
	l := int(binary.BigEndian.Uint32(f.buf[f.head+10:]))
	if l < SockperfHeaderLen || l > f.max {
		return nil, ErrFraming
	}
	if err := f.fill(l); err != nil {
		return nil, err
	}
	m := f.buf[f.head : f.head+l]
	f.head += l
	f.took(l)
	return m, nil
}

// send writes one message in the stream's framing.
func (f *framer) send(b []byte) error {
	if f.mode == framingPrefix {
		return f.st.WriteMsg(b)
	}
	_, err := f.st.Write(b)
	return err
}

// ServeRawStream answers every request on st, cutting messages out of the
// raw byte stream (Read and Write) by the server's wire format: lowlat's
// 4-byte length prefix, sockperf's header length field, or, for Auto,
// whichever the connection's first bytes show. It returns nil when the
// peer closes the stream or st is closed, and ErrFraming when a length
// field is out of range (the stream cannot be resynchronised; the caller
// closes it). It does not close st.
func (s *EchoServer) ServeRawStream(st bypass.Stream) error {
	f := newFramer(st, s.wire())
	for {
		m, err := f.next()
		if err != nil {
			switch {
			case err == io.EOF, errors.Is(err, bypass.ErrClosed):
				return nil
			case errors.Is(err, bypass.ErrTimeout):
				continue
			case err == ErrFraming:
				s.countGarbage(ErrLength)
			}
			return err
		}
		w := s.wire()
		reply := s.answer(w, m, w.MaxSize())
		if reply == nil {
			continue
		}
		if err := f.send(reply); err != nil {
			if errors.Is(err, bypass.ErrClosed) {
				return nil
			}
			return err
		}
		s.echoed.Add(1)
	}
}

// SockperfStreamTransport carries sockperf messages over a TCP stream as
// sockperf does: each message written raw, replies cut out of the stream by
// their header's length field. It does not close s.
func SockperfStreamTransport(s bypass.Stream) Transport {
	return &rawStreamTransport{s: s, f: newFramer(s, Sockperf)}
}

type rawStreamTransport struct {
	s bypass.Stream
	f *framer
}

func (t *rawStreamTransport) Send(b []byte) error {
	_, err := t.s.Write(b)
	return err
}

func (t *rawStreamTransport) Recv(b []byte) (int, error) {
	m, err := t.f.next()
	if err != nil {
		return 0, err
	}
	if len(m) > len(b) {
		return 0, bypass.ErrMessageTooLong
	}
	return copy(b, m), nil
}

func (t *rawStreamTransport) SetReadTimeout(d time.Duration) error { return t.s.SetReadTimeout(d) }
