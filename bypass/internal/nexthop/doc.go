// Package nexthop finds, through the kernel, where a userspace network path
// must send a frame: the local interface's addresses and queues (Local), the
// interface that owns a bind address (InterfaceFor), and for a destination
// the source address, the gateway and the Ethernet address of the next hop
// (Resolve). Resolve asks the kernel's routing tables (RTM_GETROUTE, same as
// `ip route get fibmatch DST oif IF` and `ip route get DST oif IF`), then its
// neighbour table (RTM_GETNEIGH, same as `ip neigh show dev IF`); when the
// neighbour is unknown it makes the kernel run ARP by sending one UDP
// datagram to the discard port of that neighbour from an ordinary socket
// bound to the interface, which needs no privilege, and polls the table
// until the entry resolves or the time runs out. Multicast and broadcast
// destinations map to their Ethernet addresses without ARP.
//
// Every call works in the network namespace of the calling thread. The
// package is for setup, not for the per-packet path: it allocates and
// formats errors freely. It is Linux-only; elsewhere every function returns
// an error wrapping backend.ErrNotSupported.
package nexthop
