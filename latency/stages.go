package latency

import (
	"encoding/binary"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/lowlat/lowlat/bypass"
)

// Stages split one round trip into where its time went, from timestamps
// (Config.Stages, with the connections' Timestamps and TxTimestamps on):
//
//	client_tx  the client's send call to its transmit stamp: the client's
//	           own stack on the way out
//	network    the client's transmit stamp to its receive stamp, less the
//	           server's stage: wire, switches, both kernels' or NICs' paths
//	server     the server's receive stamp to its send call, measured on the
//	           server's clock and carried back in the reply
//	client_rx  the rest of the round trip: the client's receive stamp to
//	           its read returning
//
// The four add up to the round trip of each sample: client_rx is what
// remains once the others are taken off.
type Stages struct {
	ClientTx, Network, Server, ClientRx int64
}

// StageNames are the stages' names, in JSON and tables, in Stages' order.
var StageNames = []string{"client_tx", "network", "server", "client_rx"}

// Values returns the stages in StageNames' order.
func (s Stages) Values() [4]int64 { return [4]int64{s.ClientTx, s.Network, s.Server, s.ClientRx} }

// FlagStages in a request asks the server to put its stage, in
// nanoseconds, in the eight bytes after the header of its reply (a message
// of at least 32 bytes; the lowlat wire only).
const FlagStages uint8 = 1 << 1

// stageOffset is where a reply carries the server's stage.
const stageOffset = HeaderLen

// MinStageSize is the smallest message that can carry the server's stage.
const MinStageSize = HeaderLen + 8

// putServerStage writes the server's stage into a reply whose request
// asked for it: from the request's receive stamp to now. It does nothing
// when the request did not ask, the message is too short, or the stamp is
// not on CLOCK_REALTIME (a NIC's clock cannot be compared with the
// server's send call).
func putServerStage(reply []byte, rx bypass.Timestamp) {
	if len(reply) < MinStageSize || binary.BigEndian.Uint32(reply) != Magic || reply[5]&FlagStages == 0 {
		return // not a lowlat request that asks (a server on the auto wire also answers sockperf)
	}
	var ns int64
	if rx.Clock == bypass.ClockKernel || rx.Clock == bypass.ClockUser {
		ns = max(time.Now().UnixNano()-rx.Ns, 0)
	}
	binary.BigEndian.PutUint64(reply[stageOffset:], uint64(ns))
}

// serverStage reads the server's stage from a reply: false when it carries
// none.
func serverStage(reply []byte) (int64, bool) {
	if len(reply) < MinStageSize || binary.BigEndian.Uint32(reply) != Magic || reply[5]&FlagStages == 0 {
		return 0, false
	}
	ns := int64(binary.BigEndian.Uint64(reply[stageOffset:]))
	return ns, ns > 0
}

// stampedTransport is a Transport that reports receive stamps and the
// transmit stamp of what it sent.
type stampedTransport interface {
	Transport
	// recvStamped is Recv with the message's receive stamp.
	recvStamped(b []byte) (int, bypass.Timestamp, error)
	// txStamp is the transmit stamp of the latest message sent.
	txStamp() (bypass.Timestamp, bool)
}

func (t *packetTransport) recvStamped(b []byte) (int, bypass.Timestamp, error) {
	t.msg[0].Buf = b
	_, err := t.c.ReadBatch(t.msg[:])
	m := &t.msg[0]
	m.Buf = nil
	if err != nil {
		return 0, bypass.Timestamp{}, err
	}
	if m.Addr != t.peer && !t.anySender {
		return 0, bypass.Timestamp{}, ErrForeign
	}
	if m.Trunc {
		return 0, bypass.Timestamp{}, bypass.ErrMessageTooLong
	}
	return m.N, m.Stamp, nil
}

func (t *packetTransport) txStamp() (bypass.Timestamp, bool) {
	ts, ok := t.c.(bypass.TxStamper)
	if !ok {
		return bypass.Timestamp{}, false
	}
	_, stamp, ok := ts.LastTxStamp()
	return stamp, ok
}

// stageHists are the four stages' histograms and the count of samples
// that could not be split, by reason.
type stageHists struct {
	h       [4]*hdrhistogram.Histogram
	missing StagesMissing
}

// StagesMissing counts the measured samples that were not split into
// stages, by the stamp that was missing.
type StagesMissing struct {
	RxStamp     uint64 `json:"rx_stamp,omitempty"`     // the reply had no receive stamp
	TxStamp     uint64 `json:"tx_stamp,omitempty"`     // the request's transmit stamp was not known
	ServerStage uint64 `json:"server_stage,omitempty"` // the reply carried no server stage (the server has no stamps, or an older latprobe)
	Clock       uint64 `json:"clock,omitempty"`        // the stamps were of another clock than the send call's (a NIC's)
}

// Total is the number of samples not split.
func (m StagesMissing) Total() uint64 { return m.RxStamp + m.TxStamp + m.ServerStage + m.Clock }

func newStageHists() *stageHists {
	s := &stageHists{}
	for i := range s.h {
		s.h[i] = NewHistogram()
	}
	return s
}

// split computes one sample's stages: sendWall and readWall are
// CLOCK_REALTIME around the round trip rtt, rx and tx the client's stamps,
// server the server's stage. It reports false, counting why, when a piece
// is missing.
func (s *stageHists) split(rtt, sendWall int64, rx, tx bypass.Timestamp, txOK bool, server int64, serverOK bool) (Stages, bool) {
	switch {
	case rx.IsZero():
		s.missing.RxStamp++
		return Stages{}, false
	case !txOK || tx.IsZero():
		s.missing.TxStamp++
		return Stages{}, false
	case !serverOK:
		s.missing.ServerStage++
		return Stages{}, false
	case rx.Clock == bypass.ClockNIC || tx.Clock == bypass.ClockNIC:
		s.missing.Clock++
		return Stages{}, false
	}
	var st Stages
	st.ClientTx = max(tx.Ns-sendWall, 0)
	st.Server = min(server, rtt)
	st.Network = max(rx.Ns-tx.Ns-st.Server, 0)
	st.ClientRx = rtt - st.ClientTx - st.Network - st.Server
	if st.ClientRx < 0 {
		// The clocks disagree by more than the last stage: give the
		// difference back to the network, so that the four still add up.
		st.Network = max(st.Network+st.ClientRx, 0)
		st.ClientRx = rtt - st.ClientTx - st.Network - st.Server
		if st.ClientRx < 0 {
			st.ClientTx += st.ClientRx
			st.ClientRx = 0
		}
	}
	return st, true
}

func (s *stageHists) record(st Stages) {
	for i, v := range st.Values() {
		record(s.h[i], v)
	}
}
