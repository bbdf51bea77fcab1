package latency

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/lowlat/lowlat/bypass"
)

// EchoServer answers requests and counts what it could not answer. One
// EchoServer may serve several connections at once; its counters are
// shared. The zero value serves the Lowlat wire format.
type EchoServer struct {
	// Wire is the message format; nil means Lowlat.
	Wire Wire

	echoed     atomic.Uint64
	unanswered atomic.Uint64
	floods     floodCounts
	sendErrors atomic.Uint64
	garbage    [numKinds]atomic.Uint64
}

// Kinds of garbage an EchoServer counts.
const (
	kindEmpty = iota
	kindShort
	kindMagic
	kindVersion
	kindLength
	kindOversize
	kindNotRequest
	kindOther
	numKinds
)

// EchoStats are an EchoServer's counters.
type EchoStats struct {
	Echoed     uint64 // requests answered
	Unanswered uint64 // valid requests that asked for no answer
	Flooded    uint64 // one-way flood messages counted (latprobe rate)
	SendErrors uint64 // answers the transport refused to send

	// Garbage: messages dropped without an answer, by reason.
	Empty      uint64 // zero bytes
	Short      uint64 // shorter than the header
	BadMagic   uint64 // not a latprobe message
	BadVersion uint64 // a version this server does not speak
	BadLength  uint64 // length field disagrees with the size received
	Oversize   uint64 // longer than the wire's maximum message
	NotRequest uint64 // a reply, not a request
	Other      uint64 // rejected by the wire format for another reason
}

// Garbage is the number of messages dropped as garbage.
func (s EchoStats) Garbage() uint64 {
	return s.Empty + s.Short + s.BadMagic + s.BadVersion + s.BadLength + s.Oversize + s.NotRequest + s.Other
}

// Stats returns a snapshot of the counters.
func (s *EchoServer) Stats() EchoStats {
	g := func(k int) uint64 { return s.garbage[k].Load() }
	return EchoStats{
		Echoed:     s.echoed.Load(),
		Unanswered: s.unanswered.Load(),
		Flooded:    s.floods.total.Load(),
		SendErrors: s.sendErrors.Load(),
		Empty:      g(kindEmpty),
		Short:      g(kindShort),
		BadMagic:   g(kindMagic),
		BadVersion: g(kindVersion),
		BadLength:  g(kindLength),
		Oversize:   g(kindOversize),
		NotRequest: g(kindNotRequest),
		Other:      g(kindOther),
	}
}

func (s *EchoServer) wire() Wire {
	if s.Wire == nil {
		return Lowlat
	}
	return s.Wire
}

func (s *EchoServer) countGarbage(err error) {
	k := kindOther
	switch err {
	case ErrEmpty:
		k = kindEmpty
	case ErrShort, ErrSockperfShort:
		k = kindShort
	case ErrMagic:
		k = kindMagic
	case ErrVersion:
		k = kindVersion
	case ErrLength:
		k = kindLength
	case ErrTooLong, bypass.ErrMessageTooLong:
		k = kindOversize
	case ErrNotRequest:
		k = kindNotRequest
	}
	s.garbage[k].Add(1)
}

// ServePacket answers every request that arrives on c, from whoever sent
// it, until c is closed; then it returns nil. (ServePoller serves several
// connections from one goroutine.) Garbage is counted and
// dropped. It returns early only when reading fails for another reason.
// It allocates one buffer, one byte longer than the largest message so an
// oversized datagram is seen as such, and nothing per message. A request
// that asks for the server's stage (FlagStages) gets it in the reply, from
// the request's receive stamp when c has Timestamps on.
func (s *EchoServer) ServePacket(c bypass.PacketConn) error {
	w := s.wire()
	limit := w.MaxSize()
	msg := []bypass.Message{{Buf: make([]byte, limit+1)}}
	buf := msg[0].Buf
	for {
		_, err := c.ReadBatch(msg)
		n, from := msg[0].N, msg[0].Addr
		if err != nil {
			if errors.Is(err, bypass.ErrClosed) {
				return nil
			}
			if errors.Is(err, bypass.ErrTimeout) {
				continue
			}
			return err
		}
		reply := s.answer(w, buf[:n], limit)
		if reply == nil {
			continue
		}
		putServerStage(reply, msg[0].Stamp)
		if _, err := c.WriteTo(reply, from); err != nil {
			if errors.Is(err, bypass.ErrClosed) {
				return nil
			}
			s.sendErrors.Add(1)
			continue
		}
		s.echoed.Add(1)
	}
}

// pollBatch is how many datagrams ServePoller takes from one Poll.
const pollBatch = 16

// pollTick bounds how long ServePoller waits in one Poll, so that it sees
// its context end even when no datagram comes.
const pollTick = 100 * time.Millisecond

// ServePoller answers every request that arrives on any connection p
// serves, from whoever sent it, through the connection it came on, all
// from the calling goroutine. It returns nil once ctx is done or a
// connection is closed, and early only when polling fails for another
// reason. It does not close p or its connections: stop it by ending ctx
// (it looks at ctx at least every 100 ms) or by closing a connection.
// Garbage is counted and dropped as by ServePacket. It
// allocates one buffer per message of a batch, each one byte longer than
// the largest message, and nothing per message.
func (s *EchoServer) ServePoller(ctx context.Context, p *bypass.Poller) error {
	w := s.wire()
	limit := w.MaxSize()
	msgs := make([]bypass.PollMessage, pollBatch)
	for i := range msgs {
		msgs[i].Buf = make([]byte, limit+1)
	}
	done := ctx.Done()
	stopped := func() bool { return closed(done) }
	for i := uint64(0); ; i++ {
		if i&63 == 0 && stopped() {
			return nil
		}
		// A failing connection may leave datagrams already taken from the
		// others: answer those first.
		n, err := p.Poll(msgs, pollTick)
		for j := range n {
			m := &msgs[j]
			reply := s.answer(w, m.Buf[:m.N], limit)
			if reply == nil {
				continue
			}
			putServerStage(reply, m.Stamp)
			if _, err := m.Conn.WriteTo(reply, m.Addr); err != nil {
				if errors.Is(err, bypass.ErrClosed) {
					return nil
				}
				s.sendErrors.Add(1)
				continue
			}
			s.echoed.Add(1)
		}
		switch {
		case err == nil:
		case errors.Is(err, bypass.ErrTimeout):
			if stopped() {
				return nil
			}
		case errors.Is(err, bypass.ErrClosed):
			return nil
		default:
			return err
		}
	}
}

// answer turns one received message into the reply to send, or nil when
// there is none: oversized and malformed messages are counted as garbage,
// messages that ask for no reply (sockperf's under-load traffic) as
// unanswered.
func (s *EchoServer) answer(w Wire, msg []byte, limit int) []byte {
	if len(msg) > limit {
		s.countGarbage(ErrTooLong)
		return nil
	}
	if reply, ok := s.flood(msg); ok {
		return reply
	}
	reply, err := w.Answer(msg)
	if err != nil {
		s.countGarbage(err)
		return nil
	}
	if reply == nil {
		s.unanswered.Add(1)
	}
	return reply
}

// ServeStream answers every framed request on st until the peer closes the
// stream or st is closed; then it returns nil. Garbage is counted and
// dropped. It does not close st.
func (s *EchoServer) ServeStream(st bypass.Stream) error {
	w := s.wire()
	limit := w.MaxSize()
	buf := make([]byte, limit+1)
	for {
		n, err := st.ReadMsg(buf)
		if err != nil {
			switch {
			case err == io.EOF, errors.Is(err, bypass.ErrClosed):
				return nil
			case err == bypass.ErrMessageTooLong:
				s.countGarbage(err)
				continue
			case errors.Is(err, bypass.ErrTimeout):
				continue
			}
			return err
		}
		reply := s.answer(w, buf[:n], limit)
		if reply == nil {
			continue
		}
		if err := st.WriteMsg(reply); err != nil {
			if errors.Is(err, bypass.ErrClosed) {
				return nil
			}
			return err
		}
		s.echoed.Add(1)
	}
}
