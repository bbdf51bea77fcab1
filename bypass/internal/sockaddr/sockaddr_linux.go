//go:build linux

// Package sockaddr converts between netip.AddrPort and the kernel's
// socket addresses without allocating, for the backends whose hot paths
// pass sockaddrs to system calls or to the C library (kernel, onload).
package sockaddr

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw holds either sockaddr_in or sockaddr_in6; sockaddr_in6 is the
// larger of the two.
type Raw = unix.RawSockaddrInet6

// Encode writes ap into ra in the socket's family and returns the length
// to pass on, or 0 when the address does not fit the family.
func Encode(ra *Raw, ap netip.AddrPort, v6 bool) uint32 {
	a := ap.Addr()
	if !v6 {
		a = a.Unmap()
		if !a.Is4() {
			return 0
		}
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(ra))
		sa.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		sa.Addr = a.As4()
		return unix.SizeofSockaddrInet4
	}
	ra.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&ra.Port))[:], ap.Port())
	ra.Addr = a.As16()
	ra.Flowinfo = 0
	ra.Scope_id = 0
	return unix.SizeofSockaddrInet6
}

// Decode reads the address the kernel (or the C library) wrote into ra.
func Decode(ra *Raw) netip.AddrPort {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&ra.Port))[:])
	switch ra.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(ra))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port)
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(ra.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}

// Family returns the socket family for ap: IPv4 for an IPv4 or
// IPv4-mapped address, else IPv6.
func Family(ap netip.AddrPort) (family int, v6 bool) {
	if ap.Addr().Is4() || ap.Addr().Is4In6() {
		return unix.AF_INET, false
	}
	return unix.AF_INET6, true
}

// To converts for the setup-path calls of x/sys/unix.
func To(ap netip.AddrPort, v6 bool) unix.Sockaddr {
	if !v6 {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// From converts an x/sys/unix address back.
func From(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}
