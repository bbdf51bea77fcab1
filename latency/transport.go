package latency

import (
	"errors"
	"net/netip"
	"time"

	"github.com/lowlat/lowlat/bypass"
)

// Transport carries a client's requests to the echo server and its replies
// back. Implementations must not allocate per message.
type Transport interface {
	// Send sends b as one message.
	Send(b []byte) error
	// Recv receives one message into b. It returns bypass.ErrTimeout when
	// the read timeout passes, ErrForeign for a message from someone other
	// than the peer, and bypass.ErrMessageTooLong for a message that did
	// not fit b (consumed and dropped).
	Recv(b []byte) (int, error)
	// SetReadTimeout bounds each Recv.
	SetReadTimeout(d time.Duration) error
}

// ErrForeign is returned by a Transport's Recv for a message that did not
// come from the peer.
var ErrForeign = errors.New("latency: message from another sender")

// PacketTransport sends datagrams on c to peer and accepts only datagrams
// from peer. It does not close c.
//
// A multicast peer (a group the servers joined) is sent to, and a reply is
// taken from whichever server sends it, from any address.
func PacketTransport(c bypass.PacketConn, peer netip.AddrPort) Transport {
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	return &packetTransport{c: c, peer: peer, anySender: peer.Addr().IsMulticast()}
}

type packetTransport struct {
	c         bypass.PacketConn
	peer      netip.AddrPort
	anySender bool              // peer is a group: replies come from the servers' own addresses
	msg       [1]bypass.Message // recvStamped's
}

func (t *packetTransport) Send(b []byte) error {
	_, err := t.c.WriteTo(b, t.peer)
	return err
}

func (t *packetTransport) Recv(b []byte) (int, error) {
	n, from, err := t.c.ReadFrom(b)
	if err != nil {
		return 0, err
	}
	if from != t.peer && !t.anySender {
		return 0, ErrForeign
	}
	return n, nil
}

func (t *packetTransport) SetReadTimeout(d time.Duration) error { return t.c.SetReadTimeout(d) }

// StreamTransport sends each message with s.WriteMsg and receives with
// s.ReadMsg (a 4-byte length prefix per message). It does not close s.
func StreamTransport(s bypass.Stream) Transport { return streamTransport{s} }

type streamTransport struct{ s bypass.Stream }

func (t streamTransport) Send(b []byte) error                  { return t.s.WriteMsg(b) }
func (t streamTransport) Recv(b []byte) (int, error)           { return t.s.ReadMsg(b) }
func (t streamTransport) SetReadTimeout(d time.Duration) error { return t.s.SetReadTimeout(d) }
