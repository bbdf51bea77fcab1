package latency

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass"
)

// TestFloodCounted: a flood at a modest rate arrives whole and the server
// reports it; a flood as fast as the socket takes it is counted too, never
// more than was sent; the server answers none of it.
func TestFloodCounted(t *testing.T) {
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	srv, err := bypass.ListenUDP(lo, bypass.Options{Backend: "busypoll", RecvBuffer: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := bypass.ListenUDP(lo, bypass.Options{Backend: "busypoll"})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	es := &EchoServer{}
	done := make(chan error, 1)
	go func() { done <- es.ServePacket(srv) }()
	defer func() { srv.Close(); <-done }()

	res, err := Flood(context.Background(), cli, srv.LocalAddr(), FloodConfig{MPS: 5000, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// A stall of the VM can overflow the server's socket buffer even at
	// this rate: most, not all, must arrive, and the counts must agree.
	if res.Sent == 0 || res.Received*10 < res.Sent*9 || res.Sent != res.Received+res.Lost {
		t.Fatalf("paced flood: %+v, want (nearly) every message counted", res)
	}
	res, err = Flood(context.Background(), cli, srv.LocalAddr(), FloodConfig{Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Received == 0 || res.Received > res.Sent || res.Sent != res.Received+res.Lost {
		t.Fatalf("full-speed flood: %+v", res)
	}
	if st := es.Stats(); st.Echoed < 2 || st.Echoed > 20 || st.Flooded == 0 {
		t.Fatalf("server stats %+v: want only the report requests answered", st)
	}
	if _, err := Flood(context.Background(), cli, srv.LocalAddr(), FloodConfig{Size: 24, Duration: time.Millisecond}); err == nil {
		t.Fatal("a flood of messages too short for the report was accepted")
	}
}
