//go:build linux

package latency_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency"
	"github.com/lowlat/lowlat/latency/latencytest"
)

// Each op is one full round trip over loopback: client send, server receive
// and send, client receive, histogram record. Run with
//
//	go test -bench RoundTrip -benchmem -run XXX ./latency/
//
// A backend's owner adds BenchmarkRoundTrip<Backend> with the same helpers.

func benchUDP(b *testing.B, backend string) {
	server, client := latencytest.UDPPair(b, bypass.Options{Backend: backend})
	latencytest.BenchPacket(b, server, client)
}

func benchTCP(b *testing.B, backend string) {
	server, client := latencytest.TCPPair(b, bypass.Options{Backend: backend})
	latencytest.BenchStream(b, server, client)
}

func BenchmarkRoundTripKernel(b *testing.B)      { benchUDP(b, "kernel") }
func BenchmarkRoundTripBusypoll(b *testing.B)    { benchUDP(b, "busypoll") }
func BenchmarkRoundTripKernelTCP(b *testing.B)   { benchTCP(b, "kernel") }
func BenchmarkRoundTripBusypollTCP(b *testing.B) { benchTCP(b, "busypoll") }

// BenchmarkRoundTripNetUDPConn is the same round trip through Go's own
// net.UDPConn (ReadFromUDPAddrPort / WriteToUDPAddrPort, through the
// runtime's poller), for context: it is what a Go service gets without
// lowlat.
func BenchmarkRoundTripNetUDPConn(b *testing.B) {
	server, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(latencytest.Loopback))
	if err != nil {
		b.Fatal(err)
	}
	client, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(latencytest.Loopback))
	if err != nil {
		server.Close()
		b.Fatal(err)
	}
	defer client.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, latency.MaxSize+1)
		for {
			n, from, err := server.ReadFromUDPAddrPort(buf)
			if err != nil {
				return // closed
			}
			reply, err := latency.Lowlat.Answer(buf[:n])
			if err == nil {
				server.WriteToUDPAddrPort(reply, from)
			}
		}
	}()
	defer func() { server.Close(); <-done }()
	peer := server.LocalAddr().(*net.UDPAddr).AddrPort()
	latencytest.BenchTransport(b, &netTransport{c: client, peer: peer})
}

// netTransport is a latency.Transport over a net.UDPConn.
type netTransport struct {
	c    *net.UDPConn
	peer netip.AddrPort
	d    time.Duration
}

func (t *netTransport) Send(p []byte) error {
	_, err := t.c.WriteToUDPAddrPort(p, t.peer)
	return err
}

func (t *netTransport) Recv(p []byte) (int, error) {
	if t.d > 0 {
		t.c.SetReadDeadline(time.Now().Add(t.d))
	}
	n, from, err := t.c.ReadFromUDPAddrPort(p)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, bypass.ErrTimeout
		}
		return 0, err
	}
	if from != t.peer {
		return 0, latency.ErrForeign
	}
	return n, nil
}

func (t *netTransport) SetReadTimeout(d time.Duration) error { t.d = d; return nil }

// BenchmarkRoundTripPoller is the round trip to an echo server that serves
// two connections through one bypass.Poller (EchoServer.ServePoller), on
// blocking kernel sockets; 0 allocs/op covers the server too.
func BenchmarkRoundTripPoller(b *testing.B) {
	o := bypass.Options{Backend: "kernel"}
	conns, _ := servePoller(b, &latency.EchoServer{}, o, 2, false)
	client, err := bypass.ListenUDP(latencytest.Loopback, o)
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	latencytest.BenchTransport(b, latency.PacketTransport(client, conns[1].LocalAddr()))
}
