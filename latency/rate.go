package latency

import (
	"context"
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Fixed-rate sending and coordinated omission.
//
// A ping-pong client that sends its next request only when the last reply
// is in coordinates with the server: while the server stalls, the client
// sends nothing, so the stall shows up as one slow sample where a steady
// stream of requests would have seen many. At a fixed rate every request
// has a slot, start + i/rate, and the corrected histogram measures each
// round trip from its slot, not from when it was actually sent (as wrk2
// does): a client that sends late (a pause, a sleep's overshoot) counts
// its own lateness. When a reply comes back after later slots have passed,
// their requests were never sent (one request is in flight at a time):
// each is skipped and recorded as what it would have waited at least, from
// its slot to the reply. A lost request records at least the timeout. The
// raw histogram holds only what was measured.

// PacedResult is what RunAtRate measured: the raw round trips in the
// embedded Result, and the same run corrected for coordinated omission.
type PacedResult struct {
	*Result
	// Corrected is Hist with the requests that a late reply kept from
	// being sent added back, as RecordCorrectedValue adds them.
	Corrected *hdrhistogram.Histogram
	// MPS is the rate asked for; Skipped counts slots that passed while a
	// reply was outstanding (each is one corrected value, recorded).
	MPS     int
	Skipped uint64
}

// spinBelow is how close to a slot RunAtRate stops sleeping and spins on
// the clock instead: a sleep overshoots by tens of microseconds.
const spinBelow = 200 * time.Microsecond

// RunAtRate is Run at a fixed rate of mps requests per second: warm-up
// round trips as fast as they come, then one request per slot until
// Config.Count requests were sent or Config.Duration passed. Call it once
// per Client, instead of Run.
func (c *Client) RunAtRate(ctx context.Context, mps int) (*PacedResult, error) {
	if mps <= 0 {
		return nil, fmt.Errorf("rate %d: want at least one message per second", mps)
	}
	interval := int64(time.Second) / int64(mps)
	if interval < 1 {
		interval = 1
	}
	done := ctx.Done()
	stopped := func() bool { return closed(done) }
	pr := &PacedResult{Corrected: NewHistogram(), MPS: mps}
	for i := 0; i < c.cfg.Warmup; i++ {
		if i&63 == 0 && stopped() {
			pr.Result = c.result(c.clk.Now(), c.clk.Now())
			return pr, ctx.Err()
		}
		if _, err := c.roundTrip(false); err != nil && err != ErrLost {
			pr.Result = c.result(c.clk.Now(), c.clk.Now())
			return pr, fmt.Errorf("warm-up: %w", c.explain(err))
		}
		c.between()
	}
	start := c.startMeasuring()
	next := start
	var err error
	for i := uint64(0); ; i++ {
		if c.measured(start) {
			break
		}
		if i&63 == 0 && stopped() {
			err = ctx.Err()
			break
		}
		// Wait for the slot: sleep most of a long wait, spin the rest.
		for now := c.clk.Now(); now < next; now = c.clk.Now() {
			if left := next - now; left > int64(spinBelow) {
				time.Sleep(time.Duration(left - int64(spinBelow)/2))
				if stopped() {
					break
				}
			}
		}
		slot := next
		_, e := c.RoundTrip()
		if e != nil && e != ErrLost {
			err = c.explain(e)
			break
		}
		// From the slot, whether the reply came (c.now is when) or the
		// request was lost (c.now is when that was decided: the timeout,
		// at least, is recorded).
		v := c.now - slot
		if e == ErrLost {
			v = max(v, c.timeout)
		}
		record(pr.Corrected, v)
		next += interval
		// Slots that passed while waiting: their requests were never sent;
		// each waited at least from its slot to now.
		for next <= c.now {
			record(pr.Corrected, c.now-next)
			pr.Skipped++
			next += interval
		}
		// Before the next slot's wait: a pass through the scheduler that
		// overruns the slot shows in the corrected series, as it should.
		c.between()
	}
	pr.Result, err = c.finish(start, c.clk.Now(), err)
	return pr, err
}
