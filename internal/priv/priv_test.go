package priv

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestWrap(t *testing.T) {
	err := Wrap("setsockopt SO_PREFER_BUSY_POLL", "CAP_NET_ADMIN", unix.EPERM)
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("errors.Is(EPERM) lost: %v", err)
	}
	if !strings.Contains(err.Error(), "CAP_NET_ADMIN") || !strings.Contains(err.Error(), "cap_net_admin+ep") {
		t.Fatalf("capability not named: %v", err)
	}
	err = Wrap("bind", "CAP_NET_ADMIN", unix.EADDRINUSE)
	if !errors.Is(err, unix.EADDRINUSE) || strings.Contains(err.Error(), "CAP_") {
		t.Fatalf("non-permission error mangled: %v", err)
	}
	err = Wrap("load XDP program", "CAP_BPF,CAP_NET_ADMIN", unix.EPERM)
	if !strings.Contains(err.Error(), "needs CAP_BPF and CAP_NET_ADMIN") || !strings.Contains(err.Error(), "setcap cap_bpf,cap_net_admin+ep") {
		t.Fatalf("two capabilities: %v", err)
	}
	if Wrap("x", "y", nil) != nil {
		t.Fatal("nil error wrapped")
	}
}
