package bypass

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lowlat/lowlat/bypass/backend"
)

// PollerOptions configure a Poller. The zero value spins, taking at most
// DefaultPollQuota messages from one connection per pass.
type PollerOptions struct {
	// Wait is WaitSpin (the default) or WaitBlock: a blocking poller
	// sleeps in epoll when a pass finds nothing. Connections without a
	// descriptor to sleep on (efvi) are still tried on every pass, so a
	// poller that holds one spins whatever its mode.
	Wait WaitMode
	// Quota is the most messages one connection gives in one pass, so that
	// a flooded connection cannot starve the others: each pass starts one
	// connection further on and gives every connection its turn before
	// any gets a second. 0 means DefaultPollQuota.
	Quota int
}

// DefaultPollQuota is the per-connection share of a pass.
const DefaultPollQuota = 16

// epollAbove is how many exactly-signalled connections (kernel sockets) a
// spinning poller reads directly before it asks epoll which are ready:
// below it, a non-blocking read each costs less than the epoll_wait.
const epollAbove = 4

// A spinning poller over many kernel sockets reads the recently active ones
// ("hot": up to hotMax of them) directly on every pass and asks epoll
// about the rest only every epollEvery passes, instead of paying an
// epoll_wait and then a read for each datagram of a busy line. A hot socket
// that stays empty for coolAfter passes goes back to epoll.
const (
	hotMax     = 4
	epollEvery = 4
	coolAfter  = 1024
)

// maxSleep bounds one sleep of a blocking poller. Nothing signals a
// closed descriptor (it leaves the epoll set without an event), nor a
// datagram that a socket read outside the poller queued for a stack socket
// the poller serves: the poller looks again at least this often.
const maxSleep = 50 * time.Millisecond

// PollMessage is one datagram a Poller received, with the connection it
// came from. Buf is the caller's, as in Message.
type PollMessage struct {
	Message
	ID   int        // what Add returned for the connection
	Conn PacketConn // the connection
}

// Poller serves many connections, of any backends, from one goroutine:
// one Poll returns the messages ready on any of them, without allocating.
// Sockets on one user-space stack (afxdp, efvi) are served by one pass
// over the stack's receive ring; kernel sockets through epoll when there
// are more than a few. A Poller is used by one goroutine: Add, Remove and
// Poll must not run concurrently. A connection it serves should be read
// only through it.
type Poller struct {
	o     PollerOptions
	conns []pollConn
	ids   int
	next  int // where the next pass starts
	exact int // connections epoll signals exactly
	noFD  int // connections with no descriptor: a blocking poller cannot sleep
	hotN  int // hot connections
	pass_ uint32
	scr   []backend.Message
	ep    epoll

	stacks []stackRef // the stacks of the stack sockets served, each pumped once per pass
}

type stackRef struct {
	st   pumper
	refs int
}

// stackSocket is implemented by the sockets of a user-space stack
// (afxdp, efvi): Pumper is their stack, which one call polls for all of
// them, and Pending says whether that queued anything for the socket.
type stackSocket interface {
	Pending() bool
	Pumper() interface{ Pump() int }
}

type pumper = interface{ Pump() int }

// closer is implemented by connections that can say, without a system
// call, that they were closed: a pass reads such a connection even when
// nothing says it is ready, so that its ErrClosed surfaces (a closed
// descriptor leaves the epoll set without a last event).
type closer interface{ Closed() bool }

type pollConn struct {
	c     PacketConn
	sock  stackSocket // a user-space stack's socket: read only when Pending after a Pump
	shut  closer      // nil when the connection cannot say it was closed
	id    int
	fd    int
	exact bool // fd is readable exactly while c has a datagram
	ready bool // epoll said so since c was last read
	hot   bool // read on every pass, epoll or not (spinning, many kernel sockets)
	cold  int  // passes a hot connection has been empty
}

// NewPoller returns an empty Poller.
func NewPoller(o PollerOptions) (*Poller, error) {
	if o.Wait != WaitDefault && o.Wait != WaitSpin && o.Wait != WaitBlock {
		return nil, fmt.Errorf("poller: wait mode %v: want spin or block", o.Wait)
	}
	if o.Quota < 0 || o.Quota > backend.MaxBatch {
		return nil, fmt.Errorf("poller: quota %d: want 1 to %d", o.Quota, backend.MaxBatch)
	}
	if o.Quota == 0 {
		o.Quota = DefaultPollQuota
	}
	p := &Poller{o: o, scr: make([]backend.Message, o.Quota)}
	if err := p.ep.open(o.Wait == WaitBlock); err != nil {
		return nil, fmt.Errorf("poller: %w", err)
	}
	return p, nil
}

// Add starts serving c and returns the id its messages carry.
func (p *Poller) Add(c PacketConn) (int, error) {
	if slices.ContainsFunc(p.conns, func(pc pollConn) bool { return pc.c == c }) {
		return 0, errors.New("poller: connection added twice")
	}
	pc := pollConn{c: c, id: p.ids, fd: -1}
	if r, ok := c.(backend.ReadyFD); ok {
		pc.fd, pc.exact = r.ReadyFD()
	}
	if pc.fd >= 0 {
		if err := p.ep.add(pc.fd, pc.exact); err != nil {
			return 0, fmt.Errorf("poller: add %v: %w", c.LocalAddr(), err)
		}
	}
	if pc.fd < 0 {
		pc.exact = false
		p.noFD++
	}
	if pc.exact {
		p.exact++
	}
	p.addStack(&pc)
	pc.shut, _ = c.(closer)
	p.ids++
	p.conns = append(p.conns, pc)
	return pc.id, nil
}

// Remove stops serving c; it does not close it.
func (p *Poller) Remove(c PacketConn) error {
	i := slices.IndexFunc(p.conns, func(pc pollConn) bool { return pc.c == c })
	if i < 0 {
		return errors.New("poller: connection not added")
	}
	pc := p.conns[i]
	if pc.fd >= 0 {
		p.ep.remove(pc.fd, pc.exact, p.sharedFD(pc.fd, i))
	}
	if pc.exact {
		p.exact--
	}
	if pc.hot {
		p.hotN--
	}
	if pc.fd < 0 {
		p.noFD--
	}
	if pc.sock != nil {
		p.dropStack(pc.sock.Pumper())
	}
	p.conns = slices.Delete(p.conns, i, i+1)
	if p.next >= len(p.conns) {
		p.next = 0
	}
	return nil
}

// addStack records the stack of a stack socket, so that a pass polls each
// stack's device once however many of its sockets are served.
func (p *Poller) addStack(pc *pollConn) {
	s, ok := pc.c.(stackSocket)
	if !ok {
		return
	}
	pc.sock = s
	for i := range p.stacks {
		if p.stacks[i].st == s.Pumper() {
			p.stacks[i].refs++
			return
		}
	}
	p.stacks = append(p.stacks, stackRef{st: s.Pumper(), refs: 1})
}

func (p *Poller) dropStack(st pumper) {
	for i := range p.stacks {
		if p.stacks[i].st == st {
			if p.stacks[i].refs--; p.stacks[i].refs == 0 {
				p.stacks = slices.Delete(p.stacks, i, i+1)
			}
			return
		}
	}
}

// sharedFD reports whether a connection other than the i-th waits on fd
// (sockets of one stack share the stack's descriptor).
func (p *Poller) sharedFD(fd, i int) bool {
	for j, pc := range p.conns {
		if j != i && pc.fd == fd {
			return true
		}
	}
	return false
}

// Len is the number of connections served.
func (p *Poller) Len() int { return len(p.conns) }

// Poll waits until at least one connection has a datagram, or timeout
// passes (0 waits forever; then it returns ErrTimeout), and returns the
// datagrams ready, up to len(msgs). Each message's Buf must be set by the
// caller.
func (p *Poller) Poll(msgs []PollMessage, timeout time.Duration) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	var start time.Time
	for spins := uint32(1); ; spins++ {
		n, err := p.pass(msgs, p.o.Wait != WaitBlock && p.exact > epollAbove)
		if n > 0 || err != nil {
			return n, err
		}
		if p.o.Wait == WaitBlock && p.noFD == 0 && p.ep.canSleep(len(p.conns)) {
			left := maxSleep
			if timeout > 0 {
				if start.IsZero() {
					start = time.Now()
				}
				if left = timeout - time.Since(start); left <= 0 {
					return 0, ErrTimeout
				}
				left = min(left, maxSleep)
			}
			if err := p.ep.wait(left, p.mark); err != nil {
				return 0, fmt.Errorf("poller: %w", err)
			}
			continue
		}
		if spins&63 != 0 || timeout == 0 {
			continue
		}
		if start.IsZero() {
			start = time.Now()
		} else if time.Since(start) >= timeout {
			return 0, ErrTimeout
		}
	}
}

// TryPoll is one pass: what is ready now, or 0 at once.
func (p *Poller) TryPoll(msgs []PollMessage) (int, error) {
	return p.pass(msgs, p.exact > epollAbove)
}

// mark records that epoll found the i-th connection's descriptor readable.
func (p *Poller) mark(fd int) {
	for i := range p.conns {
		if p.conns[i].fd == fd && p.conns[i].exact {
			p.conns[i].ready = true
		}
	}
}

// pass gives every connection its turn, starting one further on each
// time. With useEpoll, exactly-signalled connections are read only when
// epoll says they are ready; the others are always tried.
func (p *Poller) pass(msgs []PollMessage, useEpoll bool) (int, error) {
	n := len(p.conns)
	if n == 0 {
		return 0, nil
	}
	if useEpoll {
		if p.hotN == 0 || p.pass_%epollEvery == 0 {
			if err := p.ep.wait(0, p.mark); err != nil {
				return 0, fmt.Errorf("poller: %w", err)
			}
		}
		p.pass_++
	}
	for i := range p.stacks {
		p.stacks[i].st.Pump()
	}
	got := 0
	start := p.next
	if p.next++; p.next >= n {
		p.next = 0
	}
	for i := 0; i < n && got < len(msgs); i++ {
		j := start + i
		if j >= n {
			j -= n
		}
		pc := &p.conns[j]
		idle := (pc.exact && (useEpoll || p.o.Wait == WaitBlock) && !pc.ready && !pc.hot) ||
			(pc.sock != nil && !pc.sock.Pending())
		if idle && (pc.shut == nil || !pc.shut.Closed()) {
			continue
		}
		room := min(p.o.Quota, len(msgs)-got)
		for k := range room {
			p.scr[k].Buf = msgs[got+k].Buf
		}
		k, err := pc.c.TryReadBatch(p.scr[:room])
		pc.ready = false
		if useEpoll && pc.exact {
			p.heat(pc, k > 0)
		}
		if err != nil {
			return got, fmt.Errorf("poller: connection %d (%v): %w", pc.id, pc.c.LocalAddr(), err)
		}
		for m := range k {
			pm := &msgs[got+m]
			pm.Message = p.scr[m] // the same Buf, with what the read filled in
			pm.ID, pm.Conn = pc.id, pc.c
		}
		for m := range room {
			p.scr[m].Buf = nil
		}
		got += k
	}
	return got, nil
}

// heat keeps a connection hot while it delivers and cools it after
// coolAfter empty passes.
func (p *Poller) heat(pc *pollConn, got bool) {
	switch {
	case got:
		pc.cold = 0
		if !pc.hot && p.hotN < hotMax {
			pc.hot = true
			p.hotN++
		}
	case pc.hot:
		if pc.cold++; pc.cold > coolAfter {
			pc.hot, pc.cold = false, 0
			p.hotN--
		}
	}
}

// Close releases the poller's descriptors; it does not close the
// connections.
func (p *Poller) Close() error {
	p.conns = nil
	return p.ep.close()
}
