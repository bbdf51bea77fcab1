// Package gate lets a connection's Close wait for the calls in flight on it
// before it frees what they use: a descriptor number the kernel could hand
// to someone else, rings unmapped from under a reader, a VI freed by the
// driver.
//
// Each call brackets its work with Enter and Exit (two atomic adds, no lock);
// Close marks the gate shut, wakes sleepers by its own means, and Waits for
// the count to reach zero. Calls that arrive after the mark are refused.
package gate

import (
	"sync/atomic"
	"time"
)

// Gate counts the calls in flight on one connection. The zero value is an
// open gate.
type Gate struct {
	closed atomic.Bool
	active atomic.Int32
	_      [cacheLine - 8]byte // a gate per cache line: see Pair
}

// cacheLine is large enough for the line size, and the adjacent-line
// prefetch, of the CPUs lowlat runs on.
const cacheLine = 128

// Pair is a reader's gate and a writer's gate, each on cache lines of its
// own, so that a reader and a writer working on one connection from two
// CPUs do not pull one line back and forth on every message.
type Pair struct {
	_ [cacheLine]byte
	R Gate // taken by reads
	W Gate // taken by writes
}

// Shut refuses new calls on both sides; it reports false when the pair was
// already shut.
func (p *Pair) Shut() bool {
	w := p.W.Shut()
	return p.R.Shut() && w
}

// Closed reports whether Shut has been called.
func (p *Pair) Closed() bool { return p.R.Closed() }

// Wait waits for the calls in flight on both sides (see Gate.Wait).
func (p *Pair) Wait(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	return p.R.Wait(timeout) && p.W.Wait(time.Until(deadline))
}

// Enter admits a call unless the gate is shut. A call that was admitted
// must call Exit when it no longer touches the connection's resources.
func (g *Gate) Enter() bool {
	g.active.Add(1)
	if g.closed.Load() {
		g.active.Add(-1)
		return false
	}
	return true
}

// Exit ends a call that Enter admitted.
func (g *Gate) Exit() { g.active.Add(-1) }

// Closed reports whether Shut has been called. Spinning readers poll it.
func (g *Gate) Closed() bool { return g.closed.Load() }

// Shut refuses new calls. It reports false when the gate was already shut.
func (g *Gate) Shut() bool { return !g.closed.Swap(true) }

// Wait waits until no admitted call is in flight, or timeout passes; it
// reports whether the calls drained. A caller whose calls did not drain
// must leak the resources rather than free them under a live call.
func (g *Gate) Wait(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for g.active.Load() != 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Microsecond)
	}
	return true
}
