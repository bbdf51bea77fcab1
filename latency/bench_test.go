//go:build linux

package latency_test

import (
	"testing"

	"github.com/lowlat/lowlat/bypass"
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
