package backend

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	good := []Options{
		{}, {Backend: "auto"}, {Backend: "afxdp", Queue: -1, XDP: XDPOptions{Mode: "skb", FrameSize: 2048, NumFrames: 64, RingSize: 32}},
		{BatchSize: MaxBatch, BusyPollUS: -1, BusyPollBudget: -1},
	}
	for _, o := range good {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
	bad := map[string]Options{
		"backend":     {Backend: "dpdk"},
		"wait mode":   {Wait: 9},
		"timeout":     {ReadTimeout: -time.Second},
		"batch":       {BatchSize: MaxBatch + 1},
		"busy poll":   {BusyPollUS: MaxBusyPollUS + 1},
		"queue":       {Queue: -2},
		"interface":   {Interface: "a-name-longer-than-fifteen"},
		"xdp mode":    {XDP: XDPOptions{Mode: "hw"}},
		"frame size":  {XDP: XDPOptions{FrameSize: 3000}},
		"frame count": {XDP: XDPOptions{NumFrames: 100}},
		"ring size":   {XDP: XDPOptions{RingSize: 48}},
	}
	for name, o := range bad {
		err := o.Validate()
		if err == nil {
			t.Errorf("%s: %+v accepted", name, o)
			continue
		}
		if !strings.Contains(err.Error(), strings.Fields(name)[0]) {
			t.Errorf("%s: error %q does not name the field", name, err)
		}
	}
}

func TestFromEnv(t *testing.T) {
	env := map[string]string{
		"LOWLAT_BACKEND": "afxdp", "LOWLAT_WAIT": "spin", "LOWLAT_READ_TIMEOUT": "150ms",
		"LOWLAT_IFACE": "eth1", "LOWLAT_QUEUE": "-1", "LOWLAT_XDP_MODE": "drv", "LOWLAT_XDP_RING": "512",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	o, err := FromEnv(Options{BatchSize: 8}, lookup)
	if err != nil {
		t.Fatal(err)
	}
	if o.Backend != "afxdp" || o.Wait != WaitSpin || o.ReadTimeout != 150*time.Millisecond ||
		o.Interface != "eth1" || o.Queue != -1 || o.XDP.Mode != "drv" || o.XDP.RingSize != 512 || o.BatchSize != 8 {
		t.Fatalf("options %+v", o)
	}
	for k, v := range map[string]string{"LOWLAT_WAIT": "sometimes", "LOWLAT_READ_TIMEOUT": "soon", "LOWLAT_XDP_RING": "100", "LOWLAT_BATCH": "x"} {
		_, err := FromEnv(Options{}, func(name string) (string, bool) {
			if name == k {
				return v, true
			}
			return "", false
		})
		if err == nil {
			t.Errorf("%s=%s accepted", k, v)
		}
	}
	for _, v := range EnvVars {
		if !strings.HasPrefix(v.Name, "LOWLAT_") || v.Help == "" {
			t.Errorf("undocumented variable %+v", v)
		}
	}
}

func TestErrors(t *testing.T) {
	var ne net.Error
	if !errors.As(ErrTimeout, &ne) || !ne.Timeout() {
		t.Fatal("ErrTimeout is not a net.Error timeout")
	}
	cause := errors.New("EPERM-ish")
	err := UnsupportedErr("socket(AF_XDP)", cause)
	if !errors.Is(err, ErrNotSupported) || !errors.Is(err, cause) || !strings.Contains(err.Error(), "socket(AF_XDP)") {
		t.Fatalf("UnsupportedErr lost something: %v", err)
	}
	if !errors.Is(Unsupported("no %s", "driver"), ErrNotSupported) {
		t.Fatal("Unsupported does not match ErrNotSupported")
	}
	if s := (Stats{DropShort: 1, DropLength: 2, DropNotOurs: 3}).Dropped(); s != 6 {
		t.Fatalf("Dropped = %d", s)
	}
}
