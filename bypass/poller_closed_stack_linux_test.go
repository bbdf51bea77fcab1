//go:build linux

package bypass_test

import (
	"errors"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass"
)

// TestPollerDoesNotPumpClosedStack: when the last socket of a stack served
// by a Poller is closed, the stack closes its driver (on afxdp: the rings
// and UMEM are unmapped). The next pass must report ErrClosed without
// polling the closed driver (Stack.Pump checks that the stack is open).
func TestPollerDoesNotPumpClosedStack(t *testing.T) {
	d, ss := memStack(t, 1)
	p := newPoller(t, bypass.PollerOptions{}, ss[0])
	if err := ss[0].Close(); err != nil {
		t.Fatal(err)
	}
	if !d.Closed() {
		t.Fatal("closing the last socket did not close the driver")
	}
	before := d.Polls
	_, err := p.Poll(pollMsgs(1), time.Second)
	if !errors.Is(err, bypass.ErrClosed) {
		t.Fatalf("Poll: %v, want ErrClosed", err)
	}
	if d.Polls != before {
		t.Fatalf("the poller polled a closed driver %d time(s): on afxdp that reads unmapped rings", d.Polls-before)
	}
}

// TestBlockingPollerWakesOnClose: a blocking Poller sleeping in epoll must
// return ErrClosed soon after another goroutine closes a connection it
// serves. Closing the descriptor drops it from the epoll set without an
// event, so the poller sleeps at most maxSleep at a time and looks again.
func TestBlockingPollerWakesOnClose(t *testing.T) {
	for _, be := range []string{"kernel", "busypoll"} {
		cs := kernelConns(t, be, 1, bypass.WaitBlock)
		p := newPoller(t, bypass.PollerOptions{Wait: bypass.WaitBlock}, cs...)
		go func() { time.Sleep(50 * time.Millisecond); cs[0].Close() }()
		t0 := time.Now()
		_, err := p.Poll(pollMsgs(1), 2*time.Second)
		if el := time.Since(t0); !errors.Is(err, bypass.ErrClosed) || el > time.Second {
			t.Errorf("%s: Poll returned %v after %v: want ErrClosed at once after Close", be, err, el)
		}
	}
}

// TestNetPacketConnConcurrentReads: net.PacketConn promises that several
// goroutines may call its methods at once: the adapter's reads share one
// message and one wait, under a read lock (the race detector checks).
func TestNetPacketConnConcurrentReads(t *testing.T) {
	c := kernelConns(t, "kernel", 1, bypass.WaitBlock)[0]
	src := kernelConns(t, "kernel", 1, bypass.WaitBlock)[0]
	pc := bypass.NetPacketConn(c)
	pc.SetReadDeadline(time.Now().Add(time.Second))
	done := make(chan struct{})
	for range 2 {
		go func() {
			defer func() { done <- struct{}{} }()
			b := make([]byte, 64)
			for range 50 {
				pc.ReadFrom(b)
			}
		}()
	}
	for range 200 {
		src.WriteTo([]byte("x"), c.LocalAddr())
		time.Sleep(100 * time.Microsecond)
	}
	<-done
	<-done
}
