package latency

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func sockperfMsg(size int, seq uint64, flags uint16) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint64(b, seq)
	binary.BigEndian.PutUint16(b[8:], flags)
	binary.BigEndian.PutUint32(b[10:], uint32(size))
	return b
}

func TestSockperfWire(t *testing.T) {
	req := make([]byte, 64)
	Sockperf.PutRequest(req, 7, 12345)
	// The layout a sockperf 3.7 client puts on the wire (seen on
	// loopback: 00..01 0003 00000040 for its first 64-byte ping).
	if want := sockperfMsg(64, 7, SockperfClient|SockperfPong); !bytes.Equal(req[:14], want[:14]) {
		t.Fatalf("request header % x, want % x", req[:14], want[:14])
	}
	reply, err := Sockperf.Answer(append([]byte(nil), req...))
	if err != nil || len(reply) != 64 {
		t.Fatalf("answer: %d bytes, %v", len(reply), err)
	}
	if f := binary.BigEndian.Uint16(reply[8:]); f != SockperfPong {
		t.Fatalf("reply flags %#x, want the client flag cleared", f)
	}
	seq, ns, err := Sockperf.ParseReply(reply)
	if err != nil || seq != 7 || ns != 12345 {
		t.Fatalf("parse reply: %d %d %v", seq, ns, err)
	}
	if _, _, err := Sockperf.ParseReply(req); err != ErrNotReply {
		t.Fatalf("request parsed as a reply: %v", err)
	}
	// The 14-byte minimum carries no send time.
	small := make([]byte, 14)
	Sockperf.PutRequest(small, 1, 99)
	r, _ := Sockperf.Answer(small)
	if seq, ns, err := Sockperf.ParseReply(r); err != nil || seq != 1 || ns != 0 {
		t.Fatalf("14 bytes: %d %d %v", seq, ns, err)
	}
}

func TestSockperfAnswerRules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		b     []byte
		reply bool
		err   error
	}{
		{"ping", sockperfMsg(64, 1, SockperfClient|SockperfPong), true, nil},
		{"under-load, no pong asked", sockperfMsg(64, 2, SockperfClient), false, nil},
		{"warm-up", sockperfMsg(64, 3, SockperfClient|SockperfPong|SockperfWarmup), false, nil},
		{"a server's answer", sockperfMsg(64, 4, SockperfPong), false, ErrNotRequest},
		{"empty", nil, false, ErrEmpty},
		{"short", make([]byte, 13), false, ErrSockperfShort},
		{"length disagrees", sockperfMsg(64, 5, SockperfClient|SockperfPong)[:40], false, ErrLength},
		{"too long", make([]byte, SockperfMaxSize+1), false, ErrTooLong},
	} {
		r, err := Sockperf.Answer(tc.b)
		if err != tc.err || (r != nil) != tc.reply {
			t.Errorf("%s: reply %v, err %v; want reply %v, err %v", tc.name, r != nil, err, tc.reply, tc.err)
		}
	}
}

func TestAutoTellsFormatsApart(t *testing.T) {
	ll := make([]byte, 64)
	Lowlat.PutRequest(ll, 3, 4)
	r, err := Auto.Answer(ll)
	if err != nil || r[5]&FlagReply == 0 {
		t.Fatalf("lowlat request: %v", err)
	}
	sp := sockperfMsg(64, 3, SockperfClient|SockperfPong)
	r, err = Auto.Answer(sp)
	if err != nil || binary.BigEndian.Uint16(r[8:]) != SockperfPong {
		t.Fatalf("sockperf request: %v", err)
	}
	if _, err := Auto.Answer([]byte{1, 2}); err != ErrShort {
		t.Fatalf("2 bytes: %v", err)
	}
}

// FuzzSockperf: whatever Answer accepts, ParseReply reads back with the
// same sequence number, and neither panics.
func FuzzSockperf(f *testing.F) {
	f.Add(sockperfMsg(14, 1, 3))
	f.Add(sockperfMsg(64, 1<<40, 1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		seq := uint64(0)
		if len(b) >= 8 {
			seq = binary.BigEndian.Uint64(b)
		}
		Sockperf.ParseReply(b)
		Auto.ParseReply(b)
		Auto.Answer(append([]byte(nil), b...))
		r, err := Sockperf.Answer(b)
		if err != nil || r == nil {
			return
		}
		got, _, err := Sockperf.ParseReply(r)
		if err != nil || got != seq {
			t.Fatalf("answer %x parses back as %d, %v", r, got, err)
		}
	})
}
