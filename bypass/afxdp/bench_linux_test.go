//go:build linux

package afxdp_test

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/internal/testnet"
)

// BenchmarkRoundTripAFXDP measures one full round trip per op between two
// afxdp endpoints in two namespaces: client send, server receive and send,
// client receive. Both sides spin.
func BenchmarkRoundTripAFXDP(b *testing.B) {
	p := testnet.NewPair(b, testnet.Config{TxChecksumOff: true})
	open := func(ns *testnet.NS) backend.PacketConn {
		var c backend.PacketConn
		if err := ns.Do(func() (err error) {
			c, err = afxdpListen(ns, backend.Options{Wait: backend.WaitSpin, ReadTimeout: time.Second})
			return err
		}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
	srv, cli := open(p.B), open(p.A)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err == backend.ErrTimeout {
				continue
			}
			if err != nil {
				return
			}
			srv.WriteTo(buf[:n], from)
		}
	}()
	dst := netip.AddrPortFrom(p.B.Addr, port)
	msg := make([]byte, 64)
	buf := make([]byte, 2048)
	roundTrip := func() {
		if _, err := cli.WriteTo(msg, dst); err != nil {
			b.Fatal(err)
		}
		if _, _, err := cli.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
	}
	for range 100 { // resolve the next hop, warm the rings
		roundTrip()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		roundTrip()
	}
	b.StopTimer()
	srv.Close()
	<-done
}
