package latency

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/lowlat/lowlat/bypass"
)

// Peer is one server a MultiClient measures, and the connection that
// carries its requests and replies (one per peer).
type Peer struct {
	Conn bypass.PacketConn
	Addr netip.AddrPort
}

// MultiClient measures round trips to several UDP peers from one
// goroutine. Each peer has its own connection, its own Client state
// (sequence numbers, counters, histogram, intervals) and at most one
// request in flight; a bypass.Poller over the connections hands over
// whichever reply comes first, and that peer's next request goes out at
// once. The peers are served round-robin by the Poller, so a flooded or
// silent peer holds up the others only by the time this thread spends on
// its messages. Every peer does Config.Warmup round trips and then its own
// measured phase (Count requests or Duration), as a Client would. A
// MultiClient is used by one goroutine, whose OS thread should be locked
// for spin-mode connections.
type MultiClient struct {
	peers []multiPeer
	clk   Clock
	poll  *bypass.Poller
	msgs  []bypass.PollMessage
}

type multiPeer struct {
	c         *Client
	addr      netip.AddrPort
	id        int     // the Poller's id for c's connection
	warm      int     // warm-up round trips left
	measuring bool    // in the measured phase, which began at start
	start     int64   // when the measured phase began
	res       *Result // set when p's run is over
}

// NewMultiClient returns a client that measures each of peers with
// cfg.Size-byte requests. The Poller spins when any connection spins, and
// blocks otherwise. It does not close the connections; Close releases the
// Poller.
func NewMultiClient(peers []Peer, cfg Config) (*MultiClient, error) {
	if len(peers) == 0 {
		return nil, errors.New("no peers")
	}
	if cfg.Stages {
		return nil, errors.New("stages are measured with one peer at a time")
	}
	wait := bypass.WaitBlock
	for _, p := range peers {
		if p.Conn.Info().Wait == bypass.WaitSpin {
			wait = bypass.WaitSpin
		}
	}
	poll, err := bypass.NewPoller(bypass.PollerOptions{Wait: wait})
	if err != nil {
		return nil, err
	}
	m := &MultiClient{clk: NewClock(), poll: poll}
	for _, p := range peers {
		c, err := NewClient(PacketTransport(p.Conn, p.Addr), cfg)
		if err != nil {
			poll.Close()
			return nil, fmt.Errorf("peer %v: %w", p.Addr, err)
		}
		c.clk = m.clk // one clock: deadlines of all peers compare
		id, err := poll.Add(p.Conn)
		if err != nil {
			poll.Close()
			return nil, fmt.Errorf("peer %v: %w", p.Addr, err)
		}
		// The peers' receive buffers are the Poller's: any message may
		// land in any of them.
		m.msgs = append(m.msgs, bypass.PollMessage{Message: bypass.Message{Buf: c.resp}})
		m.peers = append(m.peers, multiPeer{c: c, addr: netip.AddrPortFrom(p.Addr.Addr().Unmap(), p.Addr.Port()), id: id})
	}
	return m, nil
}

// Close releases the Poller; it does not close the connections.
func (m *MultiClient) Close() error { return m.poll.Close() }

// Run measures every peer as Client.Run does one, interleaved, and returns
// one Result per peer, in the order of the peers. It returns when every
// peer's measured phase is over. When ctx ends first, or a peer stops
// answering (ErrNoReply), or a connection fails, Run returns the results
// so far with the error, which names the peer. Call Run once.
func (m *MultiClient) Run(ctx context.Context) ([]*Result, error) {
	done := ctx.Done()
	stopped := func() bool { return closed(done) }
	active := 0
	var err error
	for i := range m.peers {
		p := &m.peers[i]
		p.warm = p.c.cfg.Warmup
		if p.warm == 0 {
			p.begin()
		}
		active++
		if err = m.next(p); err != nil {
			break
		}
	}
	for i := uint64(0); active > 0 && err == nil; i++ {
		if i&63 == 0 && stopped() {
			err = ctx.Err()
			break
		}
		// Requests whose reply is overdue are lost, and their peers move
		// on; the earliest deadline left bounds the wait.
		now := m.clk.Now()
		deadline := int64(-1)
		for j := range m.peers {
			p := &m.peers[j]
			if p.res != nil {
				continue
			}
			if p.c.overdue(now) {
				p.c.now = now
				if err = m.completed(p, p.c.lose()); err != nil {
					break
				}
				if p.res != nil {
					active--
					continue
				}
			}
			if d := p.c.sent + p.c.timeout; deadline < 0 || d < deadline {
				deadline = d
			}
		}
		if err != nil || active == 0 {
			break
		}
		n, perr := m.poll.Poll(m.msgs, time.Duration(max(deadline-now, 1)))
		now = m.clk.Now()
		for j := range n {
			pm := &m.msgs[j]
			p := m.peer(pm.ID)
			if p == nil || p.res != nil {
				continue // a peer already done: its late replies are not counted
			}
			p.c.now = now
			if pm.Addr != p.addr {
				p.c.ctr.Foreign++
				continue
			}
			if _, ok := p.c.take(pm.Buf[:pm.N], now, p.measuring); !ok {
				continue
			}
			if err = m.completed(p, nil); err != nil {
				break
			}
			if p.res != nil {
				active--
			}
		}
		switch {
		case err != nil:
		case perr == nil:
		case errors.Is(perr, bypass.ErrTimeout):
			if stopped() {
				err = ctx.Err()
			}
		default:
			err = perr
		}
	}
	now := m.clk.Now()
	results := make([]*Result, len(m.peers))
	for i := range m.peers {
		p := &m.peers[i]
		switch {
		case p.res != nil:
		case p.measuring:
			p.res, _ = p.c.finish(p.start, now, nil)
		default:
			p.res = p.c.result(now, now)
		}
		results[i] = p.res
	}
	return results, err
}

func (m *MultiClient) peer(id int) *multiPeer {
	for i := range m.peers {
		if m.peers[i].id == id {
			return &m.peers[i]
		}
	}
	return nil
}

// begin starts p's measured phase.
func (p *multiPeer) begin() {
	p.measuring = true
	p.start = p.c.startMeasuring()
}

// completed ends p's round trip in flight, answered (lost nil) or lost
// (ErrLost, ErrNoReply), and starts the next one or ends p's run.
func (m *MultiClient) completed(p *multiPeer, lost error) error {
	if lost != nil && lost != ErrLost {
		err := p.c.explain(lost)
		if !p.measuring {
			err = fmt.Errorf("warm-up: %w", err)
		}
		return fmt.Errorf("peer %v: %w", p.addr, err)
	}
	if p.measuring {
		if err := p.c.flushDue(); err != nil {
			return fmt.Errorf("peer %v: %w", p.addr, err)
		}
	} else if p.warm--; p.warm == 0 {
		p.begin()
	}
	return m.next(p)
}

// next sends p's next request, or ends p's run when its measured phase is
// over.
func (m *MultiClient) next(p *multiPeer) error {
	if p.measuring && p.c.measured(p.start) {
		var err error
		if p.res, err = p.c.finish(p.start, p.c.now, nil); err != nil {
			return fmt.Errorf("peer %v: %w", p.addr, err)
		}
		return nil
	}
	if err := p.c.send(); err != nil {
		return fmt.Errorf("peer %v: send: %w", p.addr, err)
	}
	return nil
}
