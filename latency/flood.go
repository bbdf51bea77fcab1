package latency

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/lowlat/lowlat/bypass"
)

// One-way floods: how market-data receivers are sized. A client sends
// lowlat messages flagged FlagFlood as fast as it can, or at a rate, and
// the echo server counts them without answering: how many arrived and the
// highest sequence number seen (the difference is what was lost on the way
// or dropped by the server's stack). At the end the client asks for the
// counts with FlagReport until the server answers.
const (
	// FlagFlood marks a message the server counts and does not answer.
	FlagFlood uint8 = 1 << 2
	// FlagReport asks the server for its flood counts; the reply carries
	// them after the header: received, then the highest sequence number,
	// eight bytes each.
	FlagReport uint8 = 1 << 3
)

// MinFloodReportSize is the smallest message that can carry a report.
const MinFloodReportSize = HeaderLen + 16

// floodCounts is what an EchoServer counts of a flood. A flood's first
// message (sequence number 1) starts the counts again.
type floodCounts struct {
	received atomic.Uint64
	highest  atomic.Uint64
	total    atomic.Uint64 // every flood message ever counted
}

// flood handles a flood or report message; it reports false for any other.
func (s *EchoServer) flood(msg []byte) (reply []byte, handled bool) {
	if len(msg) < HeaderLen || binary.BigEndian.Uint32(msg) != Magic || msg[5]&(FlagFlood|FlagReport) == 0 || msg[5]&FlagReply != 0 {
		return nil, false
	}
	seq := binary.BigEndian.Uint64(msg[8:16])
	if msg[5]&FlagReport != 0 {
		if len(msg) < MinFloodReportSize {
			s.countGarbage(ErrShort)
			return nil, true
		}
		msg[5] |= FlagReply
		binary.BigEndian.PutUint64(msg[HeaderLen:], s.floods.received.Load())
		binary.BigEndian.PutUint64(msg[HeaderLen+8:], s.floods.highest.Load())
		return msg, true
	}
	if seq == 1 {
		s.floods.received.Store(0)
		s.floods.highest.Store(0)
	}
	s.floods.received.Add(1)
	s.floods.total.Add(1)
	if seq > s.floods.highest.Load() {
		s.floods.highest.Store(seq)
	}
	return nil, true
}

// FloodConfig shapes a flood.
type FloodConfig struct {
	Size     int           // message size; zero means DefaultSize
	MPS      int           // messages per second; zero floods as fast as the connection takes them
	Duration time.Duration // how long to send
	Batch    int           // messages per WriteBatch when flooding; zero means 32
}

// FloodResult is what a flood measured: the client's count, the server's
// counts, and the rates over the sending time.
type FloodResult struct {
	Sent        uint64
	Received    uint64 // the server's count
	Lost        uint64 // sent but never counted by the server
	Elapsed     time.Duration
	MPSSent     float64
	MPSReceived float64
}

// ErrNoFloodReport is returned when the server never answered a report
// request: it is not a latprobe server, or it is gone.
var ErrNoFloodReport = errors.New("latency: the server did not report its flood counts")

// Flood sends cfg.Duration's worth of flood messages from c to peer and
// asks the server for its counts. It allocates nothing per message.
func Flood(ctx context.Context, c bypass.PacketConn, peer netip.AddrPort, cfg FloodConfig) (FloodResult, error) {
	size := cfg.Size
	if size == 0 {
		size = DefaultSize
	}
	if size < MinFloodReportSize || size > MaxSize {
		return FloodResult{}, fmt.Errorf("flood: message size %d: want %d to %d", size, MinFloodReportSize, MaxSize)
	}
	if cfg.Duration <= 0 {
		return FloodResult{}, errors.New("flood: set a positive duration")
	}
	batch := cfg.Batch
	if batch <= 0 {
		batch = 32
	}
	if cfg.MPS > 0 {
		batch = 1
	}
	bufs := make([]byte, batch*size)
	msgs := make([]bypass.Message, batch)
	for i := range msgs {
		msgs[i] = bypass.Message{Buf: bufs[i*size : (i+1)*size], Addr: peer}
	}
	var res FloodResult
	var seq uint64
	var interval time.Duration
	if cfg.MPS > 0 {
		interval = time.Second / time.Duration(cfg.MPS)
	}
	start := time.Now()
	next := start
	for i := uint64(0); ; i++ {
		if i&63 == 0 && (closed(ctx.Done()) || time.Since(start) >= cfg.Duration) {
			break
		}
		if interval > 0 {
			for time.Now().Before(next) {
			}
			next = next.Add(interval)
		}
		for j := range msgs {
			seq++
			_ = Header{Flags: FlagFlood, Length: uint16(size), Seq: seq}.Encode(msgs[j].Buf)
		}
		n, err := c.WriteBatch(msgs)
		res.Sent += uint64(n)
		seq -= uint64(len(msgs) - n) // what was not sent goes again
		if err != nil && !errors.Is(err, bypass.ErrRingFull) {
			return res, fmt.Errorf("flood: send: %w", err)
		}
	}
	res.Elapsed = time.Since(start)
	// Let the last messages land, then ask for the counts.
	time.Sleep(50 * time.Millisecond)
	req := make([]byte, size)
	resp := make([]byte, MaxSize+1)
	if err := c.SetReadTimeout(200 * time.Millisecond); err != nil {
		return res, err
	}
	for try := 0; try < 10; try++ {
		_ = Header{Flags: FlagReport, Length: uint16(size), Seq: uint64(try) + 1}.Encode(req)
		if _, err := c.WriteTo(req, peer); err != nil {
			return res, fmt.Errorf("flood: report request: %w", err)
		}
		for {
			n, from, err := c.ReadFrom(resp)
			if err != nil {
				break // timed out: ask again
			}
			h, err := Decode(resp[:n])
			if err != nil || from != peer || h.Flags&(FlagReply|FlagReport) != FlagReply|FlagReport || n < MinFloodReportSize {
				continue
			}
			res.Received = binary.BigEndian.Uint64(resp[HeaderLen:])
			res.Lost = res.Sent - min(res.Received, res.Sent)
			secs := res.Elapsed.Seconds()
			res.MPSSent, res.MPSReceived = float64(res.Sent)/secs, float64(res.Received)/secs
			return res, nil
		}
	}
	return res, ErrNoFloodReport
}
