//go:build linux && onload && cgo

package onload_test

import (
	"testing"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency/latencytest"
)

// One op is one full round trip over loopback through the C library
// (without Onload here: kernel sockets), as latency's
// BenchmarkRoundTrip<Backend>; 0 allocs/op is the contract. Run with
//
//	go test -tags onload -run XXX -bench RoundTripOnload -benchmem ./bypass/onload/
//
// and BenchmarkRoundTripBusypoll (./latency/) for the same round trip on
// raw system calls.

func BenchmarkRoundTripOnload(b *testing.B) {
	server, client := latencytest.UDPPair(b, bypass.Options{Backend: "onload", Wait: bypass.WaitSpin})
	latencytest.BenchPacket(b, server, client)
}

func BenchmarkRoundTripOnloadBlock(b *testing.B) {
	server, client := latencytest.UDPPair(b, bypass.Options{Backend: "onload", Wait: bypass.WaitBlock})
	latencytest.BenchPacket(b, server, client)
}

func BenchmarkRoundTripOnloadTCP(b *testing.B) {
	server, client := latencytest.TCPPair(b, bypass.Options{Backend: "onload", Wait: bypass.WaitSpin})
	latencytest.BenchStream(b, server, client)
}
