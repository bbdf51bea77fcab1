package nexthop

import (
	"net/netip"
	"testing"
)

func TestMulticastMAC(t *testing.T) {
	for _, c := range []struct{ group, want string }{
		{"224.0.0.1", "01:00:5e:00:00:01"},
		{"224.0.0.251", "01:00:5e:00:00:fb"},
		{"239.255.255.250", "01:00:5e:7f:ff:fa"},
		{"225.128.1.2", "01:00:5e:00:01:02"}, // the 24th bit is not mapped
		{"232.1.2.3", "01:00:5e:01:02:03"},
		{"238.255.0.9", "01:00:5e:7f:00:09"},
	} {
		if got := multicastMAC(netip.MustParseAddr(c.group)).String(); got != c.want {
			t.Errorf("multicastMAC(%s) = %s, want %s", c.group, got, c.want)
		}
	}
	if got := broadcastMAC.String(); got != "ff:ff:ff:ff:ff:ff" {
		t.Errorf("broadcastMAC = %s", got)
	}
}
