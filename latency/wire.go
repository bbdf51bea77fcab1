package latency

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// The latprobe message is a fixed 24-byte header followed by zero padding up
// to the message size. All fields are big-endian:
//
//	offset  size  field
//	0       4     magic, "LLTP"
//	4       1     version, 1
//	5       1     flags (FlagReply)
//	6       2     length of the whole message, header included
//	8       8     sequence number
//	16      8     send time, nanoseconds on the sender's monotonic clock
const (
	Magic       uint32 = 0x4c4c5450 // "LLTP"
	Version     uint8  = 1
	HeaderLen          = 24
	MinSize            = HeaderLen
	MaxSize            = 8972 // a 9000-byte jumbo frame less the IPv4 and UDP headers
	DefaultSize        = 64
)

// Flags in the header.
const (
	// FlagReply marks a message as the echo server's answer. A server never
	// answers a message that carries it, so two servers cannot loop.
	FlagReply uint8 = 1 << 0
)

// Header is the fixed part of a message.
type Header struct {
	Flags  uint8
	Length uint16 // bytes in the whole message, header included
	Seq    uint64
	SendNS int64 // sender's monotonic clock when the request left
}

// Errors from Decode and from a Wire's checks. They are values, so the hot
// paths that return them never allocate.
var (
	ErrEmpty      = errors.New("latency: empty message")
	ErrShort      = errors.New("latency: message shorter than the 24-byte header")
	ErrMagic      = errors.New("latency: wrong magic: not a latprobe message")
	ErrVersion    = errors.New("latency: unsupported message version")
	ErrLength     = errors.New("latency: length field disagrees with the message size")
	ErrTooLong    = errors.New("latency: message longer than 8972 bytes")
	ErrNotRequest = errors.New("latency: message is a reply, not a request")
	ErrNotReply   = errors.New("latency: message is a request, not a reply")
)

// Encode writes h, with the magic and version, into the first HeaderLen
// bytes of b. The padding after the header is left as it is.
func (h Header) Encode(b []byte) error {
	if len(b) < HeaderLen {
		return ErrShort
	}
	if h.Length < HeaderLen || h.Length > MaxSize {
		return ErrLength
	}
	binary.BigEndian.PutUint32(b[0:4], Magic)
	b[4] = Version
	b[5] = h.Flags
	binary.BigEndian.PutUint16(b[6:8], h.Length)
	binary.BigEndian.PutUint64(b[8:16], h.Seq)
	binary.BigEndian.PutUint64(b[16:24], uint64(h.SendNS))
	return nil
}

// Decode parses the header at the start of b, where b is one whole message,
// and checks that its length field matches len(b).
func Decode(b []byte) (Header, error) {
	switch {
	case len(b) == 0:
		return Header{}, ErrEmpty
	case len(b) > MaxSize:
		return Header{}, ErrTooLong
	case len(b) < HeaderLen:
		return Header{}, ErrShort
	case binary.BigEndian.Uint32(b[0:4]) != Magic:
		return Header{}, ErrMagic
	case b[4] != Version:
		return Header{}, ErrVersion
	}
	h := Header{
		Flags:  b[5],
		Length: binary.BigEndian.Uint16(b[6:8]),
		Seq:    binary.BigEndian.Uint64(b[8:16]),
		SendNS: int64(binary.BigEndian.Uint64(b[16:24])),
	}
	if int(h.Length) != len(b) {
		return Header{}, ErrLength
	}
	return h, nil
}

// CheckSize reports whether size is a valid message size.
func CheckSize(size int) error {
	if size < MinSize || size > MaxSize {
		return fmt.Errorf("message size %d: want %d to %d bytes", size, MinSize, MaxSize)
	}
	return nil
}

// Wire is a message format: how a client stamps a request, how it reads the
// reply, and how a server answers. Implementations must not allocate.
type Wire interface {
	// Name is the format's name, as --wire selects it.
	Name() string
	// MinSize and MaxSize bound the message size, in bytes.
	MinSize() int
	MaxSize() int
	// PutRequest makes b, the whole message, a request with the given
	// sequence number and send time.
	PutRequest(b []byte, seq uint64, sendNS int64)
	// ParseReply checks that b is one whole reply and returns its sequence
	// number and the send time it echoes.
	ParseReply(b []byte) (seq uint64, sendNS int64, err error)
	// Answer checks that b is one whole request and turns it, in place,
	// into the reply to send back. A nil reply with a nil error means the
	// request asks for no answer.
	Answer(b []byte) (reply []byte, err error)
}

// Lowlat is latprobe's own wire format, described above.
var Lowlat Wire = lowlatWire{}

type lowlatWire struct{}

func (lowlatWire) Name() string { return "lowlat" }
func (lowlatWire) MinSize() int { return MinSize }
func (lowlatWire) MaxSize() int { return MaxSize }

func (lowlatWire) PutRequest(b []byte, seq uint64, sendNS int64) {
	// Callers size b with CheckSize, so Encode cannot fail here.
	_ = Header{Length: uint16(len(b)), Seq: seq, SendNS: sendNS}.Encode(b)
}

func (lowlatWire) ParseReply(b []byte) (uint64, int64, error) {
	h, err := Decode(b)
	if err != nil {
		return 0, 0, err
	}
	if h.Flags&FlagReply == 0 {
		return 0, 0, ErrNotReply
	}
	return h.Seq, h.SendNS, nil
}

func (lowlatWire) Answer(b []byte) ([]byte, error) {
	h, err := Decode(b)
	if err != nil {
		return nil, err
	}
	if h.Flags&FlagReply != 0 {
		return nil, ErrNotRequest
	}
	b[5] = h.Flags | FlagReply
	return b, nil
}

// wires lists the formats WireByName knows.
var wires = []Wire{Lowlat, Sockperf, Auto}

// WireByName returns the wire format with the given name ("lowlat",
// "sockperf", "auto").
func WireByName(name string) (Wire, error) {
	for _, w := range wires {
		if w.Name() == name {
			return w, nil
		}
	}
	return nil, fmt.Errorf("wire format %q: unknown (have %s)", name, strings.Join(WireNames(), ", "))
}

// WireNames returns the names of the known wire formats.
func WireNames() []string {
	var names []string
	for _, w := range wires {
		names = append(names, w.Name())
	}
	return names
}
