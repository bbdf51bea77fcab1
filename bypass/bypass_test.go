package bypass_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/lowlat/lowlat/bypass"
)

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

func TestAutoOnLoopbackSaysWhyItSkipped(t *testing.T) {
	c, err := bypass.ListenUDP(loopback, bypass.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info := c.Info()
	if info.Backend != "busypoll" {
		t.Fatalf("auto on loopback chose %q, want busypoll", info.Backend)
	}
	var afxdp *bypass.Skip
	for i := range info.Skipped {
		if info.Skipped[i].Backend == "afxdp" {
			afxdp = &info.Skipped[i]
		}
	}
	if afxdp == nil || afxdp.Reason == nil {
		t.Fatalf("skipped %v: want afxdp with a reason", info.Skipped)
	}
	if !strings.Contains(bypass.Describe(info), "skipped afxdp") {
		t.Fatalf("Describe does not list the skip:\n%s", bypass.Describe(info))
	}
}

func TestNamedBackends(t *testing.T) {
	for _, name := range []string{"kernel", "busypoll"} {
		c, err := bypass.ListenUDP(loopback, bypass.Options{Backend: name})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := c.Info().Backend; got != name {
			t.Errorf("backend %s reports %s", name, got)
		}
		if len(c.Info().Skipped) != 0 {
			t.Errorf("a named backend skipped nothing, got %v", c.Info().Skipped)
		}
		c.Close()
	}
	if _, err := bypass.ListenUDP(loopback, bypass.Options{Backend: "carrier-pigeon"}); err == nil {
		t.Fatal("unknown backend accepted")
	}
	if _, err := bypass.DialTCP(netip.MustParseAddrPort("127.0.0.1:1"), bypass.Options{Backend: "afxdp"}); !errors.Is(err, bypass.ErrNotSupported) {
		t.Fatalf("TCP over afxdp: %v, want ErrNotSupported", err)
	}
}

// timeoutCounter records SetReadTimeout calls: the adapter must make none.
type timeoutCounter struct {
	bypass.PacketConn
	calls int
}

func (c *timeoutCounter) SetReadTimeout(d time.Duration) error {
	c.calls++
	return c.PacketConn.SetReadTimeout(d)
}

func TestNetPacketConnAdapter(t *testing.T) {
	for _, name := range []string{"kernel", "busypoll"} {
		t.Run(name, func(t *testing.T) {
			a, err := bypass.ListenUDP(loopback, bypass.Options{Backend: name})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			counted := &timeoutCounter{PacketConn: a}
			pc := bypass.NetPacketConn(counted)
			var _ net.PacketConn = pc
			peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			if _, err := pc.WriteTo([]byte("hi"), peer.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 8)
			n, from, err := peer.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "hi" || from.String() != pc.LocalAddr().String() {
				t.Fatalf("peer read %q from %v: %v", buf[:n], from, err)
			}
			peer.WriteTo([]byte("yo"), from)
			n, from, err = pc.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "yo" || from.String() != peer.LocalAddr().String() {
				t.Fatalf("adapter read %q from %v: %v", buf[:n], from, err)
			}
			pc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_, _, err = pc.ReadFrom(buf)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("deadline: %v, want a timeout that is os.ErrDeadlineExceeded", err)
			}
			pc.SetWriteDeadline(time.Now().Add(-time.Second))
			if _, err := pc.WriteTo([]byte("late"), peer.LocalAddr()); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("write past its deadline: %v", err)
			}
			if counted.calls != 0 {
				t.Fatalf("the adapter changed the connection's read timeout %d times", counted.calls)
			}
		})
	}
}

// TestAdapterCancelIdiom: a read waiting with no deadline returns as soon
// as another goroutine sets a deadline in the past (context.AfterFunc),
// with os.ErrDeadlineExceeded; Close ends a waiting read with
// net.ErrClosed.
func TestAdapterCancelIdiom(t *testing.T) {
	for _, name := range []string{"kernel", "busypoll"} {
		t.Run(name, func(t *testing.T) {
			a, err := bypass.ListenUDP(loopback, bypass.Options{Backend: name})
			if err != nil {
				t.Fatal(err)
			}
			pc := bypass.NetPacketConn(a)
			defer pc.Close()
			ctx, cancel := context.WithCancel(context.Background())
			stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Now()) })
			defer stop()
			done := make(chan error, 1)
			go func() {
				_, _, err := pc.ReadFrom(make([]byte, 8))
				done <- err
			}()
			time.Sleep(20 * time.Millisecond) // let the read wait
			start := time.Now()
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("cancelled read: %v", err)
				}
				t.Logf("the cancelled read returned %v after cancel", time.Since(start))
			case <-time.After(5 * time.Second):
				t.Fatal("the cancel idiom did not reach the waiting read")
			}
			pc.SetReadDeadline(time.Time{})
			go func() {
				_, _, err := pc.ReadFrom(make([]byte, 8))
				done <- err
			}()
			time.Sleep(20 * time.Millisecond)
			pc.Close()
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("read across Close: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not end the waiting read")
			}
		})
	}
}

// TestAdapterWithIPv4PacketConn: x/net/ipv4 takes the adapter (it asks for
// a net.Conn and a syscall.Conn) and sets socket options through it.
func TestAdapterWithIPv4PacketConn(t *testing.T) {
	a, err := bypass.ListenUDP(loopback, bypass.Options{Backend: "kernel"})
	if err != nil {
		t.Fatal(err)
	}
	pc := bypass.NetPacketConn(a)
	defer pc.Close()
	p := ipv4.NewPacketConn(pc)
	if err := p.SetMulticastTTL(7); err != nil {
		t.Fatal(err)
	}
	if ttl, err := p.MulticastTTL(); err != nil || ttl != 7 {
		t.Fatalf("MulticastTTL = %d, %v", ttl, err)
	}
}

func TestOptionsFromEnv(t *testing.T) {
	t.Setenv("LOWLAT_BACKEND", "busypoll")
	t.Setenv("LOWLAT_WAIT", "spin")
	t.Setenv("LOWLAT_BUSY_POLL_US", "25")
	o, err := bypass.OptionsFromEnv(bypass.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if o.Backend != "busypoll" || o.Wait != bypass.WaitSpin || o.BusyPollUS != 25 {
		t.Fatalf("options %+v", o)
	}
	t.Setenv("LOWLAT_QUEUE", "two")
	if _, err := bypass.OptionsFromEnv(bypass.Options{}); err == nil || !strings.Contains(err.Error(), "LOWLAT_QUEUE") {
		t.Fatalf("bad LOWLAT_QUEUE: %v, want an error naming it", err)
	}
	if !strings.Contains(bypass.EnvHelp(), "LOWLAT_XDP_MODE") {
		t.Fatal("EnvHelp misses a variable")
	}
}

func TestAutoStopsOnAddressErrors(t *testing.T) {
	taken, err := bypass.ListenUDP(loopback, bypass.Options{Backend: "kernel"})
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = bypass.ListenUDP(taken.LocalAddr(), bypass.Options{})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("auto on a taken port: %v, want EADDRINUSE", err)
	}
	if strings.Count(err.Error(), "address already in use") != 1 {
		t.Fatalf("the error repeats itself: %v", err)
	}
}

func TestSkipNamesBackendOnce(t *testing.T) {
	s := bypass.Skip{Backend: "afxdp", Reason: errors.New("afxdp: listen udp 1.2.3.4:5: no interface")}
	if got := s.String(); strings.Count(got, "afxdp:") != 1 {
		t.Fatalf("Skip.String() = %q", got)
	}
	s.Reason = errors.New("no driver")
	if got := s.String(); got != "afxdp: no driver" {
		t.Fatalf("Skip.String() = %q", got)
	}
}

// TestEnvironmentFillsInCodeWins: the environment fills in what the code
// left unset; what the code set stays, unless the program asks for the
// environment to override it.
func TestEnvironmentFillsInCodeWins(t *testing.T) {
	t.Setenv("LOWLAT_WAIT", "spin")
	t.Setenv("LOWLAT_BACKEND", "busypoll")
	o, err := bypass.OptionsFromEnv(bypass.Options{Wait: bypass.WaitBlock})
	if err != nil {
		t.Fatal(err)
	}
	if o.Wait != bypass.WaitBlock || o.Backend != "busypoll" {
		t.Fatalf("fill-in: %+v; want the code's block wait and the environment's backend", o)
	}
	o, err = bypass.OptionsOverriddenByEnv(bypass.Options{Wait: bypass.WaitBlock})
	if err != nil {
		t.Fatal(err)
	}
	if o.Wait != bypass.WaitSpin {
		t.Fatalf("override: wait %v, want the environment's spin", o.Wait)
	}
}
