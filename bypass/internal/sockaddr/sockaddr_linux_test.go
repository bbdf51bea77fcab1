//go:build linux

package sockaddr

import (
	"net/netip"
	"testing"
)

// TestRoundTrip: what Encode writes, Decode and From(To) read back, for
// IPv4, IPv4-mapped and IPv6 addresses; an IPv6 address does not fit an
// IPv4 socket.
func TestRoundTrip(t *testing.T) {
	for _, s := range []string{"10.1.2.3:9", "[::ffff:10.1.2.3]:9", "[fd00::1]:65535", "0.0.0.0:0"} {
		ap := netip.MustParseAddrPort(s)
		_, v6 := Family(ap)
		var ra Raw
		if Encode(&ra, ap, v6) == 0 {
			t.Fatalf("%s: not encoded", s)
		}
		want := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if got := Decode(&ra); got != want {
			t.Fatalf("%s: decoded %v", s, got)
		}
		if got := From(To(ap, v6)); got != want {
			t.Fatalf("%s: From(To) %v", s, got)
		}
	}
	var ra Raw
	if Encode(&ra, netip.MustParseAddrPort("[fd00::1]:1"), false) != 0 {
		t.Fatal("an IPv6 address was encoded for an IPv4 socket")
	}
}
