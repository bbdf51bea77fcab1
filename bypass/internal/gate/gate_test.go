package gate

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestGate(t *testing.T) {
	var g Gate
	if !g.Enter() {
		t.Fatal("an open gate refused a call")
	}
	if !g.Shut() || g.Shut() {
		t.Fatal("Shut must report true once")
	}
	if g.Enter() {
		t.Fatal("a shut gate admitted a call")
	}
	if !g.Closed() {
		t.Fatal("Closed is false after Shut")
	}
	if g.Wait(time.Millisecond) {
		t.Fatal("Wait drained with a call in flight")
	}
	done := make(chan bool)
	go func() { done <- g.Wait(10 * time.Second) }()
	g.Exit()
	if !<-done {
		t.Fatal("Wait did not drain after the last Exit")
	}
}

func TestPair(t *testing.T) {
	var p Pair
	if !p.R.Enter() || !p.W.Enter() {
		t.Fatal("an open pair refused a call")
	}
	if !p.Shut() || p.Shut() {
		t.Fatal("Shut must report true once")
	}
	if p.R.Enter() || p.W.Enter() || !p.Closed() {
		t.Fatal("a shut pair admitted a call")
	}
	p.R.Exit()
	if p.Wait(time.Millisecond) {
		t.Fatal("Wait drained with a write in flight")
	}
	p.W.Exit()
	if !p.Wait(time.Second) {
		t.Fatal("Wait did not drain")
	}
}

func BenchmarkEnterExit(b *testing.B) {
	var g Gate
	b.ReportAllocs()
	for b.Loop() {
		if g.Enter() {
			g.Exit()
		}
	}
}

// BenchmarkReaderAndWriter runs Enter/Exit on a pair's two gates from two
// goroutines at once, as a reader and a writer of one connection do.
func BenchmarkReaderAndWriter(b *testing.B) {
	var p Pair
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		g := &p.W
		if n := seq.Add(1); n%2 == 0 {
			g = &p.R
		}
		for pb.Next() {
			if g.Enter() {
				g.Exit()
			}
		}
	})
}

var seq atomic.Int32
