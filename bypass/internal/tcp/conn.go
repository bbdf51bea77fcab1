package tcp

import (
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/lowlat/lowlat/bypass/internal/frame"
)

// State is a connection's state (RFC 9293 section 3.3.2).
type State uint8

// Connection states. Listen belongs to the stack's listeners, not to a
// Conn.
const (
	Closed State = iota
	SynSent
	SynReceived
	Established
	FinWait1
	FinWait2
	CloseWait
	Closing
	LastAck
	TimeWait
)

var stateNames = [...]string{"CLOSED", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// synchronized reports whether the state has seen the peer's SYN and its
// ACK of ours (RFC 9293's synchronized states).
func (s State) synchronized() bool { return s >= Established }

// Output carries a connection's segments to the wire. Send builds and
// queues one segment: the header and options in h (ports, sequence
// numbers, flags, window, options), the payload as up to two pieces (p2
// only when the data wraps the send buffer). It reports false when the
// segment could not be queued (every transmit buffer is in flight); the
// connection then tries again later. h and the pieces are valid only
// during the call.
type Output interface {
	Send(h *frame.TCPSegment, p1, p2 []byte) bool
}

// Errors a connection ends with. They are the system's errno values, so
// that errors.Is matches them as it does for kernel sockets.
var (
	ErrReset    error = syscall.ECONNRESET
	ErrRefused  error = syscall.ECONNREFUSED
	ErrTimedOut error = syscall.ETIMEDOUT
	ErrAborted  error = syscall.ECONNABORTED
)

// Defaults for Config's zero fields.
const (
	DefaultBuffer     = 256 << 10
	DefaultMinRTO     = 200 * time.Millisecond // Linux's and Onload's floor; RFC 6298 says 1 s
	DefaultMaxRTO     = 60 * time.Second
	DefaultInitRTO    = time.Second // RFC 6298 section 2.1
	DefaultMaxRetries = 15
	DefaultSynRetries = 6
	DefaultTimeWait   = 60 * time.Second
	DefaultKeepProbes = 9
	defaultPeerMSS    = 536 // RFC 9293: when the peer sends no MSS option
	minPeerMSS        = 48  // the least MSS taken from a peer (Linux's tcp_min_snd_mss)
	maxBlocks         = 16  // out-of-order blocks kept, and SACK blocks on the scoreboard
	maxWindowShift    = 14  // RFC 7323 section 2.3
)

// Config is a connection's settings. The zero value of each field is
// documented beside it; MSS is required.
type Config struct {
	// MSS is the largest payload this side takes in one segment: the
	// interface's MTU less 40 bytes of IPv4 and TCP headers.
	MSS int
	// RecvBuf and SendBuf size the receive and send buffers in bytes,
	// rounded up to a power of two; 0 means DefaultBuffer.
	RecvBuf, SendBuf int
	// NoWindowScale, NoTimestamps and NoSACK stop the connection
	// offering (or accepting) those options; all three are on by default.
	NoWindowScale, NoTimestamps, NoSACK bool
	// Nagle holds back a small segment while data is unacknowledged
	// (RFC 896). Off by default: every Write leaves at once.
	Nagle bool
	// DelayedACK delays the ACK of in-order data by up to this long, or
	// until two full segments are unacknowledged; 0 (the default)
	// acknowledges every batch of received segments at once.
	DelayedACK time.Duration
	// MinRTO, MaxRTO and InitRTO bound and start the retransmission
	// timeout; 0 means DefaultMinRTO, DefaultMaxRTO and DefaultInitRTO.
	MinRTO, MaxRTO, InitRTO time.Duration
	// MaxRetries is how many timeouts in a row end a connection with
	// ErrTimedOut (SynRetries for the opening handshake); 0 means the
	// default.
	MaxRetries, SynRetries int
	// Keepalive, when positive, probes an idle established connection
	// after this long and every this long again, and ends it with
	// ErrTimedOut after KeepaliveProbes unanswered probes (0: 9).
	Keepalive       time.Duration
	KeepaliveProbes int
	// TimeWait is how long a connection that closed first stays in
	// TIME-WAIT; 0 means DefaultTimeWait.
	TimeWait time.Duration
}

// withDefaults returns c with its zero fields filled in.
func (c Config) withDefaults() Config {
	if c.RecvBuf <= 0 {
		c.RecvBuf = DefaultBuffer
	}
	if c.SendBuf <= 0 {
		c.SendBuf = DefaultBuffer
	}
	if c.MinRTO <= 0 {
		c.MinRTO = DefaultMinRTO
	}
	if c.MaxRTO <= 0 {
		c.MaxRTO = DefaultMaxRTO
	}
	if c.InitRTO <= 0 {
		c.InitRTO = DefaultInitRTO
	}
	if c.MaxRetries <= 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.SynRetries <= 0 {
		c.SynRetries = DefaultSynRetries
	}
	if c.TimeWait <= 0 {
		c.TimeWait = DefaultTimeWait
	}
	if c.KeepaliveProbes <= 0 {
		c.KeepaliveProbes = DefaultKeepProbes
	}
	if c.MSS <= 0 {
		c.MSS = defaultPeerMSS
	}
	return c
}

// Stats are a connection's counters.
type Stats struct {
	SegsIn, SegsOut   uint64 // segments received (accepted or not) and sent
	BytesIn, BytesOut uint64 // payload bytes delivered in order, and sent for the first time
	Retransmits       uint64 // segments sent again (timeouts, fast retransmits, recovery)
	FastRetransmits   uint64 // losses repaired on three duplicate ACKs
	Timeouts          uint64 // retransmission timer expiries
	OutOfOrder        uint64 // segments that arrived ahead of a hole
	DupAcks           uint64 // duplicate ACKs received
	WindowProbes      uint64 // zero-window and keepalive probes sent
	RstSent, RstRecv  uint64 // resets sent and accepted
	ChallengeAcks     uint64 // ACKs sent for an in-window RST or SYN (RFC 5961)
	DropOutOfWindow   uint64 // segments outside the receive window
	DropPAWS          uint64 // segments with an old timestamp (RFC 7323 PAWS)
	DropAckUnsent     uint64 // ACKs for data not yet sent
	DropOOOFull       uint64 // out-of-order data with no room to keep it
	DropNoAck         uint64 // segments without ACK in a synchronized state
	SRTT, RTO         time.Duration
	Cwnd, SndWnd      uint32
}

// oooBlock is a block of sequence space past a hole: [l, r).
type oooBlock struct{ l, r uint32 }

// blocks is a set of disjoint blocks sorted by sequence number: the data
// received past a hole, or (the scoreboard) what the peer reports it
// received past one.
type blocks struct {
	b [maxBlocks]oooBlock
	n int
}

func (s *blocks) all() []oooBlock { return s.b[:s.n] }

// add merges [l, r) with the blocks it overlaps or touches and returns the
// index of the block that holds it; false when it touches none and every
// slot is taken.
func (s *blocks) add(l, r uint32) (int, bool) {
	i := 0
	for i < s.n && seqLT(s.b[i].r, l) {
		i++
	}
	j := i
	for j < s.n && seqLEQ(s.b[j].l, r) {
		if seqLT(s.b[j].l, l) {
			l = s.b[j].l
		}
		if seqGT(s.b[j].r, r) {
			r = s.b[j].r
		}
		j++
	}
	switch {
	case j == i: // touches none: insert at i
		if s.n == maxBlocks {
			return 0, false
		}
		copy(s.b[i+1:s.n+1], s.b[i:s.n])
		s.n++
	case j > i+1: // several merged: close the gap
		copy(s.b[i+1:], s.b[j:s.n])
		s.n -= j - i - 1
	}
	s.b[i] = oooBlock{l, r}
	return i, true
}

// drop removes the first k blocks.
func (s *blocks) drop(k int) {
	copy(s.b[:], s.b[k:s.n])
	s.n -= k
}

// Conn is one TCP connection's protocol state.
type Conn struct {
	cfg   Config
	out   Output
	state State
	err   error // why it closed, when it did not close cleanly
	now   int64 // the time of the current call

	lport, rport uint16

	// Send side: sequence numbers, the peer's window, the buffer. Data
	// written and not yet acknowledged sits in sbuf from sndUna (or
	// iss+1 while the SYN is unacknowledged) to sndEnd.
	iss, sndUna, sndNxt, sndMax, sndEnd uint32
	sndWnd, sndWl1, sndWl2              uint32
	sndShift, rcvShift                  uint8
	mss                                 int // largest payload sent in one segment (after options)
	sbuf                                ring
	finQueued                           bool // the application closed its side: FIN at sndEnd

	// Receive side: received data from rcvRead to rcvNxt waits in rbuf
	// for the application; blocks past a hole are in ooo.
	irs, rcvNxt, rcvRead, rcvAdv uint32
	rbuf                         ring
	ooo                          blocks
	lastOOO                      int // index of the block most recently added to
	peerFin                      bool
	oooFin                       bool // a FIN past a hole, at oooFinSeq
	oooFinSeq                    uint32

	// Options negotiated.
	wsOK, tsOK, sackOK bool
	tsRecent           uint32
	tsOffset           uint32
	lastAckSent        uint32

	// Round-trip and retransmission (RFC 6298), congestion (RFC 5681,
	// RFC 6582).
	srtt, rttvar, rto time.Duration
	rttTiming         bool
	rttSeq            uint32
	rttStart          int64
	backoff           int
	cwnd, ssthresh    uint32
	caAcc             uint32
	dupAcks           int
	inRecovery        bool
	recover           uint32
	board             blocks // SACK scoreboard (sack.go)
	highRxt           uint32 // the end of the last hole sent again in this recovery

	// Timers: absolute deadlines, 0 when off.
	rtoAt, persistAt, twAt, kaAt, ackAt int64
	retryAt                             int64 // the output refused a segment: try again
	abortAt                             int64 // AbortAfter's deadline
	persistBackoff                      int
	kaProbes                            int

	ackNow   bool // an ACK is owed now
	holdAck  bool // Input's output: leave a pure ACK to Flush
	ackOwed  int  // bytes received and not yet acknowledged (delayed ACK)
	lastRecv int64

	hdr   frame.TCPSegment // reused for every segment sent
	stats Stats
}

// NewActive opens a connection to rport from lport: it sends the SYN
// and is in SYN-SENT.
func NewActive(cfg Config, out Output, lport, rport uint16, iss uint32, now int64) *Conn {
	c := newConn(cfg, out, lport, rport, iss, now)
	c.state = SynSent
	c.sbuf.alloc()
	c.rbuf.alloc()
	c.output()
	return c
}

// NewPassive answers syn, a SYN received by a listener on lport from
// rport: it sends the SYN-ACK and is in SYN-RECEIVED.
func NewPassive(cfg Config, out Output, lport, rport uint16, iss uint32, syn *frame.TCPSegment, now int64) *Conn {
	c := newConn(cfg, out, lport, rport, iss, now)
	c.state = SynReceived
	c.synReceived(syn)
	c.output()
	return c
}

func newConn(cfg Config, out Output, lport, rport uint16, iss uint32, now int64) *Conn {
	cfg = cfg.withDefaults()
	c := &Conn{cfg: cfg, out: out, lport: lport, rport: rport, now: now, lastRecv: now}
	c.sbuf = newRing(cfg.SendBuf)
	c.rbuf = newRing(cfg.RecvBuf)
	c.iss, c.sndUna, c.sndNxt, c.sndMax, c.sndEnd = iss, iss, iss, iss, iss+1
	c.recover = iss
	c.tsOffset = iss*2654435761 + 0x9e3779b9
	c.rto = cfg.InitRTO
	c.mss = min(cfg.MSS, defaultPeerMSS)
	c.cwnd = initialWindow(uint32(c.mss))
	c.ssthresh = 1 << 30
	if !cfg.NoWindowScale {
		for c.rcvShift < maxWindowShift && c.rbuf.size()>>c.rcvShift > 65535 {
			c.rcvShift++
		}
	}
	return c
}

// initialWindow is RFC 5681's initial window for a segment size.
func initialWindow(mss uint32) uint32 {
	switch {
	case mss > 2190:
		return 2 * mss
	case mss > 1095:
		return 3 * mss
	}
	return 4 * mss
}

// State is the connection's state.
func (c *Conn) State() State { return c.state }

// Err is why the connection ended, when it did not end cleanly.
func (c *Conn) Err() error { return c.err }

// Stats returns the connection's counters.
func (c *Conn) Stats() Stats {
	s := c.stats
	s.SRTT, s.RTO, s.Cwnd, s.SndWnd = c.srtt, c.rto, c.cwnd, c.sndWnd
	return s
}

// Readable is how many bytes Read would return now.
func (c *Conn) Readable() int {
	n := int(c.rcvNxt - c.rcvRead)
	if c.peerFin {
		n-- // the FIN's sequence number holds no byte
	}
	return n
}

// EOF reports whether the peer has closed its side and every byte it sent
// has been read.
func (c *Conn) EOF() bool { return c.peerFin && c.Readable() == 0 }

// Writable is how many bytes Write would take now.
func (c *Conn) Writable() int {
	if c.finQueued || !c.canSend() {
		return 0
	}
	return int(c.sbuf.size() - (c.sndEnd - c.sndStart()))
}

// Unacked is how many bytes (and SYN or FIN) are sent and not yet
// acknowledged, or queued and not yet sent.
func (c *Conn) Unacked() int { return int(c.sndEnd - c.sndUna) }

func (c *Conn) canSend() bool {
	switch c.state {
	case SynSent, SynReceived, Established, CloseWait:
		return true
	}
	return false
}

// sndStart is the sequence number of the first byte of data still in the
// send buffer.
func (c *Conn) sndStart() uint32 {
	if seqLT(c.sndUna, c.iss+1) {
		return c.iss + 1
	}
	if seqGT(c.sndUna, c.sndEnd) {
		return c.sndEnd
	}
	return c.sndUna
}

// Write queues as much of b as the send buffer takes and sends what the
// windows allow. It returns how much it took: 0 when the buffer is full.
// It fails once the connection can no longer send.
func (c *Conn) Write(b []byte, now int64) (int, error) { return c.Write2(b, nil, now) }

// Write2 is Write of a followed by b, queued together so that they leave
// in one segment when they fit one (a length prefix and its message).
func (c *Conn) Write2(a, b []byte, now int64) (int, error) {
	c.now = now
	if !c.canSend() || c.finQueued {
		if c.err != nil {
			return 0, c.err
		}
		return 0, syscall.EPIPE
	}
	c.sbuf.alloc()
	free := int(c.sbuf.size() - (c.sndEnd - c.sndStart()))
	n := 0
	for _, p := range [2][]byte{a, b} {
		if len(p) == 0 {
			continue
		}
		k := min(len(p), free-n)
		if k <= 0 {
			break
		}
		c.sbuf.put(c.sndEnd, p[:k])
		c.sndEnd += uint32(k)
		n += k
	}
	if n == 0 {
		return 0, nil
	}
	c.output()
	if c.kaAt != 0 {
		c.armKeepalive()
	}
	return n, nil
}

// Read copies received data into b and returns how much: 0, nil when none
// is waiting, io.EOF once the peer has closed and everything is read, and
// the connection's error after a reset. Reading may open the window the
// peer sees, and then sends a window update.
func (c *Conn) Read(b []byte, now int64) (int, error) {
	c.now = now
	n := min(len(b), c.Readable())
	if n <= 0 {
		if c.peerFin {
			return 0, io.EOF
		}
		if c.err != nil {
			return 0, c.err
		}
		return 0, nil
	}
	c.rbuf.get(c.rcvRead, b[:n])
	c.rcvRead += uint32(n)
	c.maybeWindowUpdate()
	return n, nil
}

// maybeWindowUpdate sends a pure ACK when reading has opened the window
// enough to matter to the peer: by two segments (or half the buffer, when
// that is less) and at least as much as the peer can still send (receiver
// silly-window avoidance, RFC 9293 section 3.8.6.2.2).
func (c *Conn) maybeWindowUpdate() {
	if !c.state.synchronized() || c.peerFin {
		return
	}
	edge := c.rcvRead + c.rbuf.size()
	grow := edge - c.rcvAdv
	if int32(grow) <= 0 {
		return
	}
	left := c.rcvAdv - c.rcvNxt
	if grow >= min(2*uint32(c.cfg.MSS), c.rbuf.size()/2) && grow >= left {
		c.sendAck()
	}
}

// Close closes the connection: a FIN follows the data written. Unread
// received data makes it an abort (RFC 2525 section 2.17): the peer is
// sent a RST.
func (c *Conn) Close(now int64) {
	c.now = now
	if c.Readable() > 0 {
		c.Abort(now)
		return
	}
	c.CloseWrite(now)
}

// CloseWrite closes the sending side only (a half-close): a FIN follows
// the data written, and the peer's data is still received.
func (c *Conn) CloseWrite(now int64) {
	c.now = now
	switch c.state {
	case SynSent:
		c.enter(Closed)
	case SynReceived:
		c.Abort(now)
	case Established:
		c.finQueued = true
		c.enter(FinWait1)
		c.output()
	case CloseWait:
		c.finQueued = true
		c.enter(LastAck)
		c.output()
	}
}

// Abort ends the connection at once, sending a RST when the peer knows of
// it.
func (c *Conn) Abort(now int64) {
	c.now = now
	switch c.state {
	case SynReceived, Established, FinWait1, FinWait2, CloseWait:
		c.sendRST(c.sndNxt)
	}
	if c.err == nil {
		c.err = ErrAborted
	}
	c.enter(Closed)
}

func (c *Conn) reset(err error) {
	c.err = err
	c.enter(Closed)
}

func (c *Conn) enter(s State) {
	c.state = s
	switch s {
	case Established:
		c.sbuf.alloc() // a passive open's buffers come with the handshake's end
		c.rbuf.alloc()
	case Closed:
		c.rtoAt, c.persistAt, c.twAt, c.kaAt, c.ackAt, c.retryAt, c.abortAt = 0, 0, 0, 0, 0, 0, 0
	case TimeWait:
		c.rtoAt, c.persistAt, c.kaAt, c.ackAt, c.retryAt, c.abortAt = 0, 0, 0, 0, 0, 0
		c.twAt = c.now + int64(c.cfg.TimeWait)
		// Everything sent is acknowledged: the send buffer goes, and the
		// receive buffer too unless the application has data to read.
		c.sbuf.b = nil
		if c.Readable() == 0 {
			c.rbuf.b = nil
		}
	default:
		if s != Established {
			c.kaAt = 0
		}
	}
}

// NextDeadline is the earliest timer's deadline, 0 when none runs.
func (c *Conn) NextDeadline() int64 {
	d := int64(0)
	for _, t := range [...]int64{c.rtoAt, c.persistAt, c.twAt, c.kaAt, c.ackAt, c.retryAt, c.abortAt} {
		if t != 0 && (d == 0 || t < d) {
			d = t
		}
	}
	return d
}

// AbortAfter bounds the rest of the connection's life short of
// TIME-WAIT: if it has not reached TIME-WAIT or CLOSED d from now, it is
// aborted. The stack sets it on a connection the application has closed,
// so that a peer gone quiet in FIN-WAIT-2 or a window that never opens
// cannot keep it forever.
func (c *Conn) AbortAfter(now int64, d time.Duration) {
	if c.state != Closed && c.state != TimeWait {
		c.abortAt = now + int64(d)
	}
}

// Tick runs the timers that have expired by now.
func (c *Conn) Tick(now int64) {
	c.now = now
	if c.abortAt != 0 && now >= c.abortAt {
		c.Abort(now)
		c.err = ErrTimedOut
		return
	}
	if c.twAt != 0 && now >= c.twAt {
		c.enter(Closed)
		return
	}
	if c.ackAt != 0 && now >= c.ackAt {
		c.ackAt = 0
		c.sendAck()
	}
	if c.rtoAt != 0 && now >= c.rtoAt {
		c.timeout()
	}
	if c.persistAt != 0 && now >= c.persistAt {
		c.persistAt = 0
		c.stats.WindowProbes++
		c.sendProbe()
		c.persistBackoff++
		c.armPersist()
	}
	if c.retryAt != 0 && now >= c.retryAt {
		c.retryAt = 0
		c.output()
	}
	if c.kaAt != 0 && now >= c.kaAt {
		if c.kaProbes >= c.cfg.KeepaliveProbes {
			c.reset(ErrTimedOut)
			return
		}
		c.kaProbes++
		c.stats.WindowProbes++
		c.sendProbe()
		c.kaAt = now + int64(c.cfg.Keepalive)
	}
}

// Flush sends the ACK the connection owes, if any: the stack calls it
// after a batch of segments, so that a batch is acknowledged once.
func (c *Conn) Flush(now int64) {
	c.now = now
	if c.ackNow {
		c.sendAck()
	}
}

// timeout is the retransmission timer's expiry (RFC 6298 section 5).
func (c *Conn) timeout() {
	if c.sndWnd == 0 && c.state.synchronized() {
		// The peer closed its window with data in flight: what is
		// outstanding cannot be sent again; probe the window instead,
		// without counting toward MaxRetries.
		c.rtoAt = 0
		c.sndNxt = c.sndUna
		if c.persistAt == 0 {
			c.armPersist()
		}
		return
	}
	c.stats.Timeouts++
	c.backoff++
	limit := c.cfg.MaxRetries
	if c.state == SynSent || c.state == SynReceived {
		limit = c.cfg.SynRetries
	}
	if c.backoff > limit {
		c.reset(ErrTimedOut)
		return
	}
	flight := c.sndMax - c.sndUna
	c.ssthresh = max(flight/2, 2*uint32(c.mss))
	c.cwnd = uint32(c.mss)
	c.caAcc = 0
	c.inRecovery, c.dupAcks = false, 0
	c.recover = c.sndMax
	c.board.n, c.highRxt = 0, c.sndUna // RFC 6675 section 5.1: start the scoreboard again
	c.rto = min(c.rto*2, c.cfg.MaxRTO)
	c.rttTiming = false
	c.sndNxt = c.sndUna // go back: resend from the first unacknowledged byte
	c.rtoAt = 0
	c.output()
	if c.rtoAt == 0 && c.sndUna != c.sndMax {
		c.rtoAt = c.now + int64(c.rto)
	}
}

func (c *Conn) armPersist() {
	d := c.rto << min(c.persistBackoff, 10)
	c.persistAt = c.now + int64(min(max(d, c.cfg.MinRTO), c.cfg.MaxRTO))
}

// Input processes one segment for the connection (RFC 9293 section
// 3.10.7). The stack has checked its checksum and that its ports are the
// connection's.
func (c *Conn) Input(s *frame.TCPSegment, now int64) {
	c.now = now
	c.stats.SegsIn++
	switch c.state {
	case Closed:
		return
	case SynSent:
		c.inputSynSent(s)
		return
	}
	segLen := uint32(len(s.Payload))
	if s.Flags&frame.TCPSyn != 0 {
		segLen++
	}
	if s.Flags&frame.TCPFin != 0 {
		segLen++
	}
	o := &s.Options
	rst := s.Flags&frame.TCPRst != 0
	if c.tsOK && o.HasTimestamp && !rst && int32(o.TSVal-c.tsRecent) < 0 {
		c.stats.DropPAWS++
		c.sendAck()
		return
	}
	if c.state == SynReceived && s.Flags&(frame.TCPSyn|frame.TCPAck|frame.TCPRst) == frame.TCPSyn|frame.TCPAck &&
		s.Seq == c.irs && s.Ack == c.iss+1 && c.sndMax == c.iss+1 {
		// Simultaneous open (RFC 9293 figure 7; Linux does the same): the
		// peer's SYN-ACK acknowledges our SYN. Its window, as in any SYN,
		// is not scaled.
		c.lastRecv = now
		if c.tsOK && o.HasTimestamp {
			c.tsRecent = o.TSVal
		}
		c.sndWnd, c.sndWl1, c.sndWl2 = uint32(s.Window), s.Seq, s.Ack
		c.ackedTo(s.Ack)
		c.enter(Established)
		c.output()
		c.armKeepalive()
		return
	}
	if c.state == SynReceived && s.Flags&(frame.TCPSyn|frame.TCPAck|frame.TCPRst) == frame.TCPSyn && s.Seq == c.irs {
		// The peer's SYN again: our SYN-ACK was lost. Send it again now,
		// as Linux does, rather than the bare ACK RFC 9293 would, which
		// leaves the peer waiting for our retransmission timer.
		c.sendSYN()
		return
	}
	if !c.acceptable(s.Seq, segLen) {
		c.stats.DropOutOfWindow++
		if !rst {
			if c.state == TimeWait && s.Flags&frame.TCPFin != 0 {
				// The peer's FIN again (its sequence number is below
				// RCV.NXT): acknowledge it and restart the wait.
				c.enter(TimeWait)
			}
			c.sendAck()
		}
		return
	}
	if rst {
		// RFC 5961 section 3.2: only a RST at exactly RCV.NXT resets;
		// one elsewhere in the window is answered by a challenge ACK.
		if s.Seq == c.rcvNxt {
			c.stats.RstRecv++
			if c.state == SynReceived {
				c.reset(ErrRefused)
			} else {
				c.reset(ErrReset)
			}
			return
		}
		c.challengeAck()
		return
	}
	if s.Flags&frame.TCPSyn != 0 {
		c.challengeAck() // RFC 5961 section 4
		return
	}
	if s.Flags&frame.TCPAck == 0 {
		c.stats.DropNoAck++
		return
	}
	c.lastRecv = now
	c.kaProbes = 0
	if c.tsOK && o.HasTimestamp && seqLEQ(s.Seq, c.lastAckSent) {
		c.tsRecent = o.TSVal
	}
	if c.state == SynReceived {
		if !seqLT(c.sndUna, s.Ack) || !seqLEQ(s.Ack, c.sndMax) {
			c.sendRSTFor(s)
			return
		}
		c.enter(Established)
		c.sndWnd = uint32(s.Window) << c.sndShift
		c.sndWl1, c.sndWl2 = s.Seq, s.Ack
	}
	if !c.processAck(s) {
		return
	}
	finAcked := c.finQueued && c.sndUna == c.sndEnd+1
	switch c.state {
	case FinWait1:
		if finAcked {
			c.enter(FinWait2)
		}
	case Closing:
		if finAcked {
			c.enter(TimeWait)
		}
	case LastAck:
		if finAcked {
			c.enter(Closed)
			return
		}
	case TimeWait:
		// A retransmitted FIN: acknowledge it again and restart the wait.
		if s.Flags&frame.TCPFin != 0 {
			c.enter(TimeWait)
			c.sendAck()
		}
		return
	}
	if len(s.Payload) > 0 {
		switch c.state {
		case Established, FinWait1, FinWait2:
			c.receive(s.Seq, s.Payload, s.Flags&frame.TCPFin != 0)
		}
	} else if s.Flags&frame.TCPFin != 0 {
		c.receiveFin(s.Seq)
	}
	// Data the ACK freed room for goes now, carrying the ACK; a pure
	// ACK waits for Flush at the end of the batch (or for the answer).
	c.holdAck = true
	c.output()
	c.holdAck = false
	c.armKeepalive()
}

// acceptable is RFC 9293's segment acceptability test. A segment at
// exactly RCV.NXT is let through even into a zero window, so that its ACK
// is processed; its data is then trimmed away.
func (c *Conn) acceptable(seq, n uint32) bool {
	wnd := c.rcvAdv - c.rcvNxt
	if seq == c.rcvNxt {
		return true
	}
	if wnd == 0 {
		return false
	}
	in := func(x uint32) bool { return seqLEQ(c.rcvNxt, x) && seqLT(x, c.rcvNxt+wnd) }
	if n == 0 {
		return in(seq)
	}
	return in(seq) || in(seq+n-1)
}

func (c *Conn) challengeAck() {
	c.stats.ChallengeAcks++
	c.sendAck()
}

// inputSynSent handles a segment in SYN-SENT (RFC 9293 section 3.10.7.3).
func (c *Conn) inputSynSent(s *frame.TCPSegment) {
	ackOK := false
	if s.Flags&frame.TCPAck != 0 {
		if seqLEQ(s.Ack, c.iss) || seqGT(s.Ack, c.sndMax) {
			if s.Flags&frame.TCPRst == 0 {
				c.sendRSTFor(s)
			}
			return
		}
		ackOK = true
	}
	if s.Flags&frame.TCPRst != 0 {
		if ackOK {
			c.stats.RstRecv++
			c.reset(ErrRefused)
		}
		return
	}
	if s.Flags&frame.TCPSyn == 0 {
		return
	}
	c.synReceived(s)
	if !ackOK {
		// Simultaneous open: answer with a SYN-ACK.
		c.enter(SynReceived)
		c.sndNxt = c.iss
		c.output()
		return
	}
	c.lastRecv = c.now
	c.sndWl1, c.sndWl2 = s.Seq, s.Ack
	c.ackedTo(s.Ack)
	c.enter(Established)
	c.ackNow = true
	c.output()
	if c.ackNow {
		c.sendAck()
	}
	c.armKeepalive()
}

// synReceived takes the peer's SYN: its sequence number, window and
// options.
func (c *Conn) synReceived(s *frame.TCPSegment) {
	c.irs = s.Seq
	c.rcvNxt, c.rcvRead = s.Seq+1, s.Seq+1
	c.rcvAdv = c.rcvNxt + min(c.rbuf.size(), 65535)
	o := &s.Options
	peerMSS := int(o.MSS)
	if peerMSS == 0 {
		peerMSS = defaultPeerMSS
	}
	// A tiny MSS option would leave no room for data once the timestamps
	// are counted (a zero MSS stalls output in a loop).
	peerMSS = max(peerMSS, minPeerMSS)
	c.wsOK = o.HasWScale && !c.cfg.NoWindowScale
	if c.wsOK {
		c.sndShift = min(o.WScale, maxWindowShift)
	} else {
		c.sndShift, c.rcvShift = 0, 0
	}
	c.tsOK = o.HasTimestamp && !c.cfg.NoTimestamps
	if c.tsOK {
		c.tsRecent = o.TSVal
	}
	c.sackOK = o.SACKPermitted && !c.cfg.NoSACK
	c.mss = min(peerMSS, c.cfg.MSS)
	if c.tsOK {
		c.mss -= 12
	}
	c.cwnd = initialWindow(uint32(c.mss))
	c.sndWnd = uint32(s.Window) // never scaled in a SYN
}

// processAck takes the acknowledgment and window of a segment in a
// synchronized state; false means drop the rest of the segment.
func (c *Conn) processAck(s *frame.TCPSegment) bool {
	ack := s.Ack
	if seqGT(ack, c.sndMax) {
		c.stats.DropAckUnsent++
		c.sendAck()
		return false
	}
	wnd := uint32(s.Window) << c.sndShift
	if seqLT(ack, c.sndUna) {
		return true // an old duplicate: its data may still be new
	}
	if c.sackOK && s.Options.NSACK > 0 {
		c.takeSACK(&s.Options)
	}
	oldWnd := c.sndWnd
	if seqLT(c.sndWl1, s.Seq) || (c.sndWl1 == s.Seq && seqLEQ(c.sndWl2, ack)) {
		c.sndWnd, c.sndWl1, c.sndWl2 = wnd, s.Seq, ack
		if wnd > 0 {
			c.persistAt, c.persistBackoff = 0, 0
		}
	}
	if ack == c.sndUna {
		// A duplicate ACK (RFC 5681): no data, same window, data
		// outstanding. One that carries SACK blocks reports a segment
		// received past a hole whatever its window says (a receiver that
		// grows its buffer changes the window in every ACK).
		if len(s.Payload) == 0 && s.Flags&(frame.TCPSyn|frame.TCPFin) == 0 &&
			(wnd == oldWnd || c.sackOK && s.Options.NSACK > 0) && c.sndMax != c.sndUna {
			c.dupAck()
		}
		return true
	}
	acked := c.dataIn(c.sndUna, ack) // data only: a SYN or FIN acknowledged grows no window
	c.ackedTo(ack)
	c.boardPrune()
	c.dupAcks = 0 // a count that outlived a recovery would never reach three again
	if c.inRecovery {
		if seqGEQ(ack, c.recover) {
			// Full acknowledgment (RFC 6582 section 3.2 step 3).
			c.cwnd = min(c.ssthresh, max(c.sndMax-c.sndUna, uint32(c.mss))+uint32(c.mss))
			c.inRecovery = false
		} else if c.sackOK {
			c.sackRecover() // the scoreboard says which holes are left
			c.rtoAt = c.now + int64(c.rto)
		} else {
			// Partial: the next hole is lost too; resend it now.
			c.retransmitFirst()
			if acked >= uint32(c.mss) {
				c.cwnd -= min(c.cwnd-uint32(c.mss), acked-uint32(c.mss))
			}
			c.rtoAt = c.now + int64(c.rto)
		}
		return true
	}
	c.dupAcks = 0
	if c.cwnd < c.ssthresh {
		c.cwnd += min(acked, 2*uint32(c.mss)) // slow start, RFC 3465's L=2
	} else {
		c.caAcc += acked
		if c.caAcc >= c.cwnd {
			c.caAcc -= c.cwnd
			c.cwnd += uint32(c.mss)
		}
	}
	c.cwnd = min(c.cwnd, 1<<30)
	return true
}

// ackedTo moves SND.UNA to ack: a round-trip sample, the timer, the
// backoff.
func (c *Conn) ackedTo(ack uint32) {
	if c.rttTiming && seqGT(ack, c.rttSeq) {
		c.rttTiming = false
		c.sample(time.Duration(c.now - c.rttStart))
	}
	c.stats.BytesOut += uint64(c.dataIn(c.sndUna, ack))
	c.sndUna = ack
	if seqLT(c.sndNxt, ack) {
		c.sndNxt = ack
	}
	c.backoff = 0
	if c.sndUna == c.sndMax {
		c.rtoAt = 0
	} else {
		c.rtoAt = c.now + int64(c.rto)
	}
}

// dataIn counts the data bytes (not SYN or FIN) in [from, to).
func (c *Conn) dataIn(from, to uint32) uint32 {
	lo, hi := from, to
	if seqLT(lo, c.iss+1) {
		lo = c.iss + 1
	}
	if seqGT(hi, c.sndEnd) {
		hi = c.sndEnd
	}
	if seqGEQ(lo, hi) {
		return 0
	}
	return hi - lo
}

// sample updates SRTT, RTTVAR and RTO with one measurement (RFC 6298
// section 2).
func (c *Conn) sample(r time.Duration) {
	if r <= 0 {
		r = time.Microsecond
	}
	if c.srtt == 0 {
		c.srtt, c.rttvar = r, r/2
	} else {
		d := c.srtt - r
		if d < 0 {
			d = -d
		}
		c.rttvar = (3*c.rttvar + d) / 4
		c.srtt = (7*c.srtt + r) / 8
	}
	c.rto = min(max(c.srtt+max(time.Millisecond, 4*c.rttvar), c.cfg.MinRTO), c.cfg.MaxRTO)
}

// dupAck counts a duplicate ACK; the third starts fast retransmit and
// NewReno recovery (RFC 6582).
func (c *Conn) dupAck() {
	c.stats.DupAcks++
	c.dupAcks++
	if c.inRecovery {
		if c.sackOK {
			c.sackRecover()
			return
		}
		c.cwnd += uint32(c.mss)
		return
	}
	if c.dupAcks != 3 || seqLT(c.sndUna, c.recover) {
		return
	}
	flight := c.sndMax - c.sndUna
	c.ssthresh = max(flight/2, 2*uint32(c.mss))
	c.recover = c.sndMax
	c.inRecovery = true
	c.stats.FastRetransmits++
	c.retransmitFirst()
	if c.sackOK {
		// RFC 6675: the window is the new threshold; the pipe, not
		// inflation by duplicate ACKs, says when more may go.
		c.cwnd = c.ssthresh
		c.highRxt = min(c.sndUna+uint32(c.mss), c.sndMax)
		c.sackRecover()
		return
	}
	c.cwnd = c.ssthresh + 3*uint32(c.mss)
}

// retransmitFirst sends the first unacknowledged segment again.
func (c *Conn) retransmitFirst() {
	c.rttTiming = false // Karn: no sample from a resent range
	c.sendFrom(c.sndUna, uint32(c.mss))
}

// receive takes the data of an acceptable segment at seq (RFC 9293
// section 3.10.7.4, seventh step), with its FIN when fin.
func (c *Conn) receive(seq uint32, p []byte, fin bool) {
	if seqLT(seq, c.rcvNxt) {
		d := c.rcvNxt - seq
		if d >= uint32(len(p)) {
			if fin {
				c.receiveFin(seq + uint32(len(p)))
			} else {
				c.ackNow = true // a duplicate: acknowledge again
			}
			return
		}
		p, seq = p[d:], c.rcvNxt
	}
	edge := c.rcvRead + c.rbuf.size() // the buffer's end, at or past rcvAdv
	if seqGT(seq+uint32(len(p)), edge) {
		if seqGEQ(seq, edge) {
			c.stats.DropOutOfWindow++
			c.ackNow = true
			return
		}
		p, fin = p[:edge-seq], false
	}
	c.rbuf.alloc()
	if seq != c.rcvNxt {
		c.stats.OutOfOrder++
		if !c.addOOO(seq, seq+uint32(len(p))) {
			c.stats.DropOOOFull++
		} else {
			c.rbuf.put(seq, p)
			if fin {
				c.oooFin, c.oooFinSeq = true, seq+uint32(len(p))
			}
		}
		c.sendAck() // a duplicate ACK at once, with SACK blocks
		return
	}
	c.rbuf.put(seq, p)
	c.rcvNxt += uint32(len(p))
	c.stats.BytesIn += uint64(len(p))
	filled := c.ooo.n > 0
	c.mergeOOO()
	if fin {
		c.receiveFin(c.rcvNxt)
		return
	}
	if c.oooFin && c.rcvNxt == c.oooFinSeq {
		c.oooFin = false
		c.receiveFin(c.rcvNxt)
		return
	}
	c.ackOwed += len(p)
	if filled || c.cfg.DelayedACK == 0 || c.ackOwed >= 2*c.cfg.MSS {
		c.ackNow = true
		c.ackAt = 0
	} else if c.ackAt == 0 {
		c.ackAt = c.now + int64(c.cfg.DelayedACK)
	}
}

// addOOO records [l, r) as received past a hole; false when it fits in
// no block and no slot is free.
func (c *Conn) addOOO(l, r uint32) bool {
	i, ok := c.ooo.add(l, r)
	if ok {
		c.lastOOO = i
	}
	return ok
}

// mergeOOO moves RCV.NXT over the blocks it has reached.
func (c *Conn) mergeOOO() {
	k := 0
	for _, b := range c.ooo.all() {
		if seqGT(b.l, c.rcvNxt) {
			break
		}
		if seqGT(b.r, c.rcvNxt) {
			c.stats.BytesIn += uint64(b.r - c.rcvNxt)
			c.rcvNxt = b.r
		}
		k++
	}
	if k > 0 {
		c.ooo.drop(k)
		c.lastOOO = 0
	}
}

// receiveFin takes a FIN at seq.
func (c *Conn) receiveFin(seq uint32) {
	if seq != c.rcvNxt {
		if seqGT(seq, c.rcvNxt) {
			c.oooFin, c.oooFinSeq = true, seq
		}
		c.ackNow = true
		return
	}
	if c.peerFin {
		c.ackNow = true
		return
	}
	c.rcvNxt++
	c.peerFin = true
	c.sendAck()
	switch c.state {
	case SynReceived, Established:
		c.enter(CloseWait)
	case FinWait1:
		if c.finQueued && c.sndUna == c.sndEnd+1 {
			c.enter(TimeWait)
		} else {
			c.enter(Closing)
		}
	case FinWait2:
		c.enter(TimeWait)
	}
}

// armKeepalive runs the keepalive timer while the connection is
// established with nothing unacknowledged (the retransmission timer
// watches the peer otherwise), and stops it else.
func (c *Conn) armKeepalive() {
	if c.cfg.Keepalive > 0 && c.state == Established && c.sndUna == c.sndMax {
		c.kaAt = c.lastRecv + int64(c.cfg.Keepalive)
	} else {
		c.kaAt = 0
	}
}

// output sends what the windows allow: the SYN while it is unacknowledged,
// new data, the FIN after the data; then arms the timers.
func (c *Conn) output() {
	switch c.state {
	case SynSent, SynReceived:
		if c.sndNxt == c.iss {
			if !c.sendSYN() {
				c.refused()
				return
			}
			c.sndNxt = c.iss + 1
			c.sndMax = seqMax(c.sndMax, c.sndNxt)
			if c.rtoAt == 0 {
				c.rtoAt = c.now + int64(c.rto)
			}
		}
		return
	case Established, CloseWait, FinWait1, Closing, LastAck:
	default:
		if c.ackNow && !c.holdAck {
			c.sendAck()
		}
		return
	}
	for {
		win := min(c.sndWnd, c.cwnd)
		inflight := c.sndNxt - c.sndUna
		if c.inRecovery && c.sackOK {
			inflight = min(inflight, c.pipe()) // lost and reported data are not in the network
		}
		avail := c.sndEnd - c.sndNxt
		if int32(avail) <= 0 || inflight >= win {
			break
		}
		n := min(avail, uint32(c.mss), win-inflight)
		if n < avail && n < uint32(c.mss) && inflight > 0 {
			break // a window-limited runt: wait for the ACK (sender SWS avoidance)
		}
		if c.cfg.Nagle && n < uint32(c.mss) && inflight > 0 {
			break
		}
		if !c.sendFrom(c.sndNxt, n) {
			c.refused()
			return
		}
	}
	if c.finQueued && c.sndNxt == c.sndEnd && !c.sendFrom(c.sndNxt, 0) { // the FIN alone
		c.refused()
	}
	if c.sndWnd == 0 && c.sndNxt == c.sndUna && (c.sndEnd != c.sndNxt || c.finQueued && c.sndNxt == c.sndEnd) {
		if c.persistAt == 0 && c.rtoAt == 0 {
			c.armPersist()
		}
	}
	if c.ackNow && !c.holdAck {
		c.sendAck()
	}
}

// refused notes that the output took no segment (every transmit buffer
// in flight): with nothing in flight no ACK will call output again, so a
// short timer does.
func (c *Conn) refused() {
	if c.retryAt == 0 {
		c.retryAt = c.now + int64(retryAfter)
	}
}

// retryAfter is how soon output is tried again after the output refused
// a segment.
const retryAfter = 50 * time.Microsecond

// sendFrom sends one segment from seq: up to n bytes of data (n 0: the
// FIN alone), the FIN when the segment reaches it, the SYN when seq is
// the ISS. It advances SND.NXT and times the segment.
func (c *Conn) sendFrom(seq, n uint32) bool {
	if seq == c.iss {
		return c.sendSYN()
	}
	if avail := c.sndEnd - seq; int32(avail) < 0 {
		n = 0
	} else {
		n = min(n, avail)
	}
	flags := frame.TCPAck
	if n > 0 && seq+n == c.sndEnd {
		flags |= frame.TCPPsh
	}
	fin := c.finQueued && seq+n == c.sndEnd
	if fin {
		flags |= frame.TCPFin
	}
	if n == 0 && !fin {
		return true
	}
	var p1, p2 []byte
	if n > 0 {
		p1, p2 = c.sbuf.span(seq, int(n))
	}
	if !c.send(flags, seq, p1, p2) {
		return false
	}
	end := seq + n
	if fin {
		end++
	}
	if seqLT(seq, c.sndMax) {
		c.stats.Retransmits++
	} else if !c.rttTiming {
		c.rttTiming, c.rttSeq, c.rttStart = true, seq, c.now
	}
	if seqGT(end, c.sndNxt) {
		c.sndNxt = end
	}
	c.sndMax = seqMax(c.sndMax, c.sndNxt)
	if c.rtoAt == 0 {
		c.rtoAt = c.now + int64(c.rto)
	}
	return true
}

// sendSYN sends the SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED) with the
// options offered or agreed.
func (c *Conn) sendSYN() bool {
	h := &c.hdr
	*h = frame.TCPSegment{SrcPort: c.lport, DstPort: c.rport, Seq: c.iss, Flags: frame.TCPSyn}
	o := &h.Options
	o.MSS = uint16(min(c.cfg.MSS, 65535))
	active := c.state == SynSent
	if active {
		o.HasWScale, o.WScale = !c.cfg.NoWindowScale, c.rcvShift
		o.SACKPermitted = !c.cfg.NoSACK
		o.HasTimestamp = !c.cfg.NoTimestamps
	} else {
		h.Flags |= frame.TCPAck
		h.Ack = c.rcvNxt
		o.HasWScale, o.WScale = c.wsOK, c.rcvShift
		o.SACKPermitted = c.sackOK
		o.HasTimestamp = c.tsOK
		o.TSEcr = c.tsRecent
	}
	if o.HasTimestamp {
		o.TSVal = c.tsNow()
	}
	h.Window = uint16(min(c.rbuf.size(), 65535))
	if c.sndMax != c.iss {
		c.stats.Retransmits++
	}
	ok := c.out.Send(h, nil, nil)
	if ok {
		c.stats.SegsOut++
		if !active {
			c.rcvAdv = c.rcvNxt + uint32(h.Window)
			c.lastAckSent = c.rcvNxt
		}
	}
	return ok
}

func (c *Conn) tsNow() uint32 { return uint32(c.now/int64(time.Millisecond)) + c.tsOffset }

// window returns the window field to send and moves RCV.ADV to the edge
// it advertises; the edge never moves left.
func (c *Conn) window() uint16 {
	free := c.rbuf.size() - (c.rcvNxt - c.rcvRead)
	w := min(free>>c.rcvShift, 65535)
	edge := c.rcvNxt + w<<c.rcvShift
	if seqLT(edge, c.rcvAdv) {
		// Keep the edge: advertise what is left of the old window.
		return uint16(min((c.rcvAdv-c.rcvNxt+(1<<c.rcvShift)-1)>>c.rcvShift, 65535))
	}
	c.rcvAdv = edge
	return uint16(w)
}

// send builds the common header of a synchronized-state segment and hands
// it to the output.
func (c *Conn) send(flags uint8, seq uint32, p1, p2 []byte) bool {
	h := &c.hdr
	h.SrcPort, h.DstPort, h.Seq, h.Flags, h.Urgent = c.lport, c.rport, seq, flags, 0
	h.Ack = 0
	h.Options = frame.TCPOptions{}
	if flags&frame.TCPAck != 0 {
		h.Ack = c.rcvNxt
		h.Window = c.window()
	} else {
		h.Window = 0
	}
	o := &h.Options
	if c.tsOK {
		o.HasTimestamp, o.TSVal, o.TSEcr = true, c.tsNow(), c.tsRecent
	}
	if c.sackOK && c.ooo.n > 0 && flags&frame.TCPAck != 0 {
		most := frame.MaxSACKBlocks
		if c.tsOK {
			most = 3 // 12 bytes of timestamps leave room for three
		}
		// The block most recently added to first (RFC 2018 section 4).
		o.SACK[0] = frame.SACKBlock{Left: c.ooo.b[c.lastOOO].l, Right: c.ooo.b[c.lastOOO].r}
		o.NSACK = 1
		for i := 0; i < c.ooo.n && o.NSACK < most; i++ {
			if i != c.lastOOO {
				o.SACK[o.NSACK] = frame.SACKBlock{Left: c.ooo.b[i].l, Right: c.ooo.b[i].r}
				o.NSACK++
			}
		}
	}
	if !c.out.Send(h, p1, p2) {
		return false
	}
	c.stats.SegsOut++
	if flags&frame.TCPAck != 0 {
		c.lastAckSent = c.rcvNxt
		c.ackNow, c.ackOwed, c.ackAt = false, 0, 0
	}
	if flags&frame.TCPRst != 0 {
		c.stats.RstSent++
	}
	return true
}

// sendAck sends a pure ACK now (or leaves ackNow set when the output is
// full, for the next call).
func (c *Conn) sendAck() {
	c.ackNow = true
	if c.state == SynSent || c.state == Closed {
		return
	}
	c.send(frame.TCPAck, c.sndNxt, nil, nil)
}

// sendProbe sends a segment one below SND.UNA, which the peer must
// acknowledge with its current window: the zero-window probe and
// keepalive of RFC 9293 section 3.8.6.
func (c *Conn) sendProbe() {
	c.send(frame.TCPAck, c.sndUna-1, nil, nil)
}

func (c *Conn) sendRST(seq uint32) {
	c.send(frame.TCPRst|frame.TCPAck, seq, nil, nil)
}

// sendRSTFor answers an unacceptable ACK with a RST at its ACK number.
func (c *Conn) sendRSTFor(s *frame.TCPSegment) {
	h := &c.hdr
	*h = frame.TCPSegment{SrcPort: c.lport, DstPort: c.rport, Seq: s.Ack, Flags: frame.TCPRst}
	if c.out.Send(h, nil, nil) {
		c.stats.SegsOut++
		c.stats.RstSent++
	}
}

// RST fills h with the reset RFC 9293 sends for seg when no connection
// exists for it (section 3.10.7.1): the stack answers with it.
func RST(seg *frame.TCPSegment, h *frame.TCPSegment) {
	*h = frame.TCPSegment{SrcPort: seg.DstPort, DstPort: seg.SrcPort}
	if seg.Flags&frame.TCPAck != 0 {
		h.Seq, h.Flags = seg.Ack, frame.TCPRst
		return
	}
	n := uint32(len(seg.Payload))
	if seg.Flags&frame.TCPSyn != 0 {
		n++
	}
	if seg.Flags&frame.TCPFin != 0 {
		n++
	}
	h.Ack, h.Flags = seg.Seq+n, frame.TCPRst|frame.TCPAck
}
