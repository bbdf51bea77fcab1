package gate

import (
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

func BenchmarkEnterExit(b *testing.B) {
	var g Gate
	b.ReportAllocs()
	for b.Loop() {
		if g.Enter() {
			g.Exit()
		}
	}
}
