//go:build linux

package efvi

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Event kinds of an event record. The cgo queue translates each ef_vi event
// into one record (an RX_MULTI event into one record per buffer); events
// the backend never asks for are reported as evOther.
const (
	evNone         uint16 = iota
	evRX                  // EF_EVENT_TYPE_RX (and each buffer of RX_MULTI): id is the buffer, len the frame bytes
	evRXDiscard           // EF_EVENT_TYPE_RX_DISCARD: id is the buffer, sub the discard type
	evRXNoDesc            // EF_EVENT_TYPE_RX_NO_DESC_TRUNC: a frame found no posted buffer
	evRXRef               // EF_EVENT_TYPE_RX_REF (X3): id is the packet, len the frame bytes
	evRXRefDiscard        // EF_EVENT_TYPE_RX_REF_DISCARD (X3): id is the packet, sub the EF_VI_DISCARD_RX_* flags
	evTX                  // EF_EVENT_TYPE_TX: len descriptors completed, in the order they were posted
	evTXError             // EF_EVENT_TYPE_TX_ERROR: len descriptors completed, sub the error type
	evOverflow            // EF_EVENT_TYPE_OFLOW: the event queue overflowed
	evOther               // any other event type, in sub
)

// RX flags in the sub field of an evRX record (EF_EVENT_FLAG_SOP, _CONT).
const (
	rxFlagSOP  = 0x1
	rxFlagCont = 0x2
)

// Discard types of an evRXDiscard record (enum ef_vi_rx_discard_type, in
// header order).
const (
	discardCsumBad = iota
	discardMcastMismatch
	discardCRCBad
	discardTrunc
	discardRights
	discardEvError
	discardOther
	discardInnerCsumBad
)

// Discard flags of an evRXRefDiscard record (enum ef_vi_rx_discard_err_flags).
const (
	refL4Csum      = 0x1
	refL3Csum      = 0x2
	refFCS         = 0x4
	refLen         = 0x8
	refInnerL4Csum = 0x20
	refInnerL3Csum = 0x40
	refL2Other     = 0x80
	refL3Other     = 0x100
	refL4Other     = 0x200
)

// TX error types of an evTXError record (enum ef_vi_tx_error_type).
const (
	txErrRights = iota
	txErrOflow
	txErr2Big
	txErrBus
)

// event is one compact event record. Its layout is shared with the C
// helper that fills arrays of them (struct lowlat_ev): keep the two in step.
type event struct {
	kind uint16
	sub  uint16
	len  uint32
	id   uint32
	_    uint32
	addr uint64 // X3: address of the packet, for the cgo queue's frame
	ts   int64  // evRX, evRXRef: the adapter's receive stamp, UTC ns; 0 for none
}

// The fake queue of the tests, and builds without the efvi tag, never read
// addr; it is part of the layout the C helper fills.
var _ = event{}.addr

// txDesc asks the transmit queue to send buffer id's first len bytes.
type txDesc struct {
	id  uint32
	len uint32
}

// rxQueue is the receive half: a VI with a receive ring (X2) or RX_REF
// delivery (X3) and its own event queue. It is used by one goroutine at a
// time (the reader) and never blocks.
type rxQueue interface {
	// poll moves up to len(evs) event records into evs and returns how
	// many; 0 when the event queue is empty.
	poll(evs []event) int
	// post gives receive buffers back to the adapter and returns how many
	// it took (all of them, unless the ring is full).
	post(ids []uint32) int
	// release hands X3 packets back to the adapter.
	release(pktIDs []uint32)
	// frame returns the Ethernet frame of an evRX or evRXRef record. It
	// aliases packet memory and is valid until the buffer is posted again
	// or the packet released.
	frame(ev *event) []byte
	// refs reports whether the queue delivers RX_REF events (X3) instead
	// of filling posted buffers.
	refs() bool
	// addFilter steers IPv4 packets of protocol proto (IPPROTO_UDP or
	// IPPROTO_TCP) for ip:port to the queue, on a receive queue of the
	// VI's own (exclusive), not one shared with other VIs and their
	// traffic. A UDP and a TCP filter on one ip:port are two filters.
	addFilter(dst netip.AddrPort, proto uint8) error
	// removeFilter removes the filter addFilter added for dst and proto.
	removeFilter(dst netip.AddrPort, proto uint8) error
	close() error
}

// txQueue is the transmit half: a VI with a transmit ring and its own event
// queue, used by the writer.
type txQueue interface {
	// poll moves completion records (evTX, evTXError) into evs.
	poll(evs []event) int
	// send queues frames already written into their buffers and returns
	// how many it took; it stops early only when the ring is full, and the
	// frames after those it took were not sent at all (not even in part,
	// through CTPIO), so the caller may send them again.
	send(d []txDesc) int
	close() error
}

// protoName names a filter's protocol, for errors.
func protoName(proto uint8) string {
	switch proto {
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_TCP:
		return "tcp"
	}
	return fmt.Sprintf("protocol %d", proto)
}
