//go:build linux

package afxdp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// TestProgramLoadsWithoutPerfmon loads the steering program on a thread
// holding only the capabilities a container running afxdp is given
// (CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW, CAP_IPC_LOCK): the verifier must
// accept it without CAP_PERFMON or CAP_SYS_ADMIN.
func TestProgramLoadsWithoutPerfmon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test drops capabilities from a root thread")
	}
	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var saved [2]unix.CapUserData
	if err := unix.Capget(&hdr, &saved[0]); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	reduced := saved
	for _, c := range []int{unix.CAP_SYS_ADMIN, unix.CAP_PERFMON} {
		reduced[c/32].Effective &^= 1 << (uint(c) % 32)
	}
	if err := unix.Capset(&hdr, &reduced[0]); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	var loadErr error
	func() {
		flows, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 1, MaxEntries: maxFlows})
		if err != nil {
			loadErr = err
			return
		}
		defer flows.Close()
		xsks, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err != nil {
			loadErr = err
			return
		}
		defer xsks.Close()
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "Dual BSD/GPL", Instructions: program(flows, xsks)})
		if err != nil {
			loadErr = err
			return
		}
		prog.Close()
	}()
	if err := unix.Capset(&hdr, &saved[0]); err != nil {
		t.Fatalf("restore capabilities: %v (thread left locked, it exits with the test)", err)
	}
	runtime.UnlockOSThread()
	if loadErr != nil {
		t.Fatalf("steering program refused without CAP_PERFMON: %v", loadErr)
	}
}

// Verdicts of the steering program.
const (
	xdpPass     = 2
	xdpRedirect = 4
)

// testFrame is an Ethernet/IPv4 frame for the steering program: IPv4
// header of ihl words, then l4 bytes of an L4 header whose destination
// port is dport.
type testFrame struct {
	proto   uint8
	dst     netip.Addr
	dport   uint16
	ihl     int    // 0 means 5
	fragOff uint16 // flags and fragment offset, host order
	l4      int    // L4 bytes in the frame; 0 means 20
	ether   uint16 // 0 means IPv4
}

func (f testFrame) bytes() []byte {
	ihl, l4, ether := f.ihl, f.l4, f.ether
	if ihl == 0 {
		ihl = 5
	}
	if l4 == 0 {
		l4 = 20
	}
	if ether == 0 {
		ether = 0x0800
	}
	b := make([]byte, 14+ihl*4+l4)
	copy(b[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(b[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(b[12:], ether)
	ip := b[14:]
	ip[0] = 0x40 | byte(ihl)
	binary.BigEndian.PutUint16(ip[2:], uint16(ihl*4+l4))
	binary.BigEndian.PutUint16(ip[6:], f.fragOff)
	ip[8] = 64
	ip[9] = f.proto
	copy(ip[12:16], []byte{10, 0, 0, 9})
	d := f.dst.As4()
	copy(ip[16:20], d[:])
	if l := ip[ihl*4:]; len(l) >= 4 {
		binary.BigEndian.PutUint16(l[0:], 40000)
		binary.BigEndian.PutUint16(l[2:], f.dport)
	}
	return b
}

// TestProgramSteersTCPAndUDPApart runs the steering program on frames with
// BPF_PROG_TEST_RUN, with flows added through the driver's AddFlow and
// AddTCPFlow: a flow steers only its own protocol, by exact address or by
// the wildcard, TCP goes through the same IHL dispatch as UDP, and
// fragments and other protocols go to the kernel.
//
// The redirect map is a DEVMAP holding the loopback device rather than an
// XSKMAP, which takes only a bound AF_XDP socket: bpf_redirect_map returns
// XDP_REDIRECT for a key present in either, and the test run does not
// carry the redirect out. The end-to-end tests cover the XSKMAP.
func TestProgramSteersTCPAndUDPApart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF, CAP_NET_ADMIN): loads the XDP program and runs it with BPF_PROG_TEST_RUN")
	}
	flows, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 1, MaxEntries: maxFlows})
	if err != nil {
		t.Fatal(err)
	}
	defer flows.Close()
	devs, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.DevMap, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer devs.Close()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := devs.Update(uint32(0), uint32(lo.Index), ebpf.UpdateAny); err != nil {
		t.Fatalf("put lo in the DEVMAP: %v", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "Dual BSD/GPL", Instructions: program(flows, devs)})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()

	if unsafe.Sizeof(flowKey{}) != 8 {
		t.Fatalf("flowKey is %d bytes; the program builds 8", unsafe.Sizeof(flowKey{}))
	}
	d := &driver{steer: &steering{flows: flows}}
	host, other := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	any4 := netip.IPv4Unspecified()
	for _, add := range []func() error{
		func() error { return d.AddFlow(netip.AddrPortFrom(host, 9000)) },    // UDP, this address
		func() error { return d.AddFlow(netip.AddrPortFrom(any4, 53)) },      // UDP, any address
		func() error { return d.AddTCPFlow(netip.AddrPortFrom(any4, 80)) },   // TCP, any address
		func() error { return d.AddTCPFlow(netip.AddrPortFrom(host, 443)) },  // TCP, this address
		func() error { return d.AddTCPFlow(netip.AddrPortFrom(host, 7000)) }, // TCP and UDP on one port
		func() error { return d.AddFlow(netip.AddrPortFrom(host, 7000)) },
	} {
		if err := add(); err != nil {
			t.Fatal(err)
		}
	}

	const udp, tcp = unix.IPPROTO_UDP, unix.IPPROTO_TCP
	cases := []struct {
		name string
		f    testFrame
		want uint32
	}{
		{"udp to steered udp flow", testFrame{proto: udp, dst: host, dport: 9000}, xdpRedirect},
		{"udp to steered udp flow, other address", testFrame{proto: udp, dst: other, dport: 9000}, xdpPass},
		{"udp to wildcard udp flow", testFrame{proto: udp, dst: other, dport: 53}, xdpRedirect},
		{"udp with ip options", testFrame{proto: udp, dst: host, dport: 9000, ihl: 15}, xdpRedirect},
		{"udp fragment", testFrame{proto: udp, dst: host, dport: 9000, fragOff: 0x2000}, xdpPass},
		{"udp unsteered port", testFrame{proto: udp, dst: host, dport: 9001}, xdpPass},
		{"udp truncated header", testFrame{proto: udp, dst: host, dport: 9000, l4: 7}, xdpPass},

		{"tcp to wildcard tcp flow", testFrame{proto: tcp, dst: other, dport: 80}, xdpRedirect},
		{"tcp to tcp flow", testFrame{proto: tcp, dst: host, dport: 443}, xdpRedirect},
		{"tcp to tcp flow, other address", testFrame{proto: tcp, dst: other, dport: 443}, xdpPass},
		{"tcp with ip options", testFrame{proto: tcp, dst: host, dport: 443, ihl: 6}, xdpRedirect},
		{"tcp with most ip options", testFrame{proto: tcp, dst: other, dport: 80, ihl: 15}, xdpRedirect},
		{"tcp to port steered only for udp", testFrame{proto: tcp, dst: host, dport: 9000}, xdpPass},
		{"tcp to wildcard udp port", testFrame{proto: tcp, dst: host, dport: 53}, xdpPass},
		{"tcp first fragment", testFrame{proto: tcp, dst: host, dport: 443, fragOff: 0x2000}, xdpPass},
		{"tcp later fragment", testFrame{proto: tcp, dst: host, dport: 443, fragOff: 185}, xdpPass},
		{"tcp truncated header", testFrame{proto: tcp, dst: host, dport: 443, l4: 7}, xdpPass},
		{"tcp and udp on one port: tcp", testFrame{proto: tcp, dst: host, dport: 7000}, xdpRedirect},
		{"tcp and udp on one port: udp", testFrame{proto: udp, dst: host, dport: 7000}, xdpRedirect},

		{"udp to steered tcp port", testFrame{proto: udp, dst: host, dport: 443}, xdpPass},
		{"udp to wildcard tcp port", testFrame{proto: udp, dst: other, dport: 80}, xdpPass},
		{"icmp", testFrame{proto: unix.IPPROTO_ICMP, dst: host, dport: 443}, xdpPass},
		{"sctp", testFrame{proto: unix.IPPROTO_SCTP, dst: other, dport: 80}, xdpPass},
		{"not ipv4", testFrame{proto: tcp, dst: other, dport: 80, ether: 0x86dd}, xdpPass},
	}
	check := func(stage string) {
		t.Helper()
		for _, c := range cases {
			got, err := prog.Run(&ebpf.RunOptions{Data: c.f.bytes()})
			if err != nil {
				t.Fatalf("%s: %s: %v", stage, c.name, err)
			}
			if got != c.want {
				t.Errorf("%s: %s: verdict %d, want %d", stage, c.name, got, c.want)
			}
		}
	}
	check("steered")

	// Removing the TCP flows gives their segments back to the kernel and
	// leaves the UDP flows, on the same port too, as they were.
	for _, ap := range []netip.AddrPort{
		netip.AddrPortFrom(any4, 80), netip.AddrPortFrom(host, 443), netip.AddrPortFrom(host, 7000),
	} {
		if err := d.RemoveTCPFlow(ap); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.RemoveTCPFlow(netip.AddrPortFrom(host, 1)); err != nil {
		t.Fatalf("removing a flow never added: %v", err)
	}
	for i := range cases {
		if cases[i].f.proto == tcp {
			cases[i].want = xdpPass
		}
	}
	check("tcp removed")

	// And removing the UDP flow on the shared port leaves nothing there.
	if err := d.RemoveFlow(netip.AddrPortFrom(host, 7000)); err != nil {
		t.Fatal(err)
	}
	for i := range cases {
		if cases[i].f.dport == 7000 {
			cases[i].want = xdpPass
		}
	}
	check("udp 7000 removed")
}
