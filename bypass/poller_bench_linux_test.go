//go:build linux

package bypass_test

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/internal/testnet"
)

// BenchmarkPollPass is the cost of one poller pass over idle connections:
// ns/op is one TryPoll that finds nothing.
func BenchmarkPollPass(b *testing.B) {
	for _, n := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("busypoll/idle=%d", n), func(b *testing.B) {
			p := newPoller(b, bypass.PollerOptions{}, kernelConns(b, "busypoll", n, bypass.WaitSpin)...)
			passes(b, p)
		})
		b.Run(fmt.Sprintf("stack/idle=%d", n), func(b *testing.B) {
			_, ss := memStack(b, n)
			p := newPoller(b, bypass.PollerOptions{})
			for _, s := range ss {
				p.Add(s)
			}
			passes(b, p)
		})
	}
}

func passes(b *testing.B, p *bypass.Poller) {
	msgs := pollMsgs(16)
	b.ReportAllocs()
	for b.Loop() {
		if n, err := p.TryPoll(msgs); n != 0 || err != nil {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkPollRoundTrip is one full round trip per op between a client
// socket and a server that serves one active socket among idle ones: with
// a poller over 1, 8 and 64 sockets, and directly (ReadFrom on the one
// socket) as the baseline the poller is measured against. Both ends spin.
//
//	go test -run XXX -bench PollRoundTrip -benchtime 2s -count 5 ./bypass/
func BenchmarkPollRoundTrip(b *testing.B) {
	for _, n := range []int{0, 1, 8, 64} {
		name := fmt.Sprintf("sockets=%d", n)
		if n == 0 {
			name = "direct"
		}
		b.Run("busypoll/"+name, func(b *testing.B) {
			srv := kernelConns(b, "busypoll", max(n, 1), bypass.WaitSpin)
			cli := kernelConns(b, "busypoll", 1, bypass.WaitSpin)[0]
			roundTrips(b, cli, srv, n > 0, srv[len(srv)-1].LocalAddr())
		})
		b.Run("afxdp/"+name, func(b *testing.B) {
			p := testnet.NewPair(b, testnet.Config{TxChecksumOff: true})
			var srv []bypass.PacketConn
			var cli bypass.PacketConn
			err := p.B.Do(func() error {
				for i := range max(n, 1) {
					c, err := bypass.ListenUDP(netip.AddrPortFrom(p.B.Addr, uint16(9200+i)), bypass.Options{Backend: "afxdp", Interface: p.B.Link})
					if err != nil {
						return err
					}
					srv = append(srv, c)
				}
				return nil
			})
			for _, c := range srv {
				b.Cleanup(func() { c.Close() })
			}
			if err != nil {
				b.Skipf("afxdp server: %v", err)
			}
			if err := p.A.Do(func() (err error) {
				cli, err = bypass.ListenUDP(netip.AddrPortFrom(p.A.Addr, 9200), bypass.Options{Backend: "afxdp", Interface: p.A.Link})
				return err
			}); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { cli.Close() })
			roundTrips(b, cli, srv, n > 0, srv[len(srv)-1].LocalAddr())
		})
	}
}

func roundTrips(b *testing.B, cli bypass.PacketConn, srv []bypass.PacketConn, poll bool, dst netip.AddrPort) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(done)
		// serve answers what one call receives; false ends the loop.
		var serve func() bool
		if !poll {
			buf := make([]byte, 2048)
			c := srv[0]
			c.SetReadTimeout(10 * time.Millisecond)
			serve = func() bool {
				n, from, err := c.ReadFrom(buf)
				if err == nil {
					c.WriteTo(buf[:n], from)
				}
				return err == nil || errors.Is(err, bypass.ErrTimeout)
			}
		} else {
			p, err := bypass.NewPoller(bypass.PollerOptions{})
			if err != nil {
				return
			}
			defer p.Close()
			for _, c := range srv {
				p.Add(c)
			}
			msgs := pollMsgs(16)
			serve = func() bool {
				n, err := p.Poll(msgs, 10*time.Millisecond)
				for _, m := range msgs[:n] {
					m.Conn.WriteTo(m.Buf[:m.N], m.Addr)
				}
				return err == nil || errors.Is(err, bypass.ErrTimeout)
			}
		}
		for serve() {
			select {
			case <-quit:
				return
			default:
			}
		}
	}()
	defer func() { close(quit); <-done }()
	msg := make([]byte, 64)
	buf := make([]byte, 2048)
	cli.SetReadTimeout(2 * time.Second)
	rt := func() {
		if _, err := cli.WriteTo(msg, dst); err != nil {
			b.Fatal(err)
		}
		if _, _, err := cli.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
	}
	for range 100 { // resolve next hops, warm the rings
		rt()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	for b.Loop() {
		rt()
	}
}
