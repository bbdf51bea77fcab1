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
		// Receive stamps, and, when asked, transmit stamps on the error
		// queue: numbered (OPT_ID) and without the payload looped back
		// (OPT_TSONLY).
		flags := unix.SOF_TIMESTAMPING_RX_SOFTWARE | unix.SOF_TIMESTAMPING_SOFTWARE
		if o.TxTimestamps {
			flags |= unix.SOF_TIMESTAMPING_TX_SOFTWARE | unix.SOF_TIMESTAMPING_OPT_ID | unix.SOF_TIMESTAMPING_OPT_TSONLY
		}
		if o.Timestamps == backend.TimestampsHardware {
			flags |= unix.SOF_TIMESTAMPING_RX_HARDWARE | unix.SOF_TIMESTAMPING_RAW_HARDWARE
			if o.TxTimestamps {
				flags |= unix.SOF_TIMESTAMPING_TX_HARDWARE
			}
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
	eachCmsg(ctl, func(level, typ int32, data []byte) {
		switch {
		case level == unix.IPPROTO_IP && typ == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			m.Dst = netip.AddrFrom4(pi.Addr)
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			m.Dst = netip.AddrFrom16(pi.Addr).Unmap()
		case level == unix.SOL_SOCKET && typ == unix.SO_TIMESTAMPING:
			m.Stamp = stampOf(data)
		}
	})
}

// stampOf reads struct scm_timestamping: ts[0] software, ts[2] raw
// hardware; the hardware stamp wins where there is one.
func stampOf(data []byte) backend.Timestamp {
	if len(data) < 3*16 {
		return backend.Timestamp{}
	}
	if hw := tsNs(data[32:48]); hw != 0 {
		return backend.Timestamp{Ns: hw, Clock: backend.ClockNIC}
	}
	if sw := tsNs(data[0:16]); sw != 0 {
		return backend.Timestamp{Ns: sw, Clock: backend.ClockKernel}
	}
	return backend.Timestamp{}
}

// eachCmsg calls f for each control message in ctl. The closure the
// callers pass captures only pointers that do not escape: no allocation.
func eachCmsg(ctl []byte, f func(level, typ int32, data []byte)) {
	const hdr = unix.SizeofCmsghdr
	for len(ctl) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
		l := int(h.Len)
		if l < hdr || l > len(ctl) {
			return
		}
		f(h.Level, h.Type, ctl[hdr:l])
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

// txStamps reads a socket's transmit stamps off its error queue.
type txStamps struct {
	msg   unix.Msghdr
	ctl   [256]byte
	seq   uint64
	stamp backend.Timestamp
	ok    bool
}

// drain reads every queued transmit stamp and keeps the newest.
func (t *txStamps) drain(fd int) {
	for {
		t.msg = unix.Msghdr{Control: &t.ctl[0]}
		t.msg.SetControllen(len(t.ctl))
		_, _, e := syscall.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&t.msg)), unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if e != 0 {
			return // EAGAIN: the queue is empty
		}
		var ts backend.Timestamp
		var id uint32
		var isStamp bool
		eachCmsg(t.ctl[:t.msg.Controllen], func(level, typ int32, data []byte) {
			switch {
			case level == unix.SOL_SOCKET && typ == unix.SO_TIMESTAMPING:
				ts = stampOf(data)
			case (level == unix.IPPROTO_IP && typ == unix.IP_RECVERR) || (level == unix.IPPROTO_IPV6 && typ == unix.IPV6_RECVERR):
				if len(data) >= int(unsafe.Sizeof(unix.SockExtendedErr{})) {
					ee := (*unix.SockExtendedErr)(unsafe.Pointer(&data[0]))
					if ee.Errno == uint32(unix.ENOMSG) && ee.Origin == unix.SO_EE_ORIGIN_TIMESTAMPING {
						id, isStamp = ee.Data, true
					}
				}
			}
		})
		if isStamp && !ts.IsZero() { // the queue is in sending order: the last is the newest
			t.seq, t.stamp, t.ok = uint64(id), ts, true
		}
	}
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
