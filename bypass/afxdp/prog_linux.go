//go:build linux

package afxdp

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/internal/priv"
)

// flowKey is the steering map's key: an IPv4 destination address, a
// destination port, both in network byte order as they sit in the frame,
// and the IP protocol (IPPROTO_UDP or IPPROTO_TCP), so that a UDP socket
// and a TCP listener on one port are steered apart. Address 0.0.0.0 matches
// any destination address. The layout is the program's: it builds the key
// on its stack with the same eight bytes.
type flowKey struct {
	Addr  [4]byte
	Port  [2]byte
	Proto uint8
	_     uint8
}

func keyFor(dst netip.AddrPort, proto uint8) flowKey {
	a, port := dst.Addr(), dst.Port()
	k := flowKey{Port: [2]byte{byte(port >> 8), byte(port)}, Proto: proto}
	if a.IsValid() && !a.IsUnspecified() {
		k.Addr = a.Unmap().As4()
	}
	return k
}

// protoName names the protocols a flow key carries, for errors.
func protoName(proto uint8) string {
	switch proto {
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_TCP:
		return "tcp"
	}
	return fmt.Sprintf("protocol %d", proto)
}

// steering is the XDP program and its two maps, attached to one interface.
type steering struct {
	flows *ebpf.Map // flowKey -> u8
	xsks  *ebpf.Map // queue -> AF_XDP socket
	prog  *ebpf.Program
	link  link.Link
	mode  string // "drv" or "skb"
}

// Offsets in struct xdp_md.
const (
	xdpData         = 0
	xdpDataEnd      = 4
	xdpRxQueueIndex = 16
)

// program assembles the steering program. In C it would read:
//
//	if (frame too short for Ethernet + IPv4) return XDP_PASS;
//	if (ethertype != IPv4) return XDP_PASS;
//	if (ip->protocol != UDP && ip->protocol != TCP) return XDP_PASS;
//	if (ip->frag_off & (IP_MF | IP_OFFSET)) return XDP_PASS;
//	l4 = (void *)ip + ip->ihl * 4; if (l4 + 8 > data_end) return XDP_PASS;
//	key = {ip->daddr, l4->dest, ip->protocol, 0};
//	if (!lookup(flows, key)) { key.addr = 0; if (!lookup(flows, key)) return XDP_PASS; }
//	return bpf_redirect_map(xsks, ctx->rx_queue_index, XDP_PASS);
//
// UDP and TCP both carry the destination port in bytes 2 and 3 of their
// header, so one read serves both; the protocol in the key keeps their
// flows apart. The first 8 bytes of the L4 header must be in the frame
// (all of a UDP header; a TCP segment shorter than that is malformed and
// the kernel may have it).
//
// The L4 header's offset depends on the IPv4 header length. Rather than add
// that variable to the packet pointer (which the verifier accepts only from
// a process with CAP_PERFMON), the program branches on IHL to one of eleven
// blocks that each read the port at a constant offset. Frames with IPv4
// options thus still reach the socket, whose parser drops and counts them.
//
// Fragments always go to the kernel, which reassembles them: a non-first
// fragment has no L4 header, and the payload bytes where the port would be
// must not steer it, and a first fragment is useless without the rest.
func program(flows, xsks *ebpf.Map) asm.Instructions {
	const pass = "pass"
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // r6 = ctx, survives calls
		asm.LoadMem(asm.R2, asm.R6, xdpData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, xdpDataEnd, asm.Word),
		// Ethernet (14) + minimal IPv4 (20) present?
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 34),
		asm.JGT.Reg(asm.R4, asm.R3, pass),
		// EtherType 0x0800, loaded little-endian from the wire.
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JNE.Imm(asm.R5, 0x0008, pass),
		// IPv4 protocol UDP or TCP, kept in r7 for the key.
		asm.LoadMem(asm.R7, asm.R2, 23, asm.Byte),
		asm.JEq.Imm(asm.R7, unix.IPPROTO_UDP, "l4"),
		asm.JNE.Imm(asm.R7, unix.IPPROTO_TCP, pass),
		// Fragment: MF set or a fragment offset. The flags and offset
		// halfword, loaded little-endian: MF and the offset's high bits
		// are the low byte's 0x3f, the rest of the offset the high byte.
		asm.LoadMem(asm.R5, asm.R2, 20, asm.Half).WithSymbol("l4"),
		asm.And.Imm(asm.R5, 0xff3f),
		asm.JNE.Imm(asm.R5, 0, pass),
		// Destination address, then dispatch on IHL (below 5 is malformed).
		asm.LoadMem(asm.R8, asm.R2, 30, asm.Word),
		asm.LoadMem(asm.R5, asm.R2, 14, asm.Byte),
		asm.And.Imm(asm.R5, 0x0f),
	}
	for ihl := 5; ihl <= 15; ihl++ {
		insns = append(insns, asm.JEq.Imm(asm.R5, int32(ihl), fmt.Sprintf("ihl%d", ihl)))
	}
	insns = append(insns, asm.Ja.Label(pass))
	for ihl := 5; ihl <= 15; ihl++ {
		l4 := int16(14 + ihl*4)
		insns = append(insns,
			asm.Mov.Reg(asm.R4, asm.R2).WithSymbol(fmt.Sprintf("ihl%d", ihl)),
			asm.Add.Imm(asm.R4, int32(l4)+8),
			asm.JGT.Reg(asm.R4, asm.R3, pass),
			asm.LoadMem(asm.R9, asm.R2, l4+2, asm.Half),
			asm.Ja.Label("key"),
		)
	}
	return append(insns,
		// key = {daddr, dport, protocol, 0} at fp-8 (flowKey).
		asm.StoreMem(asm.RFP, -8, asm.R8, asm.Word).WithSymbol("key"),
		asm.StoreMem(asm.RFP, -4, asm.R9, asm.Half),
		asm.StoreMem(asm.RFP, -2, asm.R7, asm.Byte),
		asm.StoreImm(asm.RFP, -1, 0, asm.Byte),
		asm.LoadMapPtr(asm.R1, flows.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "redirect"),
		// Not bound to this address: try the wildcard address.
		asm.StoreImm(asm.RFP, -8, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, flows.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, pass),
		asm.LoadMem(asm.R2, asm.R6, xdpRxQueueIndex, asm.Word).WithSymbol("redirect"),
		asm.LoadMapPtr(asm.R1, xsks.FD()),
		asm.Mov.Imm(asm.R3, 2), // XDP_PASS when no socket serves the queue
		asm.FnRedirectMap.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 2).WithSymbol(pass), // XDP_PASS
		asm.Return(),
	)
}

// preferGeneric lists drivers whose native XDP is slower for AF_XDP than
// generic XDP. veth's native mode moves every frame through a NAPI poll and
// an skb-to-xdp_buff conversion before the redirect; generic mode redirects
// from the receive path directly. Measured on this project's VM with
// scripts/veth-compare.sh: p50 round trip 3.5-3.7 us generic against
// 4.2-4.9 us native (docs/afxdp.md).
var preferGeneric = map[string]bool{"veth": true}

// maxFlows bounds the steering map: bound UDP ports, joined groups, TCP
// listeners, and each dialled TCP connection's port until its TIME-WAIT
// ends (so a client that dials and closes often needs thousands). About
// 1 MiB of kernel memory.
const maxFlows = 16384

// attach creates the maps, loads the program and links it to the interface
// in the requested mode. "auto" tries driver mode, then generic, except on
// drivers listed in preferGeneric, where generic goes first.
func attach(ifindex, queues int, mode, driver string) (_ *steering, err error) {
	s := &steering{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	s.flows, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "lowlat_flows", Type: ebpf.Hash, KeySize: 8, ValueSize: 1, MaxEntries: maxFlows,
	})
	if err != nil {
		return nil, priv.Wrap("create XDP flow map", "CAP_BPF", err)
	}
	s.xsks, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "lowlat_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: uint32(max(queues, 1)),
	})
	if err != nil {
		return nil, priv.Wrap("create XSKMAP", "CAP_BPF", err)
	}
	s.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "lowlat_steer", Type: ebpf.XDP, License: "Dual BSD/GPL",
		Instructions: program(s.flows, s.xsks),
	})
	if err != nil {
		return nil, priv.Wrap("load XDP program", "CAP_BPF,CAP_NET_ADMIN", err)
	}
	modes := []string{mode}
	if mode == "" || mode == "auto" {
		modes = []string{"drv", "skb"}
		if preferGeneric[driver] {
			modes = []string{"skb", "drv"}
		}
	}
	for _, m := range modes {
		flags := link.XDPDriverMode
		if m == "skb" {
			flags = link.XDPGenericMode
		}
		s.link, err = link.AttachXDP(link.XDPOptions{Program: s.prog, Interface: ifindex, Flags: flags})
		if err == nil {
			s.mode = m
			return s, nil
		}
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("attach XDP program to interface %d: %w (another XDP program is already attached%s; one process serves an interface with AF_XDP: open every socket of this process on one stack, or detach it with `ip link set dev IF xdp off`)",
				ifindex, err, holderOf(ifindex))
		}
		if errors.Is(err, unix.EPERM) {
			return nil, priv.Wrap("attach XDP program", "CAP_NET_ADMIN", err)
		}
	}
	return nil, fmt.Errorf("attach XDP program in %s mode to interface %d: %w", modes[len(modes)-1], ifindex, err)
}

// addFlow steers frames of protocol proto (IPPROTO_UDP or IPPROTO_TCP) to
// dst to the AF_XDP sockets.
func (s *steering) addFlow(dst netip.AddrPort, proto uint8) error {
	k := keyFor(dst, proto)
	if err := s.flows.Update(&k, uint8(1), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("add %s flow %v to XDP map: %w", protoName(proto), dst, err)
	}
	return nil
}

// removeFlow undoes addFlow; a flow that is not there is no error.
func (s *steering) removeFlow(dst netip.AddrPort, proto uint8) error {
	k := keyFor(dst, proto)
	if err := s.flows.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("remove %s flow %v from XDP map: %w", protoName(proto), dst, err)
	}
	return nil
}

func (s *steering) setSocket(queue, fd int) error {
	if err := s.xsks.Update(uint32(queue), uint32(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("insert AF_XDP socket for queue %d into XSKMAP: %w", queue, err)
	}
	return nil
}

// close detaches the program and frees the maps. Safe on a partly built
// steering.
func (s *steering) close() error {
	var errs []error
	if s.link != nil {
		if err := s.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach XDP program: %w", err))
		}
	}
	if s.prog != nil {
		s.prog.Close()
	}
	if s.xsks != nil {
		s.xsks.Close()
	}
	if s.flows != nil {
		s.flows.Close()
	}
	return errors.Join(errs...)
}
