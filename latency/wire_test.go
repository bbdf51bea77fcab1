package latency

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func request(size int, seq uint64) []byte {
	b := make([]byte, size)
	Lowlat.PutRequest(b, seq, 12345)
	return b
}

func TestEncodeDecode(t *testing.T) {
	for _, size := range []int{MinSize, DefaultSize, 1024, MaxSize} {
		b := make([]byte, size)
		h := Header{Flags: FlagReply, Length: uint16(size), Seq: 1<<63 + 7, SendNS: -5}
		if err := h.Encode(b); err != nil {
			t.Fatalf("size %d: encode: %v", size, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("size %d: decode: %v", size, err)
		}
		if got != h {
			t.Fatalf("size %d: decoded %+v, want %+v", size, got, h)
		}
	}
	if !bytes.Equal(request(24, 1)[:4], []byte("LLTP")) {
		t.Fatal("magic is not LLTP on the wire")
	}
}

func TestDecodeErrors(t *testing.T) {
	valid := request(64, 9)
	mutate := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), valid...))
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrEmpty},
		{"one byte", []byte{0x4c}, ErrShort},
		{"truncated header", valid[:HeaderLen-1], ErrShort},
		{"wrong magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), ErrMagic},
		{"wrong version", mutate(func(b []byte) []byte { b[4] = 2; return b }), ErrVersion},
		{"truncated padding", valid[:63], ErrLength},
		{"extra bytes", append(append([]byte(nil), valid...), 0), ErrLength},
		{"length below header", mutate(func(b []byte) []byte { binary.BigEndian.PutUint16(b[6:], 3); return b }), ErrLength},
		{"oversized", make([]byte, MaxSize+1), ErrTooLong},
	} {
		if _, err := Decode(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if err := (Header{Length: 10}).Encode(make([]byte, 64)); !errors.Is(err, ErrLength) {
		t.Errorf("encode length 10: %v", err)
	}
	if err := (Header{Length: 64}).Encode(make([]byte, 10)); !errors.Is(err, ErrShort) {
		t.Errorf("encode into 10 bytes: %v", err)
	}
}

func TestAnswerAndParseReply(t *testing.T) {
	b := request(100, 42)
	if _, _, err := Lowlat.ParseReply(b); !errors.Is(err, ErrNotReply) {
		t.Fatalf("request parsed as reply: %v", err)
	}
	reply, err := Lowlat.Answer(b)
	if err != nil {
		t.Fatal(err)
	}
	if &reply[0] != &b[0] || len(reply) != 100 {
		t.Fatal("Answer did not answer in place")
	}
	seq, ts, err := Lowlat.ParseReply(reply)
	if err != nil || seq != 42 || ts != 12345 {
		t.Fatalf("ParseReply = %d, %d, %v", seq, ts, err)
	}
	if _, err := Lowlat.Answer(reply); !errors.Is(err, ErrNotRequest) {
		t.Fatalf("server answered a reply: %v", err)
	}
}

func TestCheckSize(t *testing.T) {
	for size, ok := range map[int]bool{0: false, 23: false, 24: true, 8972: true, 8973: false} {
		if err := CheckSize(size); (err == nil) != ok {
			t.Errorf("CheckSize(%d) = %v", size, err)
		}
	}
}

func TestWireByName(t *testing.T) {
	if w, err := WireByName("lowlat"); err != nil || w != Lowlat {
		t.Fatalf("lowlat: %v %v", w, err)
	}
	if _, err := WireByName("nope"); err == nil {
		t.Fatal("unknown wire accepted")
	}
}

// FuzzDecode: whatever Decode accepts, Encode must reproduce byte for byte,
// and Decode must never panic.
func FuzzDecode(f *testing.F) {
	f.Add(request(24, 1))
	f.Add(request(64, 1<<40))
	f.Add([]byte{})
	f.Add([]byte("LLTP\x01\x00\x00\x18"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Decode(b)
		if err != nil {
			return
		}
		out := make([]byte, len(b))
		copy(out[HeaderLen:], b[HeaderLen:])
		if err := h.Encode(out); err != nil {
			t.Fatalf("re-encode %+v: %v", h, err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("round trip changed the message:\n in %x\nout %x", b, out)
		}
	})
}
