package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Message is one datagram in a batch. On read, Buf is the caller's buffer;
// the read sets N to the number of bytes received and Addr to the sender,
// and, where the backend knows them, Dst, Trunc and Stamp. On write, Buf
// is sent as given (slice it to the payload) to Addr; the other fields are
// ignored: a zero-length Buf sends an empty datagram.
type Message struct {
	Buf  []byte
	N    int
	Addr netip.AddrPort
	// Dst is the address the datagram was sent to: the local address, or
	// the multicast group it came through. Invalid when the backend could
	// not tell (a kernel socket's ReadFrom).
	Dst netip.Addr
	// Trunc is set when the datagram was longer than Buf and was cut.
	Trunc bool
	// Stamp is when the datagram arrived, with Options.Timestamps on.
	Stamp Timestamp
}

// Timestamp is a point in time and the clock it was read from. Stamps of
// different clocks do not compare.
type Timestamp struct {
	Ns    int64 // nanoseconds since the clock's epoch; 0 when there is no stamp
	Clock StampClock
}

// IsZero reports whether there is no stamp.
func (t Timestamp) IsZero() bool { return t.Clock == ClockNone }

// StampClock says where a timestamp comes from.
type StampClock uint8

// The clocks of timestamps.
const (
	ClockNone StampClock = iota
	// ClockKernel: the kernel's software stamp (SO_TIMESTAMPING), in
	// CLOCK_REALTIME, taken as the packet entered the network stack.
	ClockKernel
	// ClockNIC: the NIC's hardware stamp, in its own clock (the PHC),
	// taken as the frame crossed the wire.
	ClockNIC
	// ClockUser: CLOCK_REALTIME read in user space when a user-space stack
	// took the frame off its receive ring (afxdp, efvi without hardware
	// stamps): one read per polled batch.
	ClockUser
)

var clockNames = [...]string{ClockNone: "none", ClockKernel: "kernel", ClockNIC: "nic", ClockUser: "user"}

func (c StampClock) String() string {
	if int(c) < len(clockNames) {
		return clockNames[c]
	}
	return "unknown"
}

// Time returns the stamp as a time.Time (CLOCK_REALTIME stamps; a NIC
// stamp converts as if its clock were synchronised to it).
func (t Timestamp) Time() time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.Unix(0, t.Ns)
}

// PacketConn is a UDP endpoint bound to a local address.
type PacketConn interface {
	// ReadFrom receives one datagram into b. A datagram longer than b is
	// truncated and counted; n is the number of bytes copied.
	ReadFrom(b []byte) (n int, from netip.AddrPort, err error)
	// WriteTo sends b as one datagram to the given address.
	WriteTo(b []byte, to netip.AddrPort) (n int, err error)
	// ReadBatch waits for at least one datagram and then receives as many
	// as are ready, up to len(msgs) and the connection's batch size.
	ReadBatch(msgs []Message) (n int, err error)
	// TryReadBatch receives the datagrams already waiting, up to len(msgs)
	// and the batch size, and returns 0, nil at once when none is: it
	// never waits, whatever the wait mode and timeout. A Poller serves
	// many connections from one thread through it.
	TryReadBatch(msgs []Message) (n int, err error)
	// WriteBatch sends msgs in order and returns how many were sent.
	WriteBatch(msgs []Message) (n int, err error)
	// SetReadTimeout bounds how long one read waits; zero waits forever.
	// A read that times out returns ErrTimeout.
	SetReadTimeout(d time.Duration) error
	// JoinGroup subscribes the connection to a multicast group on its
	// interface (any source), both in the kernel (IGMP or MLD) and in the
	// backend's steering. Joining a group twice is not an error.
	JoinGroup(group netip.Addr) error
	// JoinSourceGroup subscribes to what source sends to group only
	// (source-specific multicast, IGMPv3 or MLDv2). Several sources may be
	// joined for one group; a group joined with JoinGroup cannot also be
	// joined for a source.
	JoinSourceGroup(group, source netip.Addr) error
	// LeaveGroup undoes JoinGroup; LeaveSourceGroup undoes
	// JoinSourceGroup for one source. Datagrams for a group left stop
	// reaching the connection.
	LeaveGroup(group netip.Addr) error
	LeaveSourceGroup(group, source netip.Addr) error
	// LocalAddr is the bound address, with the port the kernel chose when
	// the caller asked for port 0.
	LocalAddr() netip.AddrPort
	// Info says which backend and settings are in use.
	Info() Info
	// Stats returns a snapshot of the connection's counters.
	Stats() Stats
	// Close releases every resource the connection holds. A read blocked or
	// spinning in another goroutine returns ErrClosed.
	Close() error
}

// TxStamper is implemented by connections that can say when their
// datagrams left, with Options.Timestamps on: kernel sockets from the
// kernel's software transmit stamp (SO_TIMESTAMPING, read from the error
// queue), user-space stacks from a clock read as the frame is handed to
// the device.
type TxStamper interface {
	// LastTxStamp returns the transmit stamp of the latest datagram sent
	// whose stamp is known by now, with its number (datagrams sent on the
	// connection before it); ok is false when none is known yet. It never
	// waits, and is called by the goroutine that writes.
	LastTxStamp() (seq uint64, ts Timestamp, ok bool)
}

// ReadyFD is implemented by connections that a descriptor signals, so
// that a Poller can sleep on them in epoll, or skip the idle ones.
type ReadyFD interface {
	// ReadyFD returns a descriptor that polls readable when a datagram may
	// have arrived, or -1 when there is none. exact is true when the
	// descriptor is readable exactly while TryReadBatch would return
	// something (a kernel socket); false when the connection can hold
	// datagrams that the descriptor does not show (a user-space stack's
	// socket, whose datagrams another socket's poll may have queued), so
	// that the connection must be tried on every pass.
	ReadyFD() (fd int, exact bool)
}

// Stream is a connected TCP byte stream with message framing on top:
// WriteMsg sends a 4-byte big-endian length and the payload, ReadMsg returns
// one such message. Read and Write give the raw stream for other framings.
type Stream interface {
	Read(b []byte) (int, error)
	Write(b []byte) (int, error)
	ReadMsg(b []byte) (int, error)
	WriteMsg(b []byte) error
	SetReadTimeout(d time.Duration) error
	LocalAddr() netip.AddrPort
	RemoteAddr() netip.AddrPort
	Info() Info
	Close() error
}

// StreamListener accepts Streams.
type StreamListener interface {
	Accept() (Stream, error)
	Addr() netip.AddrPort
	Close() error
}

// Backend is one transport. Backends are stateless values; every call opens
// new resources.
type Backend interface {
	// Name is the name users select the backend by ("kernel", "afxdp").
	Name() string
	// ListenUDP opens a UDP endpoint. An error that wraps ErrNotSupported
	// means the backend cannot work on this host or for this address; auto
	// selection records it and moves on.
	ListenUDP(laddr netip.AddrPort, o Options) (PacketConn, error)
}

// Stack is a user-space network stack (afxdp, efvi) on one interface: its
// rings, its buffers and every socket opened on it, served by whichever
// thread reads them. A process has one stack per interface and backend;
// ListenUDP on the backend opens sockets on it implicitly, and a Stack
// handle lets a service say explicitly which sockets share it.
type Stack interface {
	// ListenUDP opens a UDP socket on the stack; o's wait mode, timeout
	// and batch size apply to the socket, the stack's own settings (rings,
	// frames, XDP mode) were fixed when it opened.
	ListenUDP(laddr netip.AddrPort, o Options) (PacketConn, error)
	// Info describes the stack.
	Info() Info
	// Stats returns the stack-wide counters: drops before a socket was
	// found and the driver's own.
	Stats() Stats
	// Close gives back the handle's reference; the stack closes when the
	// last handle and socket have.
	Close() error
}

// StackBackend is a Backend whose UDP sockets share a user-space stack.
type StackBackend interface {
	Backend
	OpenStack(o Options) (Stack, error)
}

// StreamBackend is a Backend that also carries TCP.
type StreamBackend interface {
	Backend
	DialTCP(raddr netip.AddrPort, o Options) (Stream, error)
	ListenTCP(laddr netip.AddrPort, o Options) (StreamListener, error)
}

// Skip records why auto selection passed over a backend.
type Skip struct {
	Backend string
	Reason  error
}

// String is "backend: reason", without repeating the name when the
// backend's own error already starts with it.
func (s Skip) String() string {
	r := s.Reason.Error()
	if strings.HasPrefix(r, s.Backend+": ") {
		return r
	}
	return s.Backend + ": " + r
}

// Info describes an open connection.
type Info struct {
	Backend   string   // backend in use
	Wait      WaitMode // block or spin, resolved
	Interface string   // interface, where the backend binds one
	Queue     int      // NIC queue, where the backend binds one
	XDPMode   string   // afxdp: "drv" or "skb"
	BindMode  string   // afxdp: "zerocopy" or "copy"
	Notes     []string // settings that were asked for but not applied, and why
	Skipped   []Skip   // auto selection: faster backends passed over, and why
}

// Stats are a connection's counters. Backends fill what applies to them.
type Stats struct {
	RxPackets uint64 // datagrams delivered to the application
	TxPackets uint64 // datagrams handed to the transport
	RxTrunc   uint64 // datagrams cut to fit the caller's buffer

	// Frames dropped before the application saw them (userspace stacks).
	DropShort       uint64 // shorter than the headers they claim
	DropFragment    uint64 // IPv4 fragments
	DropIPOptions   uint64 // IPv4 header with options
	DropIPChecksum  uint64 // bad IPv4 header checksum
	DropUDPChecksum uint64 // bad UDP checksum
	DropNotOurs     uint64 // wrong destination MAC, IP or port, or not UDP
	DropLength      uint64 // IPv4 or UDP length disagrees with the frame
	DropQueueFull   uint64 // userspace stacks: the socket's receive queue was full
	DropRecvBuffer  uint64 // kernel sockets: the socket's receive buffer was full (the drops /proc/net/udp shows)
	DropCRC         uint64 // efvi: frames the NIC discarded for a bad Ethernet FCS

	KernelDropped uint64 // afxdp: frames the kernel dropped for the stack (no memory, or its RX ring full)
	RxRingFull    uint64 // afxdp: of KernelDropped, those dropped because the RX ring was full
	InvalidDescs  uint64 // afxdp: descriptors the kernel refused as invalid (RX and TX): a bug, not load
	FillRingEmpty uint64 // afxdp, efvi: frames that found no receive buffer (fill ring empty, no descriptor posted)
	TxRingFull    uint64 // transmits that found every buffer or ring slot in use
	Wakeups       uint64 // afxdp: sendto/recvfrom kicks issued to the kernel
}

// Dropped is the sum of every counter of datagrams or frames lost before
// the application saw them: the Drop* counters, the frames the kernel
// dropped for a user-space stack (KernelDropped, which includes
// RxRingFull) and those that found no receive buffer (FillRingEmpty).
// Invalid descriptors and transmit shortages are not drops of received
// data and are not included.
func (s Stats) Dropped() uint64 {
	return s.DropShort + s.DropFragment + s.DropIPOptions + s.DropIPChecksum +
		s.DropUDPChecksum + s.DropNotOurs + s.DropLength + s.DropQueueFull +
		s.DropRecvBuffer + s.DropCRC + s.KernelDropped + s.FillRingEmpty
}

// Hot-path errors. They are values, so returning them never allocates.
var (
	// ErrClosed is returned by calls on a closed connection.
	ErrClosed = net.ErrClosed
	// ErrTimeout is returned by a read that waited longer than its timeout.
	// It satisfies net.Error with Timeout() == true.
	ErrTimeout error = timeoutError{}
	// ErrNotSupported marks a backend, option or feature this host lacks.
	ErrNotSupported = errors.New("not supported")
	// ErrMessageTooLong is returned by a write larger than the transport
	// carries in one datagram (or a framed message larger than the reader's
	// buffer).
	ErrMessageTooLong = errors.New("message too long")
	// ErrRingFull is returned by a write that found no room to queue.
	ErrRingFull = errors.New("transmit ring full")
)

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var _ net.Error = timeoutError{}

// Unsupported returns an error that wraps ErrNotSupported and says why.
func Unsupported(format string, args ...any) error {
	return &unsupportedError{msg: fmt.Sprintf(format, args...)}
}

// UnsupportedErr wraps cause so that it matches both ErrNotSupported and
// cause itself with errors.Is.
func UnsupportedErr(op string, cause error) error {
	return &unsupportedError{msg: op, cause: cause}
}

type unsupportedError struct {
	msg   string
	cause error
}

func (e *unsupportedError) Error() string {
	if e.cause == nil {
		return e.msg
	}
	return e.msg + ": " + e.cause.Error()
}

func (e *unsupportedError) Unwrap() error { return e.cause }

func (e *unsupportedError) Is(target error) bool { return target == ErrNotSupported }

// TryStream is implemented by streams whose reads and writes can be tried
// without waiting, and whose readiness a descriptor signals: the net.Conn
// adapter waits on that descriptor itself, in ppoll(2) with its own
// wake-up, so that deadlines reach a call already waiting without the
// stream's own timeouts being touched. Kernel streams implement it.
type TryStream interface {
	Stream
	// TryRead returns bytes already buffered or received, up to len(b),
	// and 0, nil at once when none are. It returns io.EOF when the peer
	// has closed the stream and ErrClosed after Close.
	TryRead(b []byte) (int, error)
	// TryWrite sends as much of b as the socket takes now and returns
	// how much that was: 0, nil when it has no room. It never waits.
	TryWrite(b []byte) (int, error)
	// ReadyFD returns the descriptor that polls readable when TryRead may
	// return something and writable when TryWrite may send, or -1; exact
	// as for ReadyFD.
	ReadyFD() (fd int, exact bool)
}

// StreamStats are a stream's counters since it opened. Bytes count what
// Read, ReadMsg and Write moved through the socket (prefixes included);
// messages count framed messages (ReadMsg, WriteMsg).
type StreamStats struct {
	RxBytes    uint64 // bytes received from the socket
	TxBytes    uint64 // bytes handed to the socket
	RxMessages uint64 // framed messages returned by ReadMsg
	TxMessages uint64 // framed messages sent whole by WriteMsg
}

// StreamStater is implemented by streams that keep counters.
type StreamStater interface {
	Stats() StreamStats
}

// ContextDialer is a StreamBackend whose dial ctx can end: the connect
// in progress is abandoned and its socket closed.
type ContextDialer interface {
	DialTCPContext(ctx context.Context, raddr netip.AddrPort, o Options) (Stream, error)
}

// TCPInfo is a user-space TCP connection's state and counters (afxdp,
// efvi): what Linux's TCP_INFO tells of a kernel socket.
type TCPInfo struct {
	State             string // "ESTABLISHED", "TIME-WAIT", ...
	SRTT, RTO         time.Duration
	Cwnd, SndWnd      uint32 // congestion window and the peer's window, bytes
	SegsIn, SegsOut   uint64
	BytesIn, BytesOut uint64 // payload delivered in order; payload acknowledged by the peer
	Retransmits       uint64 // segments sent again
	FastRetransmits   uint64 // losses repaired on duplicate ACKs
	Timeouts          uint64 // retransmission timer expiries
	OutOfOrder        uint64 // segments received ahead of a hole
	DupAcks           uint64 // duplicate ACKs received
	WindowProbes      uint64 // zero-window and keepalive probes sent
	RstSent, RstRecv  uint64
	Dropped           uint64 // segments dropped: out of window, old timestamp, ACK of unsent data, no room, no ACK
}

// TCPInfoer is implemented by streams of a user-space TCP.
type TCPInfoer interface {
	TCPInfo() TCPInfo
}
