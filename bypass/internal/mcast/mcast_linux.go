//go:build linux

// Package mcast holds the multicast membership requests shared by the
// kernel backends and the user-space stack's port-reserving sockets: the
// protocol-independent MCAST_JOIN_GROUP family, which covers any-source and
// source-specific joins, IPv4 and IPv6, with one structure.
package mcast

import (
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockaddrStorage is the size of struct sockaddr_storage.
const sockaddrStorage = 128

// groupReq is struct group_source_req (and, without its source, struct
// group_req): the protocol-independent multicast membership requests
// (MCAST_JOIN_GROUP and kin), for IPv4 and IPv6 alike.
type groupReq struct {
	ifindex uint32
	_       uint32
	group   [sockaddrStorage]byte // struct sockaddr_storage
	source  [sockaddrStorage]byte
}

func putSockaddr(dst *[sockaddrStorage]byte, a netip.Addr) {
	*dst = [sockaddrStorage]byte{}
	if a.Is4() {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&dst[0]))
		sa.Family = unix.AF_INET
		sa.Addr = a.As4()
		return
	}
	sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&dst[0]))
	sa.Family = unix.AF_INET6
	sa.Addr = a.As16()
}

// Membership issues one MCAST_* request on fd: join or leave group on
// interface ifindex (0: the kernel's choice), for source when it is valid.
// An IPv4 group is joined at the IP level with IPv4 addresses, also on an
// IPv6 (dual-stack) socket, which passes IP-level options to IPv4.
func Membership(fd int, join bool, ifindex int, group, source netip.Addr) error {
	var r groupReq
	r.ifindex = uint32(ifindex)
	group, source = group.Unmap(), source.Unmap()
	putSockaddr(&r.group, group)
	opt, name, size := unix.MCAST_LEAVE_GROUP, "MCAST_LEAVE_GROUP", unsafe.Offsetof(r.source)
	if join {
		opt, name = unix.MCAST_JOIN_GROUP, "MCAST_JOIN_GROUP"
	}
	if source.IsValid() {
		putSockaddr(&r.source, source)
		size = unsafe.Sizeof(r)
		opt, name = unix.MCAST_LEAVE_SOURCE_GROUP, "MCAST_LEAVE_SOURCE_GROUP"
		if join {
			opt, name = unix.MCAST_JOIN_SOURCE_GROUP, "MCAST_JOIN_SOURCE_GROUP"
		}
	}
	lvl := unix.IPPROTO_IP
	if !group.Is4() {
		lvl = unix.IPPROTO_IPV6
	}
	_, _, e := syscall.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(lvl), uintptr(opt), uintptr(unsafe.Pointer(&r)), size, 0)
	if e != 0 {
		return os.NewSyscallError("setsockopt "+name, e)
	}
	return nil
}
