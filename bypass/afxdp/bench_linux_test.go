//go:build linux

package afxdp_test

import (
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass/afxdp"
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

// BenchmarkRoundTripAFXDPTCP measures one TCP round trip per op between
// two afxdp stacks in two namespaces: a framed 64-byte message written by
// the client, read and written back by the server, read by the client;
// both sides spin. Every segment and ACK is built, parsed and processed by
// the stack's TCP inline.
func BenchmarkRoundTripAFXDPTCP(b *testing.B) {
	p := testnet.NewPair(b, testnet.Config{TxChecksumOff: true})
	o := backend.Options{Wait: backend.WaitSpin}
	var ln backend.StreamListener
	if err := p.B.Do(func() (err error) {
		o := o
		o.Interface = p.B.Link
		ln, err = afxdp.Backend{}.ListenTCP(netip.AddrPortFrom(p.B.Addr, port), o)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(done)
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		buf := make([]byte, 2048)
		for {
			n, err := s.ReadMsg(buf)
			if err != nil {
				return
			}
			if s.WriteMsg(buf[:n]) != nil {
				return
			}
		}
	}()
	var cli backend.Stream
	if err := p.A.Do(func() (err error) {
		o := o
		o.Interface = p.A.Link
		cli, err = afxdp.Backend{}.DialTCP(netip.AddrPortFrom(p.B.Addr, port), o)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 64)
	buf := make([]byte, 2048)
	roundTrip := func() {
		if err := cli.WriteMsg(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := cli.ReadMsg(buf); err != nil {
			b.Fatal(err)
		}
	}
	for range 100 {
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
	cli.Close()
	<-done
	ln.Close()
}
