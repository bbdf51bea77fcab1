//go:build linux

package testnet

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// transferSize is what each kernel TCP test sends from A to B.
const transferSize = 64 << 20

// tcpTransfer sends size bytes of seeded random data from A to B over one
// kernel TCP connection across the relay and fails the test unless B
// receives exactly them. It returns how long the transfer took.
func tcpTransfer(t *testing.T, r *RelayPath, size int) time.Duration {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var ln net.Listener
	if err := r.B.Do(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(r.BAddr, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		n   int64
		sum [32]byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		h := sha256.New()
		n, err := io.Copy(h, c)
		var res result
		res.n, res.err = n, err
		h.Sum(res.sum[:0])
		done <- res
	}()
	var c net.Conn
	if err := r.A.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(deadline)

	rng := rand.New(rand.NewChaCha8([32]byte{1, 2, 3}))
	buf := make([]byte, 1<<20)
	h := sha256.New()
	start := time.Now()
	for sent := 0; sent < size; {
		chunk := buf[:min(len(buf), size-sent)]
		for i := 0; i < len(chunk); i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8 && i+j < len(chunk); j++ {
				chunk[i+j] = byte(v >> (8 * j))
			}
		}
		h.Write(chunk)
		if _, err := c.Write(chunk); err != nil {
			t.Fatalf("write after %d bytes: %v", sent, err)
		}
		sent += len(chunk)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	res := <-done
	elapsed := time.Since(start)
	if res.err != nil {
		t.Fatalf("receiver after %d bytes: %v", res.n, res.err)
	}
	if res.n != int64(size) {
		t.Fatalf("received %d bytes, sent %d", res.n, size)
	}
	if !bytes.Equal(res.sum[:], h.Sum(nil)) {
		t.Fatalf("received data differ from sent (sha256)")
	}
	t.Logf("%d MiB A->B in %v: %.0f MB/s", size>>20, elapsed.Round(time.Millisecond), float64(size)/elapsed.Seconds()/1e6)
	return elapsed
}

func TestRelayCleanPath(t *testing.T) {
	r := NewRelayPath(t, RelayConfig{})
	if !r.Prefix.Contains(r.AAddr) || !r.Prefix.Contains(r.BAddr) || r.Prefix.Bits() != 24 {
		t.Fatalf("addresses %v %v not in one /24 (%v)", r.AAddr, r.BAddr, r.Prefix)
	}

	// UDP echo: B answers A, datagrams of several sizes up to the MTU.
	var srv *net.UDPConn
	if err := r.B.Do(func() (err error) {
		srv, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.BAddr, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			srv.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	var cli *net.UDPConn
	if err := r.A.Do(func() (err error) {
		cli, err = net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	got := make([]byte, 1<<16)
	for i, size := range []int{1, 64, 512, 1400, r.MTU - 28} {
		msg := bytes.Repeat([]byte{byte(i + 1)}, size)
		cli.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := cli.Write(msg); err != nil {
			t.Fatal(err)
		}
		n, err := cli.Read(got)
		if err != nil || !bytes.Equal(got[:n], msg) {
			t.Fatalf("UDP echo of %d bytes: got %d bytes, %v", size, n, err)
		}
	}
	// ARP crossed the relay: A knows B's MAC itself.
	if out := r.Exec(t, r.A, "ip", "neigh", "show", r.BAddr.String()); !strings.Contains(out, r.BMAC.String()) {
		t.Errorf("A's neighbour entry for B is %q, want MAC %s", strings.TrimSpace(out), r.BMAC)
	}

	tcpTransfer(t, r, transferSize)
	st := r.Stats()
	t.Logf("stats %+v", st)
	for name, c := range map[string]RelayCounts{"A to B": st.AToB, "B to A": st.BToA} {
		if c.In == 0 || c.Forwarded != c.In || c.Dropped+c.Reordered+c.Duplicated+c.Lost != 0 {
			t.Errorf("%s: %+v, want every frame forwarded once", name, c)
		}
	}
	// TCP segments are MTU-sized (no TSO or GSO): 64 MiB takes at least
	// this many frames.
	if min := uint64(transferSize / (r.MTU - 40)); st.AToB.In < min {
		t.Errorf("A to B carried %d frames, want at least %d (offloads still on?)", st.AToB.In, min)
	}
}

func TestRelayImpairedTCP(t *testing.T) {
	r := NewRelayPath(t, RelayConfig{Impair: Impair{Seed: 1, Loss: 0.01, Reorder: 0.01, Dup: 0.005}})
	tcpTransfer(t, r, transferSize)
	st := r.Stats()
	t.Logf("stats %+v", st)
	a := st.AToB
	if a.Dropped == 0 || a.Reordered == 0 || a.Duplicated == 0 {
		t.Errorf("A to B: %+v, want drops, reorders and duplicates", a)
	}
	// About 1% of the IPv4 frames should be dropped.
	if f := float64(a.Dropped) / float64(a.In); f < 0.005 || f > 0.02 {
		t.Errorf("A to B dropped %.4f of frames, want about 0.01", f)
	}
}

func TestScheduleReproducible(t *testing.T) {
	imp := Impair{Seed: 42, Loss: 0.1, Reorder: 0.05, Dup: 0.02}
	seqOf := func(imp Impair, dir uint64, n int) []action {
		s := newSchedule(imp, dir)
		out := make([]action, n)
		for i := range out {
			out[i] = s.next()
		}
		return out
	}
	const n = 100000
	a, b := seqOf(imp, 0, n), seqOf(imp, 0, n)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, decision %d: %v then %v", i, a[i], b[i])
		}
	}
	differ := func(x, y []action) bool {
		for i := range x {
			if x[i] != y[i] {
				return true
			}
		}
		return false
	}
	if !differ(a, seqOf(imp, 1, n)) {
		t.Error("directions 0 and 1 draw the same sequence")
	}
	other := imp
	other.Seed = 43
	if !differ(a, seqOf(other, 0, n)) {
		t.Error("seeds 42 and 43 draw the same sequence")
	}
	var count [4]int
	for _, x := range a {
		count[x]++
	}
	for act, want := range map[action]float64{actDrop: imp.Loss, actReorder: imp.Reorder, actDup: imp.Dup} {
		got := float64(count[act]) / n
		if sd := math.Sqrt(want * (1 - want) / n); math.Abs(got-want) > 5*sd {
			t.Errorf("%v: fraction %.4f, want %.4f", act, got, want)
		}
	}
	for _, x := range seqOf(Impair{Seed: 7}, 0, 1000) {
		if x != actPass {
			t.Fatalf("no impairment drew %v", x)
		}
	}
}

func TestImpairValidate(t *testing.T) {
	for _, imp := range []Impair{{Loss: -0.1}, {Reorder: 1.5}, {Dup: math.NaN()}, {Loss: 0.6, Reorder: 0.6}} {
		if imp.validate() == nil {
			t.Errorf("%+v accepted", imp)
		}
	}
	if err := (Impair{Loss: 0.5, Reorder: 0.25, Dup: 0.25}).validate(); err != nil {
		t.Error(err)
	}
}

// udpPair opens a UDP socket in B and one in A connected to it.
func udpPair(t *testing.T, r *RelayPath) (a, b *net.UDPConn) {
	t.Helper()
	if err := r.B.Do(func() (err error) {
		b, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.BAddr, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := r.A.Do(func() (err error) {
		a, err = net.DialUDP("udp4", nil, b.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, b
}

// sendSeq sends datagrams numbered from..to-1 from a.
func sendSeq(t *testing.T, a *net.UDPConn, from, to int) {
	t.Helper()
	msg := make([]byte, 64)
	for i := from; i < to; i++ {
		binary.BigEndian.PutUint32(msg, uint32(i))
		if _, err := a.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
}

// recvSeq reads up to n datagram numbers on b, stopping early when none
// comes for wait.
func recvSeq(t *testing.T, b *net.UDPConn, n int, wait time.Duration) []int {
	t.Helper()
	var got []int
	buf := make([]byte, 256)
	for len(got) < n {
		b.SetReadDeadline(time.Now().Add(wait))
		k, err := b.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil || k != 64 {
			t.Fatalf("read %d bytes: %v", k, err)
		}
		got = append(got, int(binary.BigEndian.Uint32(buf)))
	}
	return got
}

// TestRelayActions checks each impairment on its own at fraction 1, where
// its effect is certain, with UDP datagrams from A to B.
func TestRelayActions(t *testing.T) {
	const n = 100
	t.Run("reorder", func(t *testing.T) {
		r := NewRelayPath(t, RelayConfig{Impair: Impair{Reorder: 1}})
		a, b := udpPair(t, r)
		// A lone datagram is held, and flushed after about 1 ms.
		sendSeq(t, a, 0, 1)
		if got := recvSeq(t, b, 1, 5*time.Second); len(got) != 1 || got[0] != 0 {
			t.Fatalf("lone datagram: got %v", got)
		}
		sendSeq(t, a, 1, n+1)
		got := recvSeq(t, b, n, 2*time.Second)
		seen := map[int]bool{}
		inversions := 0
		for i, v := range got {
			if seen[v] {
				t.Errorf("datagram %d twice", v)
			}
			seen[v] = true
			if i > 0 && v < got[i-1] {
				inversions++
			}
		}
		if len(got) != n {
			t.Fatalf("got %d datagrams, want %d: %v", len(got), n, got)
		}
		st := r.Stats().AToB
		t.Logf("%d inversions in %v; %+v", inversions, got[:10], st)
		if inversions == 0 || st.Reordered == 0 {
			t.Errorf("no reordering: %d inversions, %+v", inversions, st)
		}
	})
	t.Run("dup", func(t *testing.T) {
		r := NewRelayPath(t, RelayConfig{Impair: Impair{Dup: 1}})
		a, b := udpPair(t, r)
		sendSeq(t, a, 0, n)
		got := recvSeq(t, b, 2*n+1, 300*time.Millisecond)
		count := map[int]int{}
		for _, v := range got {
			count[v]++
		}
		for i := range n {
			if count[i] != 2 {
				t.Errorf("datagram %d arrived %d times, want 2", i, count[i])
			}
		}
		if st := r.Stats().AToB; st.Duplicated < n {
			t.Errorf("%+v, want at least %d duplicated", st, n)
		}
	})
	t.Run("loss", func(t *testing.T) {
		r := NewRelayPath(t, RelayConfig{Impair: Impair{Loss: 1}})
		a, b := udpPair(t, r)
		sendSeq(t, a, 0, 3)
		if got := recvSeq(t, b, 1, 300*time.Millisecond); len(got) != 0 {
			t.Fatalf("got %v through a relay that drops every IPv4 frame", got)
		}
		// ARP is not IPv4: it passed, both ways.
		if out := r.Exec(t, r.A, "ip", "neigh", "show", r.BAddr.String()); !strings.Contains(out, r.BMAC.String()) {
			t.Errorf("A's neighbour entry for B is %q, want MAC %s", strings.TrimSpace(out), r.BMAC)
		}
		st := r.Stats()
		if st.AToB.Dropped < 3 || st.AToB.Forwarded == 0 || st.BToA.Forwarded == 0 {
			t.Errorf("%+v, want 3 datagrams dropped and ARP forwarded both ways", st)
		}
	})
}
