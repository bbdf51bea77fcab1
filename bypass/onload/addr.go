//go:build linux && onload && cgo

package onload

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawAddr holds either sockaddr_in or sockaddr_in6, the larger.
type rawAddr = unix.RawSockaddrInet6

// encode writes ap into ra in the socket's family and returns the length
// to pass to the C library, or 0 when the address does not fit the family.
func encode(ra *rawAddr, ap netip.AddrPort, v6 bool) uint32 {
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

// decode reads the address the C library wrote into ra.
func decode(ra *rawAddr) netip.AddrPort {
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

func familyOf(ap netip.AddrPort) (family int, v6 bool) {
	if ap.Addr().Is4() || ap.Addr().Is4In6() {
		return unix.AF_INET, false
	}
	return unix.AF_INET6, true
}
