package frame

import (
	"net/netip"
	"sync/atomic"
)

// Receiver is the receive half of a userspace UDP endpoint: a Filter that
// JoinGroup may replace while a reader parses, and drop counters by reason
// that Stats may read at the same time. One goroutine parses; joins are
// serialised by the caller. The zero value is unusable: call Init.
type Receiver struct {
	// filter is replaced, never changed, so the reader needs only an
	// atomic load per frame.
	filter atomic.Pointer[Filter]
	pkt    Packet
	drops  [Length + 1]atomic.Uint64 // by Reason
}

// Init installs the filter that Parse starts with.
func (r *Receiver) Init(f Filter) { r.filter.Store(&f) }

// Parse validates one received frame against the current filter and
// returns its payload (aliasing frame) and sender. A frame that fails is
// counted by reason and reported with ok false.
func (r *Receiver) Parse(frame []byte) (payload []byte, src netip.AddrPort, ok bool) {
	if why := r.filter.Load().Parse(frame, &r.pkt); why != OK {
		if int(why) < len(r.drops) {
			r.drops[why].Add(1)
		}
		return nil, netip.AddrPort{}, false
	}
	return r.pkt.Payload, r.pkt.Src, true
}

// Join accepts datagrams to an IPv4 multicast group from now on.
func (r *Receiver) Join(group netip.Addr) error {
	f := r.filter.Load().Clone()
	if err := f.Join(group); err != nil {
		return err
	}
	r.filter.Store(f)
	return nil
}

// Drops returns the drop counters, read atomically.
func (r *Receiver) Drops() Counters {
	d := &r.drops
	return Counters{
		Short: d[Short].Load(), Fragment: d[Fragment].Load(), IPOptions: d[IPOptions].Load(),
		IPChecksum: d[IPChecksum].Load(), UDPChecksum: d[UDPChecksum].Load(),
		NotOurs: d[NotOurs].Load(), Length: d[Length].Load(),
	}
}
