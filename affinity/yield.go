package affinity

import (
	"runtime"
	"time"
)

// DefaultYieldEvery is how often a Yielder passes through the scheduler:
// under the Go runtime's 10 ms time slice, with 2 ms to spare for the time
// between two calls.
const DefaultYieldEvery = 8 * time.Millisecond

// A Yielder spends the Go runtime's time slice where its goroutine
// chooses: between two messages, never in the middle of one.
//
// The runtime's monitor preempts any goroutine that has run for 10 ms
// without passing through the scheduler (runtime/proc.go, retake), and a
// spinning goroutine never passes through it on its own. When that
// goroutine is locked to its thread (a hot thread always is), the
// preemption is a hand-off: the thread parks, another thread finds the
// goroutine on the run queue and wakes the first one to run it again, two
// to four cross-CPU wake-ups (41-141 µs on the project's VM, a few µs on a host
// whose CPUs are held out of deep C-states). Nothing outside the runtime
// can make that cheaper or stop the monitor from asking, but a goroutine
// that passes through the scheduler itself more often than every 10 ms is
// never asked: the hand-off then happens at a moment it chose, when it
// holds no message, rather than at a random one, most likely while a
// message waits.
//
// It helps a goroutine that knows when it holds nothing: a client
// between round trips, a feed handler after a burst. A server that cannot
// tell when the next request comes gains nothing from it: a pass costs
// the same wherever it lands, and passing every 8 ms makes more of them
// than the runtime's own preemptions (one per 10 to 20 ms).
//
// Between costs one reading of the monotonic clock (tens of nanoseconds)
// and allocates nothing; call it once per message or per batch, as long
// as two calls are closer than 10 ms less the period (2 ms at the
// default) while the goroutine spins, else the runtime may still preempt
// it in between. Garbage collection is not delayed: a collection's
// stop-the-world still preempts the goroutine at its next preemption
// point, as it would without a Yielder.
//
// A Yielder belongs to one goroutine; it is not safe for concurrent use.
type Yielder struct {
	every  time.Duration
	base   time.Time
	last   time.Duration // since base: the end of the latest pass
	passes uint64
}

// NewYielder returns a Yielder that passes through the scheduler once
// every has gone by since its last pass (DefaultYieldEvery when every is
// 0 or less).
func NewYielder(every time.Duration) *Yielder {
	if every <= 0 {
		every = DefaultYieldEvery
	}
	return &Yielder{every: every, base: time.Now()}
}

// Between is to be called between two messages, when the goroutine holds
// nothing that waits. It passes through the scheduler (runtime.Gosched)
// when the Yielder's period has gone by since its last pass, and reports
// whether it did.
func (y *Yielder) Between() bool {
	if time.Since(y.base)-y.last < y.every {
		return false
	}
	runtime.Gosched()
	y.last = time.Since(y.base)
	y.passes++
	return true
}

// Passes is how many times Between passed through the scheduler.
func (y *Yielder) Passes() uint64 { return y.passes }
