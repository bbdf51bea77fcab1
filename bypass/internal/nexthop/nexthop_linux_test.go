//go:build linux

package nexthop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/lowlat/lowlat/internal/testnet"
)

func TestErrorsWithoutNamespaces(t *testing.T) {
	// Read-only lookups in the test's own namespace: no privilege needed.
	_, err := Local("nosuch-llnh0")
	if !errors.Is(err, ErrNotFound) || err.Error() != "interface nosuch-llnh0: not found" {
		t.Errorf("Local(missing) = %v", err)
	}
	_, err = Resolve(context.Background(), "nosuch-llnh0", netip.MustParseAddr("192.0.2.1"))
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve on a missing interface = %v", err)
	}
	_, err = Resolve(context.Background(), "lo", netip.MustParseAddr("2001:db8::1"))
	if !errors.Is(err, ErrNotIPv4) {
		t.Errorf("Resolve(IPv6) = %v", err)
	}
	// 192.0.2.0/24 is TEST-NET-1: no host carries it.
	_, err = InterfaceFor(netip.MustParseAddr("192.0.2.254"))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "192.0.2.254") {
		t.Errorf("InterfaceFor(absent) = %v", err)
	}
	if _, err = InterfaceFor(netip.MustParseAddr("2001:db8::1")); !errors.Is(err, ErrNotIPv4) {
		t.Errorf("InterfaceFor(IPv6) = %v", err)
	}
	if _, err = InterfaceFor(netip.IPv4Unspecified()); err == nil {
		t.Error("InterfaceFor(0.0.0.0) succeeded")
	}
}

// The namespace tests build this, with every address inside the two
// namespaces they create:
//
//	namespace A                          namespace B
//	nh0 10.199.77.1/29  <---- veth ---->  nh1 10.199.77.2/29
//	02:00:00:00:77:01                     02:00:00:00:77:02
//	route 192.0.2.0/24 via 10.199.77.2
//
// 10.199.77.3 is on the subnet but nobody has it.
var (
	addrA  = netip.MustParseAddr("10.199.77.1")
	addrB  = netip.MustParseAddr("10.199.77.2")
	nobody = netip.MustParseAddr("10.199.77.3")
	macA   = net.HardwareAddr{0x02, 0, 0, 0, 0x77, 0x01}
	macB   = net.HardwareAddr{0x02, 0, 0, 0, 0x77, 0x02}
)

var nsSeq atomic.Uint32

// testPair is two network namespaces joined by a veth pair.
type testPair struct {
	a, b string // namespace names
}

// newPair creates the topology above; t.Cleanup deletes both namespaces,
// and with them the veth pair, whether the test passes or fails.
func newPair(t *testing.T) *testPair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2) to create network namespaces")
	}
	id := fmt.Sprintf("%d-%d", os.Getpid(), nsSeq.Add(1))
	p := &testPair{a: "llnh-a-" + id, b: "llnh-b-" + id}
	for _, ns := range []string{p.a, p.b} {
		ip(t, "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
	}
	ip(t, "-n", p.a, "link", "add", "nh0", "numtxqueues", "2", "numrxqueues", "2", "address", macA.String(),
		"type", "veth", "peer", "name", "nh1", "address", macB.String(), "netns", p.b, "numtxqueues", "2", "numrxqueues", "2")
	ip(t, "-n", p.a, "addr", "add", addrA.String()+"/29", "dev", "nh0")
	ip(t, "-n", p.b, "addr", "add", addrB.String()+"/29", "dev", "nh1")
	for _, c := range [][]string{{p.a, "lo"}, {p.a, "nh0"}, {p.b, "lo"}, {p.b, "nh1"}} {
		ip(t, "-n", c[0], "link", "set", c[1], "up")
	}
	ip(t, "-n", p.a, "route", "add", "192.0.2.0/24", "via", addrB.String())
	return p
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// inNS runs fn on a goroutine locked to a thread that has joined namespace
// ns, and puts the thread back in its own namespace afterwards (or lets it
// die with the goroutine when that fails).
func inNS[T any](t *testing.T, ns string, fn func() (T, error)) (T, error) {
	t.Helper()
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		var r result
		defer func() { ch <- r }()
		orig, err := netns.Get()
		if err != nil {
			r.err = fmt.Errorf("netns.Get: %w", err)
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(ns)
		if err != nil {
			r.err = fmt.Errorf("netns.GetFromName(%s): %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			r.err = fmt.Errorf("netns.Set(%s): %w", ns, err)
			return
		}
		r.v, r.err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	r := <-ch
	return r.v, r.err
}

func resolveIn(t *testing.T, ns, ifname string, dst netip.Addr, timeout time.Duration) (Hop, error) {
	t.Helper()
	return inNS(t, ns, func() (Hop, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return Resolve(ctx, ifname, dst)
	})
}

func TestNamespaceLocal(t *testing.T) {
	p := newPair(t)
	ifc, err := inNS(t, p.a, func() (Interface, error) { return Local("nh0") })
	if err != nil {
		t.Fatal(err)
	}
	if ifc.Name != "nh0" || ifc.Index <= 0 || !bytes.Equal(ifc.MAC, macA) || ifc.MTU != 1500 || !ifc.Up ||
		ifc.NumRxQueues != 2 || ifc.NumTxQueues != 2 ||
		len(ifc.IPv4) != 1 || ifc.IPv4[0] != netip.PrefixFrom(addrA, 29) {
		t.Errorf("Local(nh0) = %+v", ifc)
	}

	name, err := inNS(t, p.a, func() (string, error) { return InterfaceFor(addrA) })
	if err != nil || name != "nh0" {
		t.Errorf("InterfaceFor(%s) = %q, %v", addrA, name, err)
	}
	name, err = inNS(t, p.a, func() (string, error) { return InterfaceFor(netip.MustParseAddr("127.0.0.1")) })
	if err != nil || name != "lo" {
		t.Errorf("InterfaceFor(127.0.0.1) = %q, %v", name, err)
	}
	if _, err := inNS(t, p.a, func() (string, error) { return InterfaceFor(addrB) }); !errors.Is(err, ErrNotFound) {
		t.Errorf("InterfaceFor(the peer's address) = %v", err)
	}
	if _, err := inNS(t, p.a, func() (Interface, error) { return Local("nh1") }); !errors.Is(err, ErrNotFound) ||
		err.Error() != "interface nh1: not found" {
		t.Errorf("Local(interface of the other namespace) = %v", err)
	}

	// The peer down: nh0 is up but has no carrier.
	ip(t, "-n", p.b, "link", "set", "nh1", "down")
	ifc, err = inNS(t, p.a, func() (Interface, error) { return Local("nh0") })
	if !errors.Is(err, ErrDown) || !strings.Contains(err.Error(), "operational state") || ifc.Up || ifc.Index == 0 {
		t.Errorf("Local(nh0) with its peer down = %+v, %v", ifc, err)
	}
	// nh0 itself down.
	ip(t, "-n", p.a, "link", "set", "nh0", "down")
	_, err = inNS(t, p.a, func() (Interface, error) { return Local("nh0") })
	if !errors.Is(err, ErrDown) || !strings.Contains(err.Error(), "ip link set nh0 up") {
		t.Errorf("Local(nh0) when down = %v", err)
	}
	if _, err := resolveIn(t, p.a, "nh0", addrB, time.Second); !errors.Is(err, ErrDown) {
		t.Errorf("Resolve through a down interface = %v", err)
	}
}

func TestNamespaceResolve(t *testing.T) {
	p := newPair(t)

	t.Run("peer", func(t *testing.T) {
		hop, err := resolveIn(t, p.a, "nh0", addrB, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(hop.DstMAC, macB) || hop.SrcIP != addrA || hop.Gateway.IsValid() || hop.Iface.Name != "nh0" {
			t.Errorf("Resolve(%s) = %+v", addrB, hop)
		}
		// Now the entry exists; a second lookup answers from the table.
		hop, err = resolveIn(t, p.a, "nh0", addrB, 5*time.Second)
		if err != nil || !bytes.Equal(hop.DstMAC, macB) {
			t.Errorf("second Resolve(%s) = %+v, %v", addrB, hop, err)
		}
	})

	t.Run("gateway", func(t *testing.T) {
		dst := netip.MustParseAddr("192.0.2.5")
		hop, err := resolveIn(t, p.a, "nh0", dst, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(hop.DstMAC, macB) || hop.Gateway != addrB || hop.SrcIP != addrA {
			t.Errorf("Resolve(%s) = %+v", dst, hop)
		}
	})

	t.Run("peer resolves us", func(t *testing.T) {
		hop, err := resolveIn(t, p.b, "nh1", addrA, 5*time.Second)
		if err != nil || !bytes.Equal(hop.DstMAC, macA) || hop.SrcIP != addrB {
			t.Errorf("Resolve(%s) from B = %+v, %v", addrA, hop, err)
		}
	})

	t.Run("nobody", func(t *testing.T) {
		start := time.Now()
		_, err := resolveIn(t, p.a, "nh0", nobody, 300*time.Millisecond)
		if elapsed := time.Since(start); elapsed > 3*time.Second {
			t.Errorf("Resolve took %v with a 300ms timeout", elapsed)
		}
		if !errors.Is(err, ErrUnresolved) || !errors.Is(err, context.DeadlineExceeded) ||
			!strings.Contains(err.Error(), "resolve 10.199.77.3 on nh0") {
			t.Fatalf("Resolve(%s) = %v", nobody, err)
		}
		t.Logf("error for an absent neighbour: %v", err)
	})

	t.Run("gateway nobody has", func(t *testing.T) {
		ip(t, "-n", p.a, "route", "add", "198.51.100.0/24", "via", nobody.String())
		_, err := resolveIn(t, p.a, "nh0", netip.MustParseAddr("198.51.100.9"), 200*time.Millisecond)
		if !errors.Is(err, ErrUnresolved) || !strings.Contains(err.Error(), "gateway 10.199.77.3 (for 198.51.100.9) on nh0") {
			t.Errorf("Resolve through an absent gateway = %v", err)
		}
		t.Logf("error for an absent gateway: %v", err)
	})

	t.Run("default timeout", func(t *testing.T) {
		if testing.Short() {
			t.Skip("waits DefaultTimeout")
		}
		start := time.Now()
		_, err := inNS(t, p.a, func() (Hop, error) {
			return Resolve(context.Background(), "nh0", netip.MustParseAddr("10.199.77.4"))
		})
		if elapsed := time.Since(start); !errors.Is(err, ErrUnresolved) || elapsed < DefaultTimeout || elapsed > DefaultTimeout+2*time.Second {
			t.Errorf("Resolve without a deadline: %v after %v", err, elapsed)
		}
	})

	t.Run("local", func(t *testing.T) {
		for _, dst := range []string{"10.199.77.1", "127.0.0.1"} {
			if _, err := resolveIn(t, p.a, "nh0", netip.MustParseAddr(dst), time.Second); !errors.Is(err, ErrLocal) {
				t.Errorf("Resolve(%s) = %v, want ErrLocal", dst, err)
			}
		}
	})

	t.Run("no route", func(t *testing.T) {
		// 203.0.113.0/24 (TEST-NET-3) has no route in the namespace; the
		// lookup stays inside it and nothing is sent.
		_, err := resolveIn(t, p.a, "nh0", netip.MustParseAddr("203.0.113.1"), time.Second)
		if !errors.Is(err, ErrNoRoute) || !strings.Contains(err.Error(), "203.0.113.1 on nh0") {
			t.Errorf("Resolve(unrouted) = %v", err)
		}
		t.Logf("error for an unrouted destination: %v", err)
	})

	t.Run("multicast and broadcast", func(t *testing.T) {
		for _, c := range []struct{ dst, mac string }{
			{"224.1.2.3", "01:00:5e:01:02:03"},
			{"239.200.7.8", "01:00:5e:48:07:08"},
			{"255.255.255.255", "ff:ff:ff:ff:ff:ff"},
			{"10.199.77.7", "ff:ff:ff:ff:ff:ff"}, // the subnet's broadcast address
		} {
			hop, err := resolveIn(t, p.a, "nh0", netip.MustParseAddr(c.dst), time.Second)
			if err != nil || hop.DstMAC.String() != c.mac || hop.SrcIP != addrA || hop.Gateway.IsValid() {
				t.Errorf("Resolve(%s) = %+v, %v; want MAC %s", c.dst, hop, err, c.mac)
			}
		}
	})
}

// TestNamespaceResolveUnprivileged runs Resolve in namespace A as the
// unprivileged user 65534, by running this test binary again there: the
// probe datagram that starts ARP must work without root.
func TestNamespaceResolveUnprivileged(t *testing.T) {
	if os.Getenv("LLNH_CHILD") != "" {
		return // the child's work is in TestUnprivilegedChild
	}
	p := newPair(t)
	out, err := testnet.RunAsNobody(t, p.a, []string{"LLNH_CHILD=1"}, "-test.run=^TestUnprivilegedChild$", "-test.v")
	if err != nil || !bytes.Contains(out, []byte("resolved as uid 65534")) {
		t.Fatalf("unprivileged child: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "resolved as") {
			t.Log("child:", strings.TrimSpace(line))
		}
	}
}

func TestUnprivilegedChild(t *testing.T) {
	if os.Getenv("LLNH_CHILD") == "" {
		t.Skip("run by TestNamespaceResolveUnprivileged inside its namespace")
	}
	if os.Geteuid() == 0 {
		t.Fatal("child runs as root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hop, err := Resolve(ctx, "nh0", addrB)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hop.DstMAC, macB) {
		t.Fatalf("Resolve(%s) = %+v", addrB, hop)
	}
	t.Logf("resolved as uid %d: %s is at %s", os.Geteuid(), addrB, hop.DstMAC)
}

// TestResolverKeepsItsNamespace makes a Resolver inside a namespace and
// uses it from a goroutine in the host's namespace, as a backend's writer
// does: lookups must still see the namespace's links and neighbours.
func TestResolverKeepsItsNamespace(t *testing.T) {
	p := testnet.NewPair(t, testnet.Config{})
	var r *Resolver
	if err := p.A.Do(func() (err error) {
		r, err = NewResolver()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// This goroutine is in the host namespace, where p.A.Link does not exist.
	if _, err := Local(p.A.Link); err == nil {
		t.Fatalf("%s visible from the host namespace: the test cannot tell namespaces apart", p.A.Link)
	}
	ifc, err := r.Local(p.A.Link)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	hop, err := r.Resolve(ctx, ifc.Name, p.B.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if hop.DstMAC.String() != p.B.MAC.String() {
		t.Fatalf("resolved %v to %v, want %v", p.B.Addr, hop.DstMAC, p.B.MAC)
	}
}
