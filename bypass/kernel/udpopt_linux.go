//go:build linux

package kernel

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lowlat/lowlat/bypass/backend"
)

// ctlSize is the control buffer of one received datagram: room for its
// destination (IP_PKTINFO or IPV6_PKTINFO) and its timestamps
// (SCM_TIMESTAMPING: three timespecs), each behind a cmsghdr.
const ctlSize = 128

// Flags of SO_TIMESTAMPING (linux/net_tstamp.h).
const (
	tsRxHardware  = 1 << 2
	tsRxSoftware  = 1 << 3
	tsSoftware    = 1 << 4
	tsRawHardware = 1 << 6
)

// setupUDP applies the options that must precede bind (address reuse) and
// those that shape what recvmmsg reports: the destination of each
// datagram, always, and timestamps when asked.
func setupUDP(fd int, v6 bool, o backend.Options, info *backend.Info) error {
	if o.ReuseAddr {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_REUSEADDR", err)
		}
	}
	// Linux delivers a group's datagrams to every socket bound to the
	// port once any socket on the host joined the group: with
	// IP_MULTICAST_ALL off, a socket gets only the groups it joined, so
	// that LeaveGroup means what it says.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0); err != nil && !v6 {
		return os.NewSyscallError("setsockopt IP_MULTICAST_ALL", err)
	}
	if v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0); err != nil {
			return os.NewSyscallError("setsockopt IPV6_MULTICAST_ALL", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
			return os.NewSyscallError("setsockopt IPV6_RECVPKTINFO", err)
		}
	} else if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
		return os.NewSyscallError("setsockopt IP_PKTINFO", err)
	}
	if o.Timestamps != backend.TimestampsOff {
		flags := tsRxSoftware | tsSoftware
		if o.Timestamps == backend.TimestampsHardware {
			flags |= tsRxHardware | tsRawHardware
			info.Notes = append(info.Notes, "hardware receive stamps need the interface's stamping on (hwstamp_ctl -i IF -r 1); without it the kernel's software stamp is reported")
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPING, flags); err != nil {
			return os.NewSyscallError("setsockopt SO_TIMESTAMPING", err)
		}
	}
	m := o.Multicast
	lvl, ifOpt, ttlOpt, loopOpt := unix.IPPROTO_IP, unix.IP_MULTICAST_IF, unix.IP_MULTICAST_TTL, unix.IP_MULTICAST_LOOP
	if v6 {
		lvl, ifOpt, ttlOpt, loopOpt = unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, unix.IPV6_MULTICAST_HOPS, unix.IPV6_MULTICAST_LOOP
	}
	if m.Interface != "" {
		ifi, err := net.InterfaceByName(m.Interface)
		if err != nil {
			return fmt.Errorf("multicast interface: %w", err)
		}
		if v6 {
			err = unix.SetsockoptInt(fd, lvl, ifOpt, ifi.Index)
		} else {
			err = unix.SetsockoptIPMreqn(fd, lvl, ifOpt, &unix.IPMreqn{Ifindex: int32(ifi.Index)})
		}
		if err != nil {
			return os.NewSyscallError("setsockopt multicast interface", err)
		}
	}
	if m.TTL > 0 {
		if err := unix.SetsockoptInt(fd, lvl, ttlOpt, m.TTL); err != nil {
			return os.NewSyscallError("setsockopt multicast TTL", err)
		}
	}
	if m.NoLoopback {
		if err := unix.SetsockoptInt(fd, lvl, loopOpt, 0); err != nil {
			return os.NewSyscallError("setsockopt multicast loopback", err)
		}
	}
	return nil
}

// parseControl reads a received datagram's control messages into m: its
// destination address and its timestamp. It allocates nothing.
func parseControl(ctl []byte, m *backend.Message) {
	const hdr = unix.SizeofCmsghdr
	for len(ctl) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
		l := int(h.Len)
		if l < hdr || l > len(ctl) {
			return
		}
		data := ctl[hdr:l]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			m.Dst = netip.AddrFrom4(pi.Addr)
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			m.Dst = netip.AddrFrom16(pi.Addr).Unmap()
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_TIMESTAMPING && len(data) >= 3*16:
			// struct scm_timestamping: ts[0] software, ts[2] raw hardware.
			sw := tsNs(data[0:16])
			hw := tsNs(data[32:48])
			switch {
			case hw != 0:
				m.Stamp = backend.Timestamp{Ns: hw, Clock: backend.ClockNIC}
			case sw != 0:
				m.Stamp = backend.Timestamp{Ns: sw, Clock: backend.ClockKernel}
			}
		}
		l = (l + 7) &^ 7 // CMSG_ALIGN
		if l >= len(ctl) {
			return
		}
		ctl = ctl[l:]
	}
}

// tsNs reads a struct timespec (two int64s, native order).
func tsNs(b []byte) int64 {
	sec := int64(binary.NativeEndian.Uint64(b[0:8]))
	nsec := int64(binary.NativeEndian.Uint64(b[8:16]))
	return sec*1e9 + nsec
}

// memDrops reads the socket's drop count (SO_MEMINFO's SK_MEMINFO_DROPS):
// the datagrams the kernel dropped because the receive buffer was full,
// the figure /proc/net/udp shows.
func memDrops(fd int) (uint64, error) {
	var mi [unix.SK_MEMINFO_VARS]uint32
	l := uint32(unsafe.Sizeof(mi))
	_, _, e := syscall.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&mi[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, os.NewSyscallError("getsockopt SO_MEMINFO", e)
	}
	return uint64(mi[unix.SK_MEMINFO_DROPS]), nil
}
