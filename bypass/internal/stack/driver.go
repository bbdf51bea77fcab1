package stack

import (
	"net/netip"

	"github.com/lowlat/lowlat/bypass/backend"
)

// Frame is one received Ethernet frame lent by a driver.
type Frame struct {
	// Data is the frame, from the destination MAC to the end of the
	// payload. It aliases driver memory and is valid until Release.
	Data []byte
	// ID is the driver's handle for the buffer, given back to Release.
	ID uint64
	// Stamp is the device's receive stamp in UTC nanoseconds (a NIC that
	// stamps in hardware: ClockNIC), or 0, when the stack's own clock
	// read for the batch stands in.
	Stamp int64
}

// Driver moves frames between a device and a stack. The receive methods
// are called by one goroutine at a time (the holder of the stack's receive
// lock), the transmit methods by one goroutine at a time (the holder of the
// transmit lock); the two sides may run at once on two goroutines, so a
// driver keeps their state apart. No method blocks.
type Driver interface {
	// Poll takes up to len(fs) received frames into fs and returns how
	// many; 0 when none is waiting. Frames the device flagged as bad are
	// counted by the driver (Stats) and not returned.
	Poll(fs []Frame) int
	// Release gives the buffers of frames returned by Poll back to the
	// device, in any order.
	Release(fs []Frame)

	// Reserve returns a free transmit buffer and its handle, or ok false
	// when every buffer is in flight (the caller then kicks and reaps).
	Reserve() (buf []byte, id uint64, ok bool)
	// Commit queues a reserved buffer holding an n-byte frame. It is not
	// sent before Kick.
	Commit(id uint64, n int)
	// Kick hands every committed frame to the device and returns how many
	// it took, in commit order. Frames after those were not sent, not even
	// in part; their buffers are free again and the error (wrapping
	// backend.ErrRingFull) says why. Frames the device took are sent even
	// when Kick returns an error for a later step.
	Kick() (sent int, err error)
	// Reap takes back the buffers of frames the device has finished
	// sending and returns how many.
	Reap() int

	// Stats adds the driver's own counters (device discards, ring
	// shortages, wake-ups) to s.
	Stats(s *backend.Stats)
	// Close releases the device. The stack calls it once, after every
	// socket has closed and no call is in flight.
	Close() error
}

// WaitFDs is implemented by drivers whose arrivals a descriptor signals
// (AF_XDP sockets poll readable). A stack whose driver does not implement
// it cannot sleep: its sockets spin in block mode too.
type WaitFDs interface {
	WaitFDs() []int
}

// Steering is implemented by drivers that choose in the device (an XDP
// program, an adapter filter) which frames reach the stack: a socket adds
// its flows (address and port, or group and port) when it opens or joins
// and removes them when it closes or leaves, so the kernel gets that
// traffic back at once.
type Steering interface {
	AddFlow(dst netip.AddrPort) error
	RemoveFlow(dst netip.AddrPort) error
}

// TCPSteering is implemented by drivers that steer TCP flows as well: a
// TCP listener or connection adds its local address and port for protocol
// TCP, apart from any UDP socket on the same port. A stack whose driver
// does not implement it carries UDP only.
type TCPSteering interface {
	AddTCPFlow(local netip.AddrPort) error
	RemoveTCPFlow(local netip.AddrPort) error
}
