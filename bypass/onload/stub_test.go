//go:build !(linux && onload && cgo)

package onload_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/bypass/backend"
	"github.com/lowlat/lowlat/bypass/onload"
)

const reason = "built without onload: rebuild with -tags onload (and CGO_ENABLED=1), then run under onload-run --onload"

// TestStub: a build without the tag names the backend, and every call
// says in one line how to get it.
func TestStub(t *testing.T) {
	laddr := netip.MustParseAddrPort("127.0.0.1:0")
	c, err := bypass.ListenUDP(laddr, bypass.Options{Backend: "onload"})
	if c != nil || err == nil {
		t.Fatalf("ListenUDP(onload) = %v, %v; want an error", c, err)
	}
	if !errors.Is(err, backend.ErrNotSupported) || !errors.Is(err, onload.ErrNoOnload) ||
		strings.Contains(err.Error(), "\n") || !strings.HasSuffix(err.Error(), ": "+reason) {
		t.Fatalf("error %q: want one line that wraps ErrNotSupported and ends with %q", err, reason)
	}
	if _, err := bypass.DialTCP(netip.MustParseAddrPort("127.0.0.1:9"), bypass.Options{Backend: "onload"}); !errors.Is(err, onload.ErrNoOnload) {
		t.Errorf("DialTCP(onload): %v", err)
	}
	if err := bypass.AutoSkip("onload"); !errors.Is(err, onload.ErrNoOnload) {
		t.Errorf("AutoSkip(onload) = %v", err)
	}
	if _, err := onload.KeepSignal(); !errors.Is(err, onload.ErrNoOnload) {
		t.Errorf("KeepSignal: %v", err)
	}
	if e := onload.Find(); e != (onload.Extensions{}) || e.String() != "no Onload extension API" {
		t.Errorf("Find() = %+v (%s)", e, e)
	}
	c, err = bypass.ListenUDP(laddr, bypass.Options{})
	if err != nil {
		t.Skipf("no backend works here: %v", err)
	}
	defer c.Close()
	if s := c.Info().Skipped; len(s) == 0 || s[0].Backend != "onload" || !errors.Is(s[0].Reason, onload.ErrNoOnload) {
		t.Fatalf("auto skipped %v; want onload first, with the reason", s)
	}
}
