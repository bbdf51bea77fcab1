package bypass_test

import (
	"encoding/binary"
	"fmt"
	"log"
	"net/netip"
	"runtime"
	"time"

	"github.com/lowlat/lowlat/bypass"
)

// A market-data receiver: join a multicast feed and drain it in batches on
// a spinning, thread-locked goroutine. Buffers are allocated once; the loop
// allocates nothing. With LOWLAT_BACKEND=afxdp and LOWLAT_IFACE set (as
// onload-run does), the same code reads the feed through AF_XDP.
func Example_marketDataReceiver() {
	o, err := bypass.OptionsFromEnv(bypass.Options{Wait: bypass.WaitSpin, ReadTimeout: 100 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	feed, err := bypass.ListenUDP(netip.MustParseAddrPort("0.0.0.0:0"), o)
	if err != nil {
		log.Fatal(err)
	}
	defer feed.Close()
	// A real feed would now join its group: feed.JoinGroup(group).

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	msgs := make([]bypass.Message, 32)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 1500)
	}
	var seen uint64
	for range 3 { // a real receiver loops until shutdown
		n, err := feed.ReadBatch(msgs)
		if err == bypass.ErrTimeout {
			continue
		}
		if err != nil {
			log.Fatal(err)
		}
		for _, m := range msgs[:n] {
			if m.N >= 8 {
				seen = binary.BigEndian.Uint64(m.Buf) // the feed's sequence number
			}
		}
	}
	fmt.Println("last sequence", seen)
	// Output: last sequence 0
}

// A request/response service over TCP: one framed message in, one out.
func Example_requestResponse() {
	o := bypass.Options{Backend: "kernel", ReadTimeout: time.Second}
	ln, err := bypass.ListenTCP(netip.MustParseAddrPort("127.0.0.1:0"), o)
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		buf := make([]byte, 512)
		for {
			n, err := s.ReadMsg(buf)
			if err != nil {
				return
			}
			copy(buf[n:], " ack")
			if s.WriteMsg(buf[:n+4]) != nil {
				return
			}
		}
	}()

	cli, err := bypass.DialTCP(ln.Addr(), o)
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	reply := make([]byte, 512)
	cli.WriteMsg([]byte("order 42"))
	n, err := cli.ReadMsg(reply)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(reply[:n]))
	// Output: order 42 ack
}
