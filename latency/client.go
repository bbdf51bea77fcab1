package latency

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/lowlat/lowlat/bypass"
)

// Defaults for Config's zero fields.
const (
	DefaultTimeout        = 200 * time.Millisecond
	DefaultMaxLostInARow  = 25
	DefaultIntervalLength = time.Second
)

// Config shapes a client run. The zero value is not runnable: set Count or
// Duration (or both; the run stops at whichever comes first).
type Config struct {
	// Size is the message size in bytes, within the wire's bounds; zero
	// means DefaultSize.
	Size int
	// Count is the number of measured requests to send; zero means no
	// count limit.
	Count int
	// Duration bounds the measured phase; zero means no time limit.
	Duration time.Duration
	// Warmup is the number of round trips before measuring starts. They
	// are not recorded.
	Warmup int
	// Timeout is how long to wait for a reply before counting it lost and
	// sending the next request. Zero means DefaultTimeout.
	Timeout time.Duration
	// MaxLostInARow ends the run with ErrNoReply after that many replies
	// in a row were lost. Zero means DefaultMaxLostInARow.
	MaxLostInARow int
	// Wire is the message format; nil means Lowlat.
	Wire Wire
	// Intervals, when set, receives a histogram of each IntervalLength of
	// the measured phase (for an .hlog file). It is called between round
	// trips, never inside one.
	Intervals IntervalSink
	// IntervalLength is the interval for Intervals; zero means one second.
	IntervalLength time.Duration
	// Stages splits each measured round trip into stages (see Stages)
	// from timestamps: the client's connection must have Timestamps and
	// TxTimestamps on and the server receive stamps, over UDP with the
	// lowlat wire and messages of at least MinStageSize bytes.
	Stages bool
	// Between, when set, is called by Run and RunAtRate after every round
	// trip, warm-up ones included, outside the measured interval: the
	// place for a hot goroutine to spend its scheduler time slice
	// (affinity.Yielder). MultiClient does not call it: one of its peers
	// always has a request in flight.
	Between func()
}

func (c Config) wire() Wire {
	if c.Wire == nil {
		return Lowlat
	}
	return c.Wire
}

// Validate checks c without touching the network.
func (c Config) Validate() error {
	w := c.wire()
	size := c.Size
	if size == 0 {
		size = DefaultSize
	}
	if size < w.MinSize() || size > w.MaxSize() {
		return fmt.Errorf("message size %d: want %d to %d bytes for the %s wire format", size, w.MinSize(), w.MaxSize(), w.Name())
	}
	switch {
	case c.Count < 0:
		return fmt.Errorf("count %d: negative", c.Count)
	case c.Duration < 0:
		return fmt.Errorf("duration %v: negative", c.Duration)
	case c.Count == 0 && c.Duration == 0:
		return errors.New("set a count or a duration")
	case c.Warmup < 0:
		return fmt.Errorf("warm-up %d: negative", c.Warmup)
	case c.Timeout < 0:
		return fmt.Errorf("timeout %v: negative", c.Timeout)
	case c.MaxLostInARow < 0:
		return fmt.Errorf("max lost in a row %d: negative", c.MaxLostInARow)
	case c.IntervalLength < 0:
		return fmt.Errorf("interval length %v: negative", c.IntervalLength)
	case c.Stages && w != Lowlat:
		return fmt.Errorf("stages need the lowlat wire format, not %s", w.Name())
	case c.Stages && size < MinStageSize:
		return fmt.Errorf("stages need messages of at least %d bytes (the server's stage rides after the header), not %d", MinStageSize, size)
	}
	return nil
}

// Counters count what a client saw.
type Counters struct {
	Sent       uint64 // requests sent
	Received   uint64 // replies to the request in flight, each one a sample
	Lost       uint64 // requests whose reply did not come within the timeout
	Duplicates uint64 // second and later copies of a reply
	OutOfOrder uint64 // replies that came after their request was counted lost
	Foreign    uint64 // messages from another sender, or for a request never sent
	Malformed  uint64 // messages that are not a whole reply of the right size
	Warmup     uint64 // warm-up round trips completed (not in the counts above)
}

// ErrLost is returned by RoundTrip when the reply did not come within the
// timeout; the request is counted lost.
var ErrLost = errors.New("latency: reply lost (read timed out)")

// ErrNoReply ends a run after Config.MaxLostInARow losses in a row.
var ErrNoReply = errors.New("latency: the peer stopped answering")

// seenWindow is how many recent sequence numbers the client remembers, to
// tell a duplicate reply from a late one.
const seenWindow = 1024

// Client measures round trips over a Transport. A Client is used by one
// goroutine at a time; for spin-mode transports, lock that goroutine to its
// OS thread.
type Client struct {
	tr      Transport
	cfg     Config
	wire    Wire
	clk     Clock
	timeout int64

	req, resp []byte
	seq       uint64
	sent      int64 // when the request seq was sent
	seen      [seenWindow / 64]uint64
	lostRun   int
	now       int64

	hist *hdrhistogram.Histogram
	ctr  Counters

	ivl              *hdrhistogram.Histogram
	ivlStart, ivlLen int64

	// With Config.Stages: the stamped transport, the stage histograms, the
	// CLOCK_REALTIME of the request in flight's send call, and the stages
	// of the latest sample split.
	str        stampedTransport
	stg        *stageHists
	sendWall   int64
	rxStamp    bypass.Timestamp
	lastStages Stages
}

// NewClient returns a client that sends cfg.Size-byte requests over tr. It
// allocates everything the measurement needs, so that the round trips
// themselves allocate nothing.
func NewClient(tr Transport, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Size == 0 {
		cfg.Size = DefaultSize
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxLostInARow == 0 {
		cfg.MaxLostInARow = DefaultMaxLostInARow
	}
	if cfg.IntervalLength == 0 {
		cfg.IntervalLength = DefaultIntervalLength
	}
	w := cfg.wire()
	c := &Client{
		tr:      tr,
		cfg:     cfg,
		wire:    w,
		clk:     NewClock(),
		timeout: int64(cfg.Timeout),
		req:     make([]byte, cfg.Size),
		// One byte more than the largest message, so that an oversized
		// reply shows up as the wrong size instead of fitting exactly.
		resp: make([]byte, w.MaxSize()+1),
		hist: NewHistogram(),
	}
	if cfg.Intervals != nil {
		c.ivl = NewHistogram()
		c.ivlLen = int64(cfg.IntervalLength)
	}
	if cfg.Stages {
		st, ok := tr.(stampedTransport)
		if !ok {
			return nil, errors.New("stages need a UDP transport (PacketTransport)")
		}
		c.str, c.stg = st, newStageHists()
	}
	if err := tr.SetReadTimeout(cfg.Timeout); err != nil {
		return nil, fmt.Errorf("set read timeout: %w", err)
	}
	return c, nil
}

// Result is what a run measured.
type Result struct {
	Size     int
	Hist     *hdrhistogram.Histogram // round trips in ns, warm-up excluded
	Counters Counters
	Start    time.Time     // when the measured phase began
	Elapsed  time.Duration // how long it lasted

	// With Config.Stages: each stage's histogram, in StageNames' order,
	// and the samples that could not be split.
	Stages        [4]*hdrhistogram.Histogram
	StagesMissing StagesMissing
}

// Summary returns the statistics of r.Hist.
func (r *Result) Summary() Summary { return Summarize(r.Hist) }

// Run does the warm-up round trips, then measured round trips until
// Config.Count requests were sent or Config.Duration passed, and returns
// what it measured. When ctx ends first, Run returns the result so far with
// ctx's error. Call Run once per Client.
func (c *Client) Run(ctx context.Context) (*Result, error) {
	done := ctx.Done()
	stopped := func() bool { return closed(done) }
	for i := 0; i < c.cfg.Warmup; i++ {
		if i&63 == 0 && stopped() {
			return c.result(c.clk.Now(), c.clk.Now()), ctx.Err()
		}
		if _, err := c.roundTrip(false); err != nil && err != ErrLost {
			return c.result(c.clk.Now(), c.clk.Now()), fmt.Errorf("warm-up: %w", c.explain(err))
		}
		c.between()
	}
	start := c.startMeasuring()
	var err error
	for i := uint64(0); ; i++ {
		if c.measured(start) {
			break
		}
		if i&63 == 0 && stopped() {
			err = ctx.Err()
			break
		}
		if _, e := c.RoundTrip(); e != nil && e != ErrLost {
			err = c.explain(e)
			break
		}
		c.between()
	}
	return c.finish(start, c.clk.Now(), err)
}

// between calls Config.Between, if set.
func (c *Client) between() {
	if c.cfg.Between != nil {
		c.cfg.Between()
	}
}

// startMeasuring ends the warm-up: the counters start again from zero
// (keeping the number of warm-up round trips) and so do the intervals.
// It returns the start of the measured phase.
func (c *Client) startMeasuring() int64 {
	c.ctr = Counters{Warmup: c.ctr.Received}
	start := c.clk.Now()
	c.now = start
	c.ivlStart = start
	return start
}

// measured reports whether the measured phase that began at start is
// over: Config.Count requests sent, or Config.Duration passed.
func (c *Client) measured(start int64) bool {
	count := uint64(c.cfg.Count)
	dur := int64(c.cfg.Duration)
	return count > 0 && c.ctr.Sent >= count || dur > 0 && c.now-start >= dur
}

// finish closes the measured phase that ran from start to end: it hands
// the last intervals to the sink and returns the result, with err or the
// sink's error.
func (c *Client) finish(start, end int64, err error) (*Result, error) {
	if c.ivl != nil {
		if e := c.flushIntervals(end, true); e != nil && err == nil {
			err = e
		}
	}
	return c.result(start, end), err
}

// explain adds the numbers to ErrNoReply.
func (c *Client) explain(err error) error {
	if err == ErrNoReply {
		return fmt.Errorf("%w: %d replies in a row did not come within %v", err, c.lostRun, c.cfg.Timeout)
	}
	return err
}

func (c *Client) result(start, end int64) *Result {
	r := &Result{
		Size:     c.cfg.Size,
		Hist:     c.hist,
		Counters: c.ctr,
		Start:    c.clk.Wall(start),
		Elapsed:  time.Duration(end - start),
	}
	if c.stg != nil {
		r.Stages, r.StagesMissing = c.stg.h, c.stg.missing
	}
	return r
}

// LastStages returns the stages of the latest sample that was split.
func (c *Client) LastStages() Stages { return c.lastStages }

// Counters returns the counts so far.
func (c *Client) Counters() Counters { return c.ctr }

// Histogram returns the histogram the client records into.
func (c *Client) Histogram() *hdrhistogram.Histogram { return c.hist }

// RoundTrip sends one request, waits for its reply and records the round
// trip. It returns ErrLost when the reply did not come in time, ErrNoReply
// after too many losses in a row, and the transport's error when sending or
// receiving fails. It allocates nothing.
func (c *Client) RoundTrip() (time.Duration, error) {
	rtt, err := c.roundTrip(true)
	if e := c.flushDue(); e != nil && err == nil {
		err = e
	}
	return time.Duration(rtt), err
}

// flushDue hands the intervals that ended by c.now to the sink.
func (c *Client) flushDue() error {
	if c.ivl != nil && c.now-c.ivlStart >= c.ivlLen {
		return c.flushIntervals(c.now, false)
	}
	return nil
}

func (c *Client) roundTrip(measure bool) (int64, error) {
	if err := c.send(); err != nil {
		return 0, err
	}
	for {
		var n int
		var err error
		if c.str != nil {
			n, c.rxStamp, err = c.str.recvStamped(c.resp)
		} else {
			n, err = c.tr.Recv(c.resp)
		}
		now := c.clk.Now()
		c.now = now
		timedOut := false
		if err == nil {
			if rtt, ok := c.take(c.resp[:n], now, measure); ok {
				if measure && c.stg != nil {
					c.splitStages(rtt, c.resp[:n])
				}
				return rtt, nil
			}
		} else {
			switch {
			case err == ErrForeign:
				c.ctr.Foreign++
			case err == bypass.ErrMessageTooLong:
				c.ctr.Malformed++
			case errors.Is(err, bypass.ErrTimeout):
				timedOut = true
			default:
				return 0, err
			}
		}
		// A stream of unrelated messages must not keep us waiting past
		// the timeout either: check the clock after every message.
		if timedOut || c.overdue(now) {
			return 0, c.lose()
		}
	}
}

// send starts a round trip: the next request, stamped and sent.
func (c *Client) send() error {
	c.seq++
	seq := c.seq
	c.seen[seq/64%uint64(len(c.seen))] &^= 1 << (seq % 64)

	c.sent = c.clk.Now()
	c.wire.PutRequest(c.req, seq, c.sent)
	if c.stg != nil {
		c.req[5] |= FlagStages
		c.sendWall = time.Now().UnixNano()
	}
	if err := c.tr.Send(c.req); err != nil {
		c.now = c.clk.Now()
		return err
	}
	c.ctr.Sent++
	return nil
}

// take counts msg, received at now while request c.seq is in flight, and
// reports whether it is that request's reply; its round trip is then
// recorded when measure is set, and returned.
func (c *Client) take(msg []byte, now int64, measure bool) (int64, bool) {
	seq := c.seq
	rseq, _, perr := c.wire.ParseReply(msg)
	switch {
	case perr != nil || len(msg) != len(c.req):
		c.ctr.Malformed++
	case rseq == seq && now-c.sent >= c.timeout:
		// The reply to the request in flight, but after its timeout: the
		// request is lost (the caller sees it overdue), the reply late.
		c.markSeen(rseq)
		c.ctr.OutOfOrder++
	case rseq == seq:
		c.markSeen(rseq)
		c.ctr.Received++
		c.lostRun = 0
		rtt := now - c.sent
		if measure {
			record(c.hist, rtt)
			if c.ivl != nil {
				record(c.ivl, rtt)
			}
		}
		return rtt, true
	case rseq > seq || rseq == 0:
		c.ctr.Foreign++
	case seq-rseq >= seenWindow:
		c.ctr.OutOfOrder++ // too old to tell apart from a duplicate
	case c.isSeen(rseq):
		c.ctr.Duplicates++
	default:
		c.markSeen(rseq)
		c.ctr.OutOfOrder++
	}
	return 0, false
}

// splitStages splits the sample just taken (round trip rtt, reply the
// reply) into stages and records them.
func (c *Client) splitStages(rtt int64, reply []byte) {
	tx, txOK := c.str.txStamp()
	server, serverOK := serverStage(reply)
	if st, ok := c.stg.split(rtt, c.sendWall, c.rxStamp, tx, txOK, server, serverOK); ok {
		c.stg.record(st)
		c.lastStages = st
	}
}

// overdue reports whether the reply to the request in flight is late at now.
func (c *Client) overdue(now int64) bool { return now-c.sent >= c.timeout }

// lose counts the request in flight lost: ErrLost, or ErrNoReply after
// Config.MaxLostInARow in a row.
func (c *Client) lose() error {
	c.ctr.Lost++
	c.lostRun++
	if c.lostRun >= c.cfg.MaxLostInARow {
		return ErrNoReply
	}
	return ErrLost
}

func (c *Client) markSeen(seq uint64) { c.seen[seq/64%uint64(len(c.seen))] |= 1 << (seq % 64) }
func (c *Client) isSeen(seq uint64) bool {
	return c.seen[seq/64%uint64(len(c.seen))]&(1<<(seq%64)) != 0
}

// flushIntervals hands every interval that ended by now to the sink and,
// when final, the partial one that is still open.
func (c *Client) flushIntervals(now int64, final bool) error {
	for now-c.ivlStart >= c.ivlLen {
		if err := c.emitInterval(c.ivlStart + c.ivlLen); err != nil {
			return err
		}
	}
	if final && (now > c.ivlStart || c.ivl.TotalCount() > 0) {
		return c.emitInterval(now)
	}
	return nil
}

func (c *Client) emitInterval(end int64) error {
	err := c.cfg.Intervals.WriteInterval(c.ivl, c.clk.Wall(c.ivlStart), c.clk.Wall(end))
	c.ivl.Reset()
	c.ivlStart = end
	if err != nil {
		return fmt.Errorf("interval log: %w", err)
	}
	return nil
}

// closed reports, without waiting, whether done (a context's Done channel)
// is closed: the loops look between round trips, never inside one.
func closed(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}
