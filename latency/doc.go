// Package latency is lowlat's round-trip measurement engine: the wire
// message latprobe sends, a ping-pong client that times each round trip, an
// echo server, and the reports that summarise what was measured.
//
// A client sends one request at a time and waits for its echo. It reads its
// Clock just before the send and just after the receive: the CPU's
// time-stamp counter through RDTSCP where it is invariant (calibrated once
// per process against CLOCK_MONOTONIC), else the monotonic clock (time.Since
// a fixed epoch, which the runtime serves from the vDSO), and records the difference in nanoseconds into an
// HdrHistogram with three significant digits from 1 ns to 60 s. Warm-up
// round trips are not recorded. A reply that does not come within the
// timeout is counted lost and the client moves on, so a dropped datagram
// never stalls a run; a reply that turns up later is counted as out of
// order, a second copy as a duplicate, and anything that is not a reply to
// this client as foreign or malformed. The hot loop allocates nothing.
//
// The wire format sits behind the Wire interface and the path to the server
// behind Transport, so other message formats (such as sockperf's) and other
// carriers plug in without touching the engine. The server side is
// EchoServer, which answers well-formed requests and counts everything else
// by kind while it keeps serving.
//
// Results come out as a Report: a text table, JSON with fixed keys, and an
// HdrHistogram interval log (.hlog) with one interval per second.
package latency
