// Package tcp is lowlat's TCP protocol engine: one connection's state
// machine (RFC 9293), with window scaling and timestamps (RFC 7323),
// selective acknowledgments sent for out-of-order data (RFC 2018),
// retransmission timers (RFC 6298), fast retransmit and NewReno recovery
// (RFC 5681, RFC 6582), zero-window probes, and the challenge ACKs of
// RFC 5961.
//
// It does no I/O and keeps no goroutines or timers of its own. The stack
// that owns a connection feeds it parsed segments (Input), the
// application's calls (Write, Read, Close) and the time (Tick), and the
// connection emits segments through the Output the stack gave it, from the
// goroutine that called it. Time is a monotonic nanosecond count the stack
// chooses. Deadlines are read with NextDeadline, so that a polling loop
// checks them without a timer goroutine.
//
// A Conn is not safe for concurrent use: the stack serialises every call
// on one lock (its receive lock), as Onload serialises a stack's protocol
// work on the stack lock. In the established state no call allocates.
package tcp
