//go:build !(linux && efvi && cgo)

package efvi_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/efvi"
)

const reason = "built without ef_vi: rebuild with -tags efvi on a host with Onload's headers and libciul"

func TestStubReason(t *testing.T) {
	c, err := efvi.Backend{}.ListenUDP(netip.MustParseAddrPort("127.0.0.1:9000"), backend.Options{})
	if c != nil || err == nil {
		t.Fatalf("ListenUDP = %v, %v; want an error", c, err)
	}
	if !errors.Is(err, backend.ErrNotSupported) || !errors.Is(err, efvi.ErrNoEFVI) {
		t.Fatalf("error %q does not wrap ErrNotSupported and ErrNoEFVI", err)
	}
	if efvi.ErrNoEFVI.Error() != reason || !strings.HasSuffix(err.Error(), ": "+reason) {
		t.Fatalf("error %q, want the reason %q", err, reason)
	}
}

// TestSelectedByName checks that naming the backend gives one clear error,
// and that auto selection records it and moves on.
func TestSelectedByName(t *testing.T) {
	laddr := netip.MustParseAddrPort("127.0.0.1:0")
	c, err := bypass.ListenUDP(laddr, bypass.Options{Backend: "efvi"})
	if c != nil || err == nil {
		t.Fatalf("ListenUDP(efvi) = %v, %v; want an error", c, err)
	}
	if !errors.Is(err, backend.ErrNotSupported) || strings.Count(err.Error(), "\n") != 0 || !strings.Contains(err.Error(), reason) {
		t.Fatalf("error %q: want one line that wraps ErrNotSupported and gives the reason", err)
	}
	// onload, which needs Onload in the process, ranks first when it is.
	if names := bypass.Backends(); len(names) < 2 || names[0] != "onload" || names[1] != "efvi" {
		t.Fatalf("backends %v: efvi should come first after onload", names)
	}
	c, err = bypass.ListenUDP(laddr, bypass.Options{})
	if err != nil {
		t.Skipf("no backend works here: %v", err)
	}
	defer c.Close()
	info := c.Info()
	if len(info.Skipped) < 2 || info.Skipped[1].Backend != "efvi" || !errors.Is(info.Skipped[1].Reason, efvi.ErrNoEFVI) {
		t.Fatalf("auto chose %s, skipped %v; want efvi skipped after onload", info.Backend, info.Skipped)
	}
}
