//go:build linux && efvi && cgo

package efvi

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/lowlat/lowlat/bypass/backend"
)

// TestNoDriver checks the error on a host without the Onload driver: it
// names /dev/sfc_char and wraps ErrNotSupported, so auto moves on.
func TestNoDriver(t *testing.T) {
	if _, err := os.Stat(charDev); err == nil {
		t.Skip(charDev + " exists: this host has the Onload driver")
	}
	_, err := Backend{}.ListenUDP(netip.MustParseAddrPort("127.0.0.1:9000"), backend.Options{})
	if !errors.Is(err, backend.ErrNotSupported) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), charDev) {
		t.Fatalf("ListenUDP without the driver: %v", err)
	}
}
