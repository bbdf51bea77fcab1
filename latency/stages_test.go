package latency

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/lowlat/lowlat/bypass"
)

// stampFake is a transport whose peer answers at once, with made-up but
// consistent stamps: the request leaves 300 ns after the send call, the
// server spends serverNS, the reply's receive stamp is 200 ns before the
// read returns.
type stampFake struct {
	req      []byte
	sendWall int64
	serverNS int64
	txOK     bool
}

func (f *stampFake) Send(b []byte) error {
	f.sendWall = time.Now().UnixNano()
	f.req = append(f.req[:0], b...)
	return nil
}
func (f *stampFake) Recv(b []byte) (int, error)         { n, _, err := f.recvStamped(b); return n, err }
func (f *stampFake) SetReadTimeout(time.Duration) error { return nil }
func (f *stampFake) recvStamped(b []byte) (int, bypass.Timestamp, error) {
	n := copy(b, f.req)
	b[5] |= FlagReply
	s := f.serverNS
	putServerStage(b[:n], bypass.Timestamp{Ns: time.Now().UnixNano() - s, Clock: bypass.ClockKernel})
	time.Sleep(time.Microsecond)
	return n, bypass.Timestamp{Ns: time.Now().UnixNano() - 200, Clock: bypass.ClockKernel}, nil
}
func (f *stampFake) txStamp() (bypass.Timestamp, bool) {
	return bypass.Timestamp{Ns: f.sendWall + 300, Clock: bypass.ClockKernel}, f.txOK
}

// TestStagesAddUp: for every sample the four stages add up to the round
// trip, whatever the stamps say.
func TestStagesAddUp(t *testing.T) {
	f := &stampFake{serverNS: 2000, txOK: true}
	c, err := NewClient(f, Config{Count: 100, Stages: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		rtt, err := c.RoundTrip()
		if err != nil {
			t.Fatal(err)
		}
		st := c.LastStages()
		v := st.Values()
		if sum := v[0] + v[1] + v[2] + v[3]; sum != int64(rtt) {
			t.Fatalf("sample %d: stages %+v add up to %d, the round trip was %d", i, st, sum, rtt)
		}
		for j, x := range v {
			if x < 0 {
				t.Fatalf("sample %d: stage %s negative: %+v", i, StageNames[j], st)
			}
		}
	}
	// A missing transmit stamp is counted, not recorded.
	f.txOK = false
	c.RoundTrip()
	r := c.result(0, 1)
	if r.StagesMissing.TxStamp != 1 || r.Stages[0].TotalCount() != 100 {
		t.Fatalf("missing %+v, %d split", r.StagesMissing, r.Stages[0].TotalCount())
	}
	if _, err := NewClient(f, Config{Count: 1, Stages: true, Size: 24}); err == nil {
		t.Fatal("stages accepted a message too short to carry the server's stage")
	}
}

// TestStagesOverLoopback measures real stamps: kernel sockets on loopback
// with receive and transmit stamps, an echo server that stamps, and a
// client that splits every sample; the report carries the stages.
func TestStagesOverLoopback(t *testing.T) {
	o := bypass.Options{Backend: "kernel", Timestamps: bypass.TimestampsSoftware, TxTimestamps: true, ReadTimeout: time.Second}
	srv, err := bypass.ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), o)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := bypass.ListenUDP(netip.MustParseAddrPort("127.0.0.1:0"), o)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	waitForStamps(t, cli)
	es := &EchoServer{}
	done := make(chan error, 1)
	go func() { done <- es.ServePacket(srv) }()
	c, err := NewClient(PacketTransport(cli, srv.LocalAddr()), Config{Count: 200, Warmup: 10, Stages: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Run(context.Background())
	srv.Close()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if res.StagesMissing.Total() != 0 || res.Stages[0].TotalCount() != res.Hist.TotalCount() {
		t.Fatalf("%d of %d samples split, missing %+v", res.Stages[0].TotalCount(), res.Hist.TotalCount(), res.StagesMissing)
	}
	rep := NewReport(res, "kernel", "udp")
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"stages_ns"`, `"client_tx"`, `"network"`, `"server"`, `"client_rx"`} {
		if !strings.Contains(string(b), k) {
			t.Fatalf("JSON report lacks %s: %s", k, b)
		}
	}
	var sb strings.Builder
	if err := WriteTable(&sb, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sb.String(), "client_rx") {
		t.Fatalf("table lacks the stages:\n%s", sb.String())
	}
	if rep.Stages["server"].P50 <= 0 || rep.Stages["network"].P50 <= 0 {
		t.Fatalf("stages %+v: the server and network stages must be measured", rep.Stages)
	}
}

// waitForStamps sends to c itself until a datagram comes back stamped:
// the kernel turns receive stamping on for the whole host a moment after
// the first socket asks (a deferred static key), so the first datagrams
// after that may carry none.
func waitForStamps(t *testing.T, c bypass.PacketConn) {
	t.Helper()
	msgs := []bypass.Message{{Buf: make([]byte, 16)}}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		c.WriteTo([]byte("stamp?"), c.LocalAddr())
		if _, err := c.ReadBatch(msgs); err != nil {
			t.Fatal(err)
		}
		if !msgs[0].Stamp.IsZero() {
			c.(bypass.TxStamper).LastTxStamp() // drain the error queue
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("the kernel never stamped a datagram")
}

// TestServerStageOnlyForLowlat: a server on the auto wire answers sockperf
// messages too; their bytes must never be taken for a lowlat request that
// asks for the server's stage.
func TestServerStageOnlyForLowlat(t *testing.T) {
	msg := make([]byte, 64)
	for i := range msg {
		msg[i] = 0xff // every flag bit set, no lowlat magic
	}
	orig := append([]byte(nil), msg...)
	putServerStage(msg, bypass.Timestamp{Ns: 1, Clock: bypass.ClockKernel})
	if string(msg) != string(orig) {
		t.Fatal("a message without the lowlat magic was written into")
	}
	if _, ok := serverStage(msg); ok {
		t.Fatal("a stage was read from a message without the lowlat magic")
	}
}

// slowPeer answers every request, but only after delay, and ignores the
// read timeout: the reply to the request in flight arrives after its
// timeout and before the client has noticed.
type slowPeer struct {
	req   []byte
	delay time.Duration
}

func (f *slowPeer) Send(b []byte) error                { f.req = append(f.req[:0], b...); return nil }
func (f *slowPeer) SetReadTimeout(time.Duration) error { return nil }
func (f *slowPeer) Recv(b []byte) (int, error) {
	time.Sleep(f.delay)
	n := copy(b, f.req)
	b[5] |= FlagReply
	return n, nil
}

// TestLateReplyIsLost: a reply that comes after its request's timeout is
// counted late (out of order) and the request lost, never a sample, even
// when the read returns it before the client saw the timeout pass.
func TestLateReplyIsLost(t *testing.T) {
	cl, err := NewClient(&slowPeer{delay: 15 * time.Millisecond}, Config{Count: 1, Timeout: 5 * time.Millisecond, MaxLostInARow: 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.RoundTrip(); err != ErrLost {
		t.Fatalf("RoundTrip = %v, want ErrLost", err)
	}
	if c := cl.Counters(); c.Lost != 1 || c.OutOfOrder != 1 || c.Received != 0 || cl.Histogram().TotalCount() != 0 {
		t.Fatalf("counters %+v, %d samples: want the request lost, the reply late, no sample", c, cl.Histogram().TotalCount())
	}
}
